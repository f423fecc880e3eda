"""core_training._split draws the very train/test split scikit-learn's train_test_split
draws, so replacing it changed no silo's validation rows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import train_test_split

from core_training._split import train_test_indices
from core_training.data import load_builtin
from core_training.pipeline import split

SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def _labels(draw: st.DrawFn) -> np.ndarray:
    """Shuffled labels of 1-9 classes with arbitrary (non-contiguous) ids, mixing rare
    classes of two rows with large ones."""
    counts = draw(
        st.lists(
            st.one_of(st.just(2), st.integers(min_value=2, max_value=60)), min_size=1, max_size=9
        )
    )
    ids = draw(
        st.lists(
            st.integers(min_value=-5, max_value=50),
            min_size=len(counts),
            max_size=len(counts),
            unique=True,
        )
    )
    labels = np.repeat(np.array(ids), counts)
    return np.random.default_rng(draw(SEEDS)).permutation(labels)


def _sklearn(n: int, n_test: int, seed: int, stratify: np.ndarray | None):
    return train_test_split(np.arange(n), test_size=n_test, random_state=seed, stratify=stratify)


@settings(max_examples=300, deadline=None)
@given(labels=_labels(), data=st.data(), seed=SEEDS)
def test_stratified_split_is_sklearns(labels: np.ndarray, data: st.DataObject, seed: int) -> None:
    n, k = len(labels), len(np.unique(labels))
    n_test = data.draw(st.integers(min_value=1, max_value=n - 1))
    if min(n_test, n - n_test) < k:  # too small a part to hold every class: both refuse
        with pytest.raises(ValueError):
            _sklearn(n, n_test, seed, labels)
        with pytest.raises(ValueError):
            train_test_indices(n, n_test, seed=seed, stratify=labels)
        return
    expected_train, expected_test = _sklearn(n, n_test, seed, labels)
    train, test = train_test_indices(n, n_test, seed=seed, stratify=labels)
    np.testing.assert_array_equal(train, expected_train)
    np.testing.assert_array_equal(test, expected_test)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(min_value=2, max_value=500), data=st.data(), seed=SEEDS)
def test_plain_split_is_sklearns(n: int, data: st.DataObject, seed: int) -> None:
    n_test = data.draw(st.integers(min_value=1, max_value=n - 1))
    expected_train, expected_test = _sklearn(n, n_test, seed, None)
    train, test = train_test_indices(n, n_test, seed=seed)
    np.testing.assert_array_equal(train, expected_train)
    np.testing.assert_array_equal(test, expected_test)


@pytest.mark.parametrize("n_test", [0, 10, 11, -1])
def test_a_test_size_outside_the_rows_is_refused_like_sklearn(n_test: int) -> None:
    with pytest.raises(ValueError):
        _sklearn(10, n_test, 0, None)
    with pytest.raises(ValueError, match="test size"):
        train_test_indices(10, n_test, seed=0)


def test_a_class_of_one_row_cannot_be_stratified() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 2])
    with pytest.raises(ValueError):
        _sklearn(7, 3, 0, labels)
    with pytest.raises(ValueError, match=r"classes \[2\] have a single row"):
        train_test_indices(7, 3, seed=0, stratify=labels)


@pytest.mark.parametrize("seed", [0, 1, 42])
@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.35])
def test_pipeline_split_keeps_the_rows_sklearn_picked(seed: int, fraction: float) -> None:
    table = load_builtin("wine")
    n_test = max(1, round(len(table) * fraction))
    expected_train, expected_test = _sklearn(len(table), n_test, seed, table.y)
    train, test = split(table, test_fraction=fraction, seed=seed)
    np.testing.assert_array_equal(train.y, table.y[np.sort(expected_train)])
    np.testing.assert_array_equal(test.X, table.X[np.sort(expected_test)])
