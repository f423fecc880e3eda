"""End to end: the real `flwr run .` on a private local SuperLink (Ray simulation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.local_run import LocalFlwr
from privacy.keys import load_key_file
from privacy.store import read_info

pytestmark = pytest.mark.e2e


@pytest.fixture
def flwr(tmp_path: Path):
    """A private local SuperLink per test: the tests are independent, so parallel
    workers take them one by one instead of as one module."""
    with LocalFlwr(tmp_path / "flwr") as harness:
        yield harness


FAST = {"local-epochs": 2, "learning-rate": 0.003, "model": "mlp"}
# for runs whose assertions need no int8 export (it quantizes and scores the model twice)
NO_EXPORT = {**FAST, "export-int8": False}


def test_digits_federation_writes_every_output_and_learns(flwr):
    run = flwr.run({**FAST, "num-server-rounds": 2, "run-name": "digits-basic"})
    assert run.returncode == 0, run.output[-4000:]
    files = {p.name for p in run.run_dir.iterdir()}
    assert {
        "history.json",
        "summary.json",
        "curves.png",
        "checkpoint.bin",
        "best-model.bin",
        "model-int8.bin",
    } <= files
    history = run.history
    assert [h["round"] for h in history] == [0, 1, 2]
    for entry in history[1:]:
        for key in (
            "train_loss",
            "val_loss",
            "val_accuracy",
            "num_clients",
            "num_rejected",
            "epsilon_max",
            "seconds",
        ):
            assert key in entry, key
        assert entry["num_clients"] == 2 and entry["num_rejected"] == 0
    initial, final = history[0]["val_accuracy"], history[-1]["val_accuracy"]
    assert initial < 0.3 and final > 0.85, (initial, final)
    summary = run.summary
    assert summary["rounds_completed"] == 2 and summary["stop_reason"] == "completed"
    assert not summary["stopped_early"]
    export = summary["export"]
    assert export["int8_bytes"] < export["fp32_bytes"]
    assert abs(export["int8_accuracy"] - export["fp32_accuracy"]) <= 0.02
    # every model file is encrypted at rest: no torch zip signature in the bytes
    for name in ("checkpoint.bin", "best-model.bin", "model-int8.bin"):
        assert b"PK\x03\x04" not in (run.run_dir / name).read_bytes()[:4096]
    assert f"outputs in {run.run_dir}" in run.output


def test_run_stops_early_when_validation_stops_improving(flwr):
    run = flwr.run(
        {
            **NO_EXPORT,
            "local-epochs": 1,  # nothing here depends on how well it learns
            "num-server-rounds": 8,
            "early-stopping-patience": 1,
            "early-stopping-min-delta": 5.0,
            "run-name": "digits-early",
        }
    )
    assert run.returncode == 0, run.output[-4000:]
    summary = run.summary
    assert summary["stopped_early"] and summary["stop_reason"] == "early-stopping"
    # Patience 1: the first round that does not improve by more than 5.0 ends the run.
    initial, first = run.history
    assert (initial["round"], first["round"]) == (0, 1)
    assert initial["val_loss"] - first["val_loss"] <= 5.0  # a cross-entropy drop below 5
    assert (initial["improved"], first["improved"]) == (True, False)
    assert summary["rounds_completed"] == 1
    assert summary["best_round"] == 0
    assert summary["best_metrics"]["val_loss"] == pytest.approx(initial["val_loss"])
    key = load_key_file(flwr.base / "fedsilo-home" / "key")
    best = read_info(run.run_dir / "best-model.bin", key=key)["metadata"]
    assert best["round"] == 0
    assert best["metrics"]["val_loss"] == pytest.approx(initial["val_loss"])


def test_dp_run_reports_cumulative_epsilon_within_budget(flwr):
    run = flwr.run(
        {
            **NO_EXPORT,
            "dataset": "breast-cancer",
            "num-server-rounds": 2,
            "dp": True,
            "target-epsilon": 4.0,
            "privacy-budget": 5.0,
            "batch-size": 16,
            "run-name": "bc-dp",
        }
    )
    assert run.returncode == 0, run.output[-4000:]
    eps = [h["epsilon_max"] for h in run.history if h["round"] > 0]
    assert all(e is not None for e in eps)
    assert eps == sorted(eps) and eps[0] < eps[-1]  # composed over rounds, not reset
    assert eps[-1] <= 4.0 + 1e-6  # the run's target, within the silo's budget
    assert run.summary["epsilon_max"] == pytest.approx(eps[-1])


def test_resume_continues_from_the_checkpoint_round(flwr):
    first = flwr.run({**NO_EXPORT, "num-server-rounds": 1, "run-name": "digits-resume"})
    assert first.returncode == 0, first.output[-4000:]
    key = load_key_file(flwr.base / "fedsilo-home" / "key")
    info = read_info(first.run_dir / "checkpoint.bin", key=key)
    assert info["metadata"]["round"] == 1
    second = flwr.run(
        {**NO_EXPORT, "num-server-rounds": 2, "run-name": "digits-resume", "resume": True}
    )
    assert second.returncode == 0, second.output[-4000:]
    assert "Resuming" in second.output and "after round 1" in second.output
    history = second.history
    assert [h["round"] for h in history] == [0, 1, 2]
    assert second.summary["rounds_completed"] == 2
