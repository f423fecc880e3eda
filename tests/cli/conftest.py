"""Fixtures for the command-line tests (helpers live in cli_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import FAST, Round, Workspace, allow_plain_training, call, make_workspace

from privacy import keys


@pytest.fixture
def ws(tmp_path: Path, isolated_home: Path) -> Workspace:
    workspace = make_workspace(tmp_path / "ws")
    workspace.home = isolated_home
    allow_plain_training(isolated_home)
    return workspace


@pytest.fixture(scope="module")
def first_round(tmp_path_factory: pytest.TempPathFactory) -> Round:
    """Built once per test module, in process (see the module docstring)."""
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("round")
        mp.setenv(keys.HOME_ENV, str(root / "ws" / "home"))
        mp.delenv(keys.KEY_ENV, raising=False)
        mp.delenv(keys.PASSPHRASE_ENV, raising=False)
        ws = make_workspace(root / "ws")
        model = ws.path("round-0.bin")
        k = ["--key-file", ws.key]
        init = call("fl-server", "init", "--dataset", "breast-cancer", *FAST, "--out", model, *k)
        assert init.code == 0, init.err
        updates = []
        for i, silo in enumerate(ws.silos):
            out = ws.path("updates", f"r1-{'abc'[i]}.bin")
            done = call(
                "fl-client", "train", "--model", model, "--data", silo, "--schema", ws.schema,
                "--out", out, *k,
            )  # fmt: skip
            assert done.code == 0, done.err
            updates.append(out)
    return Round(ws, model, updates)
