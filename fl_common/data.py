"""The federation's data in simulation, as both apps see it.

The server holds out ``server-val-fraction`` of the data set for validation and the
clients partition the rest; both must compute exactly the same split, so it lives here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from core_training.data import Table, load_table
from core_training.pipeline import split

from .settings import RunSettings


def pooled_split(settings: RunSettings, seed: int) -> tuple[Table, Table]:
    """The federation's data in simulation: (pool that is partitioned, server split)."""
    return _pooled_split(
        settings.dataset,
        settings.schema,
        _synthetic_key(settings),
        settings.server_val_fraction,
        seed,
    )


def _synthetic_key(settings: RunSettings) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(settings.synthetic_params().items()))


@lru_cache(maxsize=4)
def _pooled_split(
    dataset: str,
    schema: str,
    synthetic: tuple[tuple[str, Any], ...],
    server_fraction: float,
    seed: int,
) -> tuple[Table, Table]:
    table = load_table(dataset, schema or None, **dict(synthetic))
    return split(table, test_fraction=server_fraction, seed=seed)
