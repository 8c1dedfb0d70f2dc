"""Voting rules that turn jurors' ballots into verdicts, one `Tally` per rule.

An assembly reports several rules side by side because they can disagree (a plurality winner can lose an
instant runoff; a Borda winner can be nobody's first choice); showing every rule's result, with its scores and
rounds, lets a reader see how much the verdict depends on the rule rather than on the jurors.

Which rules apply to which ballot (`RULES_FOR_BALLOT`):

* ``single`` and ``yes_no`` ballots: ``plurality`` and ``majority``.
* ``ranked`` ballots: ``plurality`` and ``majority`` on first preferences, ``borda``, ``schulze`` and ``irv``.
* ``approval`` ballots: ``approval`` only. An approval ballot names no single favourite, so plurality would have to
  invent one (it would just be approval voting again, under a misleading name).

Abstentions are counted in ``Tally.abstained`` and never enter any count, denominator or majority threshold.

Tie-breaking is deterministic, so the same ballots always give the same verdict:

* A tie for the top is broken by the order of the options in the question file: the earliest listed option wins.
  ``Tally.winners`` keeps every option tied at the top *before* the tie-break (in option order), ``Tally.winner``
  is the one chosen, and ``Tally.tie_break`` says what was done (``None`` when there was no tie).
* ``irv`` eliminates one option per round: the one with the fewest current first preferences. A tie for
  elimination goes to the option with the fewest first preferences in the original (round-1) count, and if still
  tied, the latest listed option is eliminated first (so earlier listed options survive, as above). For ``irv``,
  ``Tally.winners`` is the set of options that win under *some* way of breaking elimination ties (parallel-universe
  tie-breaking), i.e. the result before any tie-break was applied.
* ``majority`` never breaks ties: an option needs strictly more than half of the valid ballots, else no winner.
* ``approval``: an option that nobody approved cannot win (no winner when every approval list is empty).

Rule details: Borda gives K-1 points for a first preference down to 0 for the last (K options). Schulze compares
options pairwise by margin (voters preferring x to y minus those preferring y to x), finds the strongest (widest)
path between every pair with Floyd–Warshall, and the winners are the options no other option beats on those paths;
with complete strict rankings, margins and the "winning votes" of Schulze's paper give the same result. IRV stops
as soon as an option holds more than half of the continuing ballots.

Checked against ``pref_voting`` (plurality, borda, instant_runoff_put, beat_path) on random profiles in the tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from pydantic import BaseModel, ConfigDict

from assembly.ballot import Ballot

RULES: tuple[str, ...] = ("plurality", "majority", "approval", "borda", "schulze", "irv")

RULES_FOR_BALLOT: dict[str, tuple[str, ...]] = {
    "single": ("plurality", "majority"),
    "yes_no": ("plurality", "majority"),
    "ranked": ("plurality", "majority", "borda", "schulze", "irv"),
    "approval": ("approval",),
}


class Tally(BaseModel):
    """One rule's result on one set of ballots, complete enough to audit by hand."""

    model_config = ConfigDict(extra="forbid")

    rule: str
    winner: str | None  # None: no valid ballots, no majority, or nothing approved
    winners: list[str]  # every option tied at the top before the tie-break, in option order
    scores: dict[str, float]  # counts / approvals / Borda points / Schulze wins / IRV first-round counts
    rounds: list[dict] | None = None  # IRV rounds; Schulze pairwise margins and strongest paths
    tie_break: str | None = None  # how a tie was broken; None when none was
    valid: int
    abstained: int
    explain: str


def tally(rule: str, ballots: list[Ballot], options: list[str]) -> Tally:
    """Count `ballots` for `options` under `rule`.

    Raises ValueError for an unknown rule, a rule that does not apply to the ballots' type, or ballots that do not
    fit the options (mixed types or phases, a participant voting twice, an option not in the question).
    """
    if rule not in RULES:
        raise ValueError(f"unknown voting rule {rule!r}; known rules: {', '.join(RULES)}")
    options = _check_options(options)
    ballot_type = _ballot_type(ballots)
    if ballot_type is not None and rule not in RULES_FOR_BALLOT[ballot_type]:
        raise ValueError(
            f"rule {rule!r} does not apply to {ballot_type} ballots; "
            f"use one of: {', '.join(RULES_FOR_BALLOT[ballot_type])}"
        )
    _check_ballots(ballots, options)
    valid = [b for b in ballots if b.status == "valid"]
    abstained = len(ballots) - len(valid)
    if not valid:
        return Tally(
            rule=rule, winner=None, winners=[], scores={o: 0.0 for o in options}, valid=0, abstained=abstained,
            explain=f"No valid ballots ({abstained} abstained), so no winner.",
        )
    result = _RULE_FUNCTIONS[rule](valid, options)
    result.update(rule=rule, valid=len(valid), abstained=abstained)
    if abstained:
        result["explain"] = result["explain"][:-1] + f" ({abstained} abstained)."
    return Tally(**result)


def tally_all(rules: Sequence[str] | None, ballots: list[Ballot], options: list[str]) -> list[Tally]:
    """One Tally per rule, in the order given; `rules=None` means every rule that applies to these ballots."""
    if rules is None:
        ballot_type = _ballot_type(ballots)
        if ballot_type is None:
            raise ValueError("cannot choose rules for an empty list of ballots; name the rules")
        rules = RULES_FOR_BALLOT[ballot_type]
    return [tally(rule, ballots, options) for rule in rules]


# --- validation -------------------------------------------------------------------------------------------------


def _check_options(options: Iterable[str]) -> list[str]:
    """Options must be non-empty and distinct: their order is the tie-break, so a repeat would make it ambiguous."""
    options = list(options)
    if not options:
        raise ValueError("a tally needs at least one option")
    if len(set(options)) != len(options):
        raise ValueError(f"options repeat a value: {options}")
    return options


def _ballot_type(ballots: list[Ballot]) -> str | None:
    """The one type all ballots share (None for no ballots): rules apply per type, so a mix cannot be counted."""
    types = {b.type for b in ballots}
    if len(types) > 1:
        raise ValueError(f"ballots mix types {sorted(types)}; tally each type separately")
    return types.pop() if types else None


def _check_ballots(ballots: list[Ballot], options: list[str]) -> None:
    """Reject ballots that would make a count meaningless: mixed phases, double votes, options not in the question."""
    phases = {b.phase for b in ballots}
    if len(phases) > 1:
        raise ValueError("ballots mix pre and post phases; tally each phase separately")
    repeated = sorted(p for p, n in Counter(b.participant_id for b in ballots).items() if n > 1)
    if repeated:
        raise ValueError(f"participants {repeated} cast more than one ballot")
    for b in ballots:
        try:
            b.validate_against(options)
        except ValueError as err:
            raise ValueError(f"ballot of participant {b.participant_id!r}: {err}") from None


# --- shared helpers ---------------------------------------------------------------------------------------------


def _first(ballot: Ballot) -> str:
    """The ballot's single choice, or its first preference for a ranked ballot."""
    return ballot.ranking[0] if ballot.ranking else ballot.choice  # type: ignore[return-value]


def _count(values: Iterable[str], options: list[str]) -> dict[str, float]:
    """Counts for every option, zeros included, in option order."""
    counts = Counter(values)
    return {o: float(counts[o]) for o in options}


def _top(scores: dict[str, float], options: list[str]) -> list[str]:
    """All options sharing the highest score, in option order."""
    best = max(scores.values())
    return [o for o in options if scores[o] == best]


def _break_tie(winners: list[str], what: str) -> tuple[str, str | None]:
    """Pick the earliest listed option among `winners` (already in option order) and say so."""
    if len(winners) == 1:
        return winners[0], None
    return winners[0], (
        f"{_join(winners)} tied {what}; {winners[0]} wins as the earliest listed option in the question file."
    )


def _join(items: Sequence[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def _n(x: float) -> str:
    return f"{x:g}"


# --- rules ------------------------------------------------------------------------------------------------------


def _plurality(valid: list[Ballot], options: list[str]) -> dict:
    """Most first choices wins."""
    scores = _count((_first(b) for b in valid), options)
    winners = _top(scores, options)
    top = scores[winners[0]]
    winner, tie_break = _break_tie(winners, f"on {_n(top)} votes")
    noun = "first preferences" if valid[0].type == "ranked" else "votes"
    return dict(
        winner=winner, winners=winners, scores=scores, tie_break=tie_break,
        explain=f"{winner} won plurality with {_n(top)} of {len(valid)} {noun}.",
    )


def _majority(valid: list[Ballot], options: list[str]) -> dict:
    """Strictly more than half of the valid ballots, or no winner: a majority is never manufactured by a tie-break."""
    scores = _count((_first(b) for b in valid), options)
    winners = [o for o in options if 2 * scores[o] > len(valid)]
    if winners:
        winner = winners[0]
        explain = f"{winner} won a majority with {_n(scores[winner])} of {len(valid)} valid votes."
    else:
        winner = None
        leaders = _top(scores, options)
        explain = (
            f"No option won more than half of the {len(valid)} valid votes; "
            f"{_join(leaders)} led with {_n(scores[leaders[0]])}."
        )
    return dict(winner=winner, winners=winners, scores=scores, explain=explain)


def _approval(valid: list[Ballot], options: list[str]) -> dict:
    """Most approvals wins; a repeated approval on one ballot counts once."""
    scores = _count((a for b in valid for a in set(b.approvals or ())), options)
    if max(scores.values()) == 0:
        return dict(
            winner=None, winners=[], scores=scores,
            explain=f"None of the {len(valid)} valid ballots approved any option, so no winner.",
        )
    winners = _top(scores, options)
    top = scores[winners[0]]
    winner, tie_break = _break_tie(winners, f"on {_n(top)} approvals")
    return dict(
        winner=winner, winners=winners, scores=scores, tie_break=tie_break,
        explain=f"{winner} won approval, approved on {_n(top)} of {len(valid)} ballots.",
    )


def _borda(valid: list[Ballot], options: list[str]) -> dict:
    """K-1 points for a first preference down to 0 for the last; most points wins."""
    k = len(options)
    scores = {o: 0.0 for o in options}
    for b in valid:
        for position, option in enumerate(b.ranking or ()):
            scores[option] += k - 1 - position
    winners = _top(scores, options)
    top = scores[winners[0]]
    winner, tie_break = _break_tie(winners, f"on {_n(top)} Borda points")
    return dict(
        winner=winner, winners=winners, scores=scores, tie_break=tie_break,
        explain=f"{winner} won Borda with {_n(top)} points ({k - 1} for a first preference down to 0 for last).",
    )


def _margins(valid: list[Ballot], options: list[str]) -> dict[str, dict[str, int]]:
    """margin[x][y]: voters ranking x above y minus voters ranking y above x."""
    margin = {x: {y: 0 for y in options if y != x} for x in options}
    for b in valid:
        ranking = b.ranking or []
        for i, x in enumerate(ranking):
            for y in ranking[i + 1:]:
                margin[x][y] += 1
                margin[y][x] -= 1
    return margin


def _strongest_paths(margin: dict[str, dict[str, int]], options: list[str]) -> dict[str, dict[str, int]]:
    """Widest-path strengths over pairwise defeats (Floyd–Warshall); 0 where no path of defeats exists."""
    path = {x: {y: max(m, 0) for y, m in row.items()} for x, row in margin.items()}
    for via in options:
        for x in options:
            if x == via:
                continue
            for y in options:
                if y != x and y != via:
                    path[x][y] = max(path[x][y], min(path[x][via], path[via][y]))
    return path


def _schulze(valid: list[Ballot], options: list[str]) -> dict:
    """Winners are the options that no other option beats on strongest paths (there is always at least one)."""
    margin = _margins(valid, options)
    path = _strongest_paths(margin, options)
    beats = {x: [y for y in options if y != x and path[x][y] > path[y][x]] for x in options}
    winners = [x for x in options if all(path[x][y] >= path[y][x] for y in options if y != x)]
    scores = {x: float(len(beats[x])) for x in options}
    winner, tie_break = _break_tie(winners, "as unbeaten on strongest paths")
    others = len(options) - 1
    explain = (
        f"{winner} won Schulze, beating {len(beats[winner])} of {others} other options "
        f"and beaten by none on strongest pairwise paths."
    )
    return dict(
        winner=winner, winners=winners, scores=scores, tie_break=tie_break, explain=explain,
        rounds=[{"margins": margin, "strongest_paths": path}],
    )


def _irv_counts(rankings: Counter, continuing: Iterable[str]) -> dict[str, int]:
    """First preferences among the continuing options (exhausted ballots count for nobody)."""
    continuing = set(continuing)
    counts = {o: 0 for o in continuing}
    for ranking, n in rankings.items():
        top = next((o for o in ranking if o in continuing), None)
        if top is not None:
            counts[top] += n
    return counts


def _irv_elected(counts: dict[str, int]) -> str | None:
    """The option holding more than half of the continuing ballots, if any (or the last one left)."""
    active = sum(counts.values())
    leader = max(counts, key=counts.__getitem__)
    return leader if len(counts) == 1 or 2 * counts[leader] > active else None


def _irv_possible_winners(rankings: Counter, options: list[str]) -> list[str]:
    """Options that win under some order of breaking elimination ties (parallel-universe tie-breaking).

    Memoised on the set of continuing options, so at most 2**K states; question files list a handful of options.
    """
    memo: dict[frozenset[str], frozenset[str]] = {}

    def winners(continuing: frozenset[str]) -> frozenset[str]:
        if continuing not in memo:
            counts = _irv_counts(rankings, continuing)
            elected = _irv_elected(counts)
            if elected is not None:
                memo[continuing] = frozenset([elected])
            else:
                low = min(counts.values())
                memo[continuing] = frozenset().union(
                    *(winners(continuing - {o}) for o in continuing if counts[o] == low)
                )
        return memo[continuing]

    found = winners(frozenset(options))
    return [o for o in options if o in found]


def _irv_eliminate(tied: list[str], original: dict[str, int], options: list[str]) -> tuple[str, str]:
    """Fewest original first preferences, then the latest listed option; returns it and why."""
    fewest = min(original[o] for o in tied)
    candidates = [o for o in tied if original[o] == fewest]
    out = max(candidates, key=options.index)
    if len(candidates) == 1:
        why = "fewest first preferences in the original count"
    else:
        why = "latest listed option in the question file among those also tied in the original count"
    return out, why


def _irv(valid: list[Ballot], options: list[str]) -> dict:
    """Eliminate the weakest option round by round until one holds a majority of the continuing ballots."""
    rankings = Counter(tuple(b.ranking or ()) for b in valid)
    original = _irv_counts(rankings, options)
    continuing, rounds, notes = list(options), [], []
    while True:
        counts = _irv_counts(rankings, continuing)
        ordered = {o: counts[o] for o in continuing}
        elected = _irv_elected(counts)
        if elected is not None:
            rounds.append({"round": len(rounds) + 1, "counts": ordered, "elected": elected})
            break
        low = min(counts.values())
        tied = [o for o in continuing if counts[o] == low]
        out, why = _irv_eliminate(tied, original, options) if len(tied) > 1 else (tied[0], None)
        if why:
            notes.append(f"round {len(rounds) + 1}: {_join(tied)} tied on {low} first preferences; "
                         f"eliminated {out} ({why})")
        rounds.append({"round": len(rounds) + 1, "counts": ordered, "eliminated": out, "tie_break": why})
        continuing.remove(out)
    winners = _irv_possible_winners(rankings, options)
    tie_break = None
    if notes:
        tie_break = "; ".join(notes) + "."
        if len(winners) > 1:
            tie_break += f" Other elimination orders would elect {_join([w for w in winners if w != elected])}."
    final = rounds[-1]["counts"]
    eliminated = [r["eliminated"] for r in rounds[:-1]]
    after = f" after eliminating {_join(eliminated)}" if eliminated else " outright"
    explain = (f"{elected} won instant runoff in round {len(rounds)}{after}, "
               f"with {final[elected]} of {sum(final.values())} continuing votes.")
    return dict(
        winner=elected, winners=winners, scores={o: float(original[o]) for o in options},
        rounds=rounds, tie_break=tie_break, explain=explain,
    )


_RULE_FUNCTIONS: dict[str, Callable[[list[Ballot], list[str]], dict]] = {
    "plurality": _plurality,
    "majority": _majority,
    "approval": _approval,
    "borda": _borda,
    "schulze": _schulze,
    "irv": _irv,
}
