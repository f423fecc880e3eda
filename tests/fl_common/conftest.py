"""Every test gets its own FEDSILO_HOME, so nothing reads or writes ~/.fedsilo."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("FEDSILO_HOME", str(home))
    return home
