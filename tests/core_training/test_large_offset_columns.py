"""Columns with a large offset and a small spread (millisecond timestamps) keep their
spread through loading, statistics, merging and training.

Expected values come from numpy and scipy on the float64 values written to the file.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from core_training import preprocess
from core_training.config import TrainConfig
from core_training.data import load_table
from core_training.models import ModelSpec, build_model
from core_training.pipeline import prepare_local, split
from core_training.preprocess import Preprocessor, compute_stats, merge_stats
from core_training.schema import Feature, Schema
from core_training.trainer import evaluate, fit

OFFSET = 1_700_000_000_000  # milliseconds since 1970: November 2023
NO_LOG = 1e9  # a skew threshold no column reaches
SCHEMA = Schema("target", (0, 1), (Feature("ts"), Feature("noise")))


def _timestamps(rows: int, *, skewed: bool, seed: int = 0) -> np.ndarray:
    """Whole milliseconds within about a second of OFFSET."""
    rng = np.random.default_rng(seed)
    spread = rng.exponential(300.0, rows) if skewed else rng.uniform(0, 1000, rows)
    return OFFSET + np.round(spread)


def _write(tmp_path: Path, ts: np.ndarray, y: np.ndarray) -> Path:
    noise = np.random.default_rng(1).normal(size=len(ts))
    lines = ["ts,noise,target"] + [
        f"{int(t)},{float(n)!r},{int(c)}" for t, n, c in zip(ts, noise, y, strict=True)
    ]
    path = tmp_path / "events.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _loaded_column(tmp_path: Path, ts: np.ndarray) -> np.ndarray:
    table = load_table(_write(tmp_path, ts, np.zeros(len(ts), dtype=np.int64)), SCHEMA)
    return table.X[:, :1]


@pytest.mark.parametrize("skewed", [False, True])
def test_sd_of_a_timestamp_column_read_from_csv_matches_numpy(tmp_path: Path, skewed: bool) -> None:
    ts = _timestamps(1000, skewed=skewed)
    X = _loaded_column(tmp_path, ts)

    stats = compute_stats(X, np.zeros(len(X), dtype=np.int64), 2)
    pre = Preprocessor.fit(stats, outlier_z=0, skew_threshold=NO_LOG)

    assert pre.mean[0] == pytest.approx(np.mean(ts), rel=1e-12)
    assert pre.scale[0] == pytest.approx(np.std(ts), rel=1e-6)
    standardized = pre.transform(X)[:, 0]
    np.testing.assert_allclose(standardized, (ts - ts.mean()) / ts.std(), atol=1e-5)


@pytest.mark.parametrize("skewed", [False, True])
def test_skewness_of_a_timestamp_column_matches_scipy(tmp_path: Path, skewed: bool) -> None:
    ts = _timestamps(1000, skewed=skewed)
    X = _loaded_column(tmp_path, ts)

    skew = preprocess.skewness(compute_stats(X, np.zeros(len(X), dtype=np.int64), 2))[0]

    expected = scipy_stats.skew(ts)  # population skewness, as fitted
    assert skew == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert abs(expected) < 0.2 if not skewed else expected > 1.5


def test_a_symmetric_timestamp_column_is_not_logged_and_a_skewed_one_is() -> None:
    ts = np.column_stack([_timestamps(1000, skewed=False), _timestamps(1000, skewed=True)])
    pre = Preprocessor.fit(compute_stats(ts, np.zeros(1000, dtype=np.int64), 2), outlier_z=0)
    assert pre.log_mask.tolist() == [False, True]


@pytest.mark.parametrize("sizes", [(3, 997), (1, 20, 979), (600, 7, 1, 392)])
def test_merged_silo_stats_of_timestamps_match_numpy_on_the_pooled_rows(
    sizes: tuple[int, ...],
) -> None:
    ts = _timestamps(1000, skewed=True).reshape(-1, 1)
    y = np.zeros(len(ts), dtype=np.int64)
    bounds = np.cumsum((0, *sizes))
    parts = [compute_stats(ts[a:b], y[a:b], 2) for a, b in itertools.pairwise(bounds)]

    merged = merge_stats(parts)

    n = merged.count[0]
    assert n == len(ts)
    assert merged.mean[0] == pytest.approx(np.mean(ts), rel=1e-12)
    assert np.sqrt(merged.m2[0] / n) == pytest.approx(np.std(ts), rel=1e-6)
    assert preprocess.skewness(merged)[0] == pytest.approx(scipy_stats.skew(ts[:, 0]), rel=1e-6)


def test_merging_in_any_grouping_equals_the_pooled_rows_to_1e9() -> None:
    rng = np.random.default_rng(3)
    X = np.column_stack([rng.normal(50.0, 2.0, 900), rng.lognormal(size=900)])
    X[rng.random(X.shape) < 0.1] = np.nan
    y = rng.integers(0, 2, 900)
    a, b, c = (compute_stats(X[s], y[s], 2) for s in (slice(0, 5), slice(5, 400), slice(400, None)))

    left, right = a.merge(b).merge(c), a.merge(b.merge(c))

    present = [col[~np.isnan(col)] for col in X.T]
    for merged in (left, right):
        np.testing.assert_allclose(merged.mean, [v.mean() for v in present], rtol=1e-9)
        np.testing.assert_allclose(merged.m2 / merged.count, [v.var() for v in present], rtol=1e-9)
        np.testing.assert_allclose(
            preprocess.skewness(merged), [scipy_stats.skew(v) for v in present], rtol=1e-9
        )
        logged = [np.log1p(v) for v in present]
        np.testing.assert_allclose(merged.log_mean, [v.mean() for v in logged], rtol=1e-9)


def test_a_model_learns_a_label_that_a_timestamp_column_alone_decides(tmp_path: Path) -> None:
    ts = _timestamps(600, skewed=False)
    y = (ts > OFFSET + 500).astype(np.int64)
    table = load_table(_write(tmp_path, ts, y), SCHEMA)
    train, test = split(table, test_fraction=0.3, seed=0)
    config = TrainConfig(local_epochs=15, batch_size=32, learning_rate=0.01, outlier_z=0)
    prepared = prepare_local(train, config)
    model = build_model(ModelSpec("mlp", 2, 2, (16,), 0.0))

    fit(model, prepared.X, prepared.y, config, class_weights=prepared.class_weights)
    accuracy = evaluate(model, prepared.preprocessor.transform(test.X), test.y)["accuracy"]

    assert accuracy >= 0.9  # chance is about 0.5: the noise column says nothing
