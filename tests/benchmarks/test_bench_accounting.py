"""The accounting suite in quick mode: RDP and PRV against dp_accounting's PLD."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bench_quick import quick_suite

pytestmark = pytest.mark.e2e
SUITE, HEADING = "accounting", "## Privacy accounting"
quick, test_every_figure_is_a_finite_number_and_the_section_is_written = quick_suite(SUITE, HEADING)


def test_prv_lands_on_its_target_and_rdp_is_the_looser_bound(quick) -> None:
    """The recipe's noise was calibrated by PRV to epsilon 3: the independent PLD figure
    is at most 3, and RDP, a valid but looser bound, says more than both."""
    (history,) = quick[0]["accounting"]["histories"].values()
    eps = history["epsilon"]
    assert eps["pld"] <= 3.0 + 1e-9
    assert eps["pld"] - 0.01 <= eps["prv"] <= 3.0
    assert eps["rdp"] > eps["prv"]
    (noise,) = quick[0]["accounting"]["noise"].values()
    assert noise["sigma"]["prv"] < noise["sigma"]["rdp"]
