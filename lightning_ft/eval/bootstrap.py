"""Paired bootstrap confidence intervals: is model A's score on the same items really different from model B's?"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Statistic = Callable[[np.ndarray], float]


def mean_of(values: np.ndarray) -> Statistic:
    """The mean of ``values`` over a resample of item indices."""
    return lambda indices: float(values[indices].mean())


def ratio_of(numerators: np.ndarray, denominators: np.ndarray) -> Statistic:
    """``sum(numerators) / sum(denominators)`` over a resample (e.g. token-weighted mean loss)."""
    return lambda indices: float(numerators[indices].sum() / denominators[indices].sum())


def paired_bootstrap(
    statistic_a: Statistic,
    statistic_b: Statistic,
    num_items: int,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Percentile interval of ``statistic_a - statistic_b`` under resampling of items with replacement.

    Both statistics see the same resampled items in every round (the pairing), so what both models find hard
    cancels out. ``p_value`` is the two-sided share of resampled differences on the other side of zero.

    Returns:
        ``{"difference", "low", "high", "p_value"}``: the difference on all items and its interval.
    """
    if num_items == 0:
        raise ValueError("paired_bootstrap needs at least one item")
    all_items = np.arange(num_items)
    observed = statistic_a(all_items) - statistic_b(all_items)
    generator = np.random.default_rng(seed)
    differences = np.empty(samples)
    for sample in range(samples):
        indices = generator.integers(0, num_items, num_items)
        differences[sample] = statistic_a(indices) - statistic_b(indices)
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(differences, [tail, 1.0 - tail])
    below, above = float((differences <= 0).mean()), float((differences >= 0).mean())
    return {
        "difference": float(observed),
        "low": float(low),
        "high": float(high),
        "p_value": float(min(1.0, 2 * min(below, above))),
    }
