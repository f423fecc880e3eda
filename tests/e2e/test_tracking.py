"""End to end: a real `flwr run .` tracked in TensorBoard and MLflow, read back with
TensorBoard's own reader and MLflow's own client (a real `mlflow server` on loopback and
the local store in the run folder)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fl_server.tracking import round_values
from harness.local_run import FlwrRun, LocalFlwr, free_port
from privacy.keys import load_key_file
from privacy.store import read_info

pytestmark = pytest.mark.e2e


@pytest.fixture
def flwr(tmp_path: Path):
    """A private local SuperLink per test: the tests are independent, so parallel
    workers take them one by one instead of as one module."""
    with LocalFlwr(tmp_path / "flwr") as harness:
        yield harness


FAST = {
    "dataset": "breast-cancer",
    "model": "mlp",
    "num-server-rounds": 2,
    "local-epochs": 1,
    "learning-rate": 0.003,
}


def tracked_values(history: list[dict[str, Any]]) -> dict[tuple[int, str], float]:
    """Every numeric per-round value of history.json, by (round, name)."""
    return {(e["round"], n): v for e in history for n, v in round_values(e).items()}


@pytest.fixture(scope="module")
def private_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlwrRun]:
    """A private (DP) run tracked in TensorBoard, read by the two tests below."""
    dp = {"dp": True, "target-epsilon": 4.0, "privacy-budget": 5.0, "batch-size": 16}
    with LocalFlwr(tmp_path_factory.mktemp("flwr-private")) as harness:
        yield harness.run({**FAST, **dp, "tracking": "tensorboard", "run-name": "bc-tensorboard"})


def test_a_private_run_reports_cumulative_epsilon_within_its_target(private_run) -> None:
    run = private_run
    assert run.returncode == 0, run.output[-4000:]
    eps = [h["epsilon_max"] for h in run.history if h["round"] > 0]
    assert all(e is not None for e in eps)
    assert eps == sorted(eps) and eps[0] < eps[-1]  # composed over rounds, not reset
    assert eps[-1] <= 4.0 + 1e-6  # the run's target, within the silo's budget
    assert run.summary["epsilon_max"] == pytest.approx(eps[-1])


def test_tensorboard_events_hold_every_round_value_of_the_history(private_run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = private_run
    assert run.returncode == 0, run.output[-4000:]
    log_dir = run.run_dir / "tensorboard"
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    values = tracked_values(run.history)
    assert {n for _, n in values} >= {
        "val_loss",
        "train_loss",
        "num_clients",
        "epsilon_max",
        "seconds",
    }
    for (step, name), value in values.items():
        points = [e.value for e in acc.Scalars(name) if e.step == step]
        assert points == [pytest.approx(value, rel=1e-6)], (step, name)
    per_round = {t for t in acc.Tags()["scalars"] if not t.startswith("summary/")}
    assert per_round == {n for _, n in values}
    summary = run.summary
    export = summary["export"]
    for key in ("fp32_bytes", "int8_bytes", "fp32_accuracy", "int8_accuracy"):
        [point] = acc.Scalars(f"summary/export/{key}")
        assert (point.step, point.value) == (2, pytest.approx(export[key], rel=1e-6))
    assert acc.Scalars("summary/best_round")[0].value == summary["best_round"]
    [image] = acc.Images("curves")
    assert image.encoded_image_string == (run.run_dir / "curves.png").read_bytes()
    assert summary["tracking"] == {"tracker": "tensorboard", "log_dir": str(log_dir)}
    assert f"tracking with TensorBoard in {log_dir}" in run.output
    assert f"tracked with TensorBoard in {log_dir}" in run.output


def test_a_resumed_run_continues_from_its_checkpoint_and_may_start_tracking(flwr) -> None:
    """The rounds before the resume are sent to the tracker too."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = {**FAST, "export-int8": False, "run-name": "bc-tracked-later"}
    first = flwr.run({**config, "num-server-rounds": 1})
    assert first.returncode == 0, first.output[-4000:]
    key = load_key_file(flwr.base / "fedsilo-home" / "key")
    assert read_info(first.run_dir / "checkpoint.bin", key=key)["metadata"]["round"] == 1
    assert not (first.run_dir / "tensorboard").exists()
    second = flwr.run({**config, "resume": True, "tracking": "tensorboard"})
    assert second.returncode == 0, second.output[-4000:]
    assert "Resuming" in second.output and "after round 1" in second.output
    assert second.summary["rounds_completed"] == 2
    acc = EventAccumulator(str(second.run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    values = tracked_values(second.history)
    assert {step for step, _ in values} == {0, 1, 2}
    for (step, name), value in values.items():
        points = [e.value for e in acc.Scalars(name) if e.step == step]
        assert points == [pytest.approx(value, rel=1e-6)], (step, name)


def mlflow_read(uri: str, run_id: str, history: list[dict[str, Any]]):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    for (step, name), value in tracked_values(history).items():
        points = [m.value for m in client.get_metric_history(run_id, name) if m.step == step]
        assert points == [pytest.approx(value)], (step, name)
    return client, client.get_run(run_id)


def test_mlflow_local_store_in_the_run_folder_holds_the_run(digits_run) -> None:
    _, run = digits_run  # tracking = "mlflow" without a tracking-uri (conftest.py)
    assert run.returncode == 0, run.output[-4000:]
    info = run.summary["tracking"]
    uri = f"sqlite:///{run.run_dir / 'mlflow' / 'mlflow.db'}"
    assert info["location"] == uri
    client, tracked = mlflow_read(uri, info["run_id"], run.history)
    assert tracked.info.status == "FINISHED"
    assert tracked.info.run_name == "digits-basic"
    assert tracked.data.params == {k: str(v) for k, v in run.summary["settings"].items()}
    assert tracked.data.tags["stop_reason"] == "completed"
    assert tracked.data.metrics["summary/best_round"] == run.summary["best_round"]
    assert {a.path for a in client.list_artifacts(info["run_id"])} == {
        "curves.png",
        "summary.json",
    }
    assert f"mlflow ui --backend-store-uri {uri}" in run.output


@contextlib.contextmanager
def running_mlflow_server(store: Path, port: int) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1:``port`` keeping its runs in ``store``;
    a bounded wait for it to answer, killed (its whole process group) at the end."""
    store.mkdir(parents=True, exist_ok=True)
    with open(store / "server.log", "ab") as server_log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("mlflow")),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--backend-store-uri",
                f"sqlite:///{store / 'mlflow.db'}",
                "--artifacts-destination",
                str(store / "artifacts"),
                "--workers",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=server_log,
            start_new_session=True,
            # tracking only: no job runner (two more processes importing MLflow)
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (store / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server did not start within 90 s"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    with running_mlflow_server(tmp_path / "mlflow-server", free_port()) as url:
        yield url


def test_mlflow_server_tracks_a_run_and_its_resume_as_one_run(flwr, mlflow_server) -> None:
    config = {
        **FAST,
        "tracking": "mlflow",
        "tracking-uri": mlflow_server,
        "export-int8": False,
        "run-name": "bc-mlflow-server",
    }
    first = flwr.run(config)
    assert first.returncode == 0, first.output[-4000:]
    run_id = first.summary["tracking"]["run_id"]
    assert first.summary["tracking"]["location"] == mlflow_server
    second = flwr.run({**config, "num-server-rounds": 3, "resume": True})
    assert second.returncode == 0, second.output[-4000:]
    assert "after round 2" in second.output
    assert second.summary["tracking"]["run_id"] == run_id
    assert "continuing tracking with MLflow" in second.output
    history = second.history
    assert [h["round"] for h in history] == [0, 1, 2, 3]
    client, tracked = mlflow_read(mlflow_server, run_id, history)  # each value once
    assert tracked.info.status == "FINISHED"
    assert len(client.search_runs([tracked.info.experiment_id])) == 1
    assert tracked.data.params["num-server-rounds"] == "2"
    assert tracked.data.params["num-server-rounds.after-round-2"] == "3"
    assert tracked.data.params["resume.after-round-2"] == "True"
    assert [m.step for m in client.get_metric_history(run_id, "summary/rounds_completed")] == [
        2,
        3,
    ]
    assert {a.path for a in client.list_artifacts(run_id)} == {"curves.png", "summary.json"}


def test_a_lost_mlflow_server_stops_no_round_and_its_values_catch_up(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from fl_common.settings import RunSettings
    from fl_server.tracking import open_tracker

    rows = [{"round": 0, "val_loss": 1.1}]
    rows += [{"round": r, "val_loss": 1.0 / r, "num_clients": 2, "seconds": 0.1 * r}
             for r in (1, 2, 3)]  # fmt: skip
    store, port = tmp_path / "mlflow-server", free_port()
    with running_mlflow_server(store, port) as url:
        settings = RunSettings(dataset="wine", tracking="mlflow", tracking_uri=url)
        tracker = open_tracker(settings, tmp_path / "run", {"dataset": "wine"})
        tracker.log_history(rows[:2])
    started = time.monotonic()
    tracker.log_history(rows[:3])  # the server is gone: the round goes on
    assert time.monotonic() - started < 60
    assert tracker.pending(rows[:3]) == {2: {"val_loss": 0.5, "num_clients": 2.0, "seconds": 0.2}}
    with running_mlflow_server(store, port):  # back, with the same store
        tracker.log_history(rows)
        assert tracker.pending(rows) == {}
        client = MlflowClient(tracking_uri=url)
        run_id = tracker.describe()["run_id"]
        for name in ("val_loss", "num_clients", "seconds"):
            got = sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))
            want = [(e["round"], e[name]) for e in rows if name in e]
            assert [s for s, _ in got] == [s for s, _ in want], name  # each round once
            assert [v for _, v in got] == pytest.approx([v for _, v in want]), name


BLOCK_MLFLOW = """\
import sys


class _NoMlflow:
    \"\"\"As if mlflow were not installed.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "mlflow":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, _NoMlflow())
"""


def test_run_without_the_mlflow_extra_stops_before_any_round(tmp_path: Path) -> None:
    blocker = tmp_path / "no-mlflow"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCK_MLFLOW)
    harness = LocalFlwr(tmp_path / "flwr")
    harness.env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(blocker), os.environ.get("PYTHONPATH", "")) if p
    )
    try:
        run = harness.run({**FAST, "tracking": "mlflow", "run-name": "no-extra"}, timeout=300)
    finally:
        harness.stop()
    assert "install it with: pip install 'fedsilo[mlflow]'" in run.output, run.output[-4000:]
    assert "[round 1/" not in run.output
    assert not (harness.artifacts / "no-extra" / "history.json").exists()
