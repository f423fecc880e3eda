"""A custom model in the ServerApp over the fake Grid (real ClientApp handlers): it
trains and every model file rebuilds it without the run config; a factory that cannot be
imported, raises, or does not fit the data stops the run at set-up, before any node is
asked anything; under DP a BatchNorm model stops it there too; a silo that cannot build
the model answers with an error of one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flwr.app import Context, Message

sys.path.insert(0, str(Path(__file__).parent))
from fake_grid import FAST as FAST_RUN
from fake_grid import (
    FakeGrid,
    honest,
    task_identity,  # noqa: F401 (the autouse fixture)
)

from fl_common.settings import from_run_config
from fl_server.app import Federation
from fl_server.loop import RunStopped
from privacy.keys import default_key_path

ROOT = Path(__file__).resolve().parents[2]
EMBED = "examples.tabular_embed:build"
FAST = {
    **{k: v for k, v in FAST_RUN.items() if k != "hidden-sizes"},
    "model": EMBED,
    "model-args": '{"hidden": 16}',
    "num-server-rounds": 2,
}


def federation(
    tmp_path: Path, behaviours: Any = None, **config: Any
) -> tuple[Federation, FakeGrid]:
    run_config = {**FAST, "artifacts-dir": str(tmp_path / "artifacts"), "run-name": "r", **config}
    grid = FakeGrid(3, run_config, behaviours)
    settings, train = from_run_config(run_config)
    return Federation(grid, settings, train, run_id=1), grid  # type: ignore[arg-type]


def test_a_custom_model_federates_and_its_files_rebuild_it_without_the_run(
    tmp_path: Path,
) -> None:
    fed, _ = federation(tmp_path)
    summary = fed.run()
    assert summary["stop_reason"] == "completed"
    best = Path(summary["run_dir"]) / "best-model.bin"
    # A new process with nothing of the run: fl-server inspect reads the spec, and
    # fl-server evaluate rebuilds the model from the file alone.
    env = {
        "PYTHONPATH": str(ROOT),
        "PATH": str(Path(sys.executable).parent),
        "HOME": "/nonexistent",
    }
    key = ["--key-file", str(default_key_path())]
    cli = [sys.executable, "-m", "fl_server.cli"]
    inspect = subprocess.run(
        [*cli, "inspect", str(best), *key], capture_output=True, text=True, env=env, timeout=120
    )
    assert inspect.returncode == 0, inspect.stderr
    assert f'custom {EMBED} {{"hidden": 16}}: 30 features -> 2 classes' in inspect.stdout
    evaluate = subprocess.run(
        [*cli, "evaluate", str(best), "--dataset", "breast-cancer", "--json", *key],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert evaluate.returncode == 0, evaluate.stderr
    result = json.loads(evaluate.stdout)
    assert result["kind"] == "custom" and result["metrics"]["accuracy"] > 0.8


@pytest.mark.parametrize(
    ("source", "model", "message"),
    [
        (None, "examples.missing:build", "no examples.missing in the app folder"),
        ("def build(inputs):\n    raise ValueError('width?')", "bad_raise:build", "raised"),
        (
            "from torch import nn\ndef build(inputs):\n    return nn.Linear(inputs.in_features, 7)",
            "bad_out:build",
            r"output \(2, 7\) for a batch of 2, expected \(2, 2\)",
        ),
    ],
)
def test_a_bad_factory_stops_the_run_before_any_node_is_asked(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str | None,
    model: str,
    message: str,
) -> None:
    if source is not None:
        app = tmp_path / "app"
        app.mkdir()
        (app / f"{model.split(':')[0]}.py").write_text(source)
        monkeypatch.setenv("FEDSILO_APP_DIR", str(app))
    fed, grid = federation(tmp_path, model=model, **{"model-args": ""})
    with pytest.raises(RunStopped, match=message) as caught:
        fed.run()
    assert caught.value.reason == "bad-model" and "\n" not in str(caught.value)
    assert grid.pushed == []  # no statistics query, no round
    summary = json.loads((tmp_path / "artifacts" / "r" / "summary.json").read_text())
    assert summary["stop_reason"] == "bad-model" and model in summary["stop_detail"]


def test_under_dp_a_batchnorm_model_stops_the_run_naming_its_layers(tmp_path: Path) -> None:
    fed, grid = federation(
        tmp_path,
        dataset="digits",
        model="examples.resnet_small:build",
        dp=True,
        **{"model-args": '{"width": 8, "norm": "batch"}'},
    )
    with pytest.raises(RunStopped, match=r"stem\.1 \(BatchNorm2d\)") as caught:
        fed.run()
    assert caught.value.reason == "model-not-private" and grid.pushed == []


def test_a_silo_that_cannot_build_the_model_replies_with_one_line(tmp_path: Path) -> None:
    def missing_factory(msg: Message, context: Context) -> Message:
        run_config = {**context.run_config, "model": "examples.gone:build"}
        own = Context(
            context.run_id, context.node_id, context.node_config, context.state, run_config
        )
        return honest(msg, own)

    fed, grid = federation(tmp_path, behaviours={101: lambda r: missing_factory if r else honest})
    summary = fed.run()
    assert summary["stop_reason"] == "completed"
    reply = next(
        reply
        for msg, reply in grid.answered
        if msg.metadata.dst_node_id == 101 and msg.metadata.message_type.startswith("train")
    )
    assert reply.has_error()
    assert reply.error.reason == (
        f"model 'examples.gone:build': no examples.gone in the app folder {ROOT}"
    )
    history = json.loads((Path(summary["run_dir"]) / "history.json").read_text())
    failed = history[1]["failed"]
    assert list(failed.values()) == [reply.error.reason]
