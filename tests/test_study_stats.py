"""A study's statistics: Wilson intervals against published values and scipy, the seeded bootstrap, and the
summary of synthetic draws."""

from __future__ import annotations

import pytest

from assembly.config import parse_spec
from assembly.study.intervals import bootstrap_mean, proportion, wilson
from assembly.study.sources import StudyQuestion
from assembly.study.summary import NO_WINNER, DrawOutcome, modal_winner, summarise


# Wilson score intervals, 95%, as R's binom::binom.wilson and Brown, Cai & DasGupta (2001) give them.
@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (0, 10, 0.0, 0.2775328),
    (1, 10, 0.01787621, 0.4041500),
    (5, 10, 0.2365931, 0.7634069),
    (10, 10, 0.7224672, 1.0),
    (7, 20, 0.1811918, 0.5671457),
])
def test_wilson_matches_published_values(k, n, low, high):
    got = wilson(k, n)
    assert got == pytest.approx((low, high), abs=1e-6)


def test_wilson_matches_scipy_on_a_grid():
    stats = pytest.importorskip("scipy.stats")
    for n in (1, 2, 3, 7, 20, 63):
        for k in range(n + 1):
            ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
            assert wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9), (k, n)


def test_wilson_edges():
    assert wilson(0, 0) is None
    assert proportion(0, 0).share is None and proportion(0, 0).low is None
    low, high = wilson(20, 20)
    assert high == 1.0 and 0 < low < 1
    with pytest.raises(ValueError):
        wilson(3, 2)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = [0.1, 0.5, 0.2, 0.4, 0.3, 0.6, 0.2]
    a, b = bootstrap_mean(values, seed=3), bootstrap_mean(values, seed=3)
    assert a == b
    assert a.n == 7 and a.mean == pytest.approx(sum(values) / 7)
    assert min(values) <= a.low < a.mean < a.high <= max(values)
    assert bootstrap_mean(values, seed=4) != a  # another seed, other resamples
    constant = bootstrap_mean([0.25] * 5, seed=1)
    assert (constant.low, constant.mean, constant.high) == pytest.approx((0.25, 0.25, 0.25))
    assert bootstrap_mean([0.3], seed=1).low is None  # one draw: no interval
    assert bootstrap_mean([], seed=1).mean is None


def test_modal_winner_breaks_ties_by_option_order():
    assert modal_winner(["B", "A", "B", "A", None], ["A", "B"]) == "A"
    assert modal_winner(["B", "B", "A"], ["A", "B"]) == "B"
    assert modal_winner([None, None], ["A", "B"]) is None


def _question() -> StudyQuestion:
    spec = parse_spec({"question": "Q?", "ballot": {"type": "single", "options": ["A", "B"],
                                                     "rules": ["plurality", "majority"]},
                       "jury": {"size": 4, "stratify": ["party"]}})
    return StudyQuestion(key="q1", spec=spec, source="q.yaml")


def test_summary_of_synthetic_draws():
    draws = [
        DrawOutcome("q1", 1, "r1", "completed", {"plurality": "A", "majority": "A"}, 0.9, {"A": 0.5, "B": 0.5},
                    {"A": 0.75, "B": 0.25}, {("party", "Democrat"): {"A": 0.5, "B": -0.5},
                                             ("sex", "Female"): {"A": 0.0, "B": 0.0}}),
        DrawOutcome("q1", 2, "r2", "completed", {"plurality": "A", "majority": None}, 0.6, {"A": 0.25, "B": 0.75},
                    {"A": 0.5, "B": 0.5}, {("party", "Democrat"): {"A": 0.0, "B": 0.0}}),
        DrawOutcome("q1", 3, "r3", "completed", {"plurality": "B", "majority": "B"}, 0.7, {"A": 0.5, "B": 0.5},
                    {"A": 0.25, "B": 0.75}),
        DrawOutcome("q1", 4, "r4", "failed"),
    ]
    summary = summarise([_question()], draws, draws=5)
    assert (summary.runs, summary.completed, summary.not_completed) == (5, 3, 2)
    q = summary.questions[0]
    rates = {(w.rule, w.option): w for w in q.win_rates}
    assert (rates["plurality", "A"].k, rates["plurality", "A"].n) == (2, 3)
    assert rates["plurality", "A"].share == pytest.approx(2 / 3)
    assert (rates["plurality", "A"].low, rates["plurality", "A"].high) == pytest.approx(wilson(2, 3))
    assert rates["majority", NO_WINNER].k == 1 and ("plurality", NO_WINNER) not in rates
    assert q.modal_winner == "A" and (q.modal_agreement.k, q.modal_agreement.n) == (2, 3)
    assert q.stability_within.mean == pytest.approx((0.9 + 0.6 + 0.7) / 3)
    shares = {s.option: s for s in q.shares}
    assert shares["A"].pre.mean == pytest.approx(1.25 / 3) and shares["A"].post.mean == pytest.approx(0.5)
    assert shares["A"].shift.mean == pytest.approx((0.25 + 0.25 - 0.25) / 3)
    groups = {(g.attribute, g.group, g.option): g for g in q.group_shifts}
    assert set(groups) == {("party", "Democrat", "A"), ("party", "Democrat", "B")}  # sex is not stratified
    assert groups["party", "Democrat", "A"].mean == pytest.approx(0.25) and groups["party", "Democrat", "A"].n == 2
    assert summary.model_dump(mode="json")["methods"]["win_rates"].startswith("Wilson")
