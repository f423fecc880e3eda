"""Your own model in a real `flwr run` simulation: the guide's scenario
(simulations/scenarios/digits-resnet.toml, the residual CNN of examples/) with fewer
rounds. The app bundle carries examples/ to the silos; the best model rebuilds from its
file alone."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fl_common.modelfile import load_model
from harness.local_run import ROOT
from privacy.keys import load_key_file

pytestmark = pytest.mark.e2e

SCENARIO = ROOT / "simulations" / "scenarios" / "digits-resnet.toml"


def test_the_resnet_scenario_trains_digits_in_a_real_simulation(flwr) -> None:
    config = tomllib.loads(SCENARIO.read_text())
    config.update({"num-server-rounds": 2, "run-name": "resnet"})
    run = flwr.run(config, supernodes=2)
    assert run.returncode == 0, run.output[-4000:]
    summary = run.summary
    assert summary["stop_reason"] == "completed" and summary["rounds_completed"] == 2
    assert "Traceback" not in run.output
    # ten classes (chance 0.1); two short rounds are far from converged (the trainer
    # test reaches 0.95 centrally), but the residual CNN must clearly learn
    assert summary["best_metrics"]["val_accuracy"] >= 0.6, summary["best_metrics"]
    key = load_key_file(Path(flwr.env["FEDSILO_HOME"]) / "key")
    loaded = load_model(run.run_dir / "best-model.bin", key=key)
    assert loaded.spec.kind == "custom" and loaded.spec.factory == "examples.resnet_small:build"
    assert loaded.spec.factory_args == {"width": 32, "norm": "group"}
    assert sum(p.numel() for p in loaded.model.parameters()) >= 100_000
    print(f"e2e custom model run: {run.seconds:.1f} s")
