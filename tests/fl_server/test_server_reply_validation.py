"""check_update / split_valid: every bad reply is rejected by name before aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fl_server.aggregation import Update, check_update, split_valid

W, B = "net.0.weight", "net.0.bias"


@pytest.fixture
def reference() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {W: rng.normal(size=(4, 3)).astype(np.float32), B: np.zeros(4, np.float32)}


def good(reference: dict[str, np.ndarray], shift: float = 0.5) -> dict[str, np.ndarray]:
    return {k: (v + shift).astype(v.dtype) for k, v in reference.items()}


def test_good_update_passes(reference: dict[str, np.ndarray]) -> None:
    assert check_update(good(reference), reference, 12) == []


def test_float_example_count_passes(reference: dict[str, np.ndarray]) -> None:
    # MetricRecord values arrive as floats
    assert check_update(good(reference), reference, 12.0) == []


def test_numpy_integer_example_count_passes(reference: dict[str, np.ndarray]) -> None:
    assert check_update(good(reference), reference, np.int64(12)) == []


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "+inf", "-inf"])
def test_non_finite_values_are_rejected_naming_the_array(
    reference: dict[str, np.ndarray], bad: float
) -> None:
    arrays = good(reference)
    arrays[W][1, 2] = bad
    problems = check_update(arrays, reference, 12)
    assert problems == [f"{W}: holds NaN or infinite values"]


def test_wrong_shape_is_rejected_with_both_shapes(reference: dict[str, np.ndarray]) -> None:
    arrays = good(reference)
    arrays[W] = np.zeros((3, 4), np.float32)
    problems = check_update(arrays, reference, 12)
    assert problems == [f"{W}: shape (3, 4), expected (4, 3)"]


def test_wrong_dtype_is_rejected_with_both_dtypes(reference: dict[str, np.ndarray]) -> None:
    arrays = good(reference)
    arrays[B] = arrays[B].astype(np.float64)
    problems = check_update(arrays, reference, 12)
    assert problems == [f"{B}: dtype float64, expected float32"]


def test_missing_array_is_rejected_by_name(reference: dict[str, np.ndarray]) -> None:
    arrays = good(reference)
    del arrays[B]
    assert check_update(arrays, reference, 12) == [f"missing arrays ['{B}']"]


def test_extra_array_is_rejected_by_name(reference: dict[str, np.ndarray]) -> None:
    arrays = good(reference)
    arrays["backdoor"] = np.ones(2, np.float32)
    assert check_update(arrays, reference, 12) == ["unexpected arrays ['backdoor']"]


@pytest.mark.parametrize("count", [0, -3, math.nan, math.inf, "12", True])
def test_bad_example_count_is_rejected(reference: dict[str, np.ndarray], count: object) -> None:
    problems = check_update(good(reference), reference, count)  # type: ignore[arg-type]
    assert len(problems) == 1
    assert problems[0].startswith("num-examples must be a positive number")
    assert repr(count) in problems[0]


def test_every_problem_of_an_update_is_reported(reference: dict[str, np.ndarray]) -> None:
    arrays = good(reference)
    arrays[W][0, 0] = math.nan
    del arrays[B]
    problems = check_update(arrays, reference, 0)
    assert len(problems) == 3
    assert any(B in p and "missing" in p for p in problems)
    assert any(W in p and "NaN" in p for p in problems)
    assert any("num-examples" in p for p in problems)


def test_split_valid_keeps_good_updates_in_order_and_rejects_bad_by_name(
    reference: dict[str, np.ndarray],
) -> None:
    nan_arrays = good(reference)
    nan_arrays[B][0] = math.nan
    updates = [
        Update("node 1", good(reference, 0.1), 10),
        Update("node 2", nan_arrays, 10),
        Update("node 3", good(reference, 0.3), 30),
        Update("node 4", good(reference), 0),
    ]
    valid, rejected = split_valid(updates, reference)
    assert [u.name for u in valid] == ["node 1", "node 3"]
    assert valid[0] is updates[0] and valid[1] is updates[2]
    assert sorted(rejected) == ["node 2", "node 4"]
    assert rejected["node 2"] == [f"{B}: holds NaN or infinite values"]
    assert "num-examples" in rejected["node 4"][0]


def test_split_valid_with_only_bad_updates_returns_no_valid_one(
    reference: dict[str, np.ndarray],
) -> None:
    valid, rejected = split_valid([Update("f.bin", {}, 5)], reference)
    assert valid == []
    assert rejected == {"f.bin": [f"missing arrays {sorted(reference)}"]}
