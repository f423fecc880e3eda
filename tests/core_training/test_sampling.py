"""Class weights and over/under-sampling for imbalanced classes."""

from __future__ import annotations

import numpy as np
import pytest

from core_training.sampling import class_weights, resample_classes


def test_balanced_weights_are_n_over_k_times_count() -> None:
    # n = 100, k = 3: 100 / (3 * 50), 100 / (3 * 30), 100 / (3 * 20)
    np.testing.assert_allclose(class_weights([50, 30, 20]), [2 / 3, 10 / 9, 5 / 3])


def test_balanced_weights_make_every_class_weigh_the_same() -> None:
    counts = np.array([900.0, 90.0, 10.0])
    np.testing.assert_allclose(class_weights(counts) * counts, [1000 / 3] * 3)


def test_class_without_examples_gets_weight_one() -> None:
    # n = 30 over the k = 2 present classes: 30 / (2 * 10), 30 / (2 * 20)
    np.testing.assert_allclose(class_weights([10, 0, 20]), [1.5, 1.0, 0.75])


def test_external_counts_are_honoured_over_a_silo_own_labels() -> None:
    local = np.array([0, 0, 0, 1])
    federation_counts = [100, 300]
    weights = class_weights(federation_counts)
    np.testing.assert_allclose(weights, [2.0, 2 / 3])
    assert not np.allclose(weights, class_weights(np.bincount(local)))


def test_weighting_none_gives_ones() -> None:
    np.testing.assert_array_equal(class_weights([5, 1], mode="none"), [1.0, 1.0])


@pytest.mark.parametrize(
    ("counts", "mode"),
    [([5], "balanced"), ([5, -1], "balanced"), ([[1, 2]], "balanced"), ([1, 2], "inverse")],
)
def test_bad_counts_or_mode_are_refused(counts: list, mode: str) -> None:
    with pytest.raises(ValueError):
        class_weights(counts, mode=mode)


def _imbalanced() -> tuple[np.ndarray, np.ndarray]:
    y = np.repeat([0, 1, 2], [50, 12, 5])
    X = np.column_stack([np.arange(len(y)), y]).astype(np.float32)
    return X, y


@pytest.mark.parametrize(("mode", "per_class"), [("over", 50), ("under", 5)])
def test_resampling_gives_equal_class_counts(mode: str, per_class: int) -> None:
    X, y = _imbalanced()
    Xr, yr = resample_classes(X, y, mode=mode, seed=0)
    np.testing.assert_array_equal(np.bincount(yr), [per_class] * 3)
    # Rows stay whole: every resampled row is an original row with its own label.
    np.testing.assert_array_equal(Xr[:, 1], yr)
    assert set(Xr[:, 0].astype(int)) <= set(range(len(y)))


def test_undersampling_draws_without_replacement() -> None:
    X, y = _imbalanced()
    Xr, _ = resample_classes(X, y, mode="under", seed=0)
    assert len(np.unique(Xr[:, 0])) == len(Xr)


def test_oversampling_keeps_the_largest_class_size() -> None:
    X, y = _imbalanced()
    _, yr = resample_classes(X, y, mode="over", seed=0)
    assert len(yr) == 150


@pytest.mark.parametrize("mode", ["over", "under"])
def test_resampling_is_deterministic_per_seed(mode: str) -> None:
    X, y = _imbalanced()
    a = resample_classes(X, y, mode=mode, seed=7)
    b = resample_classes(X, y, mode=mode, seed=7)
    c = resample_classes(X, y, mode=mode, seed=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_resampled_rows_are_shuffled() -> None:
    X, y = _imbalanced()
    _, yr = resample_classes(X, y, mode="over", seed=0)
    assert not np.array_equal(yr, np.sort(yr))


def test_unknown_resampling_mode_is_refused() -> None:
    X, y = _imbalanced()
    with pytest.raises(ValueError, match="'sideways'"):
        resample_classes(X, y, mode="sideways")
