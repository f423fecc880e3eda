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


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    """A real key file's key, kept in its own folder (the store refuses to write next to
    a key in use)."""
    return keys.load_key_file(keys.generate_key_file(tmp_path / "keys" / "k.key"))


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = tmp_path / "artifacts"
    folder.mkdir()
    return folder
