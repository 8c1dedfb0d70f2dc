"""95% intervals over a study's draws. Pure functions of numbers: no store, no models.

* Proportions (how often an option wins, how often the modal winner wins): the **Wilson score interval**. With 20
  draws a win rate is often 0 or 1, where the normal ("Wald") interval collapses to a point; Wilson's stays inside
  [0, 1] and keeps close to its nominal coverage for small n (Brown, Cai & DasGupta 2001).
* Means over draws (vote shares, pre→post shifts, shifts by group, within-draw stability): the **percentile
  bootstrap** over draws, 2,000 resamples from a seeded generator, so the same draws always give the same
  interval. Shares are bounded and their spread over few draws is often skewed; a t-interval would reach below 0
  or above 1 where the percentile bootstrap cannot. It is too narrow for very few draws (it never leaves the
  range of the values seen); with under two draws no interval is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

LEVEL = 0.95
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
BOOTSTRAP_RESAMPLES = 2000


class Proportion(BaseModel):
    """k of n, its share and Wilson 95% interval (None when n is 0)."""

    k: int
    n: int
    share: float | None
    low: float | None
    high: float | None


class Estimate(BaseModel):
    """A mean over n draws and its percentile-bootstrap 95% interval (None with fewer than two values)."""

    n: int
    mean: float | None
    low: float | None
    high: float | None


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval for k successes in n trials; None when n is 0."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return None
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low = max(0.0, centre - half) if k > 0 else 0.0  # exactly 0 at k = 0 (and 1 at k = n): no rounding noise
    high = min(1.0, centre + half) if k < n else 1.0
    return low, high


def proportion(k: int, n: int) -> Proportion:
    bounds = wilson(k, n)
    return Proportion(k=k, n=n, share=k / n if n else None, low=bounds[0] if bounds else None,
                      high=bounds[1] if bounds else None)


def bootstrap_mean(values: Sequence[float], seed: int, *, resamples: int = BOOTSTRAP_RESAMPLES,
                   level: float = LEVEL) -> Estimate:
    """The mean of `values` and its percentile-bootstrap interval (resampling the values with replacement)."""
    data = np.asarray([float(v) for v in values], dtype=float)
    if data.size == 0:
        return Estimate(n=0, mean=None, low=None, high=None)
    mean = float(data.mean())
    if data.size < 2:
        return Estimate(n=1, mean=mean, low=None, high=None)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Estimate(n=int(data.size), mean=mean, low=float(low), high=float(high))
