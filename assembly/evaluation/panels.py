"""Seating the panels: per (attribute, group) of the survey, N jurors drawn from the population frame conditioned on
the group, each persona rendered with its own seed; plus the whole-population panel ("ignore persona"). A panel is
drawn once and sits for every question, like a real jury."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from assembly.evaluation.config import EvalConfig
from assembly.evaluation.survey import OVERALL, Survey
from assembly.seeds import seed_for


@dataclass
class Juror:
    id: str
    attributes: dict[str, str]
    persona: str
    seed: int


class PanelError(Exception):
    """A group cannot be seated (the population frame has no such group)."""


def seat_panel(
    population,
    n: int,
    *,
    where: dict[str, str] | None,
    seed: int,
    label: str,
    persona_fn: Callable[[dict[str, str], int], str],
) -> list[Juror]:
    """Draw n jurors (conditioned on `where`) and render their personas, each with its own seed."""
    rng = np.random.default_rng(seed)
    try:
        records = population.sample(n, rng, where=where)
    except Exception as exc:  # juries.JuryError and friends: the group is not in the frame
        raise PanelError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    jurors = []
    for i, attrs in enumerate(records):
        attrs = dict(attrs)
        persona_seed = seed_for(seed, label, i)
        jurors.append(Juror(f"{label}#{i + 1}", attrs, persona_fn(attrs, persona_seed), persona_seed))
    return jurors


def seat_panels(survey: Survey, population, config: EvalConfig,
                persona_fn: Callable[[dict[str, str], int], str]) -> tuple[dict[str, list[Juror]], dict[str, str]]:
    """Every panel the evaluation seats, by label ("attribute=group", and "population" for the ignore-persona
    baseline), and the groups that could not be seated ("attribute=group" -> why)."""
    n = config.jurors_per_group
    attributes = config.attributes or [a for a in survey.attributes() if a != OVERALL[0]]
    groups: list[tuple[str, str]] = []
    for q in survey:
        for key in q.distributions:
            if key[0] in attributes and key != OVERALL and key not in groups and (
                    config.groups is None or key[1] in config.groups):
                groups.append(key)
    groups.sort(key=lambda k: (attributes.index(k[0]), _group_order(*k)))

    panels: dict[str, list[Juror]] = {}
    skipped: dict[str, str] = {}
    for attribute, group in groups:
        label = f"{attribute}={group}"
        try:
            panels[label] = seat_panel(population, n, where={attribute: group}, seed=seed_for(config.seed, label),
                                       label=label, persona_fn=persona_fn)
        except PanelError as exc:
            skipped[label] = str(exc)
    if config.ignore_persona:
        panels["population"] = seat_panel(population, n, where=None, seed=seed_for(config.seed, "population"),
                                          label="population", persona_fn=persona_fn)
    return panels, skipped


def _group_order(attribute: str, group: str) -> tuple[int, str]:
    try:
        from juries.vocabulary import CANONICAL_GROUPS

        canon = CANONICAL_GROUPS.get(attribute, ())
    except ImportError:  # pragma: no cover - juries ships with the package
        canon = ()
    return (canon.index(group) if group in canon else len(canon), group)


def panel_key(label: str) -> tuple[str, str]:
    """Panel label -> (attribute, group); the baselines are ("population", "all") and ("no-persona", "all")."""
    attribute, sep, group = label.partition("=")
    return (attribute, group) if sep else (label, "all")
