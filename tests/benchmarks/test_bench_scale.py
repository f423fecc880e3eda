"""The growth suite in quick mode: more clients, more rows per client."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bench_quick import check_figures_and_markdown, run_quick

pytestmark = pytest.mark.e2e
SUITE, HEADING = "scale", "## Growth"


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    return run_quick(SUITE, tmp_path_factory.mktemp("bench"))


def test_every_figure_is_a_finite_number_and_the_section_is_written(quick) -> None:
    check_figures_and_markdown(*quick, SUITE, HEADING)


def test_every_round_sampled_the_configured_count(quick) -> None:
    scale = quick[0]["scale"]
    for n, run in scale["clients"].items():
        assert run["clients_per_round"] == [min(scale["sampled"], int(n))] * run["rounds"]
        assert run["peak_rss_mib"] > 0
