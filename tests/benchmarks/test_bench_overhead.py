"""The overhead suite in quick mode: fedsilo against plain Flower and no Flower."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bench_quick import quick_suite

pytestmark = pytest.mark.e2e
SUITE, HEADING = "overhead", "## Framework overhead"
quick, test_every_figure_is_a_finite_number_and_the_section_is_written = quick_suite(SUITE, HEADING)


def test_both_baselines_trained(quick) -> None:
    overhead = quick[0]["overhead"]
    assert overhead["fedsilo"]["train_seconds"] > 0
    assert overhead["sequential"]["train_seconds"] > 0
