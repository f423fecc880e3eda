"""Tests for core_training.partition: deterministic row partitioners for simulated clients."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core_training.partition import (
    PARTITIONERS,
    dirichlet_partition,
    iid_partition,
    label_skew,
    partition,
    quantity_partition,
)

# Digits-like labels: 1,800 rows, 10 balanced classes.
DIGITS = np.arange(1_800) % 10


def _is_disjoint_cover(parts: list[np.ndarray], n: int) -> bool:
    rows = np.concatenate(parts)
    return len(rows) == n and np.array_equal(np.sort(rows), np.arange(n))


def _sizes(parts: list[np.ndarray]) -> np.ndarray:
    return np.array([len(p) for p in parts])


# -- the partition property ----------------------------------------------------------------------


@st.composite
def _partition_case(draw: st.DrawFn) -> tuple[np.ndarray, str, int, float, int]:
    method = draw(st.sampled_from(PARTITIONERS))
    n = draw(st.integers(min_value=1, max_value=400))
    num_classes = draw(st.integers(min_value=1, max_value=10))
    labels = np.array(
        draw(st.lists(st.integers(0, num_classes - 1), min_size=n, max_size=n)), dtype=np.int64
    )
    # Dirichlet re-draws until no client is empty; keep to a regime where that always succeeds.
    max_parts = max(1, min(8, n // 20)) if method == "dirichlet" else n
    num_partitions = draw(st.integers(min_value=1, max_value=max_parts))
    alpha = draw(st.floats(min_value=0.3, max_value=100.0))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    return labels, method, num_partitions, alpha, seed


@settings(max_examples=150, deadline=None)
@given(_partition_case())
def test_every_method_returns_a_disjoint_cover_of_all_rows(case) -> None:
    labels, method, num_partitions, alpha, seed = case

    parts = partition(
        labels, num_partitions=num_partitions, method=method, alpha=alpha, min_size=1, seed=seed
    )

    assert len(parts) == num_partitions
    assert _is_disjoint_cover(parts, len(labels))


@pytest.mark.parametrize("method", PARTITIONERS)
def test_parts_are_sorted_int64_index_arrays(method: str) -> None:
    parts = partition(DIGITS, num_partitions=10, method=method, seed=3)

    assert all(p.dtype == np.int64 and p.ndim == 1 for p in parts)
    assert all(np.all(np.diff(p) > 0) for p in parts)


@pytest.mark.parametrize(
    ("method", "function"),
    [("iid", iid_partition), ("dirichlet", dirichlet_partition), ("quantity", quantity_partition)],
)
def test_partition_gives_the_same_split_as_the_method_function(method: str, function) -> None:
    kwargs = {} if method == "iid" else {"alpha": 0.7}

    via_partition = partition(DIGITS, num_partitions=7, method=method, seed=5, **kwargs)
    direct = function(DIGITS, num_partitions=7, seed=5, **kwargs)

    assert len(via_partition) == len(direct) == 7
    assert all(np.array_equal(a, b) for a, b in zip(via_partition, direct, strict=True))


# -- iid -----------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(n=st.integers(min_value=1, max_value=2_000), data=st.data())
def test_iid_sizes_differ_by_at_most_one(n: int, data: st.DataObject) -> None:
    num_partitions = data.draw(st.integers(min_value=1, max_value=n))

    sizes = _sizes(iid_partition(np.zeros(n), num_partitions=num_partitions, min_size=1))

    assert sizes.max() - sizes.min() <= 1
    assert sizes.sum() == n


def test_iid_of_1003_rows_into_10_clients_gives_three_of_101_and_seven_of_100() -> None:
    sizes = _sizes(iid_partition(np.zeros(1_003), num_partitions=10))

    assert sorted(sizes.tolist()) == [100] * 7 + [101] * 3


def test_iid_keeps_label_skew_low() -> None:
    parts = iid_partition(DIGITS, num_partitions=10, seed=0)

    assert label_skew(DIGITS, parts) < 0.15


# -- dirichlet -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_dirichlet_gives_every_client_at_least_min_size_rows(seed: int) -> None:
    # At alpha 0.1 the first draw leaves some client under 25 rows for seeds 1 and 2.
    parts = dirichlet_partition(DIGITS, num_partitions=10, alpha=0.1, min_size=25, seed=seed)

    assert _sizes(parts).min() >= 25


def test_dirichlet_label_skew_grows_as_alpha_shrinks() -> None:
    def mean_skew(alpha: float) -> float:
        return float(
            np.mean(
                [
                    label_skew(
                        DIGITS, dirichlet_partition(DIGITS, num_partitions=10, alpha=alpha, seed=s)
                    )
                    for s in range(3)
                ]
            )
        )

    near_iid, moderate, skewed = mean_skew(100.0), mean_skew(1.0), mean_skew(0.1)

    assert near_iid < 0.1
    assert 0.2 < moderate < 0.5
    assert skewed > 0.55
    assert near_iid < moderate < skewed


def test_dirichlet_raises_when_min_size_cannot_be_reached() -> None:
    # 100 rows into 10 clients of >= 10 rows needs an exactly even split: never drawn at 0.01.
    with pytest.raises(ValueError, match=r"min_size.*num_partitions.*alpha") as excinfo:
        dirichlet_partition(np.arange(100) % 10, num_partitions=10, alpha=0.01, min_size=10)

    assert "100 attempts" in str(excinfo.value)


def test_dirichlet_max_attempts_bounds_the_redraws() -> None:
    with pytest.raises(ValueError, match="in 3 attempts"):
        dirichlet_partition(
            np.arange(100) % 10, num_partitions=10, alpha=0.01, min_size=10, max_attempts=3
        )


def test_dirichlet_with_string_labels_matches_integer_labels() -> None:
    as_text = DIGITS.astype(str)  # "0".."9" sort like 0..9

    from_text = dirichlet_partition(as_text, num_partitions=10, alpha=0.5, seed=2)
    from_ints = dirichlet_partition(DIGITS, num_partitions=10, alpha=0.5, seed=2)

    assert all(np.array_equal(a, b) for a, b in zip(from_text, from_ints, strict=True))


# -- quantity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_quantity_gives_every_client_at_least_min_size_rows(seed: int) -> None:
    parts = quantity_partition(DIGITS, num_partitions=20, alpha=0.05, min_size=40, seed=seed)

    sizes = _sizes(parts)
    assert sizes.min() >= 40
    assert sizes.sum() == len(DIGITS)


def test_quantity_size_spread_grows_as_alpha_shrinks() -> None:
    labels = np.arange(10_000) % 10

    def mean_cv(alpha: float) -> float:
        cvs = []
        for seed in range(3):
            sizes = _sizes(quantity_partition(labels, num_partitions=50, alpha=alpha, seed=seed))
            cvs.append(sizes.std() / sizes.mean())
        return float(np.mean(cvs))

    near_even, moderate, skewed = mean_cv(100.0), mean_cv(1.0), mean_cv(0.1)

    assert near_even < 0.2
    assert 0.5 < moderate < 1.5
    assert skewed > 2.0
    assert near_even < moderate < skewed


def test_quantity_keeps_labels_close_to_iid_within_clients() -> None:
    labels = np.arange(10_000) % 10

    parts = quantity_partition(labels, num_partitions=10, alpha=1.0, min_size=200, seed=0)

    assert label_skew(labels, parts) < 0.1


# -- determinism ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", PARTITIONERS)
def test_same_inputs_and_seed_give_identical_split(method: str) -> None:
    first = partition(DIGITS, num_partitions=10, method=method, seed=11)
    second = partition(DIGITS, num_partitions=10, method=method, seed=11)

    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("method", PARTITIONERS)
def test_different_seed_gives_different_split(method: str) -> None:
    first = partition(DIGITS, num_partitions=10, method=method, seed=11)
    second = partition(DIGITS, num_partitions=10, method=method, seed=12)

    assert not all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_partitions": 0}, "num_partitions"),
        ({"num_partitions": -3}, "num_partitions"),
        ({"num_partitions": 2.5}, "num_partitions"),
        ({"num_partitions": 181}, "num_partitions"),  # 181 * 10 > 1,800 rows
        ({"num_partitions": 10, "min_size": 0}, "min_size"),
        ({"num_partitions": 10, "min_size": 181}, "min_size"),
        ({"num_partitions": 10, "method": "dirichlet", "alpha": 0.0}, "alpha"),
        ({"num_partitions": 10, "method": "dirichlet", "alpha": -1.0}, "alpha"),
        ({"num_partitions": 10, "method": "quantity", "alpha": 0.0}, "alpha"),
        ({"num_partitions": 10, "method": "quantity", "alpha": float("nan")}, "alpha"),
        ({"num_partitions": 10, "method": "quantity", "alpha": float("inf")}, "alpha"),
        ({"num_partitions": 10, "seed": -1}, "seed"),
        ({"num_partitions": 10, "method": "shards"}, "method"),
    ],
)
def test_bad_argument_raises_value_error_naming_it(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        partition(DIGITS, **kwargs)


def test_too_many_partitions_error_says_how_many_fit() -> None:
    with pytest.raises(ValueError, match=r"num_partitions=181.*1810 rows.*1800.*at most 180"):
        partition(DIGITS, num_partitions=181)


def test_unknown_method_error_lists_the_valid_methods() -> None:
    with pytest.raises(ValueError, match="'iid', 'dirichlet', 'quantity'; got 'shards'"):
        partition(DIGITS, num_partitions=10, method="shards")


@pytest.mark.parametrize(
    "labels", [np.zeros((10, 2)), np.array([]), np.array(3)], ids=["2-d", "empty", "scalar"]
)
def test_bad_labels_raise_value_error_naming_labels(labels: np.ndarray) -> None:
    with pytest.raises(ValueError, match="labels"):
        partition(labels, num_partitions=1, min_size=1)


# -- scale ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", PARTITIONERS)
def test_thousand_partitions_of_100k_rows(method: str) -> None:
    labels = np.random.default_rng(0).integers(0, 10, size=100_000)

    parts = partition(labels, num_partitions=1_000, method=method, alpha=0.5, seed=0)

    assert len(parts) == 1_000
    assert _sizes(parts).min() >= 10
    assert _is_disjoint_cover(parts, 100_000)


# -- label_skew ----------------------------------------------------------------------------------


def test_label_skew_is_zero_when_every_client_has_the_global_mix() -> None:
    labels = np.array([0, 1, 0, 1, 2, 2])

    assert label_skew(labels, [np.array([0, 1, 4]), np.array([2, 3, 5])]) == 0.0


def test_label_skew_is_half_for_two_single_class_clients_of_two_classes() -> None:
    labels = np.array([0, 0, 1, 1])

    assert label_skew(labels, [np.array([0, 1]), np.array([2, 3])]) == pytest.approx(0.5)


def test_label_skew_averages_clients_unweighted() -> None:
    # Global mix 1/3 : 2/3. Client 0 (4 rows) is 1/2 : 1/2, TV 1/6; client 1 (2 rows) is 0 : 1,
    # TV 1/3. Unweighted mean 1/4 (a size-weighted mean would be 2/9).
    labels = np.array([0, 0, 1, 1, 1, 1])

    skew = label_skew(labels, [np.array([0, 1, 2, 3]), np.array([4, 5])])

    assert skew == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([], "at least one client"),
        ([np.array([0, 1]), np.array([], dtype=np.int64)], r"parts\[1\] is empty"),
        ([np.array([0, 4])], "outside 0..3"),
        ([np.array([0.0, 1.0])], "integer row indices"),
    ],
    ids=["no-parts", "empty-part", "out-of-range", "float-indices"],
)
def test_label_skew_rejects_bad_parts(parts: list[np.ndarray], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        label_skew(np.array([0, 0, 1, 1]), parts)
