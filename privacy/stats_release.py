"""Federated statistics released with differential privacy (a silo's ``share = "dp"``).

What a silo sends for the common preprocessing is a vector of sums over its rows: counts,
sums of values, their squares and cubes, the same of ``log1p`` values, class counts and
(for median imputation) histograms. With ``share = "dp"`` each of these statistics is
released with the Gaussian mechanism:

- every numeric value is first clipped to its column's public ``range`` from the schema
  (a one-hot column to [0, 1]), so one row changes a statistic by a known amount, its L2
  sensitivity: ``sqrt(columns)`` for the per-column counts and each histogram,
  ``||B^k||`` for the k-th power sums with ``B = max(|low|, |high|)`` per column, 1 for the
  class counts;
- each statistic gets Gaussian noise of standard deviation ``sigma * sensitivity``, one
  ``sigma`` for all of them, calibrated so that the ``m`` releases composed reach the
  policy's ``statistics.epsilon``;
- the minimum and maximum sent are the schema's range, never the silo's own values.

``m`` Gaussian mechanisms of noise multiplier ``sigma`` are, for the accountant, ``m``
steps at sample rate 1: that is the entry recorded in the silo's privacy ledger (label
``statistics``) before anything is released, so this epsilon is spent from the same
budget as training and composed with it. Whatever the server does with the noisy
statistics afterwards is post-processing and costs no further privacy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from core_training.data import Table
from core_training.preprocess import FeatureStats, compute_stats

if TYPE_CHECKING:
    from .ledger import PrivacyLedger


class StatisticsBoundsError(ValueError):
    """A numeric column has no public range, so its sensitivity is unbounded."""


def column_bounds(table: Table) -> tuple[np.ndarray, np.ndarray]:
    """Per encoded column: the schema's range for numeric columns, [0, 1] for one-hot."""
    low, high = [], []
    missing = []
    for feature in table.schema.features:
        if feature.is_numeric:
            if feature.bounds is None:
                missing.append(feature.name)
                continue
            low.append(feature.bounds[0])
            high.append(feature.bounds[1])
        else:
            low += [0.0] * len(feature.encoded_names)
            high += [1.0] * len(feature.encoded_names)
    if missing:
        raise StatisticsBoundsError(
            f"statistics with DP need a public range for every numeric column; the schema "
            f"gives none for {', '.join(missing[:5])}. Write e.g. "
            f"{missing[0]} = {{ range = [low, high] }} in the schema's [features]"
        )
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)


def sensitivities(low: np.ndarray, high: np.ndarray) -> dict[str, float]:
    """L2 sensitivity of each released statistic to adding or removing one row."""
    bound = np.maximum(np.abs(low), np.abs(high))
    log_bound = np.log1p(np.maximum(high, 0.0))
    root = float(np.sqrt(low.size))
    return {
        "count": root,
        "total": float(np.linalg.norm(bound)),
        "total_sq": float(np.linalg.norm(bound**2)),
        "total_cube": float(np.linalg.norm(bound**3)),
        "log_total": float(np.linalg.norm(log_bound)),
        "log_total_sq": float(np.linalg.norm(log_bound**2)),
        "class_counts": 1.0,
        "hist": root,
        "log_hist": root,
    }


def release_stats(
    table: Table,
    *,
    histograms: bool,
    epsilon: float,
    ledger: PrivacyLedger,
    label: str = "statistics",
    seed: int | None = None,
) -> FeatureStats:
    """The table's statistics with Gaussian noise; the release is recorded in ``ledger``
    first (refused with ``BudgetExhaustedError`` when it does not fit)."""
    from .dp import noise_for_target

    low, high = column_bounds(table)
    clipped = np.clip(table.X.astype(np.float64), low, high)  # NaN (missing) stays NaN
    exact = compute_stats(clipped, table.y, table.schema.num_classes, histograms=histograms)
    sens = sensitivities(low, high)
    released = [k for k in sens if getattr(exact, k) is not None]
    sigma = noise_for_target(
        target_epsilon=epsilon, target_delta=ledger.delta, sample_rate=1.0, steps=len(released)
    )
    reservation = ledger.reserve(
        noise_multiplier=sigma, sample_rate=1.0, steps=len(released), label=label
    )
    reservation.settle(len(released))
    rng = np.random.default_rng(seed)
    noisy = {
        k: getattr(exact, k) + rng.normal(0.0, sigma * sens[k], getattr(exact, k).shape)
        for k in released
    }
    # Post-processing: counts cannot be negative; the range replaces the silo's min/max.
    for k in ("count", "class_counts", "hist", "log_hist"):
        if k in noisy:
            noisy[k] = np.maximum(noisy[k], 0.0)
    return FeatureStats(minimum=low.copy(), maximum=high.copy(), **noisy)
