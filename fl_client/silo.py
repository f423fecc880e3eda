"""A node's own data: its simulated partition or its silo's file, split for validation.

Loading and splitting are cached per process: in simulation one Ray worker serves many
rounds (and nodes), and reading and partitioning the same table every round would
dominate the time of small federations.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from core_training.config import TrainConfig
from core_training.data import Table, load_table
from core_training.pipeline import deduplicate, split
from fl_common.data import pooled_split
from fl_common.settings import RunSettings, fedsilo_home
from simulations.partition import partition

# Fewer distinct rows than this and a silo validates on its training rows: a held-out
# split would be one or two rows, whose accuracy means nothing.
MIN_ROWS_TO_HOLD_OUT = 10


@dataclass(frozen=True)
class Silo:
    """What one node trains and validates on."""

    silo_id: str  # stable name: the ledger and logs use it
    train: Table
    val: Table
    duplicates_dropped: int
    ledger_path: Path


def silo_for(node_config: dict[str, Any], settings: RunSettings, config: TrainConfig) -> Silo:
    """Deployment (``data-path`` in node-config) or simulation (``partition-id``)."""
    if "data-path" in node_config:
        return _deployed_silo(
            str(node_config["data-path"]),
            str(node_config.get("schema", "")),
            str(node_config.get("ledger-path", "")),
            settings.local_val_fraction,
            config.seed,
            config.drop_duplicates,
        )
    if "partition-id" not in node_config:
        raise ValueError(
            "node-config has neither data-path (a silo's file) nor partition-id "
            "(simulation); start the SuperNode with --node-config 'data-path=\"...\"'"
        )
    return _simulated_silo(
        int(node_config["partition-id"]),
        int(node_config["num-partitions"]),
        settings,
        config.seed,
        config.drop_duplicates,
    )


@lru_cache(maxsize=64)
def _simulated_silo_cached(
    pid: int, n: int, key: tuple[Any, ...], seed: int, drop_duplicates: bool
) -> Silo:
    settings = RunSettings(**dict(key))
    pool, _ = pooled_split(settings, seed)
    parts = _partitions(n, key, seed)
    return _local_split(
        pool.subset(parts[pid]),
        silo_id=_silo_id(settings.dataset, settings.partitioner, n, seed, pid),
        val_fraction=settings.local_val_fraction,
        seed=seed + pid,
        drop_duplicates=drop_duplicates,
        ledger_path=None,
    )


@lru_cache(maxsize=4)
def _partitions(n: int, key: tuple[Any, ...], seed: int) -> list[np.ndarray]:
    """Every node's row indices, computed once per process: with many more nodes than
    the silo cache holds, each new node would otherwise partition the whole pool again."""
    settings = RunSettings(**dict(key))
    pool, _ = pooled_split(settings, seed)
    return partition(
        pool.y,
        num_partitions=n,
        method=settings.partitioner,
        alpha=settings.dirichlet_alpha,
        min_size=settings.min_partition_size,
        seed=seed,
    )


def _simulated_silo(
    pid: int, n: int, settings: RunSettings, seed: int, drop_duplicates: bool
) -> Silo:
    if not 0 <= pid < n:
        raise ValueError(f"partition-id {pid} is outside 0..{n - 1}")
    # Only the settings that shape the data make up the cache key.
    data_keys = (
        "dataset",
        "schema",
        "synthetic_rows",
        "synthetic_features",
        "synthetic_classes",
        "synthetic_minority_fraction",
        "server_val_fraction",
        "local_val_fraction",
        "partitioner",
        "dirichlet_alpha",
        "min_partition_size",
    )
    key = tuple((k, getattr(settings, k)) for k in data_keys)
    return _simulated_silo_cached(pid, n, key, seed, drop_duplicates)


@lru_cache(maxsize=8)
def _deployed_silo(
    data_path: str,
    schema: str,
    ledger_path: str,
    val_fraction: float,
    seed: int,
    drop_duplicates: bool,
) -> Silo:
    if not schema:
        raise ValueError(
            f'node-config gives data-path {data_path} but no schema; add schema="PATH" '
            "to --node-config"
        )
    table = load_table(data_path, schema)
    digest = hashlib.sha256(str(Path(data_path).resolve()).encode()).hexdigest()[:12]
    return _local_split(
        table,
        silo_id=f"silo-{digest}",
        val_fraction=val_fraction,
        seed=seed,
        drop_duplicates=drop_duplicates,
        ledger_path=Path(ledger_path) if ledger_path else None,
    )


def _silo_id(dataset: str, partitioner: str, n: int, seed: int, pid: int) -> str:
    name = Path(dataset).stem if dataset else "data"
    return f"{name}-{partitioner}-{n}-s{seed}-p{pid}"


def _local_split(
    table: Table,
    *,
    silo_id: str,
    val_fraction: float,
    seed: int,
    drop_duplicates: bool,
    ledger_path: Path | None,
) -> Silo:
    table, dropped = deduplicate(table, TrainConfig(drop_duplicates=drop_duplicates))
    if len(table) >= MIN_ROWS_TO_HOLD_OUT:
        train, val = split(table, test_fraction=val_fraction, seed=seed)
    else:  # too small to hold out: validate on the training rows (reported as such)
        train, val = table, table
    ledger = ledger_path or fedsilo_home() / "ledgers" / f"{silo_id}.ledger"
    return Silo(silo_id, train, val, dropped, ledger)
