"""Stratified selection: largest-remainder targets, exact quotas, seeds, representativeness, infeasible quotas."""

from collections import Counter

import polars as pl
import pytest

from juries import Draw, JuryError, Population, allocate_seats, draw_jury, load_population, measure_representativeness


@pytest.fixture(scope="module")
def us():
    return load_population("us_adults")


def counts(draw: Draw, attribute: str) -> dict[str, int]:
    return dict(Counter(j.attributes[attribute] for j in draw.jurors))


def nonzero(targets: dict[str, int]) -> dict[str, int]:
    return {g: n for g, n in targets.items() if n}


def small_frame() -> Population:
    # party shares 0.5 / 0.4 / 0.1; sex 50/50 within every party.
    return Population(pl.DataFrame({
        "party": ["Democrat", "Democrat", "Republican", "Republican", "Independent", "Independent"],
        "sex": ["Male", "Female"] * 3,
        "weight": [25, 25, 20, 20, 5, 5],
    }))


def test_largest_remainder_by_hand():
    # 4 x (.45, .35, .20) = 1.8, 1.4, 0.8: floors 1, 1, 0; the two spare seats go to remainders .8 (A) and .8 (C).
    assert allocate_seats({"A": 0.45, "B": 0.35, "C": 0.20}, 4) == {"A": 2, "B": 1, "C": 1}
    # 7 x (.52, .31, .17) = 3.64, 2.17, 1.19: floors 3, 2, 1; one spare seat, to A (.64).
    assert allocate_seats({"A": 0.52, "B": 0.31, "C": 0.17}, 7) == {"A": 4, "B": 2, "C": 1}
    # Exact tie in remainder (.5 each): the larger share wins.
    assert allocate_seats({"A": 0.25, "B": 0.75}, 2) == {"A": 0, "B": 2}
    assert sum(allocate_seats({"A": 1, "B": 1, "C": 1}, 10).values()) == 10


def test_targets_on_a_small_frame_by_hand():
    # 3 seats x (.5, .4, .1) = 1.5, 1.2, 0.3: floors 1, 1, 0; the spare seat to Democrat (remainder .5).
    draw = draw_jury(small_frame(), 3, ["party"], seed=1)
    assert draw.targets == {"party": {"Democrat": 2, "Republican": 1, "Independent": 0}}
    assert counts(draw, "party") == {"Democrat": 2, "Republican": 1}
    # 5 seats: 2.5, 2.0, 0.5 -> 2, 2, 0; spare seat: remainders tie at .5, the larger share (Democrat) wins.
    assert draw_jury(small_frame(), 5, ["party"], seed=1).targets["party"] == {
        "Democrat": 3, "Republican": 2, "Independent": 0}


@pytest.mark.parametrize(
    ("size", "stratify"),
    [(12, ["party"]), (12, ["party", "age", "sex", "race"]), (30, ["ideology", "education", "region"]),
     (12, ["party", "ideology", "age", "sex", "race", "education", "income", "region", "religion"])],
)
def test_stratified_draw_meets_every_target(us, size, stratify):
    draw = draw_jury(us, size, stratify, seed=4)
    assert len(draw.jurors) == size and draw.stratify == stratify
    for attribute in stratify:
        assert sum(draw.targets[attribute].values()) == size
        assert draw.targets[attribute] == allocate_seats(us.marginal(attribute), size)
        assert counts(draw, attribute) == nonzero(draw.targets[attribute]), attribute


def test_quotas_are_met_exactly(us):
    quotas = {"party": {"Democrat": 4, "Republican": 4, "Independent": 3, "Other": 1},
              "sex": {"Female": 8, "Male": 4}}
    for seed in range(3):
        draw = draw_jury(us, 12, ["party", "age", "race"], quotas=quotas, seed=seed)
        assert draw.stratify == ["party", "age", "race", "sex"]  # a quota stratifies its attribute
        assert counts(draw, "party") == quotas["party"]
        assert counts(draw, "sex") == quotas["sex"]
        assert counts(draw, "age") == nonzero(allocate_seats(us.marginal("age"), 12))


def test_same_seed_same_jury_and_different_seed_different_jury(us):
    def fingerprint(draw):
        return [(j.id, j.attributes, j.persona.text) for j in draw.jurors]

    first = draw_jury(us, 12, ["party", "age"], seed=42)
    assert fingerprint(first) == fingerprint(draw_jury(us, 12, ["party", "age"], seed=42))
    others = [fingerprint(draw_jury(us, 12, ["party", "age"], seed=s)) for s in range(5)]
    assert sum(f != fingerprint(first) for f in others) == 5
    assert first.seed == 42
    assert [j.id for j in first.jurors] == [f"juror-{i:02d}" for i in range(1, 13)]


def test_unstratified_attributes_follow_the_frame(us):
    # Stratified on party only: the Democrats drawn should carry the frame's P(ideology | Democrat).
    ideologies = Counter()
    for seed in range(30):
        for juror in draw_jury(us, 40, ["party"], seed=seed).jurors:
            if juror.attributes["party"] == "Democrat":
                ideologies[juror.attributes["ideology"]] += 1
    dems = us.records.filter(pl.col("party") == "Democrat")
    expected = {g: w / dems["weight"].sum() for g, w in dems.group_by("ideology").agg(pl.col("weight").sum()).rows()}
    n = sum(ideologies.values())
    assert n == 30 * allocate_seats(us.marginal("party"), 40)["Democrat"]
    tv = 0.5 * sum(abs(ideologies[g] / n - p) for g, p in expected.items())
    assert tv < 0.06


def test_representativeness_on_a_hand_made_case():
    pop = small_frame()  # party .5/.4/.1, sex .5/.5
    jurors = [{"party": "Democrat", "sex": "Male"}] * 3 + [{"party": "Independent", "sex": "Female"}]
    # party: jury .75/0/.25 vs .5/.4/.1 -> TV = (.25 + .4 + .15) / 2 = .4; sex: .75/.25 vs .5/.5 -> TV = .25.
    assert measure_representativeness(pop, jurors) == pytest.approx({"party": 0.6, "sex": 0.75})

    draw = draw_jury(pop, 4, ["party"], quotas={"sex": {"Male": 3, "Female": 1}}, seed=0)
    # party targets 2, 1.6, .4 -> 2, 2, 0: jury .5/.5/0 -> TV = (0 + .1 + .1) / 2 = .1.
    assert draw.representativeness == pytest.approx({"party": 0.9, "sex": 0.75})
    assert draw.overall == pytest.approx((0.9 + 0.75) / 2)


def test_overall_averages_only_stratified_attributes(us):
    draw = draw_jury(us, 12, ["party", "sex"], seed=3)
    assert set(draw.representativeness) == set(us.attributes)
    assert draw.overall == pytest.approx((draw.representativeness["party"] + draw.representativeness["sex"]) / 2)
    assert all(0.0 <= v <= 1.0 for v in draw.representativeness.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quotas": {"party": {"Democrat": 2, "Republican": 2}}}, r"quota for 'party': seats sum to 4.*size is 5"),
        ({"quotas": {"party": {"Democrat": 4, "Whig": 1}}}, "unknown group 'Whig'"),
        ({"quotas": {"party": {"Democrat": 6, "Republican": -1}}}, "seats for 'Republican' must be"),
        ({"quotas": {"colour": {"red": 5}}}, "unknown attribute 'colour'"),
        ({"stratify": ["partyy"]}, "unknown attribute 'partyy'"),
        ({"size": 0}, "jury size must be a positive integer"),
        ({"seed": "7"}, "seed must be an integer"),
    ],
)
def test_invalid_requests_raise_one_line_errors(kwargs, message):
    args = {"population": small_frame(), "size": 5, "stratify": ["party"], **kwargs}
    with pytest.raises(JuryError, match=message) as caught:
        draw_jury(**args)
    assert "\n" not in str(caught.value)


def test_quotas_that_cannot_hold_together_raise():
    # Every Republican in this frame is male: two Republicans and two women cannot make a jury of two.
    frame = Population(pl.DataFrame({"party": ["Republican", "Democrat", "Democrat"],
                                     "sex": ["Male", "Male", "Female"]}))
    with pytest.raises(JuryError, match="no way found to meet these targets"):
        draw_jury(frame, 2, ["party", "sex"], quotas={"party": {"Republican": 2}, "sex": {"Female": 2}})
    # A group with no weight cannot take a seat.
    zero = Population(pl.DataFrame({"party": ["Republican", "Democrat"], "weight": [0.0, 1.0]}))
    with pytest.raises(JuryError, match="'Republican' has no records with positive weight"):
        draw_jury(zero, 2, ["party"], quotas={"party": {"Republican": 1, "Democrat": 1}})


def test_draw_accepts_a_frame_name_and_no_strata():
    draw = draw_jury("us_adults", 3, [], seed=9)
    assert len(draw.jurors) == 3 and draw.targets == {} and draw.overall == 1.0
    assert all(set(j.attributes) == set(load_population().attributes) for j in draw.jurors)
