"""The experiment trackers, driven directly with a history and read back with
TensorBoard's own reader and MLflow's own client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fl_common.jsonio import write_json
from fl_common.settings import RunSettings
from fl_server.report import CURVES_FILE, HISTORY_FILE, SUMMARY_FILE, plot_curves
from fl_server.tracking import (
    TRACKING_FILE,
    numeric_values,
    open_tracker,
    public_params,
    redact,
    round_values,
)

ROOT = Path(__file__).resolve().parents[2]
PARAMS = {"num-server-rounds": 4, "dataset": "wine", "learning-rate": 0.003, "dp": True}


def history(rounds: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"round": 0, "val_loss": 1.5, "val_accuracy": 0.3}]
    for r in range(1, rounds + 1):
        out.append(
            {
                "round": r,
                "num_sampled": 3,
                "num_clients": 2,
                "num_rejected": 1,
                "num_failed": 0,
                "num_declined": 0,
                "clients": ["node 1", "node 2"],
                "failed": {},
                "rejected": {"node 3": ["NaN in layer 0"]},
                "train_loss": 1.0 / r,
                "val_loss": 1.2 / r,
                "val_accuracy": 0.5 + 0.1 * r,
                "epsilon_max": 0.5 * r,
                "epsilon_by_silo": {"hospital-a": 0.4 * r, "hospital-b": 0.5 * r},
                "improved": r % 2 == 1,
                "skipped": False,
                "seconds": 0.25 * r,
            }
        )
    return out


def summary(rounds: int) -> dict[str, Any]:
    return {
        "rounds_completed": rounds,
        "best_round": rounds,
        "stop_reason": "completed",
        "stop_detail": "",
        "best_metrics": {"val_loss": 0.3, "val_accuracy": 0.9},
        "epsilon_max": 0.5 * rounds,
        "export": {"path": "/x/model-int8.bin", "fp32_bytes": 40000, "int8_bytes": 12000,
                   "fp32_accuracy": 0.9, "int8_accuracy": 0.89},
        "settings": PARAMS,
    }  # fmt: skip


def finish_outputs(run_dir: Path, rows: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    """What the server writes before the tracker's finish."""
    s = summary(rounds)
    write_json(run_dir / HISTORY_FILE, rows)
    write_json(run_dir / SUMMARY_FILE, s)
    plot_curves(rows, run_dir / CURVES_FILE)
    return s


def settings(tracking: str, **kw: Any) -> RunSettings:
    return RunSettings(tracking=tracking, dataset="wine", **kw)


# -- what is tracked -------------------------------------------------------------------


def test_round_values_are_every_number_of_the_entry_and_nothing_else() -> None:
    entry = history(2)[2]
    values = round_values({**entry, "val_macro_f1": float("nan"), "train_seconds": None})
    assert values["epsilon_by_silo/hospital-a"] == pytest.approx(0.8)
    assert values["improved"] == 0.0 and values["num_rejected"] == 1.0
    assert "round" not in values and "val_macro_f1" not in values
    assert not any(k.startswith(("clients", "failed", "rejected/")) for k in values)
    expected = {k for k, v in entry.items() if isinstance(v, (int, float)) and k != "round"}
    assert expected <= set(values)


def test_names_are_cleaned_for_the_trackers() -> None:
    assert numeric_values({"eps": {"silo #1 (x)": 1}}) == {"eps/silo _1 _x_": 1.0}


def test_credentials_in_a_tracking_uri_are_never_logged() -> None:
    uri = "https://alice:s3cret@mlflow.example.org:5000/path"
    assert redact(uri) == "https://***@mlflow.example.org:5000/path"
    assert "s3cret" not in json.dumps(public_params({"tracking-uri": uri, "dp": True}))
    assert redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_no_tracking_writes_nothing(tmp_path: Path) -> None:
    tracker = open_tracker(settings("none"), tmp_path, PARAMS)
    tracker.log_history(history(2))
    tracker.finish(history(2), summary(2), tmp_path)
    assert tracker.describe() is None and list(tmp_path.iterdir()) == []


# -- TensorBoard -----------------------------------------------------------------------


def tensorboard_events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def tb_points(acc, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def assert_tensorboard_holds(acc, rows: list[dict[str, Any]]) -> None:
    tags = set(acc.Tags()["scalars"])
    for entry in rows:
        for name, value in round_values(entry).items():
            assert name in tags, name
            points = [v for s, v in tb_points(acc, name) if s == entry["round"]]
            assert points == [pytest.approx(value, rel=1e-6)], (name, entry["round"], points)


def test_tensorboard_holds_every_round_value_once_and_the_summary(tmp_path: Path) -> None:
    rows = history(3)
    tracker = open_tracker(settings("tensorboard"), tmp_path, PARAMS)
    tracker.log_history(rows[:2])
    # a value that arrives later for an earlier round (federated validation) is sent then
    rows[1]["val_macro_f1"] = 0.77
    tracker.log_history(rows)
    tracker.log_history(rows)  # nothing new: nothing sent twice
    tracker.finish(rows, finish_outputs(tmp_path, rows, 3), tmp_path)
    acc = tensorboard_events(tmp_path / "tensorboard")
    assert_tensorboard_holds(acc, rows)
    assert tb_points(acc, "val_macro_f1") == [(1, pytest.approx(0.77))]
    assert tb_points(acc, "summary/best_round") == [(3, 3.0)]
    assert tb_points(acc, "summary/export/int8_bytes") == [(3, 12000.0)]
    assert tb_points(acc, "summary/best_metrics/val_accuracy") == [(3, pytest.approx(0.9))]
    assert acc.Images("curves")[0].encoded_image_string == (tmp_path / CURVES_FILE).read_bytes()
    texts = set(acc.Tags()["tensors"])
    assert {"settings/text_summary", "stop_reason/text_summary"} <= texts
    assert {"summary.json/text_summary"} <= texts
    record = json.loads((tmp_path / TRACKING_FILE).read_text())
    assert record == {"tracker": "tensorboard", "log_dir": str(tmp_path / "tensorboard")}


def test_credentials_in_the_settings_never_reach_tensorboard(tmp_path: Path) -> None:
    secret_uri = "https://alice:s3cret@mlflow.example.org"
    rows = history(1)
    tracker = open_tracker(settings("tensorboard"), tmp_path, {"tracking-uri": secret_uri})
    s = finish_outputs(tmp_path, rows, 1)
    write_json(tmp_path / SUMMARY_FILE, {**s, "settings": {"tracking-uri": secret_uri}})
    tracker.finish(rows, s, tmp_path)
    acc = tensorboard_events(tmp_path / "tensorboard")
    text = acc.Tensors("summary.json/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "***@mlflow.example.org" in text
    for path in (tmp_path / "tensorboard").iterdir():
        assert b"s3cret" not in path.read_bytes()
    assert b"s3cret" not in (tmp_path / TRACKING_FILE).read_bytes()


def test_resumed_tensorboard_run_continues_the_same_steps(tmp_path: Path) -> None:
    rows = history(4)
    first = open_tracker(settings("tensorboard"), tmp_path, PARAMS)
    first.log_history(rows[:3])
    first.finish(rows[:3], finish_outputs(tmp_path, rows[:3], 2), tmp_path)
    second = open_tracker(
        settings("tensorboard", resume=True, run_name="r"), tmp_path, PARAMS, start_round=2
    )
    second.log_history(rows)
    second.finish(rows, finish_outputs(tmp_path, rows, 4), tmp_path)
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 2
    acc = tensorboard_events(tmp_path / "tensorboard")
    assert_tensorboard_holds(acc, rows)
    assert [s for s, _ in tb_points(acc, "val_loss")] == [0, 1, 2, 3, 4]
    assert tb_points(acc, "summary/rounds_completed") == [(2, 2.0), (4, 4.0)]


# -- MLflow ----------------------------------------------------------------------------


def mlflow_client(run_dir: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow' / 'mlflow.db'}")


def assert_mlflow_holds(client, run_id: str, rows: list[dict[str, Any]]) -> None:
    for name in {n for e in rows for n in round_values(e)}:
        got = {(m.step, m.value) for m in client.get_metric_history(run_id, name)}
        want = {(e["round"], round_values(e)[name]) for e in rows if name in round_values(e)}
        assert got == want, name
        assert len(client.get_metric_history(run_id, name)) == len(want), name


def test_mlflow_local_store_holds_rounds_params_summary_and_artifacts(tmp_path: Path) -> None:
    rows = history(3)
    tracker = open_tracker(settings("mlflow"), tmp_path, PARAMS)
    tracker.log_history(rows)
    tracker.finish(rows, finish_outputs(tmp_path, rows, 3), tmp_path)
    record = json.loads((tmp_path / TRACKING_FILE).read_text())
    client = mlflow_client(tmp_path)
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == tmp_path.name
    assert run.data.params == {k: str(v) for k, v in PARAMS.items()}
    assert run.data.tags["stop_reason"] == "completed"
    assert run.data.metrics["summary/export/fp32_bytes"] == 40000
    assert run.data.metrics["summary/best_metrics/val_accuracy"] == pytest.approx(0.9)
    assert_mlflow_holds(client, record["run_id"], rows)
    artifacts = {a.path for a in client.list_artifacts(record["run_id"])}
    assert artifacts == {CURVES_FILE, SUMMARY_FILE}
    stored = Path(client.download_artifacts(record["run_id"], CURVES_FILE, str(tmp_path / "dl")))
    assert stored.read_bytes() == (tmp_path / CURVES_FILE).read_bytes()


def test_resumed_mlflow_run_is_the_same_run_and_records_changed_settings(tmp_path: Path) -> None:
    rows = history(4)
    first = open_tracker(settings("mlflow"), tmp_path, PARAMS)
    first.log_history(rows[:3])
    first.finish(rows[:3], finish_outputs(tmp_path, rows[:3], 2), tmp_path)
    resumed = {**PARAMS, "num-server-rounds": 6}
    second = open_tracker(
        settings("mlflow", resume=True, run_name="r"), tmp_path, resumed, start_round=2
    )
    assert second.describe()["run_id"] == first.describe()["run_id"]
    second.log_history(rows)
    second.finish(rows, finish_outputs(tmp_path, rows, 4), tmp_path)
    client = mlflow_client(tmp_path)
    assert len(client.search_runs([second.describe()["experiment_id"]])) == 1
    run = client.get_run(first.describe()["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["num-server-rounds"] == "4"
    assert run.data.params["num-server-rounds.after-round-2"] == "6"
    assert_mlflow_holds(client, run.info.run_id, rows)


# -- a missing extra -------------------------------------------------------------------

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {module!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
from fl_server.tracking import require
from fl_server.loop import RunStopped
try:
    require({tracking!r})
except RunStopped as stop:
    print(stop.reason)
    print(stop)
"""


@pytest.mark.parametrize(
    ("tracking", "module"), [("mlflow", "mlflow"), ("tensorboard", "tensorboard")]
)
def test_a_missing_extra_stops_with_the_install_command(tracking: str, module: str) -> None:
    code = BLOCK.format(module=module, tracking=tracking)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    reason, message = proc.stdout.splitlines()
    assert reason == "tracking-unavailable"
    assert message.endswith(f"install it with: pip install 'fedsilo[{tracking}]'")
