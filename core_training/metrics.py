"""Classification scores from a confusion matrix, with numpy alone.

They give the numbers scikit-learn gives (``balanced_accuracy_score``,
``f1_score(average="macro", zero_division=0)``, ``recall_score(average=None,
zero_division=0)``), without importing it: scikit-learn and scipy cost every Flower
ClientApp process, started anew for each message, about two seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes that occur in ``y_true``; a class that is only
    predicted has no recall and does not count (as in scikit-learn)."""
    tp, true_sum, _ = _label_counts(y_true, y_pred)
    present = true_sum > 0
    return float(np.mean(tp[present] / true_sum[present]))


def macro_f1(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[object] | None = None
) -> float:
    """Unweighted mean of the per-class F1 over ``labels`` (default: every class in
    ``y_true`` or ``y_pred``); a class never true nor predicted scores 0."""
    tp, true_sum, pred_sum = _label_counts(y_true, y_pred, labels)
    return float(np.mean(_divide(2.0 * tp, true_sum + pred_sum)))


def per_class_recall(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[object]
) -> np.ndarray:
    """Recall of each of ``labels``, in that order; 0 for a class absent from ``y_true``."""
    tp, true_sum, _ = _label_counts(y_true, y_pred, labels)
    return _divide(tp, true_sum)


def _label_counts(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[object] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, true rows and predicted rows of each label."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true and y_pred must be 1-D and of one length, got {y_true.shape} "
            f"and {y_pred.shape}"
        )
    if len(y_true) == 0:
        raise ValueError("cannot score an empty set of predictions")
    seen = np.union1d(y_true, y_pred)
    wanted = seen if labels is None else np.asarray(labels)
    universe = np.union1d(seen, wanted)
    k = len(universe)
    true_at = np.searchsorted(universe, y_true)
    pred_at = np.searchsorted(universe, y_pred)
    confusion = np.bincount(true_at * k + pred_at, minlength=k * k).reshape(k, k)
    at = np.searchsorted(universe, wanted)
    return np.diag(confusion)[at], confusion.sum(axis=1)[at], confusion.sum(axis=0)[at]


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ratio, 0 where the denominator is 0."""
    out = np.zeros(len(denominator), dtype=np.float64)
    nonzero = denominator > 0
    out[nonzero] = np.asarray(numerator, dtype=np.float64)[nonzero] / denominator[nonzero]
    return out


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class) for class indices ``0..num_classes-1``."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def scores_from_confusion(confusion: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro-F1 of a (pooled) confusion matrix, as
    :func:`balanced_accuracy` and ``macro_f1(labels=classes present)`` score the rows
    behind it: silos sum their matrices, and the scores of the sum are the federation's
    (an average of per-silo scores is not, once silos hold different classes)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp, true_sum, pred_sum = np.diag(confusion), confusion.sum(1), confusion.sum(0)
    total = confusion.sum()
    if total == 0:
        raise ValueError("cannot score an empty confusion matrix")
    present = true_sum > 0
    return {
        "accuracy": float(tp.sum() / total),
        "balanced_accuracy": float(np.mean(tp[present] / true_sum[present])),
        "macro_f1": float(np.mean(_divide(2.0 * tp, true_sum + pred_sum)[present])),
    }
