"""The benchmark suite's quick mode runs end to end and writes every figure.

Nothing here asserts a speed: the figures are checked for presence and for what must
hold on any machine (finite, positive, accuracies in [0, 1], int8 smaller than fp32,
DP within its budget, the sampled count of clients per round).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return []


@pytest.fixture(scope="module")
def quick_suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench")
    md, raw = out / "BENCHMARKS.md", out / "results.json"
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--out", str(md), "--json", str(raw)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,  # a limit on a hung run, not a speed claim: shared machines are slow
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(raw.read_text()), md.read_text()


def test_every_suite_runs_and_every_figure_is_a_finite_number(quick_suite):
    results, _ = quick_suite
    assert results["quick"] is True
    for suite in ("privacy", "export", "federation", "overhead", "scale"):
        assert suite in results, suite
        numbers = _numbers(results[suite])
        assert numbers, suite
        assert all(math.isfinite(x) for x in numbers), suite


def test_the_markdown_has_every_section_and_no_missing_value(quick_suite):
    _, md = quick_suite
    for heading in (
        "## Privacy",
        "## int8 export",
        "## Federated against centralized",
        "### Synthetic data with and without DP",
        "## Framework overhead",
        "## Growth",
        "## GPU",
    ):
        assert heading in md
    assert not re.search(r"\bnan\b|\binf\b", md, re.IGNORECASE)
    assert "python bench/run.py --only overhead --quick" in md
    assert "{{" not in md  # every placeholder of FINDINGS.md was filled
    assert "points below centralized (test)" in md
    assert "## GPU\n\nNot measured" in md  # the quick suite measures no GPU


def test_every_federated_model_is_picked_on_validation_and_scored_on_the_same_test_rows(
    quick_suite,
):
    results, _ = quick_suite
    fed = results["federation"]
    assert fed["arms_done"] == fed["arms_planned"]
    central = fed["centralized"]
    assert 1 <= central["best_epoch"] <= central["epochs"]
    test_rows = central["test_rows"]
    arms = [fed[a] for a in fed["arms_done"] if a != "synthetic_dp"]
    assert arms
    for arm in arms:
        assert arm["test_rows"] == test_rows
        assert 1 <= arm["best_round"] <= arm["rounds_completed"]
        assert 0.0 <= arm["val_accuracy"] <= 1.0
        below = round(100 * (central["accuracy"] - arm["accuracy"]), 2)
        assert arm["points_below_centralized"] == below
    dp = fed["synthetic_dp"]
    for key in ("no_dp", *(k for k in dp if k.startswith("dp_eps"))):
        assert dp[key]["test_rows"] == dp["centralized"]["test_rows"]


def test_figures_that_hold_on_any_machine(quick_suite):
    results, _ = quick_suite
    for model in results["export"]["models"]:
        assert model["int8_bytes"] < model["fp32_bytes"]
        assert 0.0 <= model["int8_accuracy"] <= 1.0
    fed = results["federation"]
    for key, arm in fed.items():
        if isinstance(arm, dict) and "accuracy" in arm:
            assert 0.0 <= arm["accuracy"] <= 1.0, key
    dp = fed["synthetic_dp"]
    assert dp["no_dp"]["epsilon_max"] is None
    for key in (k for k in dp if k.startswith("dp_eps")):
        below = round(100 * (dp["no_dp"]["accuracy"] - dp[key]["accuracy"]), 2)
        assert dp[key]["points_below_no_dp"] == below
    for key in (k for k in dp if k.startswith("dp_eps")):
        target = float(key[len("dp_eps") :])
        assert 0.0 < dp[key]["epsilon_max"] <= target * 1.01
    overhead = results["overhead"]
    assert overhead["fedsilo"]["train_seconds"] > 0
    assert overhead["sequential"]["train_seconds"] > 0
    scale = results["scale"]
    for n, run in scale["clients"].items():
        assert run["clients_per_round"] == [min(scale["sampled"], int(n))] * run["rounds"]
        assert run["peak_rss_mib"] > 0
