"""Permutation feature importance per schema feature.

The method of scikit-learn's ``permutation_importance``: score the model on the data,
then, for each feature, shuffle its values across rows (breaking its link to the label
while keeping its distribution), score again, and report the drop, averaged over
``n_repeats`` shuffles. Here a feature is a *schema* feature: the one-hot columns of a
categorical feature are shuffled together (by the same row permutation), so a category
cannot be half-shuffled into a row that has two categories set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .metrics import balanced_accuracy, macro_f1
from .schema import Schema

SCORES = ("accuracy", "balanced_accuracy", "macro_f1")


@dataclass(frozen=True)
class Importance:
    feature: str
    mean: float  # drop of the score when the feature is shuffled (higher: more relied on)
    std: float
    columns: int  # encoded columns shuffled together


def feature_columns(schema: Schema) -> list[tuple[str, list[int]]]:
    """Each schema feature with the indices of its encoded columns."""
    out, start = [], 0
    for feat in schema.features:
        width = len(feat.encoded_names)
        out.append((feat.name, list(range(start, start + width))))
        start += width
    return out


def permutation_importance(
    predict: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    schema: Schema,
    *,
    scoring: str = "accuracy",
    n_repeats: int = 5,
    seed: int = 0,
    on_feature: Callable[[str], None] | None = None,
) -> tuple[float, list[Importance]]:
    """The baseline score and each feature's importance, most important first.

    ``predict`` maps cleaned rows to class indices; ``X`` is cleaned (preprocessed).
    """
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be at least 1, got {n_repeats}")
    score = _scorer(scoring)
    baseline = score(y, predict(X))
    rng = np.random.RandomState(seed)
    results = []
    for name, cols in feature_columns(schema):
        drops = []
        for _ in range(n_repeats):
            shuffled = X.copy()
            shuffled[:, cols] = X[rng.permutation(len(X))][:, cols]
            drops.append(baseline - score(y, predict(shuffled)))
        results.append(Importance(name, float(np.mean(drops)), float(np.std(drops)), len(cols)))
        if on_feature is not None:
            on_feature(name)
    results.sort(key=lambda r: r.mean, reverse=True)
    return baseline, results


def _scorer(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    if name == "accuracy":
        return lambda y, pred: float((y == pred).mean())
    if name == "balanced_accuracy":
        return balanced_accuracy
    if name == "macro_f1":
        return macro_f1
    raise ValueError(f"scoring must be one of {', '.join(SCORES)}, got {name!r}")
