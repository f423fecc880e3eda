"""Cleaning steps on hand-made tables with known answers, and mergeable statistics."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core_training.data import load_builtin
from core_training.preprocess import (
    HIST_BINS,
    HIST_LIMIT,
    FeatureStats,
    Preprocessor,
    compute_stats,
    drop_duplicates,
    histogram_median,
    merge_stats,
)

BIN_WIDTH = 2 * HIST_LIMIT / HIST_BINS  # asinh units; the documented median error
NO_LOG = 1e9  # a skew threshold no column reaches


def _fit(X: np.ndarray, y: np.ndarray | None = None, **kwargs: object) -> Preprocessor:
    X = np.asarray(X, dtype=np.float64)
    y = np.zeros(len(X), dtype=np.int64) if y is None else y
    histograms = kwargs.get("imputation") == "median"
    return Preprocessor.fit(compute_stats(X, y, 2, histograms=histograms), **kwargs)


def _column(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1, 1)


def _assert_stats_equal(a: FeatureStats, b: FeatureStats, rtol: float = 0.0) -> None:
    for f in fields(FeatureStats):
        left, right = getattr(a, f.name), getattr(b, f.name)
        assert (left is None) == (right is None), f.name
        if left is not None:
            np.testing.assert_allclose(left, right, rtol=rtol, atol=0, err_msg=f.name)


def _assert_preprocessors_equal(a: Preprocessor, b: Preprocessor, rtol: float = 0.0) -> None:
    for f in fields(Preprocessor):
        np.testing.assert_allclose(
            getattr(a, f.name), getattr(b, f.name), rtol=rtol, atol=1e-12, err_msg=f.name
        )


# -- duplicates ------------------------------------------------------------------------


def test_duplicate_rows_are_dropped_keeping_the_first() -> None:
    X = np.array([[1, 2], [3, 4], [1, 2], [1, 2], [3, 4]], dtype=np.float32)
    y = np.array([0, 0, 0, 1, 0])
    Xd, yd, dropped = drop_duplicates(X, y)
    assert dropped == 2
    np.testing.assert_array_equal(Xd, [[1, 2], [3, 4], [1, 2]])
    np.testing.assert_array_equal(yd, [0, 0, 1])  # same features, other label: kept


def test_rows_with_nan_in_the_same_place_are_duplicates() -> None:
    X = np.array([[np.nan, 1], [np.nan, 1], [1, np.nan], [np.nan, np.nan]])
    Xd, yd, dropped = drop_duplicates(X, np.zeros(4, dtype=np.int64))
    assert dropped == 1
    assert len(yd) == 3
    np.testing.assert_array_equal(np.isnan(Xd), [[True, False], [False, True], [True, True]])


def test_nans_of_any_bit_pattern_and_signed_zeros_are_duplicates() -> None:
    with np.errstate(invalid="ignore"):
        negative_nan = np.zeros(1) / np.zeros(1)  # -nan on x86, not np.nan's bit pattern
    X = np.array([[negative_nan[0], 1.0], [np.nan, 1.0], [-0.0, 2.0], [0.0, 2.0]])
    _, yd, dropped = drop_duplicates(X, np.zeros(4, dtype=np.int64))
    assert dropped == 2
    assert len(yd) == 2


def test_drop_duplicates_of_an_empty_table_drops_nothing() -> None:
    X, _, dropped = drop_duplicates(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))
    assert dropped == 0
    assert X.shape == (0, 3)


# -- missing values --------------------------------------------------------------------


def test_mean_imputation_fills_the_mean_of_present_values() -> None:
    X = _column([1.0, np.nan, 3.0, 8.0])
    pre = _fit(X, skew_threshold=NO_LOG, outlier_z=0)
    assert pre.fill[0] == pytest.approx(4.0)
    out = pre.transform(X)
    assert not np.isnan(out).any()
    assert out[1, 0] == pytest.approx(0.0, abs=1e-6)  # the mean standardizes to 0
    sd = np.std([1.0, 3.0, 8.0])
    assert out[3, 0] == pytest.approx((8.0 - 4.0) / sd, rel=1e-6)


def test_median_imputation_fills_the_median_within_one_histogram_bin() -> None:
    X = _column([1.0, 2.0, np.nan, 3.0, 100.0, 7.0, np.nan])
    pre = _fit(X, imputation="median", skew_threshold=NO_LOG, outlier_z=0)
    assert abs(np.arcsinh(pre.fill[0]) - np.arcsinh(3.0)) <= BIN_WIDTH
    assert pre.fill[0] == pytest.approx(3.0, rel=0.03)


def test_median_imputation_on_a_logged_column_is_on_the_logged_scale() -> None:
    values = [0.0, 1, 1, 2, 3, 5, 8, 13, 400, 900, 2000, np.nan]
    pre = _fit(_column(values), imputation="median", outlier_z=0)
    assert pre.log_mask[0]
    assert abs(np.arcsinh(pre.fill[0]) - np.arcsinh(np.log1p(5.0))) <= BIN_WIDTH


def test_median_imputation_needs_histograms() -> None:
    stats = compute_stats(_column([1.0, 2.0]), np.zeros(2, dtype=np.int64), 2)
    with pytest.raises(ValueError, match="histograms"):
        Preprocessor.fit(stats, imputation="median")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32),
        min_size=1,
        max_size=60,
    )
)
def test_histogram_median_lies_between_the_middle_values_within_one_bin(
    values: list[float],
) -> None:
    X = _column(values)
    stats = compute_stats(X, np.zeros(len(values), dtype=np.int64), 2, histograms=True)
    median = histogram_median(stats.hist)[0]
    ordered = np.sort(values)
    low, high = ordered[(len(values) - 1) // 2], ordered[len(values) // 2]
    assert np.arcsinh(low) - BIN_WIDTH - 1e-9 <= np.arcsinh(median)
    assert np.arcsinh(median) <= np.arcsinh(high) + BIN_WIDTH + 1e-9


def test_all_missing_column_is_filled_with_zero() -> None:
    X = np.array([[np.nan, 1.0], [np.nan, 2.0], [np.nan, 3.0]])
    out = _fit(X).transform(X)
    np.testing.assert_array_equal(out[:, 0], [0.0, 0.0, 0.0])


# -- outliers --------------------------------------------------------------------------


@pytest.mark.parametrize("outlier", [100.0, -100.0])
def test_clipped_outlier_lands_at_mean_plus_three_sd(outlier: float) -> None:
    values = np.append(np.linspace(-1.0, 1.0, 19), outlier)
    mean, sd = values.mean(), values.std()
    assert abs(outlier - mean) > 3 * sd  # the premise: one value beyond 3 sd

    pre = _fit(_column(values), skew_threshold=NO_LOG, outlier_z=3.0)
    assert pre.clip_high[0] == pytest.approx(mean + 3 * sd)
    assert pre.clip_low[0] == pytest.approx(mean - 3 * sd)
    out = pre.transform(_column(values))[:, 0]
    assert out[-1] == pytest.approx(np.sign(outlier) * 3.0, rel=1e-6)
    np.testing.assert_allclose(out[:-1], (values[:-1] - mean) / sd, rtol=1e-5, atol=1e-6)


def test_outlier_z_zero_disables_clipping() -> None:
    values = np.append(np.linspace(-1.0, 1.0, 19), 100.0)
    out = _fit(_column(values), skew_threshold=NO_LOG, outlier_z=0).transform(_column(values))
    assert out[-1, 0] == pytest.approx((100.0 - values.mean()) / values.std(), rel=1e-6)
    assert out[-1, 0] > 4


def test_one_hot_columns_are_not_clipped() -> None:
    # One row in 20 has the category: it sits (1 - 0.05) / sqrt(0.05 * 0.95) = 4.36 sd out.
    onehot = np.zeros(20)
    onehot[0] = 1.0
    X = np.column_stack([onehot, onehot])
    pre = _fit(X, numeric=np.array([False, True]), skew_threshold=NO_LOG)
    out = pre.transform(X)
    assert out[0, 0] == pytest.approx(0.95 / np.sqrt(0.05 * 0.95), rel=1e-5)
    assert out[0, 1] == pytest.approx(3.0, rel=1e-5)


# -- skew ------------------------------------------------------------------------------


def test_log1p_is_applied_to_a_skewed_non_negative_column_only() -> None:
    skewed = np.array([0, 0, 1, 1, 1, 2, 2, 3, 5, 8, 13, 60, 200, 900], dtype=np.float64)
    with_negatives = skewed - 1.0  # same skew, but one value below zero
    symmetric = np.arange(len(skewed), dtype=np.float64)
    onehot = (np.arange(len(skewed)) == 0).astype(np.float64)  # skewed, non-negative
    X = np.column_stack([skewed, with_negatives, symmetric, onehot])
    numeric = np.array([True, True, True, False])

    pre = _fit(X, numeric=numeric, outlier_z=0)

    np.testing.assert_array_equal(pre.log_mask, [True, False, False, False])
    logged = np.log1p(skewed)
    out = pre.transform(X)
    np.testing.assert_allclose(out[:, 0], (logged - logged.mean()) / logged.std(), rtol=1e-5)
    np.testing.assert_allclose(
        out[:, 1], (with_negatives - with_negatives.mean()) / with_negatives.std(), rtol=1e-5
    )


def test_skew_threshold_decides_which_columns_are_logged() -> None:
    mild = np.array([0, 1, 1, 2, 2, 2, 3, 3, 4, 9], dtype=np.float64)  # skewness ~ 1.5
    assert _fit(_column(mild), skew_threshold=1.0).log_mask[0]
    assert not _fit(_column(mild), skew_threshold=2.0).log_mask[0]


# -- standardization -------------------------------------------------------------------


def test_transform_standardizes_training_columns() -> None:
    table = load_builtin("wine")
    out = _fit(table.X, table.y, skew_threshold=NO_LOG, outlier_z=0).transform(table.X)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(0), 1.0, atol=1e-4)


def test_constant_column_is_left_at_zero_not_divided_by_zero() -> None:
    X = np.column_stack([np.full(5, 7.0), np.arange(5.0)])
    out = _fit(X).transform(X)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 0], 0.0, atol=1e-6)


def test_transform_refuses_the_wrong_number_of_columns() -> None:
    pre = _fit(np.ones((4, 3)))
    with pytest.raises(ValueError, match="3 columns"):
        pre.transform(np.ones((4, 2)))


# -- mergeable statistics --------------------------------------------------------------


def _table_with_gaps(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    table = load_builtin("breast-cancer")
    rng = np.random.default_rng(seed)
    X = table.X.astype(np.float64)
    X[rng.random(X.shape) < 0.1] = np.nan
    X[:300, 3] = np.nan  # one column entirely missing in the first half
    return X, table.y


@pytest.mark.parametrize("cut", [1, 300, 400])
def test_merged_stats_of_two_halves_equal_stats_of_the_whole(cut: int) -> None:
    X, y = _table_with_gaps()
    whole = compute_stats(X, y, 2, histograms=True)
    a = compute_stats(X[:cut], y[:cut], 2, histograms=True)
    b = compute_stats(X[cut:], y[cut:], 2, histograms=True)

    merged = a.merge(b)

    for exact in ("count", "minimum", "maximum", "class_counts", "hist", "log_hist"):
        np.testing.assert_array_equal(getattr(merged, exact), getattr(whole, exact), exact)
    _assert_stats_equal(merged, whole, rtol=1e-12)
    _assert_stats_equal(b.merge(a), merged, rtol=1e-12)
    assert merged.num_rows == len(y)


def test_preprocessor_fitted_from_merged_stats_equals_the_one_fitted_on_the_whole() -> None:
    X, y = _table_with_gaps()
    parts = np.array_split(np.arange(len(y)), 3)
    merged = merge_stats([compute_stats(X[p], y[p], 2, histograms=True) for p in parts])
    whole = compute_stats(X, y, 2, histograms=True)
    for imputation in ("mean", "median"):
        from_parts = Preprocessor.fit(merged, imputation=imputation)
        from_whole = Preprocessor.fit(whole, imputation=imputation)
        _assert_preprocessors_equal(from_parts, from_whole, rtol=1e-9)
        np.testing.assert_allclose(
            from_parts.transform(X), from_whole.transform(X), rtol=1e-5, atol=1e-5
        )


def test_stats_of_different_schemas_do_not_merge() -> None:
    a = compute_stats(np.ones((3, 2)), np.zeros(3, dtype=np.int64), 2)
    b = compute_stats(np.ones((3, 4)), np.zeros(3, dtype=np.int64), 2)
    with pytest.raises(ValueError, match="different schemas"):
        a.merge(b)
    with pytest.raises(ValueError):
        merge_stats([])


def test_stats_without_histograms_merge_to_no_histograms() -> None:
    X, y = np.ones((3, 2)), np.zeros(3, dtype=np.int64)
    merged = compute_stats(X, y, 2, histograms=True).merge(compute_stats(X, y, 2))
    assert merged.hist is None
    assert merged.log_hist is None


@pytest.mark.parametrize("histograms", [False, True])
def test_stats_survive_a_json_round_trip(histograms: bool) -> None:
    X, y = _table_with_gaps()
    X[:, 5] = np.nan  # a column with no values: NaN min and max
    stats = compute_stats(X, y, 2, histograms=histograms)

    restored = FeatureStats.from_dict(json.loads(json.dumps(stats.to_dict())))

    _assert_stats_equal(restored, stats)
    assert np.isnan(restored.minimum[5])


def test_preprocessor_survives_a_json_round_trip() -> None:
    X, y = _table_with_gaps()
    pre = _fit(X, y, imputation="median", numeric=np.arange(X.shape[1]) % 7 != 0)
    assert np.isinf(pre.clip_low).any()  # unclipped columns carry infinite bounds

    restored = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))

    assert restored.log_mask.dtype == bool
    _assert_preprocessors_equal(restored, pre)
    np.testing.assert_array_equal(restored.transform(X), pre.transform(X))


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("m2", -1.0, "non-negative"),
        ("count", 2.5, "whole numbers"),
        ("count", 1e6, "more values than the table has rows"),
        ("mean", float("inf"), "finite"),
    ],
)
def test_impossible_stats_are_refused_when_read(field: str, value: float, words: str) -> None:
    X, y = _table_with_gaps()
    data = compute_stats(X, y, 2).to_dict()
    data[field] = [value] * len(data[field])
    with pytest.raises(ValueError, match=words):
        FeatureStats.from_dict(data)


def test_stats_from_another_version_are_refused_by_name() -> None:
    data = compute_stats(np.ones((3, 2)), np.zeros(3, dtype=np.int64), 2).to_dict()
    del data["m2"], data["m3"]
    with pytest.raises(ValueError, match="lack m2, m3"):
        FeatureStats.from_dict(data)
