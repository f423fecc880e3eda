"""Shared fixtures for the server tests: an isolated FEDSILO_HOME and a real key file
kept in its own folder (the store refuses to write next to a key in use)."""

from __future__ import annotations

from pathlib import Path

import pytest

from privacy import keys


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    return keys.load_key_file(keys.generate_key_file(tmp_path / "keys" / "k.key"))


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = tmp_path / "artifacts"
    folder.mkdir()
    return folder
