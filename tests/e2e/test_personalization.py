"""A personalized federation in a real `flwr run` simulation (Ray): the guide's FedPer
scenario (simulations/scenarios/digits-fedper.toml) with two silos and two rounds. The
head never travels; each silo keeps its own, encrypted in its fedsilo home; the summary
reports the personalized and the global accuracy of each silo, on its validation rows
and, scored once at the end, on its held-out test rows."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fl_client import personal
from fl_common.modelfile import load_model
from harness.local_run import ROOT
from privacy.keys import is_encrypted_file, load_key_file

pytestmark = pytest.mark.e2e

SCENARIO = ROOT / "simulations" / "scenarios" / "digits-fedper.toml"


def test_a_fedper_run_keeps_each_silo_s_head_and_reports_both_accuracies(flwr) -> None:
    config = tomllib.loads(SCENARIO.read_text())
    assert config["local-layers"] == "head.*" and config["validation"] == "federated"
    config.update(
        {
            "num-server-rounds": 2,
            "local-epochs": 2,
            "run-name": "fedper",
            "silo-test-fraction": 0.2,
        }
    )
    run = flwr.run(config, supernodes=2)
    assert run.returncode == 0, run.output[-4000:]
    assert "Traceback" not in run.output
    summary = run.summary
    assert summary["stop_reason"] == "completed" and summary["rounds_completed"] == 2
    personalized, global_ = summary["personalized"], summary["global"]
    assert len(personalized["by_silo"]) == 2 and set(personalized["by_silo"]) == set(
        global_["by_silo"]
    )
    # ten classes (chance 0.1): the personalized models must clearly learn
    assert personalized["mean_accuracy"] >= 0.5, personalized
    home = Path(flwr.env["FEDSILO_HOME"])
    key = load_key_file(home / "key")
    best = load_model(run.run_dir / "best-model.bin", key=key).model.state_dict()
    heads = []
    for silo in personalized["by_silo"]:
        path = home / "layers" / f"{silo}-fedper.layers"
        assert is_encrypted_file(path) and b"head.2.weight" not in path.read_bytes()
        kept = personal.load_kept(path, key=key)
        assert set(kept.local) == {"head.2.weight", "head.2.bias"}
        # the server's file holds the initial head, never a silo's
        assert kept.fixed["head.2.weight"].equal(best["head.2.weight"])
        heads.append(kept.local["head.2.weight"])
    assert not heads[0].equal(heads[1])
    assert all(h["arrays_bytes_sent"] > 0 for h in run.history[1:])
    # the test rows: scored once, with the model of the kept round, on every silo
    test = summary["test"]
    assert test["round"] == summary["best_round"] and test["left_out"] == {}
    assert set(test["personalized"]["by_silo"]) == set(personalized["by_silo"])
    assert set(test["global"]["by_silo"]) == set(personalized["by_silo"])
    for figures in (test["personalized"], test["global"]):
        assert 0 <= figures["pooled_accuracy"] <= 1 and figures["examples"] > 0
    assert test["personalized"]["mean_accuracy"] >= 0.5, test
    assert "Test evaluation of round" in run.output
    assert not list((home / "layers").glob("*.snapshots"))  # deleted once read
    print(f"e2e personalized run: {run.seconds:.1f} s")
