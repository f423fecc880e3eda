"""Mergeable per-column statistics: what a silo shares so a preprocessor can be fitted
on every silo's rows without moving them.

:func:`compute_stats` reduces a table to counts, the mean with the second and third
central moment sums (M2, M3), min and max, the same for ``log1p`` of the column, class
counts, and optionally a fixed-grid histogram for the median. :meth:`FeatureStats.merge`
joins two silos' statistics: counts and histograms add, min and max combine, and the
moments merge with the pairwise formula of Chan et al., so ``stats(A) + stats(B) ==
stats(A ∪ B)`` up to rounding (about 1e-12 relative), in any order. Central moments
rather than raw power sums keep that true for columns with a large offset and a small
spread (e.g. millisecond timestamps).

The histogram for median imputation uses one fixed grid on ``asinh(x)`` shared by all
silos (``HIST_BINS`` bins over ``[-HIST_LIMIT, HIST_LIMIT]``), so histograms merge by
addition; the median is read off it by linear interpolation within a bin. Its error is
at most one bin: 0.025 in asinh units, i.e. about 2.5% of the value for large values.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

HIST_BINS = 2000
HIST_LIMIT = 25.0  # asinh(x) range; sinh(25) ~ 3.6e10 covers any sensible feature


# metadata "content" of an encrypted file holding FeatureStats.to_dict() (fl-client stats)
STATS_CONTENT = "fedsilo-feature-stats"


@dataclass
class FeatureStats:
    """Mergeable per-column statistics of one silo (or of many, once merged).

    Moments are kept centred (mean and sums of powers of deviations from it) rather than
    as raw power sums: a column such as millisecond timestamps near 1.7e12 with a spread
    of one second has a raw sum of squares whose rounding error exceeds its variance.
    """

    count: np.ndarray  # non-missing values per column
    mean: np.ndarray  # of the non-missing values; 0 where there are none
    m2: np.ndarray  # sum of squared deviations from the mean
    m3: np.ndarray  # sum of cubed deviations from the mean
    minimum: np.ndarray
    maximum: np.ndarray
    log_mean: np.ndarray  # the same for log1p(max(x, 0)), for columns that may be logged
    log_m2: np.ndarray
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
        a, b = self, other
        mean, m2, m3 = merge_moments((a.count, a.mean, a.m2, a.m3), (b.count, b.mean, b.m2, b.m3))
        log_mean, log_m2, _ = merge_moments(
            (a.count, a.log_mean, a.log_m2, np.zeros_like(a.log_m2)),
            (b.count, b.log_mean, b.log_m2, np.zeros_like(b.log_m2)),
        )
        both = a.hist is not None and b.hist is not None
        both_log = a.log_hist is not None and b.log_hist is not None
        return FeatureStats(
            count=a.count + b.count,
            mean=mean,
            m2=m2,
            m3=m3,
            minimum=np.fmin(a.minimum, b.minimum),
            maximum=np.fmax(a.maximum, b.maximum),
            log_mean=log_mean,
            log_m2=log_m2,
            class_counts=a.class_counts + b.class_counts,
            hist=a.hist + b.hist if both else None,  # type: ignore[operator]
            log_hist=a.log_hist + b.log_hist if both_log else None,  # type: ignore[operator]
        )

    def to_dict(self) -> dict[str, list[float] | list[list[float]]]:
        """Plain lists, for JSON files and Flower records. Empty min/max are NaN."""
        return {
            f.name: getattr(self, f.name).tolist()
            for f in fields(self)
            if getattr(self, f.name) is not None
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureStats:
        """Rebuild from :meth:`to_dict`; a ValueError names what is missing or malformed."""
        required = [f.name for f in fields(cls) if f.name not in ("hist", "log_hist")]
        missing = [name for name in required if data.get(name) is None]
        if missing:
            raise ValueError(
                f"statistics lack {', '.join(missing)}; they come from another fedsilo "
                "version or are damaged: compute them again with this version"
            )
        values = {}
        for f in fields(cls):
            if f.name in data and data[f.name] is not None:
                values[f.name] = np.asarray(data[f.name], dtype=np.float64)
        columns = values["count"].shape
        wrong = [
            name
            for name, v in values.items()
            if name not in ("class_counts", "hist", "log_hist") and v.shape != columns
        ]
        if len(columns) != 1 or values["class_counts"].ndim != 1 or wrong:
            raise ValueError(
                f"statistics are malformed: {', '.join(wrong) or 'count or class_counts'} "
                f"do not have one value per column ({columns})"
            )
        stats = cls(**values)
        problem = stats.inconsistency()
        if problem:
            raise ValueError(f"statistics are inconsistent: {problem}")
        return stats

    def inconsistency(self) -> str:
        """What no table's statistics could look like ("" when nothing): a silo's
        numbers are checked before they shape everyone's preprocessing."""
        counts = np.concatenate([self.count, self.class_counts])
        if not np.isfinite(counts).all() or (counts < 0).any() or (counts % 1 != 0).any():
            return "counts must be non-negative whole numbers"
        if (self.count > self.num_rows).any():
            return "a column has more values than the table has rows"
        moments = np.concatenate([self.mean, self.m2, self.m3, self.log_mean, self.log_m2])
        if not np.isfinite(moments).all():
            return "means and deviation sums must be finite"
        if (self.m2 < 0).any() or (self.log_m2 < 0).any():
            return "sums of squared deviations must be non-negative"
        return ""


def merge_moments(
    a: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, M2 and M3 of two groups joined, from each group's (count, mean, M2, M3).

    The pairwise update of Chan, Golub and LeVeque (1979), extended to the third moment
    (Pébay 2008): it only ever combines deviations, so it keeps full precision for
    columns with a large offset and a small spread, unlike raw power sums.
    """
    na, ma, m2a, m3a = a
    nb, mb, m2b, m3b = b
    n = na + nb
    safe = np.where(n > 0, n, 1.0)
    delta = mb - ma
    mean = np.where(n > 0, ma + delta * nb / safe, 0.0)
    m2 = m2a + m2b + delta**2 * na * nb / safe
    m3 = (
        m3a
        + m3b
        + delta**3 * na * nb * (na - nb) / safe**2
        + 3 * delta * (na * m2b - nb * m2a) / safe
    )
    return mean, m2, m3


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
    count = present.sum(0).astype(np.float64)
    mean, m2, m3 = centred_moments(X, present, count)
    log_mean, log_m2, _ = centred_moments(logged, present, count)
    stats = FeatureStats(
        count=count,
        mean=mean,
        m2=m2,
        m3=m3,
        minimum=minimum,
        maximum=maximum,
        log_mean=log_mean,
        log_m2=log_m2,
        class_counts=np.bincount(y, minlength=num_classes).astype(np.float64),
    )
    if histograms:
        stats.hist = _histogram(X)
        stats.log_hist = _histogram(np.where(present, np.log1p(np.maximum(filled, 0.0)), np.nan))
    return stats


def centred_moments(
    X: np.ndarray, present: np.ndarray, count: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, M2, M3 per column over the present values, in two passes: the second pass
    corrects the mean by the mean residual, so a large offset costs no precision."""
    n = np.maximum(count, 1.0)
    mean = np.where(present, X, 0.0).sum(0) / n
    mean = mean + np.where(present, X - mean, 0.0).sum(0) / n
    dev = np.where(present, X - mean, 0.0)
    return mean, (dev**2).sum(0), (dev**3).sum(0)


def _histogram(X: np.ndarray) -> np.ndarray:
    out = np.zeros((X.shape[1], HIST_BINS), dtype=np.float64)
    scaled = (np.arcsinh(X) + HIST_LIMIT) / (2 * HIST_LIMIT) * HIST_BINS
    for j in range(X.shape[1]):
        col = scaled[:, j]
        col = col[~np.isnan(col)]
        idx = np.clip(col.astype(np.int64), 0, HIST_BINS - 1)
        out[j] = np.bincount(idx, minlength=HIST_BINS)
    return out


def skewness(stats: FeatureStats) -> np.ndarray:
    """Population skewness per column (0 for a constant or empty column)."""
    n = np.maximum(stats.count, 1.0)
    sd = np.sqrt(np.maximum(stats.m2 / n, 0.0))
    # A spread below 1e-12 of the mean's size is rounding noise, not a shape.
    tiny = np.maximum(1e-12, 1e-12 * np.abs(stats.mean))
    with np.errstate(all="ignore"):
        return np.where(sd > tiny, (stats.m3 / n) / np.maximum(sd, tiny) ** 3, 0.0)


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
