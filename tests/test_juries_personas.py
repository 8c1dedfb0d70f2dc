"""Personas: deterministic per seed and consistent with the juror's attributes."""

import re

import pytest

from juries import Persona, draw_jury, load_population, plain_persona, render_persona
from juries import lexicon

MARIA = {"party": "Democrat", "ideology": "Liberal", "age": "30-49", "sex": "Female", "race": "Hispanic",
         "education": "Associate's degree", "income": "$50,000-$75,000", "region": "West",
         "religion": "Roman Catholic"}
BANDS = {"18-29": (18, 29), "30-49": (30, 49), "50-64": (50, 64), "65+": (65, 100)}


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def job_of(occupation: str) -> str:
    return re.sub(r"^(a retired|an?) ", "", occupation)


def test_persona_is_deterministic_per_seed():
    assert render_persona(MARIA, 7) == render_persona(MARIA, 7)
    texts = {render_persona(MARIA, seed).text for seed in range(20)}
    assert len(texts) >= 15  # seeds vary the person


def test_persona_text_is_a_second_person_system_prompt():
    persona = render_persona(MARIA, 3)
    assert isinstance(persona, Persona)
    assert persona.text.startswith(f"You are {persona.name}, {persona.age}, {persona.occupation} in {persona.location}.")
    assert persona.background in persona.text and persona.values in persona.text
    assert 2 <= len(sentences(persona.background)) <= 3
    assert not re.search(r"\b(I|my|me)\b", persona.text)


@pytest.mark.parametrize("seed", range(12))
def test_persona_matches_the_builtin_frame_records(seed):
    people = load_population().sample(20, seed)
    for person in people:
        persona = render_persona(person, seed)
        low, high = BANDS[person["age"]]
        assert low <= persona.age <= high

        first, last = persona.name.split(" ", 1)
        pools = list(lexicon.NAME_POOLS[person["race"]]) + [lexicon.MUSLIM_NAMES]
        given = [p.male if person["sex"] == "Male" else p.female for p in pools]
        assert any(first in names for names in given), (persona.name, person)
        assert any(last in p.surnames for p in pools) or last in lexicon.JEWISH_SURNAMES

        assert persona.location.removeprefix("a small town near ") in lexicon.PLACES[person["region"]]

        if "college student" not in persona.occupation:
            tier = lexicon.EDUCATION_TIER[person["education"]]
            income = lexicon.INCOME_TIER[person["income"]]
            assert job_of(persona.occupation) in lexicon.OCCUPATIONS[tier][income], (persona.occupation, person)
        assert persona.occupation.startswith("a retired") == (persona.age >= 67)

        ideology = lexicon.IDEOLOGY_VALUES[person["ideology"]]
        assert any(v in persona.values for v in ideology)
        others = [v for k, vs in lexicon.IDEOLOGY_VALUES.items() if k != person["ideology"] for v in vs]
        assert not any(v in persona.text for v in others)
        assert lexicon.PARTY_VALUES[person["party"]] in persona.values


def test_values_follow_religion_and_ideology():
    base = {"age": "50-64", "sex": "Male", "race": "White", "party": "Republican"}
    for seed in range(10):
        secular = render_persona({**base, "religion": "Unaffiliated", "ideology": "Very conservative"}, seed)
        assert not re.search(r"church|Mass|mosque|synagogue|faith and", secular.values)
        protestant = render_persona({**base, "religion": "Protestant", "ideology": "Conservative"}, seed)
        assert re.search(r"church|Protestant", protestant.values)
        catholic = render_persona({**base, "religion": "Roman Catholic", "ideology": "Moderate"}, seed)
        assert "Catholic" in catholic.values
        liberal = render_persona({**base, "ideology": "Very liberal", "party": "Democrat"}, seed)
        assert "Democrats" in liberal.values and "Republicans" not in liberal.values


def test_occupation_tracks_education_and_income():
    def jobs(education, income):
        return {job_of(render_persona({"age": "30-49", "education": education, "income": income}, s).occupation)
                for s in range(40)}

    degree_jobs = jobs("Postgraduate", "$100,000 or more")
    no_diploma_jobs = jobs("Less than high school", "Less than $30,000")
    assert degree_jobs & {"physician", "attorney", "university professor", "pharmacist"}
    assert not degree_jobs & no_diploma_jobs


def test_missing_and_custom_attributes_do_not_fail():
    for attrs in ({}, {"age": "25-34", "religion": "Hindu", "region": "Mars"}, {"age": "41", "sex": "Nonbinary"}):
        for seed in (0, 1, -5):
            persona = render_persona(attrs, seed)
            assert persona.text.startswith("You are ") and persona.age >= 18
    assert 25 <= render_persona({"age": "25-34"}, 2).age <= 34
    assert render_persona({"age": "41"}, 2).age == 41
    assert "You are Hindu" in render_persona({"religion": "Hindu"}, 0).values


def test_jurors_of_a_draw_have_distinct_consistent_personas():
    draw = draw_jury("us_adults", 12, ["party", "age"], seed=5)
    assert len({j.persona.name for j in draw.jurors}) >= 10
    for juror in draw.jurors:
        low, high = BANDS[juror.attributes["age"]]
        assert low <= juror.persona.age <= high
        assert lexicon.PARTY_VALUES[juror.attributes["party"]] in juror.persona.text


def test_plain_persona_states_each_attribute_on_its_own_line_and_skips_empty_ones():
    text = plain_persona({"party": "Democrat", "age": "65+", "home_region": " South ", "religion": " ", "sex": None})
    assert text == "Party: Democrat\nAge: 65+\nHome region: South"
    assert plain_persona({}) == ""  # no persona message at all, as for the calibration prior
    assert plain_persona({"party": "Democrat", "age": "65+", "religion": " ", "region": " South"},
                         labels=False) == "Democrat; 65+; South"  # the brief distilled prompt's one line
    assert plain_persona({"education": "Some college, no degree", "party": "Independent"},
                         labels=False) == "Some college, no degree; Independent"  # a value's comma stays inside it
