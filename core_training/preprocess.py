"""Cleaning: duplicates, missing values, skew, outliers, standardization.

Fitting is split in two so that a federation can fit on all silos without moving rows:
each silo reduces its table to mergeable statistics (:mod:`core_training.stats`,
re-exported here), the server merges them, and :meth:`Preprocessor.fit` turns the
(merged) statistics into the transform.

The transform, per numeric column: ``log1p`` when the column is non-negative and its
skewness exceeds the threshold; missing values imputed (mean or median, on the logged
scale where logged); values clipped to ``mean ± z * sd``; then standardized with that
mean and sd. One-hot columns are imputed (with the category frequency) and
standardized but never logged or clipped.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .stats import (
    HIST_BINS,
    HIST_LIMIT,
    FeatureStats,
    compute_stats,
    histogram_median,
    merge_moments,
    merge_stats,
    skewness,
)

__all__ = [
    "HIST_BINS",
    "HIST_LIMIT",
    "FeatureStats",
    "Preprocessor",
    "compute_stats",
    "drop_duplicates",
    "histogram_median",
    "merge_moments",
    "merge_stats",
    "skewness",
]


def drop_duplicates(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Drop rows whose features and label repeat an earlier row; keep the first.

    Rows are compared byte for byte, so two rows with a missing value (NaN) in the same
    place still count as duplicates.
    """
    if len(y) == 0:
        return X, y, 0
    joined = np.column_stack([X.astype(np.float64), y.astype(np.float64)])
    # One bit pattern per value: NaNs differ in sign and payload (0/0 is -nan on x86),
    # and -0.0 == 0.0.
    joined = np.ascontiguousarray(np.where(np.isnan(joined), np.nan, joined + 0.0))
    keys = joined.view(np.dtype((np.void, joined.dtype.itemsize * joined.shape[1]))).ravel()
    _, first = np.unique(keys, return_index=True)
    keep = np.sort(first)
    return X[keep], y[keep], len(y) - len(keep)


@dataclass(frozen=True)
class Preprocessor:
    """A fitted cleaning transform; the same one is applied on every silo."""

    log_mask: np.ndarray  # bool per column
    fill: np.ndarray  # imputed value per column (on the logged scale where logged)
    mean: np.ndarray
    scale: np.ndarray
    clip_low: np.ndarray
    clip_high: np.ndarray

    @classmethod
    def fit(
        cls,
        stats: FeatureStats,
        *,
        numeric: np.ndarray | None = None,
        imputation: str = "mean",
        skew_threshold: float = 1.0,
        outlier_z: float = 3.0,
    ) -> Preprocessor:
        """Fit from (merged) statistics. ``numeric`` marks the columns that may be logged
        and clipped (default: all); one-hot columns should be False."""
        n = np.maximum(stats.count, 1.0)
        cols = stats.count.size
        numeric = np.ones(cols, bool) if numeric is None else np.asarray(numeric, bool)
        mean = stats.mean
        sd = np.sqrt(np.maximum(stats.m2 / n, 0.0))
        skew = skewness(stats)
        log_mask = numeric & (stats.minimum >= 0) & (np.abs(skew) > skew_threshold)
        log_mean = stats.log_mean
        log_sd = np.sqrt(np.maximum(stats.log_m2 / n, 0.0))
        mean = np.where(log_mask, log_mean, mean)
        sd = np.where(log_mask, log_sd, sd)
        if imputation == "median":
            if stats.hist is None or stats.log_hist is None:
                raise ValueError("median imputation needs statistics computed with histograms")
            median = np.where(
                log_mask, histogram_median(stats.log_hist), histogram_median(stats.hist)
            )
            fill = np.where(numeric, median, mean)
        elif imputation == "mean":
            fill = mean.copy()
        else:
            raise ValueError(f"imputation must be mean or median, got {imputation!r}")
        fill = np.where(np.isnan(fill) | (stats.count == 0), 0.0, fill)
        mean = np.where(stats.count == 0, 0.0, mean)
        z = outlier_z if outlier_z > 0 else np.inf
        clip = numeric & np.isfinite(z) & (sd > 0)
        low = np.where(clip, mean - z * sd, -np.inf)
        high = np.where(clip, mean + z * sd, np.inf)
        scale = np.where(sd > 1e-12, sd, 1.0)
        return cls(log_mask, fill, mean, scale, low, high)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Clean a table; returns a new float32 array with no missing values."""
        X = np.array(X, dtype=np.float64, copy=True)
        if X.ndim != 2 or X.shape[1] != self.mean.size:
            raise ValueError(
                f"the preprocessor was fitted on {self.mean.size} columns, got {X.shape}"
            )
        lm = self.log_mask
        X[:, lm] = np.log1p(np.maximum(X[:, lm], 0.0))
        X = np.where(np.isnan(X), self.fill, X)
        X = np.clip(X, self.clip_low, self.clip_high)
        return ((X - self.mean) / self.scale).astype(np.float32)

    def to_dict(self) -> dict[str, list[Any]]:
        return {f.name: getattr(self, f.name).tolist() for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessor:
        arrays = {f.name: np.asarray(data[f.name], dtype=np.float64) for f in fields(cls)}
        arrays["log_mask"] = arrays["log_mask"].astype(bool)
        return cls(**arrays)
