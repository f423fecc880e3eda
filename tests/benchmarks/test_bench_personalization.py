"""The personalization suite in quick mode: FedAvg, FedPer and a frozen transfer run on
the same skewed silos; the silos' mean accuracies compared and the bytes freezing saves
checked against the CNN's own parameter counts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bench_quick import quick_suite

pytestmark = pytest.mark.e2e
SUITE, HEADING = "personalization", "## Personalization under label skew"
quick, test_every_figure_is_a_finite_number_and_the_section_is_written = quick_suite(SUITE, HEADING)


def test_the_arms_compare_silo_means_on_the_same_silos(quick) -> None:
    results, md = quick
    x = results[SUITE]
    assert x["arms"] == ["fedavg", "fedper", "transfer"]
    for arm in x["arms"]:
        a = x[arm]
        assert a["silos"] == x["clients"] == len(a["by_silo"])
        mean = sum(a["by_silo"].values()) / len(a["by_silo"])
        assert a["mean_accuracy"] == pytest.approx(mean)
        assert set(a["by_silo"]) == set(x["fedavg"]["by_silo"])  # the same silos
    fedper = x["fedper"]
    assert 0 <= fedper["global_mean_accuracy"] <= 1
    below = round(100 * (fedper["mean_accuracy"] - x["fedavg"]["mean_accuracy"]), 2)
    assert fedper["points_above_fedavg"] == below
    assert "points above FedAvg" in md


def test_freezing_the_convolutions_moves_only_the_head_s_bytes(quick) -> None:
    x = quick[0][SUITE]
    params = x["shared_parameters"]
    # every round sends the model to each silo and gets it back: 2 x silos x 4 bytes
    per_param = 2 * x["clients"] * 4
    assert x["fedavg"]["bytes_per_round"] == params["all"] * per_param
    assert x["transfer"]["bytes_per_round"] == params["head"] * per_param
    assert x["freeze_bytes_ratio"] == round(params["head"] / params["all"], 4)
