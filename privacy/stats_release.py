"""Federated statistics released with differential privacy (a silo's ``share = "dp"``).

What a silo sends for the common preprocessing comes from sums over its rows: counts,
sums of values, their squares and cubes, the same of ``log1p`` values, class counts and
(for median imputation) histograms. With ``share = "dp"`` each of these statistics is
released with the Gaussian mechanism:

- every numeric value is first clipped to its column's public ``range`` from the schema
  (a one-hot column to [0, 1]) and centred on the middle of that range, so one row
  changes each sum by a known amount, its L2 sensitivity: ``sqrt(columns)`` for the
  per-column counts and each histogram, ``||h^k||`` for the k-th power sums with ``h``
  the half-width of each range, 1 for the class counts;
- each statistic gets Gaussian noise of standard deviation ``sigma * sensitivity``, one
  ``sigma`` for all of them, calibrated so that the ``m`` releases composed reach the
  policy's ``statistics.epsilon``;
- the minimum and maximum sent are the schema's range, never the silo's own values;
- an image silo releases the same statistics per channel (pixel values in [0, 1]),
  each image contributing its mean over the channel's pixels, so one image still moves
  each sum by at most the bounds above;
- the noisy sums become the mergeable statistics (whole non-negative counts, centred
  moments, means inside the range) by post-processing alone.

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
    """Per encoded column: the schema's range for numeric columns, [0, 1] for one-hot;
    for images, per channel: pixel values are in [0, 1]."""
    if table.schema.is_image:
        channels = table.schema.stats_width
        return np.zeros(channels), np.ones(channels)
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
    """L2 sensitivity of each released sum to adding or removing one row. Values are
    centred on the middle of their range first, so a k-th power sum moves by at most
    ``half-width^k`` per column."""
    half = (high - low) / 2
    log_bound = np.log1p(np.maximum(high, 0.0))
    root = float(np.sqrt(low.size))
    return {
        "count": root,
        "s1": float(np.linalg.norm(half)),
        "s2": float(np.linalg.norm(half**2)),
        "s3": float(np.linalg.norm(half**3)),
        "log_s1": float(np.linalg.norm(log_bound)),
        "log_s2": float(np.linalg.norm(log_bound**2)),
        "class_counts": 1.0,
        "hist": root,
        "log_hist": root,
    }


def exact_sums(table: Table, low: np.ndarray, high: np.ndarray, histograms: bool) -> dict:
    """The sums a release adds noise to, of the values clipped to their range."""
    if table.schema.is_image:
        return image_sums(table, low, high)
    X = np.clip(table.X.astype(np.float64), low, high)  # NaN (missing) stays NaN
    present = ~np.isnan(X)
    centred = np.where(present, X - (low + high) / 2, 0.0)
    logged = np.where(present, np.log1p(np.maximum(np.where(present, X, 0.0), 0.0)), 0.0)
    sums = {
        "count": present.sum(0).astype(np.float64),
        "s1": centred.sum(0),
        "s2": (centred**2).sum(0),
        "s3": (centred**3).sum(0),
        "log_s1": logged.sum(0),
        "log_s2": (logged**2).sum(0),
        "class_counts": np.bincount(table.y, minlength=table.schema.num_classes).astype(float),
    }
    if histograms:
        hist = compute_stats(X, table.y, table.schema.num_classes, histograms=True)
        sums["hist"], sums["log_hist"] = hist.hist, hist.log_hist
    return sums


def image_sums(table: Table, low: np.ndarray, high: np.ndarray) -> dict:
    """Per channel, the sums over images of each image's mean of its centred pixel
    values raised to the power k (and of their ``log1p``): the units of
    :mod:`core_training.channel_stats`, and one image still moves each sum by at most
    ``half-width^k`` per channel, so the sensitivities above hold. No histograms: pixels
    are never imputed."""
    n, channels = len(table), low.size
    pixels = table.X.reshape(n, channels, -1).astype(np.float64)
    pixels = np.clip(pixels, low[:, None], high[:, None])
    centred = pixels - ((low + high) / 2)[:, None]
    logged = np.log1p(pixels)
    return {
        "count": np.full(channels, float(n)),
        "s1": centred.mean(2).sum(0),
        "s2": (centred**2).mean(2).sum(0),
        "s3": (centred**3).mean(2).sum(0),
        "log_s1": logged.mean(2).sum(0),
        "log_s2": (logged**2).mean(2).sum(0),
        "class_counts": np.bincount(table.y, minlength=table.schema.num_classes).astype(float),
    }


def release_sums(
    table: Table,
    *,
    histograms: bool,
    epsilon: float,
    ledger: PrivacyLedger,
    label: str = "statistics",
    seed: int | None = None,
) -> dict[str, np.ndarray]:
    """The clipped sums with Gaussian noise; the release is recorded in ``ledger`` first
    (refused with ``BudgetExhaustedError`` when it does not fit)."""
    from .dp import noise_for_target

    low, high = column_bounds(table)
    sums = exact_sums(table, low, high, histograms)
    sens = sensitivities(low, high)
    sigma = noise_for_target(
        target_epsilon=epsilon,
        target_delta=ledger.delta,
        sample_rate=1.0,
        steps=len(sums),
        accountant=ledger.accountant,
    )
    ledger.reserve(noise_multiplier=sigma, sample_rate=1.0, steps=len(sums), label=label).settle(
        len(sums)
    )
    rng = np.random.default_rng(seed)
    return {k: v + rng.normal(0.0, sigma * sens[k], v.shape) for k, v in sums.items()}


def sums_to_stats(sums: dict[str, np.ndarray], low: np.ndarray, high: np.ndarray) -> FeatureStats:
    """Post-processing (no privacy cost): whole, non-negative counts; centred moments
    from the noisy sums; means inside the range; the range as minimum and maximum."""
    class_counts = np.maximum(np.round(sums["class_counts"]), 0.0)
    count = np.minimum(np.maximum(np.round(sums["count"]), 0.0), class_counts.sum())
    n = np.maximum(count, 1.0)
    centre = (low + high) / 2
    mean_u = np.clip(sums["s1"] / n, low - centre, high - centre)
    m2 = np.maximum(sums["s2"] - n * mean_u**2, 0.0)
    m3 = sums["s3"] - 3 * mean_u * sums["s2"] + 2 * n * mean_u**3
    log_high = np.log1p(np.maximum(high, 0.0))
    log_mean = np.clip(sums["log_s1"] / n, 0.0, log_high)
    log_m2 = np.maximum(sums["log_s2"] - n * log_mean**2, 0.0)
    hist = {k: np.maximum(np.round(sums[k]), 0.0) for k in ("hist", "log_hist") if k in sums}
    return FeatureStats(
        count=count,
        mean=np.where(count > 0, centre + mean_u, 0.0),
        m2=np.where(count > 0, m2, 0.0),
        m3=np.where(count > 0, m3, 0.0),
        minimum=low.copy(),
        maximum=high.copy(),
        log_mean=np.where(count > 0, log_mean, 0.0),
        log_m2=np.where(count > 0, log_m2, 0.0),
        class_counts=class_counts,
        **hist,
    )


def release_stats(
    table: Table,
    *,
    histograms: bool,
    epsilon: float,
    ledger: PrivacyLedger,
    label: str = "statistics",
    seed: int | None = None,
) -> FeatureStats:
    """:func:`release_sums` turned into the statistics the federation merges."""
    low, high = column_bounds(table)
    sums = release_sums(
        table, histograms=histograms, epsilon=epsilon, ledger=ledger, label=label, seed=seed
    )
    return sums_to_stats(sums, low, high)
