"""Noise levels found for DP targets, remembered across processes in the fedsilo home.

Flower starts a new ClientApp process for every message a deployed silo receives, and
the search for the noise that meets a target epsilon evaluates the accountant dozens of
times (seconds of CPU, in every round of every silo). The answer depends only on public
figures (target epsilon, delta, sample rate, steps, accountant), so the home keeps it in
``noise-levels.json``.

A remembered level is a hint, never trusted: :func:`privacy.dp.noise_for_target` checks
it with one accountant evaluation (its epsilon must stay within the target) before using
it, and searches again when it does not. An edited file can cost utility (more noise
than needed), never privacy. Targets found unreachable are not remembered.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ._fsio import atomic_write
from .keys import fedsilo_home

FILE_NAME = "noise-levels.json"
MAX_ENTRIES = 256  # the oldest go first; a silo plans a handful of runs at a time


def _path() -> Path:
    return fedsilo_home() / FILE_NAME


def cache_key(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str
) -> str:
    return f"{accountant}|{target_epsilon!r}|{delta!r}|{sample_rate!r}|{steps}"


def _read(path: Path) -> dict[str, float]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # absent, unreadable or not JSON: nothing remembered
    if not isinstance(raw, dict):
        return {}
    return {
        k: float(v)
        for k, v in raw.items()
        if isinstance(k, str) and isinstance(v, int | float) and math.isfinite(v) and v > 0
    }


def remembered(key: str) -> float | None:
    """The noise level remembered for ``key`` (unchecked), or None."""
    return _read(_path()).get(key)


def remember(key: str, sigma: float) -> None:
    """Keep ``sigma`` for ``key``. Best effort: a home that cannot be written (read-only,
    full disk) only means the next process searches again."""
    path = _path()
    try:
        entries = _read(path)
        entries.pop(key, None)
        entries[key] = float(sigma)
        kept = dict(list(entries.items())[-MAX_ENTRIES:])
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as handle:
            handle.write(json.dumps(kept, indent=0).encode("utf-8"))
    except OSError:
        pass
