"""Per-channel statistics and normalization for image tables.

Images are normalized per channel, as image models usually are: one mean and one
standard deviation for all the pixels of a channel, from the federation's merged
figures. So an image silo shares one column of statistics per channel (never per
pixel): a :class:`~core_training.stats.FeatureStats` with ``C`` columns.

Its units make the existing merge exact. ``count`` is the number of images; ``mean``
is the mean over all the channel's pixel values; ``m2`` and ``m3`` are the sums of
squared and cubed deviations from it over all those values, divided by the pixels per
image (``H * W``). Chan's pairwise update scales linearly in ``H * W`` when every
count does, so merging with image counts gives the union's figures, and the variance
is ``m2 / count`` as for a tabular column. The same holds for the ``log1p`` moments.
``minimum`` and ``maximum`` are the channel's extremes, and class counts count images.

The cleaning steps made for tabular columns do not apply to pixels: no ``log1p``, no
outlier clipping, no imputation (an image has no missing values), no histograms. The
fitted :class:`~core_training.preprocess.Preprocessor` holds each channel's mean and
scale repeated over its pixel columns, so transforming, sending and storing it stay
as they are for tables.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from .preprocess import FeatureStats, Preprocessor
from .stats import centred_moments


def compute_channel_stats(
    X: np.ndarray, y: np.ndarray, num_classes: int, image_shape: tuple[int, int, int]
) -> FeatureStats:
    """Per-channel statistics of flattened images ``X`` (N, C*H*W), in the units above."""
    channels, height, width = image_shape
    pixels = height * width
    n = len(X)
    if X.ndim != 2 or X.shape[1] != channels * pixels:
        raise ValueError(f"images of shape {image_shape} need {channels * pixels} columns")
    figures = np.zeros((7, channels))  # mean, m2, m3, log mean, log m2, min, max
    for c in range(channels):
        values = np.asarray(X[:, c * pixels : (c + 1) * pixels], dtype=np.float64)
        mean, m2, m3 = _moments(values)
        log_mean, log_m2, _ = _moments(np.log1p(np.maximum(values, 0.0)))
        low, high = (values.min(), values.max()) if n else (np.nan, np.nan)
        figures[:, c] = mean, m2 / pixels, m3 / pixels, log_mean, log_m2 / pixels, low, high
    mean, m2, m3, log_mean, log_m2, low, high = figures
    return FeatureStats(
        count=np.full(channels, float(n)),
        mean=mean,
        m2=m2,
        m3=m3,
        minimum=low,
        maximum=high,
        log_mean=log_mean,
        log_m2=log_m2,
        class_counts=np.bincount(y, minlength=num_classes).astype(np.float64),
    )


def _moments(values: np.ndarray) -> tuple[float, float, float]:
    """Mean, and sums of squared and cubed deviations, over every value of a channel:
    the table's two-pass moments (:func:`.stats.centred_moments`) of one column."""
    column = values.reshape(-1, 1)
    count = np.array([float(column.size)])
    mean, m2, m3 = centred_moments(column, np.ones(column.shape, dtype=bool), count)
    return float(mean[0]), float(m2[0]), float(m3[0])


def channel_preprocessor(stats: FeatureStats, image_shape: tuple[int, int, int]) -> Preprocessor:
    """Standardize each channel with its (merged) mean and standard deviation; nothing
    else. The per-channel figures are repeated over the channel's pixel columns."""
    channels, height, width = image_shape
    if stats.count.shape != (channels,):
        raise ValueError(
            f"image statistics need one column per channel ({channels}), got {stats.count.size}"
        )
    with np.errstate(invalid="ignore"):  # no clipping: its bounds (inf * 0) go unused
        per_channel = Preprocessor.fit(
            stats, numeric=np.zeros(channels, dtype=bool), imputation="mean", outlier_z=0.0
        )
    return Preprocessor(
        **{
            f.name: np.repeat(getattr(per_channel, f.name), height * width)
            for f in fields(Preprocessor)
        }
    )
