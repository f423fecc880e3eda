"""A node's data (fl_client.silo): simulated partitions never share rows with each other
or with the server's validation split; a deployed silo loads its own CSV."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core_training.config import TrainConfig
from core_training.data import Table, load_table, write_csv
from fl_client import silo as silo_module
from fl_client.silo import Silo, silo_for
from fl_common import data as common_data
from fl_common.data import pooled_split
from fl_common.settings import RunSettings
from privacy import keys
from privacy.ledger import PrivacyLedger


def rows(table: Table) -> set[bytes]:
    return {
        x.tobytes() + int(c).to_bytes(8, "little") for x, c in zip(table.X, table.y, strict=True)
    }


def simulated(n: int = 3, **settings: object) -> list[Silo]:
    run = RunSettings(**settings)  # type: ignore[arg-type]
    return [
        silo_for({"partition-id": i, "num-partitions": n}, run, TrainConfig()) for i in range(n)
    ]


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet"])
def test_silo_train_and_val_are_disjoint(partitioner: str) -> None:
    for silo in simulated(partitioner=partitioner):
        assert len(silo.train) > 0 and len(silo.val) > 0
        assert not rows(silo.train) & rows(silo.val), silo.silo_id


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet"])
def test_partitions_are_disjoint_across_silos(partitioner: str) -> None:
    silos = [rows(s.train) | rows(s.val) for s in simulated(partitioner=partitioner)]
    for i in range(len(silos)):
        for j in range(i + 1, len(silos)):
            assert not silos[i] & silos[j], (i, j)


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet"])
def test_no_silo_sees_the_server_validation_split(partitioner: str) -> None:
    settings = RunSettings(partitioner=partitioner)
    _, server = pooled_split(settings, TrainConfig().seed)
    held_out = rows(server)
    assert len(held_out) == len(server) > 0
    for silo in simulated(partitioner=partitioner):
        assert not (rows(silo.train) | rows(silo.val)) & held_out, silo.silo_id


def test_silos_and_server_split_cover_the_whole_data_set() -> None:
    full = load_table("digits")
    _, server = pooled_split(RunSettings(), TrainConfig().seed)
    silos = simulated()
    total = sum(len(s.train) + len(s.val) + s.duplicates_dropped for s in silos)
    assert total + len(server) == len(full) == 1797
    union = set().union(*(rows(s.train) | rows(s.val) for s in silos)) | rows(server)
    assert union == rows(full)


def test_server_split_has_the_configured_fraction() -> None:
    pool, server = pooled_split(RunSettings(server_val_fraction=0.2), 0)
    assert len(server) == round(0.2 * 1797)
    assert len(pool) + len(server) == 1797


def test_silo_ids_are_stable_and_distinct() -> None:
    first = [s.silo_id for s in simulated()]
    assert first == [f"digits-iid-3-s0-p{i}" for i in range(3)]
    # a fresh worker process (no cache) must build the same silos
    silo_module._simulated_silo_cached.cache_clear()
    common_data._pooled_split.cache_clear()
    again = simulated()
    assert [s.silo_id for s in again] == first
    assert [rows(s.train) for s in again] == [rows(s.train) for s in simulated()]


def test_simulated_ledger_lives_under_fedsilo_home() -> None:
    silo_module._simulated_silo_cached.cache_clear()
    silo = simulated()[1]
    assert silo.ledger_path.name == f"{silo.silo_id}.ledger"
    assert silo.ledger_path.parent.name == "ledgers"


def test_partition_id_outside_the_federation_is_refused() -> None:
    with pytest.raises(ValueError, match=r"partition-id 3 is outside 0\.\.2"):
        silo_for({"partition-id": 3, "num-partitions": 3}, RunSettings(), TrainConfig())


def test_node_config_without_data_or_partition_is_refused() -> None:
    with pytest.raises(ValueError, match=r"neither data-path.*nor partition-id"):
        silo_for({}, RunSettings(), TrainConfig())


# -- deployment ------------------------------------------------------------------------


@pytest.fixture
def silo_files(tmp_path: Path) -> tuple[Path, Path, Table]:
    table = load_table("wine")
    folder = tmp_path / "silo"
    folder.mkdir()
    csv = write_csv(table, folder / "wine.csv")
    schema = table.schema.save(folder / "schema.toml")
    return csv, schema, table


def test_deployed_silo_loads_its_csv(silo_files: tuple[Path, Path, Table]) -> None:
    csv, schema, table = silo_files
    silo = silo_for({"data-path": str(csv), "schema": str(schema)}, RunSettings(), TrainConfig())
    assert silo.silo_id.startswith("silo-")
    assert len(silo.train) + len(silo.val) + silo.duplicates_dropped == len(table) == 178
    assert len(silo.val) == round(0.2 * (len(table) - silo.duplicates_dropped))
    assert not rows(silo.train) & rows(silo.val)
    assert rows(silo.train) | rows(silo.val) == rows(table)  # wine has no duplicates
    assert silo.train.schema.feature_names == table.schema.feature_names


def test_deployed_silo_id_stays_when_the_file_moves(
    tmp_path: Path, silo_files: tuple[Path, Path, Table]
) -> None:
    csv, schema, _ = silo_files
    moved = tmp_path / "elsewhere" / "renamed.csv"
    moved.parent.mkdir()
    first = silo_for({"data-path": str(csv), "schema": str(schema)}, RunSettings(), TrainConfig())
    key = keys.load_key_file(keys.generate_key_file(tmp_path / "k" / "key"))
    spent = PrivacyLedger.open(first.ledger_path, key=key, budget_epsilon=10.0, delta=1e-5)
    spent.reserve(noise_multiplier=1.0, sample_rate=0.1, steps=50).settle(50)
    shutil.move(csv, moved)
    again = silo_for({"data-path": str(moved), "schema": str(schema)}, RunSettings(), TrainConfig())
    assert first.silo_id == again.silo_id and first.silo_id.startswith("silo-")
    reopened = PrivacyLedger.open(again.ledger_path, key=key, budget_epsilon=10.0, delta=1e-5)
    assert reopened.spent_epsilon() == spent.spent_epsilon() > 0


def test_deployed_silo_id_comes_from_the_policy_when_it_names_one(
    tmp_path: Path, silo_files: tuple[Path, Path, Table]
) -> None:
    csv, schema, _ = silo_files
    policy = tmp_path / "policy.toml"
    policy.write_text('silo-id = "hospital-a"\n')
    config = {"data-path": str(csv), "schema": str(schema), "policy": str(policy)}
    silo = silo_for(config, RunSettings(), TrainConfig())
    assert silo.silo_id == "hospital-a"
    assert silo.ledger_path.name == "hospital-a.ledger"


def test_deployed_silo_uses_the_given_ledger_path(
    tmp_path: Path, silo_files: tuple[Path, Path, Table]
) -> None:
    csv, schema, _ = silo_files
    ledger = tmp_path / "ledgers" / "mine.ledger"
    config = {"data-path": str(csv), "schema": str(schema), "ledger-path": str(ledger)}
    assert silo_for(config, RunSettings(), TrainConfig()).ledger_path == ledger


def test_deployed_silo_without_schema_is_a_clear_error(
    silo_files: tuple[Path, Path, Table],
) -> None:
    csv, _, _ = silo_files
    with pytest.raises(ValueError, match=r"no schema; add schema=\"PATH\" to --node-config"):
        silo_for({"data-path": str(csv)}, RunSettings(), TrainConfig())
