"""Flower configuration files fedsilo writes: the connection ``flwr run`` uses, and
run-config values in TOML syntax."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def toml_value(value: Any) -> str:
    """A run-config value as TOML: strings quoted, booleans in lower case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # Flower splits --run-config at spaces outside quotes and does not see escaped
        # quotes: a value holding '"' (a JSON object) goes as a TOML literal string.
        if '"' in value and "'" not in value and "\n" not in value:
            return f"'{value}'"
        return json.dumps(value)
    return repr(value)


def write_flower_config(flwr_home: Path, *, in_memory: bool) -> Path:
    """A Flower configuration whose default connection is the local SuperLink that
    ``flwr run`` starts itself, with its state in memory or in a SQLite file."""
    address = ":local-in-memory:" if in_memory else ":local:"
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    path.write_text(f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "{address}"\n')
    return path
