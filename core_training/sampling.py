"""Class imbalance: class weights for the loss, and over- or under-sampling."""

from __future__ import annotations

import numpy as np

# DP-SGD's accounting counts each row once, at the sample rate of the rows it was given:
# a repeated row is one person sampled more often than accounted, and a shrunken table
# a higher sample rate than planned.
RESAMPLING_UNDER_DP = (
    "setting 'resampling' must be none under differential privacy: repeated or dropped rows "
    "would make the spent epsilon wrong; use class-weighting = balanced instead"
)


def class_weights(counts: np.ndarray | list[float], mode: str = "balanced") -> np.ndarray:
    """Per-class loss weights from class counts.

    ``balanced`` is scikit-learn's rule, ``n / (k * count_c)``, so that each class
    contributes equally to the loss. The counts may be a silo's own or the federation's
    merged counts (the server sends those so every silo weights the same way). A class
    with no examples gets weight 1: it has nothing to weight, and a huge weight would
    only hurt if it appears later. ``none`` gives all ones.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size < 2 or (counts < 0).any():
        raise ValueError(f"class counts must be non-negative, one per class, got {counts!r}")
    if mode == "none":
        return np.ones_like(counts)
    if mode != "balanced":
        raise ValueError(f"class weighting must be 'balanced' or 'none', got {mode!r}")
    present = counts > 0
    weights = np.ones_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def resample_classes(
    X: np.ndarray, y: np.ndarray, *, mode: str, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Balance classes by ``over``-sampling every class up to the largest one (with
    replacement) or ``under``-sampling every class down to the smallest present one
    (without). Rows come back shuffled, deterministically for a seed."""
    if mode not in ("over", "under"):
        raise ValueError(f"resampling mode must be 'over' or 'under', got {mode!r}")
    from sklearn.utils import resample  # only here: sklearn costs ~2 s to import

    classes, counts = np.unique(y, return_counts=True)
    target = counts.max() if mode == "over" else counts.min()
    rng = np.random.RandomState(seed)
    parts_X, parts_y = [], []
    for c in classes:
        Xc, yc = X[y == c], y[y == c]
        Xc, yc = resample(Xc, yc, replace=mode == "over", n_samples=int(target), random_state=rng)
        parts_X.append(Xc)
        parts_y.append(yc)
    Xr, yr = np.concatenate(parts_X), np.concatenate(parts_y)
    order = rng.permutation(len(yr))
    return Xr[order], yr[order]
