"""Personas: a concrete, invented person behind a juror's attributes, for the juror's system prompt.

Everything is drawn from `numpy.random.default_rng(seed)`, so the same attributes and seed give the same person.
Attributes outside the canonical vocabulary (custom frames) fall back to neutral choices instead of failing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from juries import lexicon


@dataclass(frozen=True)
class Persona:
    name: str
    age: int
    occupation: str  # with its article: "a dental hygienist", "a retired machinist"
    location: str
    background: str  # 2-3 sentences: household, schooling, work and money
    values: str  # ideology, faith and party in the persona's own terms
    text: str  # second-person description for the system prompt


@dataclass(frozen=True)
class Juror:
    id: str
    attributes: dict[str, str]
    persona: Persona


_RETIREMENT_AGE = 67


def render_persona(attributes: dict[str, str], seed: int) -> Persona:
    """A deterministic persona consistent with `attributes` (canonical labels; missing keys are allowed)."""
    rng = np.random.default_rng(int(seed) % 2**64)  # negative seeds are valid too

    def pick(options):
        return options[int(rng.random() * len(options))]

    age = _draw_age(attributes.get("age"), rng)
    name = _draw_name(attributes, pick)
    occupation = _draw_occupation(attributes, age, pick)
    location = _draw_location(attributes.get("region"), pick, rng)

    background = [pick(lexicon.LIFE_STAGES[_life_stage(age)])]
    schooling = lexicon.EDUCATION_PHRASES.get(attributes.get("education", ""))
    money = lexicon.INCOME_PHRASES.get(attributes.get("income", ""))
    if schooling and money:
        background.append(f"{schooling}, and {money}.")
    elif schooling or money:
        background.append(f"{schooling}." if schooling else f"{money[0].upper()}{money[1:]}.")

    values = [v for v in (
        _ideology_values(attributes.get("ideology"), pick),
        _religion_values(attributes.get("religion"), pick),
        lexicon.PARTY_VALUES.get(attributes.get("party", "")),
    ) if v]

    background_text = " ".join(background)
    values_text = " ".join(values)
    text = f"You are {name}, {age}, {occupation} in {location}. {background_text} {values_text}".strip()
    return Persona(name, age, occupation, location, background_text, values_text, text)


def plain_persona(attributes: Mapping[str, str], *, labels: bool = True) -> str:
    """A juror's attributes stated plainly, one "Attribute: value" line each, as SubPOP states a respondent's
    demographics: the compact persona of the distilled ballot (`labels=False`: the values alone on one line, the
    brief one's, joined by semicolons because some values hold commas: "Some college, no degree"). Empty without
    attributes (no persona)."""
    stated = [(key, value.strip()) for key, value in attributes.items() if isinstance(value, str) and value.strip()]
    if not labels:
        return "; ".join(value for _, value in stated)
    return "\n".join(f"{key.replace('_', ' ').capitalize()}: {value}" for key, value in stated)


def _draw_age(band: str | None, rng: np.random.Generator) -> int:
    """A whole age inside the band ("30-49", "65+", "34"); 65+ thins out with age, like the population."""
    low, high = 25, 70
    if band:
        if m := re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", band):
            low, high = int(m[1]), int(m[2])
        elif m := re.fullmatch(r"\s*(\d+)\s*\+\s*", band):
            low = int(m[1])
            return low + int(rng.triangular(0, 0, 26))  # 65..90, mostly under 80
        elif band.strip().isdigit():
            return int(band)
    return low + int(rng.random() * (high - low + 1))


def _draw_name(attributes: dict[str, str], pick) -> str:
    pools = lexicon.NAME_POOLS.get(attributes.get("race", ""), lexicon.NAME_POOLS["Other"])
    sex = attributes.get("sex", "")
    religion = attributes.get("religion")
    for _ in range(20):  # re-draw the rare famous combination
        given_sex = sex if sex in ("Male", "Female") else pick(("Male", "Female"))
        pool = pick(pools)
        if religion == "Muslim" and pick((True, True, False)):
            pool = lexicon.MUSLIM_NAMES
        first = pick(pool.male if given_sex == "Male" else pool.female)
        surnames = pool.surnames
        if religion == "Jewish" and attributes.get("race") == "White" and pick((True, False)):
            surnames = lexicon.JEWISH_SURNAMES
        name = f"{first} {pick(surnames)}"
        if name not in lexicon.FAMOUS_NAMES:
            return name
    return name


def _draw_occupation(attributes: dict[str, str], age: int, pick) -> str:
    education = attributes.get("education", "")
    tier = lexicon.EDUCATION_TIER.get(education, "some college" if education else "high school")
    income = lexicon.INCOME_TIER.get(attributes.get("income", ""), "middle")
    if age <= 23 and tier in ("high school", "some college") and income != "high" and pick((True, False)):
        return f"a college student who works part-time at {pick(lexicon.STUDENT_JOBS)}"
    jobs = lexicon.OCCUPATIONS[tier][income]
    if age >= 35:  # student posts are for the young
        jobs = tuple(j for j in jobs if j not in lexicon.STUDENT_POSTS) or jobs
    job = pick(jobs)
    if age >= _RETIREMENT_AGE:
        return f"a retired {job}"
    return _with_article(job)


def _with_article(noun: str) -> str:
    vowel_sound = noun[0].lower() in "aeio" or (noun[0] == "u" and not noun.startswith(("uni", "use", "usu")))
    vowel_sound = vowel_sound or noun.startswith(("HVAC", "IT "))  # initialisms read letter by letter
    return f"{'an' if vowel_sound else 'a'} {noun}"


def _draw_location(region: str | None, pick, rng: np.random.Generator) -> str:
    places = lexicon.PLACES.get(region or "") or tuple(p for ps in lexicon.PLACES.values() for p in ps)
    city = pick(places)
    # About one American in five lives in a rural area or small town (Census 2020 urban-rural classification).
    return f"a small town near {city}" if rng.random() < 0.2 else city


def _life_stage(age: int) -> str:
    return "young" if age < 30 else "middle" if age < 50 else "older" if age < 65 else "senior"


def _ideology_values(ideology: str | None, pick) -> str | None:
    options = lexicon.IDEOLOGY_VALUES.get(ideology or "")
    return pick(options) if options else None


def _religion_values(religion: str | None, pick) -> str | None:
    """Canonical labels use the lexicon; other free labels map to the nearest tradition or name the faith."""
    if not religion:
        return None
    label = religion.strip()
    lowered = label.lower()
    if label in lexicon.RELIGION_VALUES:
        key = label
    elif any(w in lowered for w in ("atheist", "agnostic", "unaffiliated", "nothing", "none", "no religion")):
        key = "Unaffiliated"
    elif "catholic" in lowered:
        key = "Roman Catholic"
    elif any(w in lowered for w in ("protestant", "evangelical", "baptist", "methodist", "lutheran", "pentecostal")):
        key = "Protestant"
    else:
        return f"You are {label}, and your faith shapes how you see your duties to others."
    return pick(lexicon.RELIGION_VALUES[key])
