"""Deterministic partitioners: split a labelled data set's rows among simulated clients.

Every partitioner takes the label vector of a data set and returns one sorted ``int64`` array
of row indices per client. Together the arrays are a partition of ``range(len(labels))``:
disjoint, and covering every row. The same inputs and seed always give the same split.

Methods:

``iid``
    Rows shuffled and dealt out; client sizes differ by at most one.
``dirichlet``
    Label skew. For each class, the share of that class's rows given to each client is drawn
    from ``Dirichlet(alpha, ..., alpha)`` (the label-skew scheme popularised by Hsu et al.,
    2019, "Measuring the Effects of Non-Identical Data Distribution"). Small ``alpha``: each
    client sees few classes; large ``alpha``: close to IID. Draws are repeated, with the same
    seeded generator, until every client has at least ``min_size`` rows.
``quantity``
    Quantity skew. Client sizes are ``min_size`` plus a ``Dirichlet(alpha)`` share of the
    remaining rows; labels are IID within each client.

Plain numpy: no Flower, no torch. Everything is vectorised, so 1,000 clients over 100,000 rows
take milliseconds.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import numpy as np

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "PARTITIONERS",
    "dirichlet_partition",
    "iid_partition",
    "label_skew",
    "partition",
    "quantity_partition",
]

PARTITIONERS = ("iid", "dirichlet", "quantity")

DEFAULT_MAX_ATTEMPTS = 100
"""How many Dirichlet draws ``dirichlet_partition`` makes before giving up on ``min_size``."""


def partition(
    labels: np.ndarray,
    *,
    num_partitions: int,
    method: str = "iid",
    alpha: float = 0.5,
    min_size: int = 10,
    seed: int = 0,
) -> list[np.ndarray]:
    """Split the rows of a data set among ``num_partitions`` clients.

    Args:
        labels: 1-D array of class labels, one per row (any type ``np.unique`` can sort).
        num_partitions: number of clients, at least 1.
        method: one of ``PARTITIONERS``.
        alpha: Dirichlet concentration for ``dirichlet`` and ``quantity`` (> 0; smaller is
            more skewed). Ignored by ``iid``.
        min_size: fewest rows any client may get, at least 1.
        seed: seed of the random generator; same seed, same split.

    Returns:
        One sorted ``int64`` array of row indices per client; disjoint, covering every row.

    Raises:
        ValueError: on a bad argument (the message names it), or when ``dirichlet`` cannot
            give every client ``min_size`` rows.
    """
    if method == "iid":
        return iid_partition(labels, num_partitions=num_partitions, min_size=min_size, seed=seed)
    if method == "dirichlet":
        return dirichlet_partition(
            labels, num_partitions=num_partitions, alpha=alpha, min_size=min_size, seed=seed
        )
    if method == "quantity":
        return quantity_partition(
            labels, num_partitions=num_partitions, alpha=alpha, min_size=min_size, seed=seed
        )
    valid = ", ".join(repr(m) for m in PARTITIONERS)
    raise ValueError(f"method must be one of {valid}; got {method!r}")


def iid_partition(
    labels: np.ndarray, *, num_partitions: int, min_size: int = 10, seed: int = 0
) -> list[np.ndarray]:
    """Shuffle the rows and deal them out; client sizes differ by at most one."""
    labels, num_partitions, min_size, rng = _validate(labels, num_partitions, min_size, seed)
    n = len(labels)
    sizes = np.full(num_partitions, n // num_partitions, dtype=np.int64)
    sizes[: n % num_partitions] += 1
    return _split_rows(rng.permutation(n), sizes)


def dirichlet_partition(
    labels: np.ndarray,
    *,
    num_partitions: int,
    alpha: float = 0.5,
    min_size: int = 10,
    seed: int = 0,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> list[np.ndarray]:
    """Label skew: each class's rows are shared among clients by ``Dirichlet(alpha)`` draws.

    The draw (one proportion vector over clients per class) is repeated with the same seeded
    generator until every client has at least ``min_size`` rows, at most ``max_attempts``
    times.
    """
    labels, num_partitions, min_size, rng = _validate(labels, num_partitions, min_size, seed)
    alpha = _validate_alpha(alpha)
    max_attempts = _validate_int("max_attempts", max_attempts, minimum=1)

    classes, inverse = np.unique(labels, return_inverse=True)
    class_counts = np.bincount(inverse, minlength=len(classes))
    # Rows grouped by class (class 0's rows first), in random order within each class.
    shuffled = rng.permutation(len(labels))
    grouped = shuffled[np.argsort(inverse[shuffled], kind="stable")]

    concentration = np.full(num_partitions, alpha)
    for _ in range(max_attempts):
        # One row per class: that class's share for each client.
        shares = rng.dirichlet(concentration, size=len(classes))
        counts = _split_counts(shares, class_counts)  # (classes, clients)
        sizes = counts.sum(axis=0)
        if sizes.min() >= min_size:
            break
    else:
        raise ValueError(
            f"dirichlet partitioning could not give each of the {num_partitions} clients at "
            f"least min_size={min_size} rows in {max_attempts} attempts (alpha={alpha}, "
            f"{len(labels)} rows, {len(classes)} classes); lower min_size or num_partitions, "
            f"or raise alpha"
        )

    # counts.ravel() walks class 0's clients, then class 1's, ...: the order of `grouped`.
    owners = np.repeat(np.tile(np.arange(num_partitions), len(classes)), counts.ravel())
    return _split_by_owner(grouped, owners, sizes)


def quantity_partition(
    labels: np.ndarray,
    *,
    num_partitions: int,
    alpha: float = 0.5,
    min_size: int = 10,
    seed: int = 0,
) -> list[np.ndarray]:
    """Quantity skew: sizes are ``min_size`` plus a ``Dirichlet(alpha)`` share of the rest.

    Rows are shuffled before being dealt out, so labels are IID within each client.
    """
    labels, num_partitions, min_size, rng = _validate(labels, num_partitions, min_size, seed)
    alpha = _validate_alpha(alpha)
    n = len(labels)
    shares = rng.dirichlet(np.full(num_partitions, alpha))
    extra = _split_counts(shares[np.newaxis, :], np.array([n - num_partitions * min_size]))[0]
    return _split_rows(rng.permutation(n), extra + min_size)


def label_skew(labels: np.ndarray, parts: Sequence[np.ndarray]) -> float:
    """Mean total-variation distance between each client's label distribution and the global one.

    0.0 when every client has exactly the global class mix; approaches 1.0 when each client
    holds a single class of many. Each client counts once, whatever its size.

    Args:
        labels: 1-D array of class labels, one per row.
        parts: row-index arrays, one per client, as returned by the partitioners. None may
            be empty.
    """
    labels = _as_labels(labels)
    if len(parts) == 0:
        raise ValueError("parts must hold at least one client's row indices; got none")
    idx = [np.asarray(p) for p in parts]
    lengths = np.array([p.size for p in idx])
    if lengths.min() == 0:
        empty = int(np.argmin(lengths))
        raise ValueError(f"parts[{empty}] is empty; label skew is undefined for an empty client")
    rows = np.concatenate(idx)
    if not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"parts must hold integer row indices; got dtype {rows.dtype}")
    if rows.min() < 0 or rows.max() >= len(labels):
        raise ValueError(
            f"parts holds row indices outside 0..{len(labels) - 1} (labels has {len(labels)} rows)"
        )

    classes, inverse = np.unique(labels, return_inverse=True)
    k = len(classes)
    client = np.repeat(np.arange(len(idx)), lengths)
    counts = np.bincount(client * k + inverse[rows], minlength=len(idx) * k).reshape(len(idx), k)
    local = counts / lengths[:, np.newaxis]
    global_ = np.bincount(inverse, minlength=k) / len(labels)
    return float(np.mean(0.5 * np.abs(local - global_).sum(axis=1)))


# -- helpers ------------------------------------------------------------------------------------


def _split_counts(shares: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Round each row of ``shares`` (summing to 1) times its total to integers summing to it.

    Largest-remainder rounding: the floor of each exact count, then one more row to the
    entries with the largest fractional parts (earliest first on ties). Deterministic.
    """
    exact = shares * totals[:, np.newaxis]
    counts = np.floor(exact).astype(np.int64)
    short = totals - counts.sum(axis=1)  # 0 <= short < number of clients
    fraction = exact - counts
    # Rank entries by fractional part, largest first; stable so ties go to the lowest index.
    order = np.argsort(-fraction, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(shares.shape[1])[np.newaxis, :], axis=1)
    counts += rank < short[:, np.newaxis]
    return counts


def _split_rows(rows: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    """Deal ``rows`` (in order) to clients: the first ``sizes[0]`` to client 0, and so on."""
    owners = np.repeat(np.arange(len(sizes)), sizes)
    return _split_by_owner(rows, owners, sizes)


def _split_by_owner(rows: np.ndarray, owners: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    """Row ``rows[i]`` goes to client ``owners[i]``: one sorted int64 index array per client."""
    owner_of_row = np.empty(len(rows), dtype=np.int64)
    owner_of_row[rows] = owners
    # A stable sort by owner keeps each client's rows in ascending order.
    ordered = np.argsort(owner_of_row, kind="stable").astype(np.int64, copy=False)
    return np.split(ordered, np.cumsum(sizes)[:-1])


def _as_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, one label per row; got shape {labels.shape}")
    if len(labels) == 0:
        raise ValueError("labels is empty; there are no rows to partition")
    return labels


def _validate_int(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer; got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {number}")
    return number


def _validate_alpha(alpha: float) -> float:
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a positive number; got {alpha!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"alpha must be a finite number > 0; got {alpha!r}")
    return value


def _validate(
    labels: np.ndarray, num_partitions: int, min_size: int, seed: int
) -> tuple[np.ndarray, int, int, np.random.Generator]:
    labels = _as_labels(labels)
    num_partitions = _validate_int("num_partitions", num_partitions, minimum=1)
    min_size = _validate_int("min_size", min_size, minimum=1)
    seed = _validate_int("seed", seed, minimum=0)
    n = len(labels)
    if num_partitions * min_size > n:
        raise ValueError(
            f"num_partitions={num_partitions} clients of at least min_size={min_size} rows need "
            f"{num_partitions * min_size} rows, but labels has {n}; lower num_partitions "
            f"(at most {n // min_size}) or min_size"
        )
    return labels, num_partitions, min_size, np.random.default_rng(seed)
