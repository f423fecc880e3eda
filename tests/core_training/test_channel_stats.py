"""Image silos share per-channel statistics; merged across silos they are numpy's
per-channel figures over the union of their images, and every silo standardizes each
channel with them (no tabular cleaning on pixels)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from core_training.channel_stats import channel_preprocessor, compute_channel_stats
from core_training.config import TrainConfig
from core_training.data import Table
from core_training.pipeline import fit_preprocessor, local_stats
from core_training.preprocess import FeatureStats, merge_stats
from core_training.schema import Schema

SHAPE = (3, 4, 5)
SCHEMA = Schema.image((0, 1), *SHAPE)


def silo_images(seed: int, n: int) -> np.ndarray:
    """Images whose channels differ in level and spread, and differ between silos."""
    rng = np.random.default_rng(seed)
    images = rng.beta(1 + seed, 2, size=(n, *SHAPE))
    images[:, 1] = images[:, 1] ** 3  # a skewed channel
    images[:, 2] *= 0.1 * (seed + 1)
    return images.reshape(n, -1)


SILOS = [silo_images(s, n) for s, n in ((0, 40), (1, 7), (2, 25))]


def stats_of(X: np.ndarray, seed: int = 0) -> FeatureStats:
    y = np.random.default_rng(seed).integers(0, 2, len(X))
    return compute_channel_stats(X, y, 2, SHAPE)


def test_merged_channel_stats_are_numpys_over_the_union_in_any_order() -> None:
    union = np.concatenate(SILOS).reshape(-1, 3, 20)
    mean = union.mean(axis=(0, 2))
    std = union.std(axis=(0, 2))
    for order in itertools.permutations(range(3)):
        merged = merge_stats([stats_of(SILOS[i]) for i in order])
        np.testing.assert_allclose(merged.mean, mean, rtol=1e-12)
        np.testing.assert_allclose(np.sqrt(merged.m2 / merged.count), std, rtol=1e-10)
        np.testing.assert_allclose(merged.minimum, union.min(axis=(0, 2)))
        np.testing.assert_allclose(merged.maximum, union.max(axis=(0, 2)))
        assert merged.count.tolist() == [72.0] * 3  # images, per channel
        assert merged.num_rows == 72


def test_third_moment_merges_to_the_unions_skewness() -> None:
    union = np.concatenate(SILOS).reshape(-1, 3, 20)
    merged = merge_stats([stats_of(x) for x in SILOS])
    dev = union - union.mean(axis=(0, 2))[None, :, None]
    skew = (dev**3).mean(axis=(0, 2)) / dev.std(axis=(0, 2)) ** 3
    sd = np.sqrt(merged.m2 / merged.count)
    np.testing.assert_allclose(merged.m3 / merged.count / sd**3, skew, rtol=1e-9)


def test_a_silo_shares_one_column_per_channel_never_per_pixel() -> None:
    table = Table(SILOS[0], np.zeros(40, np.int64), SCHEMA, "silo")
    stats = local_stats(table, TrainConfig(imputation="median"))
    assert all(np.shape(v) == (3,) for k, v in stats.to_dict().items() if k != "class_counts")
    assert stats.hist is None  # no histograms: pixels are never imputed


def test_merged_figures_standardize_every_channel_of_the_union() -> None:
    merged = merge_stats([stats_of(x) for x in SILOS])
    pre = fit_preprocessor(merged, SCHEMA, TrainConfig(outlier_z=0.5, skew_threshold=0.1))
    cleaned = pre.transform(np.concatenate(SILOS)).reshape(-1, 3, 20).astype(np.float64)
    np.testing.assert_allclose(cleaned.mean(axis=(0, 2)), 0.0, atol=1e-6)
    np.testing.assert_allclose(cleaned.std(axis=(0, 2)), 1.0, rtol=1e-5)


def test_pixels_are_not_logged_clipped_or_imputed() -> None:
    images = np.zeros((50, 60))
    images[0, :20] = 1.0  # one bright image in channel 0: skewed, and an outlier
    stats = compute_channel_stats(images, np.zeros(50, np.int64), 2, SHAPE)
    pre = channel_preprocessor(stats, SHAPE)
    assert not pre.log_mask.any()
    assert np.isinf(pre.clip_low).all() and np.isinf(pre.clip_high).all()
    mean, sd = images[:, :20].mean(), images[:, :20].std()
    assert pre.transform(images)[0, 0] == pytest.approx((1.0 - mean) / sd, rel=1e-6)
    assert (1.0 - mean) / sd > 5  # far beyond where tabular cleaning would clip


def test_statistics_of_another_channel_count_are_refused() -> None:
    stats = stats_of(SILOS[0])
    with pytest.raises(ValueError, match="one column per channel"):
        channel_preprocessor(stats, (1, 4, 5))
