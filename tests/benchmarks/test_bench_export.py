"""The export suite in quick mode: int8 against fp32."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bench_quick import check_figures_and_markdown, run_quick

pytestmark = pytest.mark.e2e
SUITE, HEADING = "export", "## int8 export"


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    return run_quick(SUITE, tmp_path_factory.mktemp("bench"))


def test_every_figure_is_a_finite_number_and_the_section_is_written(quick) -> None:
    check_figures_and_markdown(*quick, SUITE, HEADING)


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
