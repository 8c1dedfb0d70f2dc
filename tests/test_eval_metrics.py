"""Fidelity metrics against hand-computed cases."""

import math

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from assembly.evaluation import metrics as M


def test_w1_hand_computed_three_options():
    # p = (1, 0, 0), q = (0, 0, 1): all mass moves 2 positions -> W1 = 2, R = 1 - 2/2 = 0
    assert M.wasserstein_ordinal([1, 0, 0], [0, 0, 1]) == pytest.approx(2.0)
    assert M.representativeness([1, 0, 0], [0, 0, 1]) == pytest.approx(0.0)
    # p = (.5, .5, 0), q = (0, .5, .5): cdfs (.5, 1) vs (0, .5) -> W1 = .5 + .5 = 1, R = 0.5
    assert M.wasserstein_ordinal([0.5, 0.5, 0], [0, 0.5, 0.5]) == pytest.approx(1.0)
    assert M.representativeness([0.5, 0.5, 0], [0, 0.5, 0.5]) == pytest.approx(0.5)


def test_r_identical_is_one_and_symmetric():
    p = [0.2, 0.3, 0.5]
    assert M.representativeness(p, p) == pytest.approx(1.0)
    q = [0.6, 0.1, 0.3]
    assert M.representativeness(p, q) == pytest.approx(M.representativeness(q, p))


def test_r_two_options_is_one_minus_abs_difference():
    # K=2: W1 = |p0 - q0|, K-1 = 1
    assert M.representativeness([0.8, 0.2], [0.3, 0.7]) == pytest.approx(0.5)


def test_counts_are_normalised():
    assert M.representativeness([8, 2], [3, 7]) == pytest.approx(0.5)


def test_matches_scipy_on_random_distributions():
    rng = np.random.default_rng(0)
    for k in (2, 3, 4, 5, 7):
        for _ in range(20):
            p, q = rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k))
            pos = np.arange(k)
            expected = 1 - wasserstein_distance(pos, pos, p, q) / (k - 1)
            assert M.representativeness(p, q) == pytest.approx(expected, abs=1e-12)


def test_explicit_positions():
    # OpinionQA ordinals 1, 2, 2.5, 3, 4: all mass from option 1 to option 2.5 -> W1 = 1.5, span 3 -> R = 0.5
    pos = [1, 2, 2.5, 3, 4]
    assert M.wasserstein_ordinal([1, 0, 0, 0, 0], [0, 0, 1, 0, 0], pos) == pytest.approx(1.5)
    assert M.representativeness([1, 0, 0, 0, 0], [0, 0, 1, 0, 0], pos) == pytest.approx(0.5)
    rng = np.random.default_rng(1)
    p, q = rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5))
    assert M.wasserstein_ordinal(p, q, pos) == pytest.approx(wasserstein_distance(pos, pos, p, q))


def test_nominal_positions_are_rejected():
    with pytest.raises(ValueError, match="nominal"):
        M.representativeness([0.5, 0.5], [0.2, 0.8], positions=[1, 1])


def test_total_variation_hand_computed():
    assert M.total_variation([0.5, 0.5, 0], [0, 0.5, 0.5]) == pytest.approx(0.5)
    assert M.total_variation([1, 0], [0, 1]) == pytest.approx(1.0)
    assert M.total_variation([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == pytest.approx(0.0)
    # TV ignores order: the same mass moved one or two positions
    assert M.total_variation([1, 0, 0], [0, 1, 0]) == M.total_variation([1, 0, 0], [0, 0, 1])


def test_steerability_hand_computed():
    # simulated Democrats (.8,.2); human Democrats (.8,.2), human Republicans (.3,.7)
    # R to own = 1, R to other = 1 - .5 = .5 -> steerability .5
    assert M.steerability([0.8, 0.2], [0.8, 0.2], [0.3, 0.7]) == pytest.approx(0.5)
    # a simulator that ignores the persona (sim = overall (.55,.45)) -> R own .75, R other .75 -> 0
    assert M.steerability([0.55, 0.45], [0.8, 0.2], [0.3, 0.7]) == pytest.approx(0.0)
    # steered the wrong way -> negative
    assert M.steerability([0.3, 0.7], [0.8, 0.2], [0.3, 0.7]) == pytest.approx(-0.5)


def test_uniform_baseline():
    # uniform over 3 vs (1,0,0): cdfs (1/3, 2/3) vs (1, 1) -> W1 = 2/3 + 1/3 = 1 -> R = 0.5
    assert M.representativeness(M.uniform(3), [1, 0, 0]) == pytest.approx(0.5)


def test_invalid_rate_and_mean():
    assert M.invalid_rate(1, 4) == 0.25
    assert M.invalid_rate(0, 0) is None
    assert M.mean_or_none([None, 1.0, 3.0, math.nan]) == 2.0
    assert M.mean_or_none([None]) is None


@pytest.mark.parametrize("bad", [[-0.1, 1.1], [0, 0], [math.nan, 1]])
def test_bad_distributions(bad):
    with pytest.raises(ValueError):
        M.representativeness(bad, [0.5, 0.5])


def test_shape_mismatch():
    with pytest.raises(ValueError, match="options"):
        M.total_variation([0.5, 0.5], [0.2, 0.3, 0.5])
