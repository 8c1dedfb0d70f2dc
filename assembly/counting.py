"""A phase's ballots into the store: each ballot as cast, then its tallies under every rule of the question file
with their expected results over redraws of the votes (assembly.stability). The full graph and the distilled mode
count the same way through these two functions."""

from __future__ import annotations

from collections.abc import Sequence

from assembly.ballot import Ballot
from assembly.ballot_types import kind_of
from assembly.stability import expected_results
from assembly.voting import tally_all


def choice_counts(ballots: Sequence[Ballot], options: list[str]) -> dict[str, int]:
    """Votes per option: choices, first preferences, or approvals (each approved option counts once)."""
    counts = {o: 0 for o in options}
    for b in ballots:
        if b.status == "valid":
            for option in kind_of(b.type).preferred(b):
                counts[option] += 1
    return counts


def record_ballot(store, run_id: str, ballot: Ballot) -> None:
    store.add_ballot(run_id, participant_id=ballot.participant_id, phase=ballot.phase, ballot_type=ballot.type,
                     status=ballot.status, choice=ballot.choice, ranking=ballot.ranking, approvals=ballot.approvals,
                     probabilities=ballot.probabilities, rationale=ballot.rationale, reason=ballot.reason,
                     attempts=ballot.attempts, method=ballot.method, detail=ballot.detail)


def record_tallies(store, run_id: str, phase: str, ballots: Sequence[Ballot], options: list[str],
                   rules: Sequence[str] | None, *, seed: int) -> list[dict]:
    """Tally `ballots` under every rule (the first decides), record each tally, return them as dicts with their
    expected scores, win probabilities and stability merged in."""
    results = tally_all(rules, list(ballots), options)
    expected = expected_results(ballots, options, rules, seed=seed)
    tallies = []
    for t in results:
        e = expected.get(t.rule, {})
        store.add_tally(run_id, phase=phase, rule=t.rule, winner=t.winner, winners=t.winners, scores=t.scores,
                        rounds=t.rounds, tie_break=t.tie_break, valid=t.valid, abstained=t.abstained,
                        explain=t.explain, expected=e.get("expected"), win_probability=e.get("win_probability"),
                        stability=e.get("stability"), redraws=e.get("redraws"))
        tallies.append({**t.model_dump(mode="json"), **e})
    return tallies
