"""Runs one suite of the benchmark in quick mode, as CI does, in a folder of its own.

Each suite has a test module of its own, so parallel workers run the suites side by
side. Nothing asserts a speed: the figures are checked for presence and for what must
hold on any machine."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
_RUN = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
assert _RUN is not None and _RUN.loader is not None
_bench_run = importlib.util.module_from_spec(_RUN)
_RUN.loader.exec_module(_bench_run)
SUITES: tuple[str, ...] = _bench_run.SUITES  # the suites bench/run.py knows


def run_quick(suite: str, out: Path) -> tuple[dict[str, Any], str]:
    """``python bench/run.py --quick --only <suite>``: its results and its markdown."""
    md, raw = out / "BENCHMARKS.md", out / "results.json"
    command = ["bench/run.py", "--quick", "--only", suite, "--out", str(md), "--json", str(raw)]
    proc = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,  # a limit on a hung run, not a speed claim: shared machines are slow
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = json.loads(raw.read_text())
    assert results["quick"] is True
    assert set(results) & set(SUITES) == {suite}
    return results, md.read_text()


def numbers(value: Any) -> list[float]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in numbers(v)]
    return []


def check_figures_and_markdown(results: dict[str, Any], md: str, suite: str, heading: str) -> None:
    """Every figure of the suite a finite number; its section present, with the command
    that made it, no placeholder left and no nan or inf."""
    found = numbers(results[suite])
    assert found, suite
    assert all(math.isfinite(x) for x in found), suite
    assert heading in md
    assert f"python bench/run.py --quick --only {suite}" in md
    assert "{{" not in md  # every placeholder of FINDINGS.md was filled or says not measured
    assert not re.search(r"\bnan\b|\binf\b", md, re.IGNORECASE)
    assert "## GPU\n\nNot measured" in md  # the quick suite measures no GPU


def quick_suite(suite: str, heading: str) -> tuple[Any, Any]:
    """For a test module of one suite: its module-scoped ``quick`` fixture (the suite's
    results and markdown) and the test every suite passes (finite figures, its section
    written with its command)."""

    @pytest.fixture(scope="module")
    def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
        return run_quick(suite, tmp_path_factory.mktemp("bench"))

    def test_every_figure_is_a_finite_number_and_the_section_is_written(quick) -> None:
        check_figures_and_markdown(*quick, suite, heading)

    return quick, test_every_figure_is_a_finite_number_and_the_section_is_written
