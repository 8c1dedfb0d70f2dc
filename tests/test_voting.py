"""Voting rules: hand-computed cases, errors, and agreement with pref_voting on random profiles."""

from __future__ import annotations

import numpy as np
import pytest

from assembly.ballot import Ballot
from assembly.voting import RULES, RULES_FOR_BALLOT, Tally, tally, tally_all


def ranked(*groups: tuple[int, str]) -> list[Ballot]:
    """Ranked ballots from (count, "ABC") groups, one participant per ballot."""
    out = []
    for count, order in groups:
        for _ in range(count):
            out.append(Ballot(participant_id=f"p{len(out)}", phase="post", type="ranked", ranking=list(order)))
    return out


def singles(choices: str, kind: str = "single") -> list[Ballot]:
    return [Ballot(participant_id=f"p{i}", phase="post", type=kind, choice=c) for i, c in enumerate(choices)]


def abstain(n: int, kind: str, start: int = 100) -> list[Ballot]:
    return [
        Ballot(participant_id=f"p{start + i}", phase="post", type=kind, status="abstain", reason="no valid reply")
        for i in range(n)
    ]


# Wikipedia's Schulze example: 45 voters, 5 candidates, no Condorcet winner; E wins, ranking E > A > C > B > D.
WIKI_SCHULZE = ranked(
    (5, "ACBED"), (5, "ADECB"), (8, "BEDAC"), (3, "CABED"), (7, "CAEBD"), (2, "CBADE"), (7, "DCEBA"), (8, "EBADC")
)
# Wikipedia's strongest paths in winning votes; with 45 complete rankings, margin = 2 * votes - 45.
WIKI_PATHS = {
    "A": {"B": 28, "C": 28, "D": 30, "E": 24},
    "B": {"A": 25, "C": 28, "D": 33, "E": 24},
    "C": {"A": 25, "B": 29, "D": 29, "E": 24},
    "D": {"A": 25, "B": 28, "C": 28, "E": 24},
    "E": {"A": 25, "B": 28, "C": 28, "D": 31},
}


def test_rule_table_covers_every_rule_and_type():
    assert set(RULES_FOR_BALLOT) == {"single", "yes_no", "ranked", "approval"}
    assert {r for rules in RULES_FOR_BALLOT.values() for r in rules} == set(RULES)
    assert RULES_FOR_BALLOT["approval"] == ("approval",)


def test_schulze_wikipedia_example_elects_e():
    t = tally("schulze", WIKI_SCHULZE, list("ABCDE"))
    assert (t.winner, t.winners, t.tie_break) == ("E", ["E"], None)
    assert t.scores == {"E": 4, "A": 3, "C": 2, "B": 1, "D": 0}  # wins on strongest paths = ranking E>A>C>B>D
    paths = t.rounds[0]["strongest_paths"]
    assert {x: {y: paths[x][y] for y in row} for x, row in WIKI_PATHS.items()} == {
        x: {y: 2 * v - 45 for y, v in row.items()} for x, row in WIKI_PATHS.items()
    }
    assert t.rounds[0]["margins"]["C"]["E"] == 24 - 21  # C beats E pairwise although E wins: a cycle
    assert t.valid == 45 and "E" in t.explain


def test_schulze_symmetric_cycle_is_a_full_tie_broken_by_option_order():
    t = tally("schulze", ranked((1, "ABC"), (1, "BCA"), (1, "CAB")), ["C", "A", "B"])
    assert t.winners == ["C", "A", "B"] and t.winner == "C"
    assert "earliest listed" in t.tie_break


def test_irv_plurality_winner_loses():
    ballots = ranked((8, "ACB"), (7, "BCA"), (5, "CBA"))
    assert tally("plurality", ballots, list("ABC")).winner == "A"
    t = tally("irv", ballots, list("ABC"))
    assert (t.winner, t.winners, t.tie_break) == ("B", ["B"], None)
    assert t.scores == {"A": 8, "B": 7, "C": 5}
    assert t.rounds == [
        {"round": 1, "counts": {"A": 8, "B": 7, "C": 5}, "eliminated": "C", "tie_break": None},
        {"round": 2, "counts": {"A": 8, "B": 12}, "elected": "B"},
    ]
    assert "round 2" in t.explain


def test_irv_elimination_tie_broken_by_original_count():
    # Round 1: A5 B4 C3 D1 -> D out, its vote goes to C. Round 2: B4 C4 tie; C had fewer originally -> C out.
    ballots = ranked((5, "ABCD"), (4, "BACD"), (3, "CABD"), (1, "DCAB"))
    t = tally("irv", ballots, list("ABCD"))
    assert [r.get("eliminated") for r in t.rounds] == ["D", "C", None]
    assert t.rounds[1]["tie_break"] == "fewest first preferences in the original count"
    assert t.winner == "A" and t.winners == ["A"]
    assert "round 2" in t.tie_break and "original count" in t.tie_break


def test_irv_full_tie_eliminates_latest_listed_and_reports_other_possible_winners():
    # One first preference each, equal originally too: C (latest listed) goes first, its vote elects A.
    # Eliminating A or B first would elect C, so the set before tie-break is {A, C}.
    t = tally("irv", ranked((1, "ACB"), (1, "BCA"), (1, "CAB")), list("ABC"))
    assert t.rounds[0]["eliminated"] == "C"
    assert t.winner == "A" and t.winners == ["A", "C"]
    assert "latest listed" in t.tie_break and "would elect C" in t.tie_break


def test_borda_points():
    ballots = ranked((2, "ABC"), (1, "BCA"), (1, "CBA"))
    t = tally("borda", ballots, list("ABC"))
    assert t.scores == {"A": 4, "B": 5, "C": 3}
    assert t.winner == "B" and tally("plurality", ballots, list("ABC")).winner == "A"


def test_majority_with_and_without():
    t = tally("majority", singles("AAABC"), list("ABC"))
    assert (t.winner, t.winners, t.scores) == ("A", ["A"], {"A": 3, "B": 1, "C": 1})
    none = tally("majority", singles("AABBC"), list("ABC"))
    assert (none.winner, none.winners, none.tie_break) == (None, [], None)
    assert "No option won more than half" in none.explain
    half = tally("majority", singles(["yes", "yes", "no", "no"], "yes_no"), ["yes", "no"])
    assert half.winner is None  # exactly half is not a majority
    first_prefs = tally("majority", ranked((3, "BAC"), (2, "ABC")), list("ABC"))
    assert first_prefs.winner == "B" and first_prefs.scores["B"] == 3


def test_approval_counts():
    ballots = [
        Ballot(participant_id=f"p{i}", phase="pre", type="approval", approvals=a)
        for i, a in enumerate([["A", "B"], ["B"], [], ["B", "C"], ["C", "C"]])
    ]
    t = tally("approval", ballots, list("ABC"))
    assert t.scores == {"A": 1, "B": 3, "C": 2} and t.winner == "B" and t.valid == 5
    nobody = tally("approval", ballots[2:3], list("ABC"))
    assert nobody.winner is None and nobody.winners == []


def test_abstentions_counted_but_never_voted():
    base = tally("majority", singles("AAB"), list("AB"))
    t = tally("majority", singles("AAB") + abstain(3, "single"), list("AB"))
    assert (t.winner, t.scores, t.valid, t.abstained) == ("A", base.scores, 3, 3)  # 2 of 3 valid is a majority
    assert "3 abstained" in t.explain
    empty = tally("irv", abstain(2, "ranked"), list("AB"))
    assert (empty.winner, empty.winners, empty.valid, empty.abstained) == (None, [], 0, 2)
    assert tally("plurality", [], list("AB")).winner is None


def test_tie_broken_by_option_order_is_recorded():
    t = tally("plurality", singles("ABAB"), ["B", "A", "C"])
    assert t.winners == ["B", "A"] and t.winner == "B"
    assert t.tie_break == "B and A tied on 2 votes; B wins as the earliest listed option in the question file."
    assert tally("plurality", singles("AAB"), list("AB")).tie_break is None


def test_tally_all_defaults_to_applicable_rules():
    tallies = tally_all(None, WIKI_SCHULZE, list("ABCDE"))
    assert [t.rule for t in tallies] == list(RULES_FOR_BALLOT["ranked"])
    assert all(isinstance(t, Tally) for t in tallies)
    assert [t.rule for t in tally_all(["irv", "borda"], WIKI_SCHULZE, list("ABCDE"))] == ["irv", "borda"]


@pytest.mark.parametrize(
    ("rule", "ballots", "message"),
    [
        ("condorcet", singles("A"), "unknown voting rule 'condorcet'"),
        ("borda", singles("A"), "'borda' does not apply to single ballots"),
        ("irv", singles(["yes"], "yes_no"), "'irv' does not apply to yes_no ballots"),
        ("approval", ranked((1, "AB")), "'approval' does not apply to ranked ballots"),
        (
            "plurality",
            [Ballot(participant_id="p", phase="post", type="approval", approvals=["A"])],
            "'plurality' does not apply to approval ballots",
        ),
        ("plurality", singles("A") + ranked((2, "AB"))[1:], "mix types"),
        ("plurality", singles("AA")[:1] + singles("A"), "more than one ballot"),
        ("plurality", singles("Z"), "choice 'Z' is not one of"),
        ("borda", ranked((1, "A")), "not a permutation"),
    ],
)
def test_errors(rule, ballots, message):
    with pytest.raises(ValueError, match=message):
        tally(rule, ballots, list("AB"))


def test_mixed_phases_rejected():
    pre = Ballot(participant_id="a", phase="pre", type="single", choice="A")
    post = Ballot(participant_id="b", phase="post", type="single", choice="A")
    with pytest.raises(ValueError, match="mix pre and post"):
        tally("plurality", [pre, post], ["A"])


# --- agreement with pref_voting on random profiles ---------------------------------------------------------------

N_PROFILES = 300


@pytest.fixture(scope="module")
def profiles():
    """(options, ballots, pref_voting Profile) triples from a seeded rng: 3-5 options, 5-40 voters, strict rankings.

    Option names are shuffled relative to pref_voting's candidate numbers so that agreement cannot come from
    option order and candidate order coinciding.
    """
    pv_profiles = pytest.importorskip("pref_voting.profiles")
    rng = np.random.default_rng(20240611)
    out = []
    for _ in range(N_PROFILES):
        k, n = int(rng.integers(3, 6)), int(rng.integers(5, 41))
        names = [f"opt{i}" for i in rng.permutation(k)]  # candidate c is called names[c]
        options = sorted(names)
        rankings = [tuple(int(c) for c in rng.permutation(k)) for _ in range(n)]
        ballots = [
            Ballot(participant_id=f"v{i}", phase="post", type="ranked", ranking=[names[c] for c in r])
            for i, r in enumerate(rankings)
        ]
        out.append((options, ballots, names, pv_profiles.Profile(rankings)))
    return out


def _reference(name: str):
    vm = pytest.importorskip("pref_voting.voting_methods")
    return getattr(vm, name)


@pytest.mark.parametrize(
    ("rule", "reference", "kwargs"),
    # borda "marginal" (sum of margins, affinely equal to positional points) gives the same winners as
    # "positional" but skips a ~5 s numba compile. instant_runoff_put: x wins if it wins under SOME order of
    # single eliminations among the tied-lowest, which is exactly our `winners` for irv (plain instant_runoff
    # removes all tied-lowest at once, a different rule). beat_path is pref_voting's Schulze (margins).
    [
        ("plurality", "plurality", {}),
        ("borda", "borda", {"algorithm": "marginal"}),
        ("irv", "instant_runoff_put", {}),
        ("schulze", "beat_path", {}),
    ],
)
def test_winner_sets_match_pref_voting(profiles, rule, reference, kwargs):
    method = _reference(reference)
    ties = 0
    for options, ballots, names, prof in profiles:
        t = tally(rule, ballots, options)
        expected = sorted(names[c] for c in method(prof, **kwargs))
        assert sorted(t.winners) == expected, (rule, options, [b.ranking for b in ballots])
        assert t.winner in t.winners
        if rule != "irv":  # irv's winner comes from the elimination tie-break, not from option order at the top
            assert t.winner == min(t.winners, key=options.index)
        assert (t.tie_break is None) == (len(t.winners) == 1) or rule == "irv"
        ties += len(t.winners) > 1
    assert ties >= 10, f"only {ties} tied profiles for {rule}: the comparison would not exercise ties"


def test_irv_without_elimination_ties_matches_plain_instant_runoff(profiles):
    """When no elimination tie arose, every IRV variant agrees, so our single winner is pref_voting's."""
    instant_runoff = _reference("instant_runoff")
    compared = 0
    for options, ballots, names, prof in profiles:
        t = tally("irv", ballots, options)
        if t.tie_break is None:
            assert [names[c] for c in instant_runoff(prof)] == [t.winner]
            compared += 1
    assert compared >= N_PROFILES // 2
