"""Helpers for the command-line tests: silo CSV files, keys kept apart from artifacts,
and two ways to run a command.

``run_cli`` starts the real console script in a subprocess (one thread, its own
FEDSILO_HOME). ``call`` runs the same ``main`` function in this process: the end-to-end
federation and the many small checks use it, because each new process pays seconds of
imports (torch, scikit-learn, Flower) on the two shared cores the suite runs on.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core_training.data import load_builtin, write_csv
from fl_client.cli import main as client_main
from fl_server.cli import main as server_main
from privacy import keys

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]  # this checkout, whatever the install points to
MAINS: dict[str, Callable[[list[str]], int]] = {"fl-server": server_main, "fl-client": client_main}
# Small and quick, yet enough to learn breast-cancer in a few rounds.
FAST = ["--set", "local-epochs=3", "--set", "learning-rate=0.01", "--set", "hidden-sizes=16"]

torch.set_num_threads(1)


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@dataclass
class Workspace:
    """Silo files, a key in its own folder, and folders for artifacts."""

    root: Path
    key: Path
    other_key: Path
    schema: Path
    silos: list[Path]
    test: Path
    home: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEDSILO_")}
        env.update(FEDSILO_HOME=str(self.home), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        # The console scripts import this checkout's code, as the in-process calls do.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        return env

    def path(self, *parts: str) -> Path:
        out = self.root.joinpath("artifacts", *parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        return out


def make_workspace(root: Path) -> Workspace:
    """breast-cancer split into three silos and a held-out test file."""
    table = load_builtin("breast-cancer")
    order = np.random.default_rng(0).permutation(len(table))
    data = root / "data"
    data.mkdir(parents=True)
    files = []
    for i, part in enumerate(np.array_split(order, 4)):
        name = f"silo-{'abc'[i]}.csv" if i < 3 else "test.csv"
        files.append(write_csv(table.subset(np.sort(part)), data / name))
    schema = table.schema.save(data / "schema.toml")
    key_dir = root / "keys"
    key = keys.generate_key_file(key_dir / "federation.key")
    other = keys.generate_key_file(key_dir / "other.key")
    home = root / "home"
    home.mkdir()
    allow_plain_training(home)
    return Workspace(root, key, other, schema, files[:3], files[3], home)


# The silos of these tests chose to allow training without DP (the built-in policy of a
# silo requires DP; tests of that default remove this file).
PLAIN_POLICY = "[privacy]\nrequire-dp = false\nmax-epsilon-per-run = 10.0\n"


def allow_plain_training(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "policy.toml"
    path.write_text(PLAIN_POLICY)
    return path


def run_cli(ws: Workspace, tool: str, *args: str | Path, timeout: float = 120) -> Result:
    """The installed console script (``python -m`` when it is not installed)."""
    script = BIN / tool
    base = [str(script)] if script.exists() else [sys.executable, "-m", _module(tool)]
    proc = subprocess.run(
        [*base, *map(str, args)],
        capture_output=True,
        text=True,
        env=ws.env(),
        cwd=ws.root,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _module(tool: str) -> str:
    return {"fl-server": "fl_server.cli", "fl-client": "fl_client.cli"}[tool]


def call(tool: str, *args: str | Path) -> Result:
    """The same ``main`` in this process; stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = MAINS[tool]([str(a) for a in args])
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


def assert_one_line_error(result: Result, *needles: str) -> None:
    assert result.code == 2, result
    assert result.out == ""
    assert len(result.err_lines) == 1, result.err
    line = result.err_lines[0]
    assert line.startswith("error: ")
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in line, line


@dataclass
class Round:
    """A global model and the three silos' updates of its first round."""

    ws: Workspace
    model: Path
    updates: list[Path]
