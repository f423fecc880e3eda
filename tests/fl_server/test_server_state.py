"""Encrypted checkpoints: everything resume needs comes back, only with the right key."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from core_training.models import ModelSpec, build_model
from core_training.schema import Feature, Schema
from fl_common.modelfile import arrays_from_state
from fl_server.early_stopping import EarlyStopping
from fl_server.state import (
    CHECKPOINT_FILE,
    NodeBook,
    RunState,
    load_checkpoint,
    save_checkpoint,
)
from privacy.crypto import DecryptionError

SPEC = ModelSpec("mlp", 5, 3, hidden_sizes=(8,), dropout=0.0)
SCHEMA = Schema(
    "label", ("a", "b", "c"), (*(Feature(f"x{i}") for i in range(4)), Feature("k", ("u",)))
)


def make_state() -> RunState:
    torch.manual_seed(0)
    current = arrays_from_state(build_model(SPEC).state_dict())
    best = {k: v * 0.5 for k, v in current.items()}
    es = EarlyStopping(patience=4, min_delta=0.01)
    for r, v in enumerate([1.0, 0.8, 0.85], start=1):
        es.update(r, v)
    return RunState(
        spec=SPEC,
        schema=SCHEMA,
        current=current,
        best=best,
        early_stopping=es,
        prep={
            "mean": np.arange(5, dtype=np.float64),
            "clip_low": np.array([-np.inf, -1.0, -2.0, -3.0, -np.inf]),
            "class_weights": np.array([0.5, 1.0, 1.5]),
        },
        round=3,
        history=[
            {"round": 0, "val_loss": 1.2, "improved": True},
            {
                "round": 1,
                "num_clients": 2,
                "rejected": {"node 9": ["w: holds NaN or infinite values"]},
                "epsilon_max": None,
                "val_loss": 1.0,
            },
            {"round": 3, "val_loss": math.nan, "skipped": True},
        ],
        strategy_state={"m_t": {"w": np.full((2, 2), 0.25, np.float32)}},
        declined_silos=["silo-abc"],
        elapsed=12.5,
    )


def assert_arrays_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_checkpoint_round_trip_restores_the_whole_state(artifacts: Path, key: bytes) -> None:
    state = make_state()
    path = save_checkpoint(artifacts / "run1", state, key=key, config={"strategy": "fedavg"})
    assert path == artifacts / "run1" / CHECKPOINT_FILE
    back, meta = load_checkpoint(path, key=key)
    assert_arrays_equal(back.current, state.current)
    assert_arrays_equal(back.best, state.best)
    assert_arrays_equal(back.prep, state.prep)
    assert list(back.strategy_state) == ["m_t"]
    assert_arrays_equal(back.strategy_state["m_t"], state.strategy_state["m_t"])
    assert back.early_stopping == state.early_stopping
    assert back.round == 3
    assert back.declined_silos == ["silo-abc"]
    assert back.elapsed == 12.5
    assert back.spec == SPEC
    assert back.schema == SCHEMA
    assert back.history[:2] == state.history[:2]
    assert back.history[2]["skipped"] is True and math.isnan(back.history[2]["val_loss"])
    assert meta["config"] == {"strategy": "fedavg"}
    assert (meta["round"], meta["best_round"], meta["best_value"]) == (3, 2, 0.8)


def test_resumed_early_stopping_continues_where_it_stopped(artifacts: Path, key: bytes) -> None:
    state = make_state()
    back, _ = load_checkpoint(save_checkpoint(artifacts, state, key=key, config={}), key=key)
    for r, v in [(4, 0.9), (5, 0.95), (6, 0.99)]:
        assert back.early_stopping.update(r, v) == state.early_stopping.update(r, v)
    assert back.early_stopping.should_stop and state.early_stopping.should_stop


def test_restored_arrays_load_into_the_model(artifacts: Path, key: bytes) -> None:
    state = make_state()
    back, _ = load_checkpoint(save_checkpoint(artifacts, state, key=key, config={}), key=key)
    model = build_model(back.spec)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in back.best.items()})
    assert torch.equal(
        model.state_dict()["net.0.weight"], torch.from_numpy(state.best["net.0.weight"])
    )


def test_checkpoint_is_not_readable_as_plain_torch(artifacts: Path, key: bytes) -> None:
    path = save_checkpoint(artifacts, make_state(), key=key, config={})
    raw = path.read_bytes()
    assert raw.startswith(b"FEDSILO\x00")
    assert b"net.0.weight" not in raw and b"silo-abc" not in raw


def test_wrong_key_raises_decryption_error(artifacts: Path, key: bytes) -> None:
    path = save_checkpoint(artifacts, make_state(), key=key, config={})
    with pytest.raises(DecryptionError):
        load_checkpoint(path, key=os.urandom(32))


def test_tampered_checkpoint_raises_decryption_error(artifacts: Path, key: bytes) -> None:
    path = save_checkpoint(artifacts, make_state(), key=key, config={})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DecryptionError):
        load_checkpoint(path, key=key)


def test_saving_again_replaces_the_checkpoint_atomically(artifacts: Path, key: bytes) -> None:
    state = make_state()
    save_checkpoint(artifacts, state, key=key, config={})
    state.round = 4
    save_checkpoint(artifacts, state, key=key, config={})
    assert [p.name for p in artifacts.iterdir()] == [CHECKPOINT_FILE]
    assert load_checkpoint(artifacts / CHECKPOINT_FILE, key=key)[0].round == 4


def test_entry_creates_rounds_in_order_and_reuses_them() -> None:
    state = make_state()
    state.entry(2)["val_loss"] = 0.9
    assert [h["round"] for h in state.history] == [0, 1, 2, 3]
    assert state.entry(2) == {"round": 2, "val_loss": 0.9}
    assert len(state.history) == 4


def test_checkpoint_keeps_the_schema_column_order(artifacts: Path, key: bytes) -> None:
    # features out of alphabetical order: the order is the column order of the data
    schema = Schema("y", (0, 1), (Feature("zeta"), Feature("alpha"), Feature("mid", ("b", "a"))))
    state = make_state()
    state.schema = schema
    back, _ = load_checkpoint(save_checkpoint(artifacts, state, key=key, config={}), key=key)
    assert back.schema.feature_names == ["zeta", "alpha", "mid=b", "mid=a"]


def test_a_silo_id_claimed_by_two_nodes_names_neither() -> None:
    book = NodeBook()
    clashes = book.name_nodes({1: "hospital-a", 2: "hospital-a", 3: "hospital-c", 4: ""})
    assert clashes == [("hospital-a", [1, 2])]
    assert [book.label(n) for n in (1, 2, 3, 4)] == ["node 1", "node 2", "hospital-c", "node 4"]


def test_a_later_census_cannot_take_a_name_a_node_already_holds() -> None:
    """On resume the statistics step asks again: a node that now claims a name bound
    to another node (not asked this time) unbinds it for both, never takes it."""
    book = NodeBook()
    book.name_nodes({1: "hospital-a", 3: "hospital-c"})
    clashes = book.name_nodes({3: "hospital-c", 7: "hospital-a"})
    assert clashes == [("hospital-a", [1, 7])]
    assert (book.label(1), book.label(7), book.label(3)) == ("node 1", "node 7", "hospital-c")
    back = NodeBook.from_dict(book.to_dict())
    assert back.names == {3: "hospital-c"}
