"""Juries: population frames, stratified random selection (sortition) and juror personas.

A plain library: it imports nothing from the other packages of the project.

    >>> from juries import load_population, draw_jury
    >>> draw = draw_jury(load_population("us_adults"), 12, stratify=["party", "age", "sex"], seed=7)
    >>> draw.jurors[0].persona.text  # doctest: +SKIP
"""

from juries.errors import JuryError
from juries.personas import Juror, Persona, plain_persona, render_persona
from juries.population import Population, load_population
from juries.sortition import Draw, allocate_seats, draw_jury, measure_representativeness

__all__ = [
    "Draw",
    "JuryError",
    "Juror",
    "Persona",
    "Population",
    "allocate_seats",
    "draw_jury",
    "load_population",
    "measure_representativeness",
    "plain_persona",
    "render_persona",
]
