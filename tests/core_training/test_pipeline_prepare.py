"""From a loaded table to cleaned arrays: splitting and local preparation."""

from __future__ import annotations

import numpy as np
import pytest

from core_training.config import TrainConfig
from core_training.data import Table, load_builtin
from core_training.pipeline import prepare_local, split


def _with_duplicates_and_gaps() -> Table:
    table = load_builtin("wine")
    X = np.concatenate([table.X, table.X[:10]])  # ten exact duplicate rows
    y = np.concatenate([table.y, table.y[:10]])
    X[50, 2] = np.nan
    return Table(X, y, table.schema, "wine")


def test_prepare_local_drops_duplicates_and_fills_gaps() -> None:
    prepared = prepare_local(_with_duplicates_and_gaps(), TrainConfig())
    assert prepared.duplicates_dropped == 10
    assert prepared.X.shape == (178, 13)
    assert not np.isnan(prepared.X).any()
    np.testing.assert_array_equal(prepared.y, load_builtin("wine").y)


def test_prepare_local_keeps_duplicates_when_asked() -> None:
    prepared = prepare_local(_with_duplicates_and_gaps(), TrainConfig(drop_duplicates=False))
    assert prepared.duplicates_dropped == 0
    assert len(prepared.y) == 188


def test_prepare_local_weights_classes_by_the_deduplicated_counts() -> None:
    prepared = prepare_local(_with_duplicates_and_gaps(), TrainConfig())
    counts = np.bincount(load_builtin("wine").y)  # 59, 71, 48
    np.testing.assert_allclose(prepared.class_weights, 178 / (3 * counts))
    assert (
        prepare_local(load_builtin("wine"), TrainConfig(class_weighting="none")).class_weights
        is None
    )


def test_prepared_arrays_are_what_the_preprocessor_makes() -> None:
    table = load_builtin("breast-cancer")
    prepared = prepare_local(table, TrainConfig(imputation="median"))
    np.testing.assert_array_equal(prepared.preprocessor.transform(table.X), prepared.X)


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_split_is_disjoint_stratified_and_seeded(fraction: float) -> None:
    table = load_builtin("wine")
    train, test = split(table, test_fraction=fraction, seed=3)
    again, _ = split(table, test_fraction=fraction, seed=3)

    assert len(test) == round(178 * fraction)
    assert len(train) + len(test) == 178
    rows = {tuple(r) for r in train.X} | {tuple(r) for r in test.X}
    assert len(rows) == 178  # wine has no duplicate rows: disjoint and covering
    np.testing.assert_allclose(
        np.bincount(test.y) / len(test), np.bincount(table.y) / 178, atol=0.02
    )
    np.testing.assert_array_equal(train.X, again.X)


def test_split_of_a_tiny_table_still_leaves_a_test_row() -> None:
    table = load_builtin("wine").subset(np.array([0, 1, 60, 61, 130, 131]))
    train, test = split(table, test_fraction=0.1, seed=0)
    assert len(test) == 1
    assert len(train) == 5
