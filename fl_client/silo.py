"""A node's own data and policy: its simulated partition or its silo's file, split for
validation, and the privacy policy the silo set for itself.

Everything here comes from the node's own configuration (node-config, the silo's policy
file, its fedsilo home), never from the run config a server sends: which files a silo
opens and which id its ledger has are the silo's decision.

A deployed silo's id is the policy's ``silo-id``, else an id made once and kept in its
fedsilo home (``silo-id``): its ledger is named after it, so moving or renaming the data
file keeps the epsilon it spent.

Loading and splitting are cached per process: in simulation one Ray worker serves many
rounds (and nodes), and reading and partitioning the same table every round would
dominate the time of small federations.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from core_training.config import TrainConfig
from core_training.data import Table, load_table
from core_training.partition import partition
from core_training.pipeline import deduplicate, hold_out_test, split
from fl_common.data import pooled_split
from fl_common.settings import RunSettings, fedsilo_home
from privacy.policy import SiloPolicy, find_policy

SILO_ID_FILE = "silo-id"
# node-config keys a silo may set; any other is refused so a typo is not silently ignored
NODE_CONFIG_KEYS = (
    "data-path",
    "schema",
    "policy",
    "key-file",
    "ledger-path",
    "partition-id",
    "num-partitions",
)
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
    policy: SiloPolicy
    key_file: str | None = None  # the node's own key file (None: FEDSILO_KEY or default)
    held_out: bool = True  # False: too few rows, so it validates on its training rows
    # silo-test-fraction: rows taken out before the validation split, scored once at the
    # end; None when not asked for or too few rows (``test_note`` says which)
    test: Table | None = None
    test_note: str = ""


def silo_for(node_config: dict[str, Any], settings: RunSettings, config: TrainConfig) -> Silo:
    """Deployment (``data-path`` in node-config) or simulation (``partition-id``)."""
    if "data-path" in node_config:
        unknown = sorted(set(node_config) - set(NODE_CONFIG_KEYS))
        if unknown:
            raise ValueError(
                f"node-config has unknown key(s) {', '.join(unknown)}; a silo takes "
                f"{', '.join(NODE_CONFIG_KEYS[:5])}"
            )
        return _deployed_silo(
            str(node_config["data-path"]),
            str(node_config.get("schema", "")),
            str(node_config.get("ledger-path", "")),
            str(node_config.get("policy", "")),
            str(node_config.get("key-file", "")),
            settings.local_val_fraction,
            config.seed,
            config.drop_duplicates,
            str(fedsilo_home()),
            settings.silo_test_fraction,
        )
    if "partition-id" not in node_config:
        raise ValueError(
            "node-config has neither data-path (a silo's file) nor partition-id "
            "(simulation); start the SuperNode with --node-config 'data-path=\"...\"'"
        )
    silo = _simulated_silo(
        int(node_config["partition-id"]),
        int(node_config["num-partitions"]),
        settings,
        config.seed,
        config.drop_duplicates,
    )
    # the data is cached per process; the policy and the ledger's place are the home's now
    home = fedsilo_home()
    return replace(
        silo,
        policy=find_policy(None, home, simulated=True),
        ledger_path=home / "ledgers" / f"{silo.silo_id}.ledger",
    )


@lru_cache(maxsize=64)
def _simulated_silo_cached(
    pid: int,
    n: int,
    key: tuple[Any, ...],
    seed: int,
    drop_duplicates: bool,
    test_fraction: float = 0.0,
) -> Silo:
    settings = RunSettings(**dict(key))
    pool, _ = pooled_split(settings, seed)
    parts = _partitions(n, key, seed)
    return _local_split(
        pool.subset(parts[pid]),
        silo_id=_silo_id(settings.dataset, settings.partitioner, n, seed, pid),
        val_fraction=settings.local_val_fraction,
        test_fraction=test_fraction,
        seed=seed + pid,
        drop_duplicates=drop_duplicates,
        ledger_path=None,
        policy=SiloPolicy.defaults(simulated=True),
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
    return _simulated_silo_cached(pid, n, key, seed, drop_duplicates, settings.silo_test_fraction)


@lru_cache(maxsize=8)
def _deployed_silo(
    data_path: str,
    schema: str,
    ledger_path: str,
    policy_path: str,
    key_file: str,
    val_fraction: float,
    seed: int,
    drop_duplicates: bool,
    home_path: str,
    test_fraction: float = 0.0,
) -> Silo:
    if not schema:
        raise ValueError(
            f'node-config gives data-path {data_path} but no schema; add schema="PATH" '
            "to --node-config"
        )
    home = Path(home_path)
    policy = find_policy(policy_path or None, home, simulated=False)
    table = load_table(data_path, schema)
    return _local_split(
        table,
        silo_id=policy.silo_id or stored_silo_id(home),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        drop_duplicates=drop_duplicates,
        ledger_path=Path(ledger_path) if ledger_path else None,
        policy=policy,
        key_file=key_file or None,
        home=home,
    )


def stored_silo_id(home: Path) -> str:
    """This silo's id, made once (``silo-<random>``) and kept in ``home/silo-id``.

    Two processes starting at once both try to create the file exclusively; the loser
    reads the winner's id, so a silo never has two."""
    path = home / SILO_ID_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        candidate = f"silo-{secrets.token_hex(6)}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(candidate + "\n")
                out.flush()
                os.fsync(out.fileno())
    for _ in range(50):  # the winner may not have written its line yet
        text = path.read_text().strip()
        if text:
            return text
        time.sleep(0.01)
    raise ValueError(f"{path} is empty; delete it to have a new silo id made")


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
    policy: SiloPolicy,
    key_file: str | None = None,
    home: Path | None = None,
    test_fraction: float = 0.0,
) -> Silo:
    table, dropped = deduplicate(table, TrainConfig(drop_duplicates=drop_duplicates))
    # the test rows leave first: no statistic, training or validation ever sees them
    held = hold_out_test(table, fraction=test_fraction, seed=seed)
    table = held.rest
    if len(table) >= MIN_ROWS_TO_HOLD_OUT:
        train, val = split(table, test_fraction=val_fraction, seed=seed)
    else:  # too small to hold out: validate on the training rows (reported as such)
        train, val = table, table
    ledger = ledger_path or (home or fedsilo_home()) / "ledgers" / f"{silo_id}.ledger"
    held_out = train is not val
    return Silo(
        silo_id, train, val, dropped, ledger, policy, key_file, held_out, held.test, held.note
    )
