"""core_training.metrics gives scikit-learn's numbers, to the last bit, including for
classes missing from the labels or from the predictions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

from core_training.metrics import balanced_accuracy, macro_f1, per_class_recall


@st.composite
def _case(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Labels and predictions over ``range(k)``, each drawn from its own subset of the
    classes, so some classes are never true, some never predicted, some neither."""
    k = draw(st.integers(min_value=1, max_value=8))
    classes = st.lists(st.integers(min_value=0, max_value=k - 1), min_size=1, unique=True)
    true_classes, pred_classes = draw(classes), draw(classes)
    n = draw(st.integers(min_value=1, max_value=200))
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    y_true = rng.choice(true_classes, size=n)
    # Mostly right, so that recalls and F1 take many values, not just 0.
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.choice(pred_classes, size=n))
    return y_true, y_pred, list(range(k))


def _quiet(score, *args, **kwargs):
    """sklearn warns about classes predicted but never true; the number is what counts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return score(*args, **kwargs)


@settings(max_examples=300, deadline=None)
@given(case=_case())
def test_balanced_accuracy_is_sklearns(case) -> None:
    y_true, y_pred, _ = case
    assert balanced_accuracy(y_true, y_pred) == _quiet(balanced_accuracy_score, y_true, y_pred)


@settings(max_examples=300, deadline=None)
@given(case=_case())
def test_macro_f1_over_the_true_classes_is_sklearns(case) -> None:
    y_true, y_pred, _ = case
    present = sorted(set(y_true.tolist()))
    expected = _quiet(f1_score, y_true, y_pred, labels=present, average="macro", zero_division=0)
    assert macro_f1(y_true, y_pred, labels=present) == expected


@settings(max_examples=300, deadline=None)
@given(case=_case())
def test_macro_f1_over_all_seen_classes_is_sklearns(case) -> None:
    y_true, y_pred, _ = case
    expected = _quiet(f1_score, y_true, y_pred, average="macro", zero_division=0)
    assert macro_f1(y_true, y_pred) == expected


@settings(max_examples=300, deadline=None)
@given(case=_case())
def test_per_class_recall_is_sklearns(case) -> None:
    y_true, y_pred, labels = case
    expected = _quiet(recall_score, y_true, y_pred, labels=labels, average=None, zero_division=0)
    got = per_class_recall(y_true, y_pred, labels)
    assert got.tolist() == expected.tolist()


def test_scores_of_a_known_case() -> None:
    y_true = np.array([0, 0, 0, 0, 1, 1])
    y_pred = np.array([0, 0, 1, 2, 1, 1])  # class 2 predicted, never true
    assert balanced_accuracy(y_true, y_pred) == (2 / 4 + 2 / 2) / 2
    # F1: class 0 = 2*2/(4+2), class 1 = 2*2/(2+3); class 2 = 0 when counted.
    assert macro_f1(y_true, y_pred, labels=[0, 1]) == pytest.approx((4 / 6 + 4 / 5) / 2)
    assert macro_f1(y_true, y_pred) == pytest.approx((4 / 6 + 4 / 5 + 0) / 3)
    assert per_class_recall(y_true, y_pred, [0, 1, 2, 3]).tolist() == [0.5, 1.0, 0.0, 0.0]


def test_empty_predictions_are_refused() -> None:
    empty = np.array([], dtype=int)
    with pytest.raises(ValueError, match="empty"):
        balanced_accuracy(empty, empty)


def test_predictions_of_another_length_are_refused() -> None:
    with pytest.raises(ValueError, match="one length"):
        macro_f1(np.array([0, 1, 1]), np.array([0, 1]))
