"""The DP accuracy suite in quick mode: the same federation without DP and with DP at a
fixed epsilon, with the settings a user gets by default."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bench_quick import quick_suite

pytestmark = pytest.mark.e2e
SUITE, HEADING = "dp_accuracy", "## Accuracy at a fixed epsilon"
quick, test_every_figure_is_a_finite_number_and_the_section_is_written = quick_suite(SUITE, HEADING)


def test_each_private_arm_stays_within_its_epsilon_and_is_compared_on_the_same_rows(
    quick,
) -> None:
    results, _ = quick
    d = results["dp_accuracy"]["synthetic"]
    assert d["no_dp"]["epsilon_max"] is None
    for budget in results["dp_accuracy"]["budgets"]:
        arm = d[f"dp_eps{budget:g}"]
        assert arm["test_rows"] == d["no_dp"]["test_rows"]
        assert 0.0 < arm["epsilon_max"] <= budget * 1.01
        below = round(100 * (d["no_dp"]["accuracy"] - arm["accuracy"]), 2)
        assert arm["points_below_no_dp"] == below


def test_the_private_arms_train_with_the_dp_recipe_and_the_other_with_the_plain_one(
    quick,
) -> None:
    """Nothing but dp and target-epsilon was set: the recipes of core_training.config."""
    from core_training.config import RECIPES

    d = results_of(quick)
    for key, recipe in (("no_dp", RECIPES["plain"]), ("dp_eps8", RECIPES["dp"])):
        settings = d[key]["settings"]
        assert settings["optimizer"] == recipe["optimizer"], key
        assert settings["batch-size"] == recipe["batch_size"], key
        assert settings["local-epochs"] == recipe["local_epochs"], key


def results_of(quick: tuple[dict[str, Any], str]) -> dict[str, Any]:
    return quick[0]["dp_accuracy"]["synthetic"]
