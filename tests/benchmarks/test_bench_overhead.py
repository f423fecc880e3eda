"""The overhead suite in quick mode: fedsilo against plain Flower and no Flower."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bench_quick import check_figures_and_markdown, run_quick

pytestmark = pytest.mark.e2e
SUITE, HEADING = "overhead", "## Framework overhead"


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    return run_quick(SUITE, tmp_path_factory.mktemp("bench"))


def test_every_figure_is_a_finite_number_and_the_section_is_written(quick) -> None:
    check_figures_and_markdown(*quick, SUITE, HEADING)


def test_both_baselines_trained(quick) -> None:
    overhead = quick[0]["overhead"]
    assert overhead["fedsilo"]["train_seconds"] > 0
    assert overhead["sequential"]["train_seconds"] > 0
