"""The robustness-testing option: what a misbehaving node sends, and that the server's
reply validation rejects the broken kinds by name while letting the finite ones reach
the (robust) aggregator."""

from __future__ import annotations

import numpy as np
import pytest

from fl_server.aggregation import check_update
from harness.attack import attacked

RECEIVED = {"w": np.zeros((3, 2), dtype=np.float32), "b": np.ones(2, dtype=np.float32)}
UPDATE = {"w": np.full((3, 2), 0.5, dtype=np.float32), "b": np.full(2, 2.0, dtype=np.float32)}


@pytest.mark.parametrize(
    ("attack", "problem"),
    [("nan", "NaN or infinite"), ("inf", "NaN or infinite"), ("shape", "shape (2, 2)")],
)
def test_broken_updates_are_rejected_by_the_server(attack, problem):
    sent = attacked(UPDATE, RECEIVED, attack)
    problems = check_update(sent, RECEIVED, 10)
    assert len(problems) == 1 and problem in problems[0]
    assert problems[0].startswith("w")  # the first array is the broken one


def test_scale_multiplies_the_change_to_the_global_model():
    sent = attacked(UPDATE, RECEIVED, "scale:10")
    np.testing.assert_allclose(sent["w"], 5.0)
    np.testing.assert_allclose(sent["b"], 11.0)  # 1 + 10 * (2 - 1)
    assert all(sent[k].dtype == UPDATE[k].dtype for k in UPDATE)
    assert check_update(sent, RECEIVED, 10) == []  # finite: only robust aggregation helps


def test_sign_flip_reverses_the_change():
    sent = attacked(UPDATE, RECEIVED, "sign-flip")
    np.testing.assert_allclose(sent["w"], -0.5)
    np.testing.assert_allclose(sent["b"], 0.0)


def test_the_silo_s_own_update_is_left_untouched():
    before = {k: v.copy() for k, v in UPDATE.items()}
    attacked(UPDATE, RECEIVED, "nan")
    assert all(np.array_equal(UPDATE[k], before[k]) for k in UPDATE)


@pytest.mark.parametrize("attack", ["", "nan:1", "scale", "scale:x", "scale:inf", "flip", "x"])
def test_unknown_attacks_are_refused_by_name(attack):
    with pytest.raises(ValueError, match="attack="):
        attacked(UPDATE, RECEIVED, attack)
