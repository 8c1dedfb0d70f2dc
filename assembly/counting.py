"""Counting a phase's ballots: votes per option, and tallies under every rule of the question file with their
expected results over redraws of the votes (assembly.stability). The full graph and the distilled mode count the
same way through these functions."""

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


def tally_phase(ballots: Sequence[Ballot], options: list[str], rules: Sequence[str] | None, *,
                seed: int) -> list[dict]:
    """Tally `ballots` under every rule (the first decides): each tally as a dict with its expected scores, win
    probabilities and stability merged in (what the run records as a `Tallied` event)."""
    results = tally_all(rules, list(ballots), options)
    expected = expected_results(ballots, options, rules, seed=seed)
    return [{**t.model_dump(mode="json"), **expected.get(t.rule, {})} for t in results]
