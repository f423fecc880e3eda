"""``python bench/run.py --gpu-result FILE``: what ``bench/gpu_check.py`` printed on a
GPU machine goes into the results file and BENCHMARKS.md; anything else is refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bench_quick import _bench_run  # bench/run.py, loaded from the checkout

# The shape of gpu_check.py's output (its keys; the numbers here are made up).
ARM = {"device": "cuda", "amp": False, "epoch_seconds": 0.4, "train_accuracy_sample": 0.9}
GPU = {
    "when": "2026-01-02T03:04:05+00:00",
    "torch": "2.11.0+cu130",
    "cuda_available": True,
    "cpu": {"device": "cpu", "amp": False, "epoch_seconds": 2.0},
    "gpu_name": "NVIDIA H200",
    "cuda_fp32": ARM,
    "cuda_amp": {**ARM, "amp": True},
    "fp32_over_amp": 0.9,
    "ok": True,
}


def _files(tmp_path: Path, gpu: dict) -> tuple[Path, Path, Path]:
    given, results, md = tmp_path / "gpu.json", tmp_path / "results.json", tmp_path / "B.md"
    given.write_text(json.dumps(gpu))
    # the project's own results, without a GPU measurement
    ours = json.loads((_bench_run.BENCH / "results.json").read_text())
    results.write_text(json.dumps({k: v for k, v in ours.items() if k != "gpu"}))
    return given, results, md


def test_a_gpu_result_joins_the_results_and_each_arm_s_device_and_amp_are_shown(
    tmp_path: Path,
) -> None:
    given, results, md = _files(tmp_path, GPU)
    argv = ["--gpu-result", str(given), "--json", str(results), "--out", str(md)]
    assert _bench_run.main(argv) == 0
    before = json.loads((_bench_run.BENCH / "results.json").read_text())
    merged = json.loads(results.read_text())
    assert merged["gpu"] == GPU
    assert {k: v for k, v in merged.items() if k != "gpu"} == {  # nothing else is lost
        k: v for k, v in before.items() if k != "gpu"
    }
    text = md.read_text()
    section = text.split("## GPU\n", 1)[1]
    assert "measured 2026-01-02T03:04:05+00:00" in section
    assert "| cuda_fp32: device | cuda |" in section
    assert "| cuda_fp32: amp | False |" in section
    assert "| cuda_amp: amp | True |" in section
    assert "Not measured" not in section


def test_a_cpu_only_check_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    cpu_only = {k: v for k, v in GPU.items() if not k.startswith("cuda")}
    given, results, md = _files(tmp_path, {**cpu_only, "cuda_available": False})
    before = results.read_text()
    argv = ["--gpu-result", str(given), "--json", str(results), "--out", str(md)]
    with pytest.raises(SystemExit, match="lacks cuda_amp, cuda_fp32"):
        _bench_run.main(argv)
    assert results.read_text() == before and not md.exists()
