"""The population frame: built-in US adults figures and correlations, conditional sampling, custom frames."""

import numpy as np
import polars as pl
import pytest
from scipy.stats import chisquare

from juries import JuryError, Population, load_population
from juries.synthesis import synthesize_us_adults

# Canonical labels, copied from shared/data/README.md (FORMAT 1), so a typo in the package cannot pass.
README_GROUPS = {
    "party": {"Democrat", "Republican", "Independent", "Other"},
    "ideology": {"Very liberal", "Liberal", "Moderate", "Conservative", "Very conservative"},
    "age": {"18-29", "30-49", "50-64", "65+"},
    "sex": {"Male", "Female"},
    "race": {"White", "Black", "Asian", "Hispanic", "Other"},
    "education": {"Less than high school", "High school graduate", "Some college, no degree", "Associate's degree",
                  "College graduate/some postgrad", "Postgraduate"},
    "income": {"Less than $30,000", "$30,000-$50,000", "$50,000-$75,000", "$75,000-$100,000", "$100,000 or more"},
    "region": {"Northeast", "Midwest", "South", "West"},
}

# Published figures (rounded), typed in here from the sources rather than imported from the package.
CITED = {
    "sex": {"Female": 0.51},  # ACS 2022 S0101, adults
    "age": {"18-29": 0.205, "65+": 0.22},  # ACS 2022 S0101
    "race": {"White": 0.615, "Black": 0.12, "Hispanic": 0.17, "Asian": 0.06},  # ACS 2022 B03002
    "region": {"South": 0.387, "Northeast": 0.171},  # Census Vintage 2022 estimates
    "education": {"Postgraduate": 0.135, "Less than high school": 0.105},  # ACS 2022 S1501
    "religion": {"Protestant": 0.405, "Roman Catholic": 0.19, "Unaffiliated": 0.29},  # Pew RLS 2023-24
    "party": {"Democrat": 0.31, "Republican": 0.29},  # Pew NPORS 2024
    "ideology": {"Moderate": 0.37, "Very conservative": 0.11},  # Gallup 2023
}


@pytest.fixture(scope="module")
def us():
    return load_population("us_adults")


def conditional(pop: Population, attribute: str, where: dict[str, str]) -> dict[str, float]:
    frame = pop.records
    for key, value in where.items():
        frame = frame.filter(pl.col(key) == value)
    totals = frame.group_by(attribute).agg(pl.col("weight").sum())
    total = totals["weight"].sum()
    return {g: w / total for g, w in totals.iter_rows()}


def test_builtin_frame_uses_canonical_labels(us):
    assert us.attributes == ["party", "ideology", "age", "sex", "race", "education", "income", "region", "religion"]
    for attribute, groups in README_GROUPS.items():
        assert set(us.groups(attribute)) == groups, attribute
    assert {"Protestant", "Roman Catholic", "Unaffiliated", "Jewish", "Muslim"} <= set(us.groups("religion"))
    assert us.records.height == 20_000


def test_builtin_marginals_match_cited_figures(us):
    for attribute, figures in CITED.items():
        marginal = us.marginal(attribute)
        assert sum(marginal.values()) == pytest.approx(1.0)
        for group, share in figures.items():
            assert marginal[group] == pytest.approx(share, abs=0.005), (attribute, group)


def test_party_and_ideology_are_correlated(us):
    def left(party):
        p = conditional(us, "ideology", {"party": party})
        return p.get("Liberal", 0) + p.get("Very liberal", 0)

    def right(party):
        p = conditional(us, "ideology", {"party": party})
        return p.get("Conservative", 0) + p.get("Very conservative", 0)

    assert left("Democrat") > 0.4 and left("Democrat") > 5 * left("Republican")
    assert right("Republican") > 0.6 and right("Republican") > 4 * right("Democrat")
    assert conditional(us, "ideology", {"party": "Independent"})["Moderate"] > 0.4


def test_other_published_correlations_hold(us):
    assert conditional(us, "party", {"race": "Black"})["Democrat"] > 0.5
    assert conditional(us, "party", {"race": "White"})["Republican"] > conditional(us, "party", {"race": "White"})[
        "Democrat"]
    rich = "$100,000 or more"
    assert conditional(us, "income", {"education": "Postgraduate"})[rich] > 3 * conditional(
        us, "income", {"education": "Less than high school"})[rich]
    assert conditional(us, "religion", {"age": "18-29"})["Unaffiliated"] > 1.5 * conditional(
        us, "religion", {"age": "65+"})["Unaffiliated"]
    assert conditional(us, "region", {"race": "Black"})["South"] > 0.5
    assert conditional(us, "sex", {"age": "65+"})["Female"] > conditional(us, "sex", {"age": "18-29"})["Female"]


def test_builtin_frame_is_deterministic():
    assert synthesize_us_adults(records=2_000).equals(synthesize_us_adults(records=2_000))
    assert not synthesize_us_adults(records=2_000, seed=1).equals(synthesize_us_adults(records=2_000, seed=2))


def test_conditional_sampling_follows_the_frame(us):
    where = {"party": "Democrat"}
    people = us.sample(8_000, np.random.default_rng(5), where=where)
    assert len(people) == 8_000
    assert all(p["party"] == "Democrat" for p in people)
    for attribute in ("ideology", "race", "education"):
        expected = conditional(us, attribute, where)
        groups = sorted(expected)
        observed = np.array([sum(p[attribute] == g for p in people) for g in groups])
        tv = 0.5 * sum(abs(o / len(people) - expected[g]) for o, g in zip(observed, groups))
        assert tv < 0.03, attribute
        assert chisquare(observed, [expected[g] * len(people) for g in groups]).pvalue > 1e-4, attribute
    # ...and differs from the unconditional frame, so the test above has teeth.
    liberal = np.mean([p["ideology"] in ("Liberal", "Very liberal") for p in people])
    assert liberal > us.marginal("ideology")["Liberal"] + us.marginal("ideology")["Very liberal"] + 0.15


def test_sampling_is_reproducible(us):
    assert us.sample(20, 3) == us.sample(20, np.random.default_rng(3))
    assert us.sample(20, 3) != us.sample(20, 4)
    two = us.sample(50, 1, where={"sex": "Female", "age": "65+"})
    assert all(p["sex"] == "Female" and p["age"] == "65+" for p in two)


@pytest.mark.parametrize(
    ("where", "named"),
    [({"partty": "Democrat"}, "partty"), ({"party": "Whig"}, "Whig"), ({"region": "south"}, "south")],
)
def test_bad_where_names_the_problem(us, where, named):
    with pytest.raises(JuryError, match=named):
        us.sample(3, 0, where=where)


def test_custom_csv_per_person(tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("id,zone,age\n1,01,65+\n2,01,18-29\n3,02,18-29\n4,01,30-49\n")
    pop = load_population(str(path))
    assert pop.attributes == ["zone", "age"]  # `id` identifies, it does not describe
    assert pop.groups("zone") == ["01", "02"]  # labels stay text, leading zero kept
    assert pop.groups("age") == ["18-29", "30-49", "65+"]  # canonical order
    assert pop.marginal("zone") == pytest.approx({"01": 0.75, "02": 0.25})
    assert pop.records["weight"].to_list() == [1.0] * 4


def test_custom_csv_per_cell_with_weights(tmp_path):
    path = tmp_path / "cells.csv"
    path.write_text("party,sex,weight\nDemocrat,Female,30\nDemocrat,Male,20\nRepublican,Male,50\n")
    pop = load_population(path)
    assert pop.marginal("party") == pytest.approx({"Democrat": 0.5, "Republican": 0.5})
    assert pop.marginal("sex") == pytest.approx({"Male": 0.7, "Female": 0.3})
    women = pop.sample(200, 0, where={"sex": "Female"})
    assert {p["party"] for p in women} == {"Democrat"}


def test_custom_parquet(tmp_path):
    path = tmp_path / "frame.parquet"
    pl.DataFrame({"region": ["West", "South", "South"], "income": [1, 2, 2], "weight": [2.0, 1.0, 1.0]}).write_parquet(
        path)
    pop = load_population(str(path))
    assert pop.marginal("region") == pytest.approx({"South": 0.5, "West": 0.5})
    assert pop.groups("income") == ["1", "2"]
    assert pop.sample(5, 0, where={"income": "1"}) == [{"region": "West", "income": "1"}] * 5


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "not found"),
        ("empty.csv", "", "unreadable"),
        ("onlyweight.csv", "weight\n1\n2\n", "no attribute columns"),
        ("header.csv", "party,weight\n", "no rows"),
        ("textweight.csv", "party,weight\nDemocrat,heavy\n", "'weight' is not numeric"),
        ("negweight.csv", "party,weight\nDemocrat,-1\nRepublican,3\n", "'weight' must be"),
        ("nulls.csv", "party,sex\nDemocrat,\nRepublican,Male\n", "'sex' has 1 missing"),
        ("frame.xlsx", "party\nDemocrat\n", "unsupported format"),
        ("broken.parquet", "this is not parquet", "unreadable"),
    ],
)
def test_bad_frames_raise_one_line_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(JuryError, match=message) as caught:
        load_population(str(path))
    assert name in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_builtin_name():
    with pytest.raises(JuryError, match="unknown population 'uk_adults'"):
        load_population("uk_adults")
