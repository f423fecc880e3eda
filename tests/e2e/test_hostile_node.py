"""Hostile silos inside a real `flwr run` simulation: the run completes, rejects each
bad reply with the node and the reason, writes its summary and export, and learns as
well as the same federation without the attacks."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from fl_common.data import pooled_split
from fl_common.modelfile import load_model
from fl_common.settings import RunSettings
from fl_server.evaluation import evaluation, prepare
from harness.local_run import ROOT
from privacy.keys import load_key_file

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent / "hostile"
SETTINGS = {
    "dataset": "breast-cancer",
    "model": "mlp",
    "hidden-sizes": "32",
    "local-epochs": 2,
    "learning-rate": 0.003,
    "num-server-rounds": 4,
    "validation": "federated",
    "early-stopping-patience": 10,
}


def hostile_app(folder: Path) -> Path:
    """The project's app with its ClientApp wrapped in the corrupting mod."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "pyproject.toml").read_text()
    text = re.sub(r'clientapp = "[^"]+"', 'clientapp = "hostile_client:app"', text)
    text = re.sub(r'serverapp = "[^"]+"', 'serverapp = "fl_server.app:app"', text)
    (folder / "pyproject.toml").write_text(text)
    shutil.copy(HERE / "hostile_client.py", folder / "hostile_client.py")
    return folder


@pytest.fixture(scope="module")
def runs(flwr, tmp_path_factory: pytest.TempPathFactory):
    app = hostile_app(tmp_path_factory.mktemp("hostile-app"))
    config = {**SETTINGS, "artifacts-dir": str(flwr.artifacts)}
    attacked = flwr.run({**config, "run-name": "hostile"}, supernodes=5, app=app)
    honest = flwr.run({**SETTINGS, "run-name": "honest"}, supernodes=5)
    return attacked, honest


def test_the_attacked_run_completes_with_its_summary_and_export(runs) -> None:
    attacked, _ = runs
    assert attacked.returncode == 0, attacked.output[-4000:]
    summary = attacked.summary
    assert summary["stop_reason"] == "completed" and summary["rounds_completed"] == 4
    assert summary["export"] is not None and summary["export"]["int8_accuracy"] is not None
    assert "Traceback" not in attacked.output


def test_the_statistics_attacker_is_never_sampled(runs) -> None:
    attacked, _ = runs
    (name, reason), *others = attacked.history[0]["no_statistics"].items()
    assert not others and name.startswith("node ")
    assert "rejected" in reason
    for entry in attacked.history[1:]:
        assert entry["num_sampled"] == 4 and name not in entry["clients"]


def test_every_bad_train_reply_is_rejected_with_its_reason(runs) -> None:
    attacked, _ = runs
    rounds = attacked.history[1:]
    reasons = [" ".join(r for rs in entry["rejected"].values() for r in rs) for entry in rounds]
    assert "num-examples" in reasons[0] and "is outside" in reasons[0]  # 1000-fold count
    assert "train_loss = -1 is outside" in reasons[1]  # and val_accuracy 7.5 behind it
    assert "epsilon must be a number, got list" in reasons[2]
    for entry in rounds:
        assert entry["num_rejected"] == 1 and entry["num_clients"] == 3
        assert entry["epsilon_max"] is None  # no reply's epsilon was taken as given


def test_the_statistics_and_evaluate_attacks_are_logged_and_cost_only_the_node(runs) -> None:
    attacked, _ = runs
    assert "Statistics: node" in attacked.output and "rejected" in attacked.output
    assert "Evaluation: node" in attacked.output
    assert "reply without its metrics record" in attacked.output


def held_out_accuracy(flwr, run) -> float:
    """The run's best model on the server's held-out rows, which no silo holds."""
    key = load_key_file(flwr.base / "fedsilo-home" / "key")
    path = run.run_dir / "best-model.bin"
    loaded = load_model(path, key=key)
    _, held_out = pooled_split(RunSettings(dataset="breast-cancer"), 0)
    data = prepare(loaded, path, held_out, key=key)
    return evaluation(loaded, path, data)["metrics"]["accuracy"]


def test_the_attacked_run_learns_within_two_points_of_the_honest_one(flwr, runs) -> None:
    attacked, honest = runs
    assert honest.returncode == 0, honest.output[-3000:]
    got, want = held_out_accuracy(flwr, attacked), held_out_accuracy(flwr, honest)
    assert want > 0.85
    assert abs(got - want) <= 0.02, (got, want)
