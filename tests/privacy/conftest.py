"""Shared fixtures for the privacy tests: a fresh key, an isolated FEDSILO_HOME, small data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


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
