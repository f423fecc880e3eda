"""A silo's test split (silo-test-fraction): taken out before the train/validation
split, disjoint from both, the same rows on every call for a seed, stratified as
scikit-learn stratifies, and refused (flagged, never filled with training rows) when a
silo has too few rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from core_training.data import load_table
from core_training.pipeline import deduplicate
from fl_client.silo import _local_split, silo_for
from fl_common.settings import from_run_config
from privacy.policy import SiloPolicy

RUN = {"dataset": "breast-cancer", "validation": "federated", "partitioner": "iid"}


def silo(fraction: float, *, pid: int = 0, seed: int = 0):  # type: ignore[no-untyped-def]
    settings, config = from_run_config({**RUN, "silo-test-fraction": fraction, "seed": seed})
    return silo_for({"partition-id": pid, "num-partitions": 3}, settings, config)


def rows(table) -> set[bytes]:  # type: ignore[no-untyped-def]
    return {row.tobytes() for row in np.asarray(table.X, dtype=np.float64)}


def test_the_test_rows_are_disjoint_from_training_and_validation_and_cover_the_silo() -> None:
    with_test, without = silo(0.25), silo(0.0)
    assert with_test.test is not None and without.test is None
    train, val, test = rows(with_test.train), rows(with_test.val), rows(with_test.test)
    assert not (test & train) and not (test & val) and not (train & val)
    # the same silo's rows, only shared out differently
    assert train | val | test == rows(without.train) | rows(without.val)
    assert len(test) == round(0.25 * (len(train) + len(val) + len(test)))


def test_the_split_depends_on_the_seed_only() -> None:
    silo_for.__globals__["_simulated_silo_cached"].cache_clear()
    first = rows(silo(0.25).test)
    silo_for.__globals__["_simulated_silo_cached"].cache_clear()
    assert rows(silo(0.25).test) == first
    assert rows(silo(0.25, seed=1).test) != first


def test_the_test_rows_are_scikit_learn_s_stratified_split_made_first() -> None:
    table, _ = deduplicate(load_table("breast-cancer"), from_run_config(RUN)[1])
    made = _local_split(
        table,
        silo_id="s",
        val_fraction=0.2,
        test_fraction=0.3,
        seed=7,
        drop_duplicates=True,
        ledger_path=None,
        policy=SiloPolicy.defaults(simulated=True),
    )
    n_test = round(0.3 * len(table))
    _, expected = train_test_split(
        np.arange(len(table)), test_size=n_test, random_state=7, stratify=table.y
    )
    assert made.test is not None
    assert np.array_equal(made.test.X, table.X[np.sort(expected)])
    assert np.array_equal(np.bincount(made.test.y), np.bincount(table.y[expected]))


@pytest.mark.parametrize("size", [5, 11])  # 11: two test rows would leave 9
def test_a_silo_with_too_few_rows_holds_out_no_test_split_and_says_why(size: int) -> None:
    table, _ = deduplicate(load_table("breast-cancer"), from_run_config(RUN)[1])
    made = _local_split(
        table.subset(np.arange(size)),
        silo_id="s",
        val_fraction=0.2,
        test_fraction=0.2,
        seed=0,
        drop_duplicates=True,
        ledger_path=None,
        policy=SiloPolicy.defaults(simulated=True),
    )
    assert made.test is None
    assert f"too few rows ({size})" in made.test_note
    assert len(made.train) + (len(made.val) if made.held_out else 0) == size
