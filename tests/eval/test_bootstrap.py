"""Paired bootstrap intervals on samples whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from lightning_ft.eval.bootstrap import mean_of, paired_bootstrap, ratio_of


def test_a_constant_shift_has_a_zero_width_interval() -> None:
    """Every item of A scores exactly 0.1 above B: every resample's difference is 0.1, and none is <= 0."""
    b = np.random.default_rng(1).random(50)
    result = paired_bootstrap(mean_of(b + 0.1), mean_of(b), 50, samples=200)
    assert result["difference"] == pytest.approx(0.1)
    assert result["low"] == pytest.approx(0.1) and result["high"] == pytest.approx(0.1)
    assert result["p_value"] == 0.0


def test_interval_of_a_bernoulli_sample_matches_the_binomial_quantiles() -> None:
    """A beats B on 25 of 100 items by 1 and ties on the rest: the resampled mean difference is Binomial(100, 0.25)
    / 100, whose 2.5% and 97.5% quantiles are binom.ppf(0.025 | 0.975, 100, 0.25) / 100."""
    a = np.array([1.0] * 25 + [0.0] * 75)
    b = np.zeros(100)
    result = paired_bootstrap(mean_of(a), mean_of(b), 100, samples=20000, seed=3)
    assert result["difference"] == pytest.approx(0.25)
    assert result["low"] == pytest.approx(binom.ppf(0.025, 100, 0.25) / 100, abs=0.011)
    assert result["high"] == pytest.approx(binom.ppf(0.975, 100, 0.25) / 100, abs=0.011)
    assert result["p_value"] < 0.001


def test_pairing_cancels_what_both_models_find_hard() -> None:
    """Item difficulty varies a lot but A is always 0.01 better: paired, the interval excludes zero; comparing the
    means of two independently resampled sets would not."""
    difficulty = np.random.default_rng(0).random(40)
    result = paired_bootstrap(mean_of(difficulty + 0.01), mean_of(difficulty), 40, samples=500)
    assert result["low"] > 0


def test_same_seed_same_interval_and_ratio_statistics() -> None:
    losses, tokens = np.array([2.0, 6.0, 1.0]), np.array([1.0, 3.0, 1.0])
    assert ratio_of(losses, tokens)(np.arange(3)) == pytest.approx(9.0 / 5.0)
    first = paired_bootstrap(ratio_of(losses, tokens), mean_of(np.zeros(3)), 3, samples=100, seed=7)
    assert first == paired_bootstrap(ratio_of(losses, tokens), mean_of(np.zeros(3)), 3, samples=100, seed=7)
    with pytest.raises(ValueError, match="at least one item"):
        paired_bootstrap(mean_of(np.zeros(0)), mean_of(np.zeros(0)), 0)
