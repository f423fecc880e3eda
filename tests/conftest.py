"""Fixtures for the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from privacy import keys


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own FEDSILO_HOME, no key variables and no remembered key
    folders, so nothing reads or writes ~/.fedsilo or leaks a key between tests."""
    home = tmp_path / "fedsilo-home"
    monkeypatch.setenv(keys.HOME_ENV, str(home))
    monkeypatch.delenv(keys.KEY_ENV, raising=False)
    monkeypatch.delenv(keys.PASSPHRASE_ENV, raising=False)
    monkeypatch.setattr(keys, "_key_folders_in_use", set())
    return home
