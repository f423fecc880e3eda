"""The export suite in quick mode: int8 against fp32."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bench_quick import quick_suite

pytestmark = pytest.mark.e2e
SUITE, HEADING = "export", "## int8 export"
quick, test_every_figure_is_a_finite_number_and_the_section_is_written = quick_suite(SUITE, HEADING)


def test_int8_files_are_smaller_and_accuracies_are_fractions(quick) -> None:
    results, _ = quick
    measured = [m for m in results["export"]["models"] if "skipped" not in m]
    assert any(m["model"].startswith("digits CNN") for m in measured)
    for model in measured:
        assert model["int8_bytes"] < model["fp32_bytes"]
        assert 0.0 <= model["int8_accuracy"] <= 1.0
        assert model["int8_method"] in ("static", "dynamic")


def test_an_arm_not_measured_says_why_in_the_section(quick) -> None:
    results, md = quick
    for model in results["export"]["models"]:
        if "skipped" in model:
            assert f"{model['model']}: not measured, {model['skipped']}" in md
