"""JSON files fedsilo writes in the clear (history, summary, reports): plain JSON and
atomic writes, one way for every writer."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from privacy.store import atomic_write


def jsonable(value: Any) -> Any:
    """Plain JSON: numpy numbers and arrays as numbers and lists, paths as text,
    NaN and infinities as null (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically (a crash leaves the old file whole)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        handle.write((json.dumps(jsonable(data), indent=2) + "\n").encode("utf-8"))
    return path
