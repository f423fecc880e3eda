"""Shared helpers for the core_training tests: a small mixed schema and file writers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from core_training.schema import Schema

MIXED_SCHEMA = """\
[label]
column = "target"
classes = [0, 1]

[features]
age = "numeric"
smoker = { categories = ["no", "yes", "former"] }
income = "numeric"
"""


@pytest.fixture
def mixed_schema(tmp_path: Path) -> Path:
    """Path of a schema with two numeric features around one categorical feature."""
    path = tmp_path / "schema.toml"
    path.write_text(MIXED_SCHEMA, encoding="utf-8")
    return path


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, str | bytes], Path]:
    """Write text or bytes to ``tmp_path / name`` and return the path."""

    def write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return write


@pytest.fixture
def load_schema(mixed_schema: Path) -> Schema:
    return Schema.load(mixed_schema)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """The models here are tiny: one thread is faster than several on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
