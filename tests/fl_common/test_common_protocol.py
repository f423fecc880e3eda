"""Records between ServerApp and ClientApp: our objects survive the trip exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core_training.data import load_table
from core_training.models import ModelSpec, build_model
from core_training.preprocess import FeatureStats, Preprocessor, compute_stats
from core_training.schema import Feature, Schema
from fl_common import protocol as p


@pytest.fixture
def stats() -> FeatureStats:
    rng = np.random.default_rng(0)
    X = rng.lognormal(size=(50, 4))
    X[rng.random(X.shape) < 0.1] = np.nan
    X[:, 3] = np.nan  # an all-missing column: NaN min/max must survive
    return compute_stats(X, rng.integers(0, 3, 50), 3, histograms=True)


def test_stats_round_trip_is_exact(stats: FeatureStats) -> None:
    back = p.record_to_stats(p.stats_to_record(stats))
    for name, value in vars(stats).items():
        np.testing.assert_array_equal(getattr(back, name), value, err_msg=name)
    assert np.isnan(back.minimum[3]) and np.isnan(back.maximum[3])
    assert back.num_rows == 50


def test_stats_without_histograms_round_trip_without_them(stats: FeatureStats) -> None:
    stats.hist = stats.log_hist = None
    back = p.record_to_stats(p.stats_to_record(stats))
    assert back.hist is None and back.log_hist is None
    np.testing.assert_array_equal(back.m2, stats.m2)


def test_prep_round_trip_keeps_infinite_clip_bounds_and_class_weights(
    stats: FeatureStats,
) -> None:
    pre = Preprocessor.fit(
        stats, numeric=np.array([True, True, False, True]), outlier_z=2.5, skew_threshold=0.5
    )
    assert np.isinf(pre.clip_low).any() and np.isinf(pre.clip_high).any()
    weights = np.array([0.5, 1.25, 2.0])
    back, back_weights = p.record_to_prep(p.prep_to_record(pre, weights))
    for name, value in vars(pre).items():
        np.testing.assert_array_equal(getattr(back, name), value, err_msg=name)
    assert back.log_mask.dtype == np.bool_
    np.testing.assert_array_equal(back_weights, weights)
    X = np.random.default_rng(1).lognormal(size=(20, 4))
    np.testing.assert_array_equal(back.transform(X), pre.transform(X))


def test_prep_without_class_weights_round_trips_as_none(stats: FeatureStats) -> None:
    pre = Preprocessor.fit(stats)
    record = p.prep_to_record(pre, None)
    assert "class_weights" not in record
    _, weights = p.record_to_prep(record)
    assert weights is None


def test_state_round_trip_is_exact() -> None:
    torch.manual_seed(0)
    state = build_model(ModelSpec("mlp", 6, 3, hidden_sizes=(8,))).state_dict()
    back = p.record_to_state(p.state_to_record(state))
    assert list(back) == list(state)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        assert torch.equal(back[k], v)


def test_state_from_record_is_writable_and_independent() -> None:
    state = {"w": torch.ones(3)}
    record = p.state_to_record(state)
    back = p.record_to_state(record)
    back["w"] += 1  # a read-only numpy view would refuse this
    assert torch.equal(p.record_to_state(record)["w"], torch.ones(3))


def test_numpy_record_round_trip_keeps_dtypes() -> None:
    arrays = {"a": np.arange(6, dtype=np.int64).reshape(2, 3), "b": np.ones(2, np.float32)}
    back = p.record_to_numpy(p.numpy_to_record(arrays))
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype
        np.testing.assert_array_equal(back[k], v)


def test_numpy_record_accepts_non_contiguous_arrays() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4).T
    np.testing.assert_array_equal(p.record_to_numpy(p.numpy_to_record({"a": a}))["a"], a)


def test_schema_digest_differs_for_different_schemas() -> None:
    base = Schema("y", (0, 1), (Feature("a"), Feature("b")))
    renamed = Schema("y", (0, 1), (Feature("a"), Feature("c")))
    reordered = Schema("y", (0, 1), (Feature("b"), Feature("a")))
    more_classes = Schema("y", (0, 1, 2), (Feature("a"), Feature("b")))
    categorical = Schema("y", (0, 1), (Feature("a"), Feature("b", ("u", "v"))))
    digests = {
        p.schema_digest(s.to_toml()) for s in (base, renamed, reordered, more_classes, categorical)
    }
    assert len(digests) == 5


def test_schema_digest_is_stable_for_the_same_schema() -> None:
    a = load_table("wine").schema
    b = load_table("wine").schema
    assert p.schema_digest(a.to_toml()) == p.schema_digest(b.to_toml())
    assert len(p.schema_digest(a.to_toml())) == 16
