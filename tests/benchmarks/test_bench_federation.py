"""The federation suite in quick mode: federated against centralized accuracy, each
model picked on validation rows and scored once on the same test rows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bench_quick import quick_suite

pytestmark = pytest.mark.e2e
SUITE, HEADING = "federation", "## Federated against centralized"
quick, test_every_figure_is_a_finite_number_and_the_section_is_written = quick_suite(SUITE, HEADING)


def test_every_federated_model_is_picked_on_validation_and_scored_on_the_same_test_rows(
    quick,
) -> None:
    results, md = quick
    fed = results["federation"]
    assert fed["arms_done"] == fed["arms_planned"]
    central = fed["centralized"]
    assert 1 <= central["best_epoch"] <= central["epochs"]
    test_rows = central["test_rows"]
    arms = [fed[a] for a in fed["arms_done"]]
    assert arms
    for arm in arms:
        assert arm["test_rows"] == test_rows
        assert 1 <= arm["best_round"] <= arm["rounds_completed"]
        assert 0.0 <= arm["val_accuracy"] <= 1.0 and 0.0 <= arm["accuracy"] <= 1.0
        below = round(100 * (central["accuracy"] - arm["accuracy"]), 2)
        assert arm["points_below_centralized"] == below
        assert arm["measured"]  # each arm says when it was measured
    assert "points below centralized (test)" in md
