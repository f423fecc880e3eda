"""A seeded train/test split of row positions, the same one scikit-learn makes.

``train_test_indices(n, n_test, seed=s, stratify=y)`` returns exactly what
``sklearn.model_selection.train_test_split(np.arange(n), test_size=n_test,
random_state=s, stratify=y)`` returns (ShuffleSplit without ``stratify``,
StratifiedShuffleSplit with it), drawing the same numbers from the same
``RandomState``. It lives here so that a process that only trains (a Flower ClientApp,
started anew for every message) does not pay about two seconds to import scikit-learn
and scipy. Splits made before and after this module are identical.
"""

from __future__ import annotations

import numpy as np


def train_test_indices(
    n_samples: int, n_test: int, *, seed: int, stratify: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test positions (in shuffled order) of ``n_samples`` rows, ``n_test``
    of them for test. With ``stratify`` (one label per row) each class keeps about its
    share in both parts; every class then needs two rows, and each part at least one
    row per class."""
    n_test = int(n_test)
    if not 0 < n_test < n_samples:
        raise ValueError(
            f"test size {n_test} must be positive and smaller than the {n_samples} rows"
        )
    n_train = n_samples - n_test
    rng = np.random.RandomState(seed)
    if stratify is None:
        order = rng.permutation(n_samples)
        return order[n_test : n_test + n_train], order[:n_test]

    labels = np.asarray(stratify)
    if labels.shape != (n_samples,):
        raise ValueError(f"stratify needs one label per row ({n_samples}), got {labels.shape}")
    classes, y_indices, class_counts = np.unique(labels, return_inverse=True, return_counts=True)
    if class_counts.min() < 2:
        rare = classes[class_counts < 2].tolist()
        raise ValueError(f"classes {rare} have a single row; stratifying needs two or more")
    if min(n_train, n_test) < len(classes):
        raise ValueError(
            f"train size {n_train} and test size {n_test} must each be at least "
            f"the number of classes ({len(classes)}) to stratify"
        )
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train, test = [], []
    for i, members in enumerate(class_indices):
        shuffled = members[rng.permutation(class_counts[i])]
        train.append(shuffled[: n_i[i]])
        test.append(shuffled[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _approximate_mode(
    class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState
) -> np.ndarray:
    """How many of ``n_draws`` rows to take from each class: the proportional share,
    floored, plus one for the classes with the largest remainders (ties broken by
    ``rng``) until the total is ``n_draws``. scikit-learn's ``_approximate_mode``."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)
