"""The growth suite in quick mode: more clients, more rows per client."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bench_quick import quick_suite

pytestmark = pytest.mark.e2e
SUITE, HEADING = "scale", "## Growth"
quick, test_every_figure_is_a_finite_number_and_the_section_is_written = quick_suite(SUITE, HEADING)


def test_every_round_sampled_the_configured_count(quick) -> None:
    scale = quick[0]["scale"]
    for n, run in scale["clients"].items():
        assert run["clients_per_round"] == [min(scale["sampled"], int(n))] * run["rounds"]
        assert run["peak_rss_mib"] > 0
