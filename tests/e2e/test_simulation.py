"""End to end: the real `flwr run .` on a private local SuperLink (Ray simulation).
A private run and a resumed one: test_tracking.py, whose runs track them too."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_helpers import DIGITS_FAST

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


# for runs whose assertions need no int8 export (it quantizes and scores the model twice)
NO_EXPORT = {**DIGITS_FAST, "export-int8": False}


def test_digits_federation_writes_every_output_and_learns(digits_run):
    _, run = digits_run
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
