"""Cleaning: duplicates, missing values, skew, outliers, standardization.

Fitting is split in two so that a federation can fit on all silos without moving rows:

1. :func:`compute_stats` reduces a table to plain sufficient statistics per column:
   counts, sums, sums of squares and cubes, min and max, the same for ``log1p`` of the
   column, class counts, and optionally a fixed-grid histogram for the median.
2. :meth:`FeatureStats.merge` adds statistics of two silos. Every field is a sum, a
   min or a max, so merging is exact and order-free: ``stats(A) + stats(B) ==
   stats(A ∪ B)``.
3. :meth:`Preprocessor.fit` turns (merged) statistics into the transform.

The histogram for median imputation uses one fixed grid on ``asinh(x)`` shared by all
silos (``HIST_BINS`` bins over ``[-HIST_LIMIT, HIST_LIMIT]``), so histograms merge by
addition; the median is read off it by linear interpolation within a bin. Its error is
at most one bin: 0.025 in asinh units, i.e. about 2.5% of the value for large values.

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

HIST_BINS = 2000
HIST_LIMIT = 25.0  # asinh(x) range; sinh(25) ~ 3.6e10 covers any sensible feature


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


@dataclass
class FeatureStats:
    """Mergeable per-column statistics of one silo (or of many, once merged)."""

    count: np.ndarray  # non-missing values per column
    total: np.ndarray
    total_sq: np.ndarray
    total_cube: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    log_total: np.ndarray  # of log1p(max(x, 0)), for columns that may be logged
    log_total_sq: np.ndarray
    class_counts: np.ndarray
    hist: np.ndarray | None = None  # (columns, HIST_BINS) on asinh(x)
    log_hist: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return int(self.class_counts.sum())

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Statistics of the union of both silos' rows."""
        if self.count.shape != other.count.shape or (
            self.class_counts.shape != other.class_counts.shape
        ):
            raise ValueError(
                f"cannot merge statistics of {self.count.size} columns / "
                f"{self.class_counts.size} classes with {other.count.size} / "
                f"{other.class_counts.size}: the silos use different schemas"
            )
        merged: dict[str, Any] = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "minimum":
                merged[f.name] = np.fmin(a, b)
            elif f.name == "maximum":
                merged[f.name] = np.fmax(a, b)
            elif a is None or b is None:
                merged[f.name] = None
            else:
                merged[f.name] = a + b
        return FeatureStats(**merged)

    def to_dict(self) -> dict[str, list[float] | list[list[float]]]:
        """Plain lists, for JSON files and Flower records. Empty min/max are NaN."""
        return {
            f.name: getattr(self, f.name).tolist()
            for f in fields(self)
            if getattr(self, f.name) is not None
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureStats:
        values = {}
        for f in fields(cls):
            if f.name in data and data[f.name] is not None:
                values[f.name] = np.asarray(data[f.name], dtype=np.float64)
        return cls(**values)


def merge_stats(stats: list[FeatureStats]) -> FeatureStats:
    if not stats:
        raise ValueError("no statistics to merge")
    out = stats[0]
    for s in stats[1:]:
        out = out.merge(s)
    return out


def compute_stats(
    X: np.ndarray, y: np.ndarray, num_classes: int, *, histograms: bool = False
) -> FeatureStats:
    """Sufficient statistics of one silo's table (missing values are NaN)."""
    X = X.astype(np.float64, copy=False)
    present = ~np.isnan(X)
    filled = np.where(present, X, 0.0)
    logged = np.where(present, np.log1p(np.maximum(filled, 0.0)), 0.0)
    with np.errstate(all="ignore"):
        minimum = np.where(present.any(0), np.nanmin(np.where(present, X, np.inf), 0), np.nan)
        maximum = np.where(present.any(0), np.nanmax(np.where(present, X, -np.inf), 0), np.nan)
    stats = FeatureStats(
        count=present.sum(0).astype(np.float64),
        total=filled.sum(0),
        total_sq=(filled**2).sum(0),
        total_cube=(filled**3).sum(0),
        minimum=minimum,
        maximum=maximum,
        log_total=logged.sum(0),
        log_total_sq=(logged**2).sum(0),
        class_counts=np.bincount(y, minlength=num_classes).astype(np.float64),
    )
    if histograms:
        stats.hist = _histogram(X)
        stats.log_hist = _histogram(np.where(present, np.log1p(np.maximum(filled, 0.0)), np.nan))
    return stats


def _histogram(X: np.ndarray) -> np.ndarray:
    out = np.zeros((X.shape[1], HIST_BINS), dtype=np.float64)
    scaled = (np.arcsinh(X) + HIST_LIMIT) / (2 * HIST_LIMIT) * HIST_BINS
    for j in range(X.shape[1]):
        col = scaled[:, j]
        col = col[~np.isnan(col)]
        idx = np.clip(col.astype(np.int64), 0, HIST_BINS - 1)
        out[j] = np.bincount(idx, minlength=HIST_BINS)
    return out


def histogram_median(hist: np.ndarray) -> np.ndarray:
    """Median per row of a fixed-grid asinh histogram (NaN where a row is empty)."""
    width = 2 * HIST_LIMIT / HIST_BINS
    out = np.full(hist.shape[0], np.nan)
    for j, row in enumerate(hist):
        n = row.sum()
        if n == 0:
            continue
        cum = np.cumsum(row)
        b = int(np.searchsorted(cum, n / 2))
        before = cum[b - 1] if b > 0 else 0.0
        frac = (n / 2 - before) / row[b] if row[b] else 0.5
        out[j] = np.sinh(-HIST_LIMIT + (b + frac) * width)
    return out


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
        mean = stats.total / n
        var = np.maximum(stats.total_sq / n - mean**2, 0.0)
        sd = np.sqrt(var)
        with np.errstate(all="ignore"):
            third = stats.total_cube / n - 3 * mean * stats.total_sq / n + 2 * mean**3
            skew = np.where(sd > 1e-12, third / np.maximum(sd, 1e-12) ** 3, 0.0)
        log_mask = numeric & (stats.minimum >= 0) & (np.abs(skew) > skew_threshold)
        log_mean = stats.log_total / n
        log_sd = np.sqrt(np.maximum(stats.log_total_sq / n - log_mean**2, 0.0))
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
