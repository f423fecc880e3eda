"""Flower starts a ClientApp process per message, so what the apps import at module level
is paid every round: scikit-learn and scipy (about two seconds), Opacus (only for DP),
matplotlib (only for plots) and kornia (only to augment images) must stay out of it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("sklearn", "scipy", "opacus", "matplotlib", "kornia")


@pytest.mark.parametrize(
    "module",
    ["fl_client.app", "fl_server.app", "core_training.trainer", "core_training.pipeline"],
)
def test_importing_leaves_out_sklearn_scipy_opacus_matplotlib_and_kornia(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


@pytest.mark.parametrize("module", ["fl_client.app", "fl_client.cli", "fl_client.local_round"])
def test_the_silo_side_imports_nothing_of_the_server_or_the_simulations(module: str) -> None:
    """A silo installs and reviews the client side: it must not depend on the server's
    code or the simulation harness."""
    code = (
        f"import sys, {module}\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('fl_server', 'simulations', 'harness'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


@pytest.mark.parametrize(
    "module", ["fl_client.cli", "fl_server.cli", "fl_client.silo", "core_training.pipeline"]
)
def test_the_command_lines_and_the_statistics_path_import_no_torch(module: str) -> None:
    """``fl-server keygen``, ``inspect``, ``fl-client check-data`` and ``stats`` answer
    without torch (about 1.3 CPU-seconds a command): only the commands that build or
    load a model import it."""
    code = f"import sys, {module}\nprint('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]
