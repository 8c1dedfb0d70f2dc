"""A population frame: weighted records over categorical attributes, the distribution juries are drawn from.

A frame is a model of the population, not a pool of volunteers: records may stand for one person or for a whole
cell (with its `weight`), and sampling is with replacement. Every column except `weight` (and an `id` column,
which identifies rather than describes) is an attribute, read as text.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import polars as pl

from juries.errors import JuryError
from juries.synthesis import synthesize_us_adults
from juries.vocabulary import order_groups

BUILTIN = {"us_adults": synthesize_us_adults}
WEIGHT = "weight"
_NOT_ATTRIBUTES = {WEIGHT, "id"}


class Population:
    """Weighted categorical records; `records` always carries a float `weight` column (1.0 when none was given)."""

    def __init__(self, records: pl.DataFrame, name: str = "custom") -> None:
        self.name = name
        self.attributes: list[str] = [c for c in records.columns if c not in _NOT_ATTRIBUTES]
        if not self.attributes:
            raise JuryError(f"population {name}: no attribute columns (only {records.columns})")
        if records.height == 0:
            raise JuryError(f"population {name}: no rows")
        self.records = _normalise(records, self.attributes, name)
        self._weights = self.records[WEIGHT].to_numpy()
        self._levels: dict[str, list[str]] = {}
        self._codes: dict[str, np.ndarray] = {}
        for attribute in self.attributes:
            column = self.records[attribute]
            self._levels[attribute] = order_groups(attribute, set(column.unique().to_list()))
            lookup = {g: i for i, g in enumerate(self._levels[attribute])}
            self._codes[attribute] = np.array([lookup[v] for v in column.to_list()], dtype=np.int64)

    def __repr__(self) -> str:
        return f"Population({self.name!r}, {self.records.height} records, attributes={self.attributes})"

    def groups(self, attribute: str) -> list[str]:
        """The attribute's group labels, canonical order first."""
        self._check_attribute(attribute)
        return list(self._levels[attribute])

    def marginal(self, attribute: str) -> dict[str, float]:
        """Weighted share of each group of `attribute` (sums to 1)."""
        self._check_attribute(attribute)
        totals = np.bincount(self._codes[attribute], weights=self._weights, minlength=len(self._levels[attribute]))
        shares = totals / totals.sum()
        return {g: float(s) for g, s in zip(self._levels[attribute], shares)}

    def sample(
        self, n: int, rng: np.random.Generator | int, where: dict[str, str] | None = None
    ) -> list[dict[str, str]]:
        """`n` whole records drawn by weight, with replacement, among those matching every `where` condition.

        Drawing whole records keeps the frame's joint distribution: the other attributes follow it conditional
        on `where` (a Democrat's ideology follows P(ideology | Democrat)).
        """
        if isinstance(rng, (int, np.integer)):
            rng = np.random.default_rng(int(rng))
        rows = pick_weighted(self._weights * self.mask(where or {}), n, rng)
        return self.rows(rows)

    def mask(self, where: dict[str, str]) -> np.ndarray:
        """0/1 array: which records satisfy every `where` condition; unknown attributes or groups raise."""
        keep = np.ones(self.records.height, dtype=float)
        for attribute, group in where.items():
            self._check_attribute(attribute, context="where")
            if group not in self._levels[attribute]:
                raise JuryError(
                    f"unknown group {group!r} for attribute {attribute!r} in where "
                    f"(groups: {', '.join(self._levels[attribute])})"
                )
            keep *= self._codes[attribute] == self._levels[attribute].index(group)
        if not (self._weights * keep).sum() > 0:
            raise JuryError(f"no records with positive weight match where={where}")
        return keep

    def rows(self, indices: np.ndarray) -> list[dict[str, str]]:
        """Attribute dicts of the records at `indices` (repeats allowed)."""
        levels = self._levels
        return [
            {a: levels[a][self._codes[a][i]] for a in self.attributes} for i in np.asarray(indices, dtype=int)
        ]

    def codes(self, attribute: str) -> np.ndarray:
        """Per-record group index into `groups(attribute)` (read-only view for samplers)."""
        self._check_attribute(attribute)
        view = self._codes[attribute].view()
        view.flags.writeable = False
        return view

    @property
    def weights(self) -> np.ndarray:
        view = self._weights.view()
        view.flags.writeable = False
        return view

    def _check_attribute(self, attribute: str, context: str = "population") -> None:
        if attribute not in self._levels:
            raise JuryError(
                f"unknown attribute {attribute!r} in {context} (frame {self.name} has: {', '.join(self.attributes)})"
            )


def pick_weighted(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` indices drawn with replacement in proportion to `weights`, by inverse CDF.

    Our own inverse CDF instead of `Generator.choice`, whose stream numpy does not promise to keep.
    """
    cdf = np.cumsum(weights, dtype=float)
    if n < 0:
        raise JuryError(f"sample size must be non-negative, got {n}")
    u = rng.random(n) * cdf[-1]
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


def _normalise(records: pl.DataFrame, attributes: list[str], name: str) -> pl.DataFrame:
    """Attributes as text without nulls, weight as finite non-negative float with a positive total."""
    for attribute in attributes:
        nulls = records[attribute].null_count()
        if nulls:
            raise JuryError(f"population {name}: column {attribute!r} has {nulls} missing values")
    if WEIGHT in records.columns:
        try:
            weight = records[WEIGHT].cast(pl.Float64, strict=True)
        except pl.exceptions.PolarsError:
            raise JuryError(f"population {name}: column 'weight' is not numeric") from None
        values = weight.to_numpy()
        if weight.null_count() or not np.isfinite(values).all() or (values < 0).any() or values.sum() <= 0:
            raise JuryError(
                f"population {name}: column 'weight' must be finite, non-negative numbers with a positive total"
            )
    else:
        weight = pl.Series(WEIGHT, np.ones(records.height))
    columns = [records[a].cast(pl.String) for a in attributes]
    return pl.DataFrame([*columns, weight.alias(WEIGHT)])


@functools.cache
def _builtin(name: str) -> Population:
    # Built once per process: a Population exposes only read-only views, so sharing it is safe.
    return Population(BUILTIN[name](), name=name)


def load_population(name_or_path: str | Path = "us_adults") -> Population:
    """A built-in frame by name ("us_adults") or a CSV / Parquet file (one row per person or per cell)."""
    if isinstance(name_or_path, str) and name_or_path in BUILTIN:
        return _builtin(name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        if path.suffix or len(path.parts) > 1:
            raise JuryError(f"population file {path}: not found")
        raise JuryError(f"unknown population {str(name_or_path)!r} (built-in: {', '.join(BUILTIN)}; or a file path)")
    suffix = path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            records = pl.read_parquet(path)
        elif suffix in {".csv", ".txt"} or suffix.endswith(".gz"):
            # Everything as text: attribute labels such as "01" or "65+" must not be parsed as numbers.
            records = pl.read_csv(path, infer_schema=False)
        else:
            raise JuryError(f"population file {path}: unsupported format {suffix or '(none)'} (use .csv or .parquet)")
    except JuryError:
        raise
    except Exception as exc:  # polars raises many types for corrupt or empty files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise JuryError(f"population file {path}: unreadable ({reason})") from None
    return Population(records, name=str(path))
