"""Shared fixtures for the privacy tests: a fresh key, an isolated FEDSILO_HOME, small data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from privacy import keys


@pytest.fixture(autouse=True)
def isolated_key_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own FEDSILO_HOME, no key variables and no remembered key folders."""
    home = tmp_path / "fedsilo-home"
    monkeypatch.setenv(keys.HOME_ENV, str(home))
    monkeypatch.delenv(keys.KEY_ENV, raising=False)
    monkeypatch.delenv(keys.PASSPHRASE_ENV, raising=False)
    monkeypatch.setattr(keys, "_key_folders_in_use", set())
    return home


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = tmp_path / "artifacts"
    folder.mkdir()
    return folder


@pytest.fixture
def blobs() -> tuple[torch.Tensor, torch.Tensor]:
    """A small, separable 2-class problem: 512 rows, 10 features."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(512, 10, generator=gen)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long()
    return X, y
