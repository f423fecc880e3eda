"""The centralized baseline CLI: accuracy on built-in sets, files, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core_training.config import TrainConfig
from core_training.data import load_builtin, write_csv
from core_training.pipeline import split
from simulations.centralized import main, run_centralized

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"OMP_NUM_THREADS": "1"}  # tiny models; shared cores
    return subprocess.run(
        [sys.executable, "-m", "simulations.centralized", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _metrics(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1  # one JSON object and nothing else
    return json.loads(lines[0])


@pytest.mark.parametrize(
    ("dataset", "model", "bar"), [("digits", "cnn", 0.95), ("breast-cancer", "mlp", 0.95)]
)
def test_builtin_set_reaches_its_accuracy_bar(dataset: str, model: str, bar: float) -> None:
    metrics = _metrics(_run("--dataset", dataset))
    assert metrics["dataset"] == dataset
    assert metrics["model"] == model
    assert metrics["accuracy"] >= bar
    rows = metrics["train_rows"] + metrics["val_rows"] + metrics["test_rows"]
    assert rows <= len(load_builtin(dataset))
    assert metrics["num_examples"] == metrics["test_rows"]
    assert 1 <= metrics["best_epoch"] <= metrics["epochs"]
    assert 0.0 <= metrics["val_accuracy"] <= 1.0


def test_csv_file_with_schema_trains(tmp_path: Path) -> None:
    table = load_builtin("wine")
    data = write_csv(table, tmp_path / "wine.csv")
    schema = table.schema.save(tmp_path / "wine.toml")

    metrics = _metrics(
        _run("--data", str(data), "--schema", str(schema), "--set", "local-epochs=20")
    )

    assert metrics["dataset"] == str(data)
    assert metrics["test_rows"] == round(178 * 0.25)
    assert metrics["accuracy"] >= 0.9
    assert len(metrics["per_class_recall"]) == 3


def test_given_test_rows_are_scored_and_the_rest_is_split_for_validation() -> None:
    table = load_builtin("wine")
    rest, test = split(table, test_fraction=0.3, seed=7)
    config = TrainConfig.from_dict({"local-epochs": 8})

    metrics = run_centralized(rest, config, val_fraction=0.25, test=test)

    assert metrics["test_rows"] == len(test) == metrics["num_examples"]
    assert metrics["val_rows"] == round(len(rest) * 0.25)
    assert metrics["train_rows"] + metrics["val_rows"] == len(rest)
    assert 1 <= metrics["best_epoch"] <= 8


def test_the_kept_epoch_has_the_lowest_validation_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    import simulations.centralized as centralized

    seen: list[float] = []
    real = centralized.evaluate

    def spy(model, X, y, **kw):
        metrics = real(model, X, y, **kw)
        seen.append(metrics["loss"])
        return metrics

    monkeypatch.setattr(centralized, "evaluate", spy)
    config = TrainConfig.from_dict({"local-epochs": 6})

    metrics = run_centralized(load_builtin("wine"), config)

    per_epoch = seen[:-1]  # the last call scores the test rows
    assert len(per_epoch) == 6
    assert metrics["best_epoch"] == 1 + per_epoch.index(min(per_epoch))
    assert metrics["val_loss"] == min(per_epoch)


@pytest.mark.parametrize("flag", ["--test-fraction", "--val-fraction"])
def test_fraction_outside_0_1_exits_2(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dataset", "wine", flag, "1.5"]) == 2
    assert flag in capsys.readouterr().err


def test_bad_file_exits_2_with_one_line_naming_it(tmp_path: Path) -> None:
    table = load_builtin("wine")
    schema = table.schema.save(tmp_path / "wine.toml")
    data = tmp_path / "silo.csv"
    data.write_bytes(b"PK\x03\x04" + bytes(200))

    result = _run("--data", str(data), "--schema", str(schema))

    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(data) in lines[0]
    assert lines[0].startswith("error: ")


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda d: None, "does not exist"),
        (lambda d: d.write_text(""), "is empty"),
        (lambda d: d.write_text("alcohol,target\n"), "no data rows"),
    ],
    ids=["missing", "empty", "header-only"],
)
def test_bad_data_file_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, says: str
) -> None:
    schema = load_builtin("wine").schema.save(tmp_path / "wine.toml")
    data = tmp_path / "silo.csv"
    make(data)

    assert main(["--data", str(data), "--schema", str(schema)]) == 2

    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert str(data) in err
    assert says in err


def test_bad_setting_exits_2_naming_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dataset", "wine", "--set", "local-epochz=3"]) == 2
    assert "'local-epochz'" in capsys.readouterr().err


def test_data_without_schema_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_csv(load_builtin("wine"), tmp_path / "wine.csv")
    assert main(["--data", str(data)]) == 2
    assert "needs a schema" in capsys.readouterr().err
