"""Paired bootstrap: a hand-computed example (exact enumeration), Monte Carlo agreeing with it, seeds pooled, and
shape errors."""
from __future__ import annotations

import pytest

from espnet_bertkd.recipe.significance import paired_bootstrap, seed_spread


def test_hand_computed_example():
    """Three utterances of 2 words; A makes one error fewer on u0 and u1, one more on u2: d = (-1, -1, +1).
    delta = 100 * (-1) / 6. A resample with k copies of u2 has sum d = 2k - 3, <= 0 for k <= 1:
    P(k <= 1) = (8 + 12) / 27, P(k >= 2) = (6 + 1) / 27, so p = 2 * 7 / 27."""
    test = paired_bootstrap([1, 0, 2], [2, 1, 1], [2, 2, 2], exact=True)
    assert test.delta == pytest.approx(-100.0 / 6)
    assert test.p == pytest.approx(14 / 27)
    assert test.utterances == 3 and test.seeds == 1 and test.samples == 0
    # the 27 resampled deltas: -50 (8x), -50/3 (12x), +50/3 (6x), +50 (1x); numpy's linear percentiles at ranks
    # 0.025 * 26 = 0.65 (inside the -50s) and 0.975 * 26 = 25.35 (between +50/3 and +50)
    assert test.ci_low == pytest.approx(-50.0)
    assert test.ci_high == pytest.approx(50 / 3 + 0.35 * (50 - 50 / 3))


def test_monte_carlo_converges_to_the_exact_value():
    mc = paired_bootstrap([1, 0, 2], [2, 1, 1], [2, 2, 2], samples=40000, seed=3)
    assert mc.p == pytest.approx(14 / 27, abs=0.01)
    assert mc.samples == 40000


def test_seeds_are_averaged_per_utterance():
    """Seed 0: A better on u0, worse on u2; seed 1: A better on u1, worse on u2. Per utterance the mean
    differences are (-0.5, -0.5, +1): they cancel, and each seed's own WER difference is 0 too."""
    a = [[1, 1, 2], [1, 0, 2]]
    b = [[2, 1, 1], [1, 1, 1]]
    pooled = paired_bootstrap(a, b, [2, 2, 2], exact=True)
    assert pooled.delta == pytest.approx(0.0)
    assert pooled.seeds == 2
    assert pooled.p == pytest.approx(1.0)
    # A better everywhere in every seed: every resample is negative
    clear = paired_bootstrap([[0, 0, 0], [0, 1, 0]], [[1, 2, 1], [1, 2, 2]], [2, 3, 2], exact=True)
    assert clear.delta < 0 and clear.p == 0.0 and clear.ci_high < 0
    # sampled, the same never-crossing difference gets the smallest p the samples can give, not 0
    sampled = paired_bootstrap([[0, 0, 0], [0, 1, 0]], [[1, 2, 1], [1, 2, 2]], [2, 3, 2], samples=999)
    assert sampled.p == pytest.approx(2 / 1000)


def test_identical_systems_are_not_different():
    test = paired_bootstrap([1, 2, 0, 3], [1, 2, 0, 3], [4, 5, 3, 6], samples=200)
    assert test.delta == 0.0 and test.p == 1.0


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="same seeds and utterances"):
        paired_bootstrap([[1, 2], [1, 2]], [1, 2], [3, 3])
    with pytest.raises(ValueError, match="no words"):
        paired_bootstrap([0], [0], [0])


def test_seed_spread():
    assert seed_spread([10.0, 12.0, 14.0]) == {"mean": 12.0, "std": 2.0}
    assert seed_spread([5.0]) == {"mean": 5.0, "std": None}
