"""Fidelity metrics on answer distributions over a question's K options.

- `representativeness` R(p, q) = 1 - W1(p, q) / (K - 1), options at ordinal positions 0..K-1 (OpinionQA's metric;
  equal to 1 - scipy.stats.wasserstein_distance(range(K), range(K), p, q) / (K - 1)). With explicit `positions`
  (e.g. OpinionQA's ordinals 1, 2, 2.5, 3, 4) W1 is taken on those positions and divided by their range.
- `total_variation` TV(p, q) = 1/2 * sum |p - q|: the metric for nominal questions (options without order).
- `steerability`: for a pair of groups (A, B) on one question, R(sim A, human A) - R(sim A, human B): positive when
  A-conditioned jurors look more like A than like B.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_dist(p: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(p, dtype=float)
    if arr.ndim != 1 or arr.size < 1:
        raise ValueError(f"{name} must be a 1-D array of option weights")
    if np.any(arr < 0) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has a negative or non-finite weight: {arr.tolist()}")
    total = arr.sum()
    if total <= 0:
        raise ValueError(f"{name} sums to 0")
    return arr / total


def normalise(p: Sequence[float] | np.ndarray) -> np.ndarray:
    return _as_dist(p, "distribution")


def wasserstein_ordinal(p, q, positions: Sequence[float] | None = None) -> float:
    """W1 between two distributions over the same ordered options (normalised first).

    Without `positions` the options sit at 0..K-1 and W1 = sum_k |P_k - Q_k| over the cumulative sums.
    """
    p = _as_dist(p, "p")
    q = _as_dist(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p has {p.size} options, q has {q.size}")
    gaps = np.ones(p.size - 1) if positions is None else np.diff(np.asarray(positions, dtype=float))
    if gaps.size != p.size - 1:
        raise ValueError(f"{len(positions)} positions for {p.size} options")
    if np.any(gaps < 0):
        raise ValueError(f"positions must be non-decreasing: {list(positions)}")
    cdf_gap = np.abs(np.cumsum(p)[:-1] - np.cumsum(q)[:-1])
    return float(np.sum(cdf_gap * gaps))


def representativeness(p, q, positions: Sequence[float] | None = None) -> float:
    """R = 1 - W1(p, q) / (K - 1) (or / the span of `positions`); 1 means identical, 0 means opposite extremes."""
    k = len(p)
    if k < 2:
        raise ValueError("R needs at least 2 options")
    span = (k - 1) if positions is None else float(max(positions) - min(positions))
    if span <= 0:
        raise ValueError("R is undefined when every option sits at the same position (a nominal question): use TV")
    return 1.0 - wasserstein_ordinal(p, q, positions) / span


def total_variation(p, q) -> float:
    p = _as_dist(p, "p")
    q = _as_dist(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p has {p.size} options, q has {q.size}")
    return float(0.5 * np.abs(p - q).sum())


def uniform(k: int) -> np.ndarray:
    return np.full(k, 1.0 / k)


def steerability(sim_a, human_a, human_b, positions: Sequence[float] | None = None) -> float:
    """R(sim_a, human_a) - R(sim_a, human_b): how much closer group A's simulated jurors are to A than to B."""
    return representativeness(sim_a, human_a, positions) - representativeness(sim_a, human_b, positions)


def invalid_rate(n_invalid: int, n_total: int) -> float | None:
    """Share of ballots that were invalid or refused (abstentions after re-asks); None when nothing was cast."""
    if n_total <= 0:
        return None
    return n_invalid / n_total


def mean_or_none(values) -> float | None:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return float(np.mean(vals)) if vals else None
