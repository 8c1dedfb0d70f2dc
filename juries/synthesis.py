"""Synthesize the built-in "us_adults" frame: weighted micro-records from the tables in `figures`.

Each record is drawn attribute by attribute from a conditional table (age -> sex, race -> region, education ->
income, religion -> party -> ideology, ...), so the attributes are correlated the way the cited cross-tabs are.
The weights are then raked (iterative proportional fitting) to every published marginal, which fixes the totals
without touching the odds ratios between attributes.

Uniform draws are turned into categories by our own inverse CDF rather than `Generator.choice`, so the frame
stays identical across numpy versions.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from juries import figures
from juries.vocabulary import CANONICAL_GROUPS

RECORDS = 20_000
SEED = 20_240_601
_RAKE_ROUNDS = 200
_RAKE_TOLERANCE = 1e-9


def _matrix(attribute: str, parent: str, table: figures.Table, default: float) -> np.ndarray:
    """(parent groups x attribute groups) array from a nested dict; missing cells take `default`."""
    rows = CANONICAL_GROUPS[parent]
    cols = CANONICAL_GROUPS[attribute]
    return np.array([[table.get(r, {}).get(c, default) for c in cols] for r in rows], dtype=float)


def _draw(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One category index per row of a (records x groups) probability array."""
    cdf = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(len(probs))[:, None]
    return np.minimum((u >= cdf).sum(axis=1), probs.shape[1] - 1)


def _conditional(
    codes: dict[str, np.ndarray],
    attribute: str,
    base: tuple[str, figures.Table],
    factors: list[tuple[str, figures.Table]] = (),
) -> np.ndarray:
    """Per-record probabilities: the base table row for the record's parent, times each factor table's row."""
    parent, table = base
    probs = _matrix(attribute, parent, table, 0.0)[codes[parent]]
    for other, factor in factors:
        probs = probs * _matrix(attribute, other, factor, 1.0)[codes[other]]
    return probs


def _rake(codes: dict[str, np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Iterative proportional fitting of `weights` to `figures.MARGINALS`."""
    targets = {
        a: np.array([figures.MARGINALS[a][g] for g in CANONICAL_GROUPS[a]]) for a in figures.MARGINALS
    }
    for _ in range(_RAKE_ROUNDS):
        worst = 0.0
        for attribute, target in targets.items():
            current = np.bincount(codes[attribute], weights=weights, minlength=len(target)) / weights.sum()
            worst = max(worst, float(np.abs(current - target).max()))
            weights = weights * (target / current)[codes[attribute]]
        if worst < _RAKE_TOLERANCE:
            break
    return weights * len(weights) / weights.sum()


def synthesize_us_adults(records: int = RECORDS, seed: int = SEED) -> pl.DataFrame:
    """The built-in frame: one row per synthetic adult, canonical attribute columns and a `weight` (mean 1)."""
    rng = np.random.default_rng(seed)
    n = records
    codes: dict[str, np.ndarray] = {}
    age = figures.MARGINALS["age"]
    codes["age"] = _draw(np.tile([age[g] for g in CANONICAL_GROUPS["age"]], (n, 1)), rng)
    codes["sex"] = _draw(_conditional(codes, "sex", ("age", figures.SEX_BY_AGE)), rng)
    codes["race"] = _draw(_conditional(codes, "race", ("age", figures.RACE_BY_AGE)), rng)
    codes["region"] = _draw(_conditional(codes, "region", ("race", figures.REGION_BY_RACE)), rng)
    codes["education"] = _draw(
        _conditional(
            codes, "education", ("age", figures.EDUCATION_BY_AGE), [("race", figures.EDUCATION_FACTORS_BY_RACE)]
        ),
        rng,
    )
    codes["income"] = _draw(
        _conditional(
            codes, "income", ("education", figures.INCOME_BY_EDUCATION), [("age", figures.INCOME_FACTORS_BY_AGE)]
        ),
        rng,
    )
    codes["religion"] = _draw(
        _conditional(
            codes, "religion", ("race", figures.RELIGION_BY_RACE), [("age", figures.RELIGION_FACTORS_BY_AGE)]
        ),
        rng,
    )
    codes["party"] = _draw(
        _conditional(
            codes,
            "party",
            ("race", figures.PARTY_BY_RACE),
            [
                ("age", figures.PARTY_FACTORS_BY_AGE),
                ("education", figures.PARTY_FACTORS_BY_EDUCATION),
                ("religion", figures.PARTY_FACTORS_BY_RELIGION),
            ],
        ),
        rng,
    )
    codes["ideology"] = _draw(
        _conditional(
            codes,
            "ideology",
            ("party", figures.IDEOLOGY_BY_PARTY),
            [("religion", figures.IDEOLOGY_FACTORS_BY_RELIGION)],
        ),
        rng,
    )
    weights = _rake(codes, np.ones(n))
    columns = {
        a: pl.Series(a, np.array(CANONICAL_GROUPS[a], dtype=object)[codes[a]], dtype=pl.String)
        for a in CANONICAL_GROUPS
    }
    return pl.DataFrame({**columns, "weight": weights})
