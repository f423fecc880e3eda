"""The guides run as written: every shell session of docs/cli.md, docs/deployment.md and
docs/simulation.md, and the README's quick start, on a fresh HOME with free ports (see
tests/docs/guide_runner.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from guide_runner import GuideSession, commands, free_port, mismatch

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.docs


def fresh_env(tmp: Path) -> dict[str, str]:
    """A first-time user's environment: a new HOME, nothing of fedsilo's or Flower's set,
    this environment's tools first on PATH and this checkout's code importable."""
    home = tmp / "home"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FEDSILO_", "FLWR_", "PYTEST_")) and k != "VIRTUAL_ENV"
    }
    env.update(
        HOME=str(home),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
        FLWR_DISABLE_UPDATE_CHECK="1",
        # scripts/simulate.sh sets the environment up first; the tests run in it already
        FEDSILO_SKIP_SETUP="1",
        FLWR_HOME=str(tmp / "flwr"),
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(free_port()),
        FLWR_LOCAL_CONTROL_API_PORT=str(free_port()),
    )
    return env


def walk(guide: Path, tmp: Path, *, timeout: float = 600) -> None:
    steps = commands(guide.read_text(encoding="utf-8"))
    assert steps, f"{guide} has no runnable console block"
    folder = tmp / "work"
    folder.mkdir()
    overrides = {"W": str(tmp / "walk"), "SRC": str(ROOT)}
    session = GuideSession(folder, fresh_env(tmp), overrides)
    completed = False
    try:
        for i, step in enumerate(steps):
            status, output = session.run(session.substitute(step.text), timeout=timeout)
            where = f"{guide.name}:{step.line}: $ {step.text}"
            checks_status = i + 1 < len(steps) and steps[i + 1].text.strip() == "echo $?"
            if status != 0 and not checks_status:
                pytest.fail(f"{where}\nexited {status}:\n{output[-4000:]}")
            missing = mismatch(session.expected(step.expected), output)
            if missing is not None:
                pytest.fail(
                    f"{where}\nshown output not found:\n{missing}\n--- got:\n{output[-4000:]}"
                )
        completed = True
    finally:
        left = session.close(grace=30 if completed else 0)
    assert not left, f"{guide.name} left processes running: {left}"


def test_cli_guide_runs_as_written(tmp_path: Path) -> None:
    walk(ROOT / "docs" / "cli.md", tmp_path)


@pytest.mark.e2e
def test_simulation_guide_runs_as_written(tmp_path: Path) -> None:
    """Its console session is the image-silo walk-through: a real two-round `flwr run`."""
    walk(ROOT / "docs" / "simulation.md", tmp_path)


@pytest.mark.deployment
def test_deployment_guide_runs_as_written(tmp_path: Path) -> None:
    walk(ROOT / "docs" / "deployment.md", tmp_path)


@pytest.mark.e2e
def test_readme_quick_start_runs(tmp_path: Path) -> None:
    """The README's first command, with two rounds instead of ten (the rest is the
    default run), and with the set-up step skipped: this environment is the one that
    `bash scripts/setup.sh` made before the tests started."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    command = next(x for x in quick.splitlines() if x.startswith("bash scripts/simulate.sh"))
    assert command == "bash scripts/simulate.sh"
    env = fresh_env(tmp_path)
    folder = tmp_path / "work"
    folder.mkdir()
    session = GuideSession(folder, env, {})
    try:
        status, output = session.run(
            f'cd {ROOT} && {command} --run-config "num-server-rounds=2"', timeout=600
        )
    finally:
        session.close(grace=0)
    assert status == 0, output[-4000:]
    assert "[round 2/2]" in output, output[-4000:]
    home = tmp_path / "home" / ".fedsilo"
    run_dir = Path(output.rsplit("outputs in ", 1)[1].split()[0])
    assert run_dir.parent == home / "artifacts", output[-2000:]
    for name in ("history.json", "summary.json", "curves.png", "checkpoint.bin"):
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / "summary.json").read_text())["stop_reason"]
    assert (home / "key").stat().st_mode & 0o777 == 0o600
