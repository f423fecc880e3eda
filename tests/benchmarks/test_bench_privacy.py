"""The privacy suite in quick mode: AES at rest, the private epoch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bench_quick import quick_suite

pytestmark = pytest.mark.e2e
SUITE, HEADING = "privacy", "## Privacy"
quick, test_every_figure_is_a_finite_number_and_the_section_is_written = quick_suite(SUITE, HEADING)
