"""Freeze, local layers (FedPer) and FedBN in the ServerApp over the fake Grid (real
ClientApp handlers): which weights travel, which stay the initial model's, where each
silo keeps its own (encrypted, carried from round to round, refused under another key),
what a reply carrying a kept weight costs its node, and what the summary reports."""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Array, Context, Message

sys.path.insert(0, str(Path(__file__).parent))
from fake_grid import FAST as FAST_RUN
from fake_grid import (
    Behaviour,
    FakeGrid,
    honest,
    task_identity,  # noqa: F401 (the autouse fixture)
)

from core_training.config import ConfigError
from core_training.models import MLP
from fl_client import personal
from fl_common import protocol as p
from fl_common.modelfile import load_model
from fl_common.settings import fedsilo_home, from_run_config
from fl_server.app import Federation
from fl_server.loop import RunStopped
from fl_server.state import load_checkpoint
from privacy.keys import is_encrypted_file, resolve_key

FAST = {**FAST_RUN, "num-server-rounds": 2}  # the MLP is net.0 (30x16), net.3
FIRST = {"net.0.weight", "net.0.bias"}
HEAD = {"net.3.weight", "net.3.bias"}
PERSONAL = {"local-layers": "net.3.*", "validation": "federated"}


def federate(
    tmp_path: Path,
    nodes: int = 3,
    behaviours: dict[int, Callable[[int], Behaviour]] | None = None,
    name: str = "r",
    **config: Any,
) -> tuple[dict[str, Any], FakeGrid]:
    run_config = {**FAST, "artifacts-dir": str(tmp_path), "run-name": name, **config}
    grid = FakeGrid(nodes, run_config, behaviours)
    settings, train = from_run_config(run_config)
    summary = Federation(grid, settings, train, run_id=1).run()  # type: ignore[arg-type]
    return summary, grid


def history(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads((Path(summary["run_dir"]) / "history.json").read_text())


def names(message: Message) -> set[str]:
    records = message.content.array_records
    return set(records[p.ARRAYS]) if p.ARRAYS in records else set()


def of_type(grid: FakeGrid, kind: str) -> list[tuple[Message, Message]]:
    return [(m, r) for m, r in grid.answered if m.metadata.message_type == kind]


def initial_kept(grid: FakeGrid) -> dict[str, np.ndarray]:
    """The kept weights' initial values, as the statistics query sent them."""
    query = of_type(grid, "query")[0][0]
    return p.record_to_numpy(query.content[p.FIXED])


def with_extra_array(name: str) -> Behaviour:
    """An honest train reply with one more array: ``name``, zeros of its shape."""

    def answer(msg: Message, context: Context) -> Message:
        reply = honest(msg, context)
        shape = (16, 30) if name == "net.0.weight" else (2, 16)
        reply.content[p.ARRAYS][name] = Array(np.zeros(shape, dtype=np.float32))
        return reply

    return answer


def kept_file(silo: str) -> Path:
    return fedsilo_home() / "layers" / f"{silo}-r.layers"


# -- freeze ----------------------------------------------------------------------------


def test_frozen_weights_stay_the_initial_models_in_every_file_and_only_the_rest_travels(
    tmp_path: Path,
) -> None:
    first, _ = federate(tmp_path, name="base", **{"num-server-rounds": 1})
    start = Path(first["run_dir"]) / "best-model.bin"
    summary, grid = federate(
        tmp_path, name="tl", **{"initial-model": str(start), "freeze": "net.0.*"}
    )
    assert summary["stop_reason"] == "completed"
    key = resolve_key(None)
    initial = load_model(start, key=key).model.state_dict()
    run_dir = Path(summary["run_dir"])
    state, _ = load_checkpoint(run_dir / "checkpoint.bin", key=key)
    best = load_model(run_dir / "best-model.bin", key=key).model.state_dict()
    for weights in (best, state.current):  # complete files: every weight is there
        assert set(weights) == FIRST | HEAD
        for name in FIRST:
            assert np.array_equal(np.asarray(weights[name]), initial[name].numpy()), name
        for name in HEAD:
            assert not np.array_equal(np.asarray(weights[name]), initial[name].numpy()), name
    trains = of_type(grid, "train")
    assert len(trains) == 6
    for message, reply in trains:
        assert names(message) == HEAD and names(reply) == HEAD


def test_freezing_cuts_the_bytes_of_every_round_to_the_trainable_weights(tmp_path: Path) -> None:
    plain, _ = federate(tmp_path, name="plain")
    frozen, _ = federate(tmp_path, name="frozen", freeze="net.0.*")
    model = MLP(30, 2, (16,))  # the same layers, counted here
    every = sum(t.numel() for t in model.parameters()) * 4  # float32
    head = sum(t.numel() for n, t in model.named_parameters() if n.startswith("net.3")) * 4
    assert (every, head) == ((30 * 16 + 16 + 16 * 2 + 2) * 4, (16 * 2 + 2) * 4)
    for entry in history(plain)[1:]:
        assert entry["arrays_bytes_sent"] == entry["arrays_bytes_received"] == 3 * every
    for entry in history(frozen)[1:]:
        assert entry["arrays_bytes_sent"] == entry["arrays_bytes_received"] == 3 * head


@pytest.mark.parametrize(
    ("settings", "carried"),
    [({"freeze": "net.0.*"}, "net.0.weight"), (PERSONAL, "net.3.weight")],
    ids=["frozen", "local"],
)
def test_a_reply_carrying_a_kept_weight_is_rejected_whole_and_never_reaches_the_model(
    tmp_path: Path, settings: dict[str, str], carried: str
) -> None:
    behaviours = {101: lambda r: with_extra_array(carried) if r == 1 else honest}
    summary, grid = federate(tmp_path, behaviours=behaviours, **settings)
    first = history(summary)[1]
    assert first["num_clients"] == 2 and first["num_rejected"] == 1
    (reason,) = first["rejected"]["node 101"]
    assert "keeps on the silos" in reason and carried in reason
    key = resolve_key(None)
    best = load_model(Path(summary["run_dir"]) / "best-model.bin", key=key).model.state_dict()
    initial = initial_kept(grid)
    assert np.array_equal(best[carried].numpy(), initial[carried])  # the zeros never landed


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"freeze": "features.*"}, "pattern 'features.*' matches no parameter"),
        ({"freeze": "net.*"}, "freezes every parameter"),
        ({"personalization": "fedbn", "validation": "federated"}, "this model has none"),
    ],
)
def test_a_plan_that_cannot_work_stops_the_run_before_any_node_is_asked(
    tmp_path: Path, settings: dict[str, str], message: str
) -> None:
    run_config = {**FAST, "artifacts-dir": str(tmp_path), "run-name": "r", **settings}
    grid = FakeGrid(2, run_config)
    with pytest.raises(RunStopped) as stop:
        Federation(grid, *from_run_config(run_config), run_id=1).run()  # type: ignore[arg-type]
    assert stop.value.reason == "bad-layers" and message in str(stop.value)
    assert grid.pushed == []


def test_personalization_without_federated_validation_is_refused_at_parse() -> None:
    with pytest.raises(ConfigError, match='need validation = "federated"'):
        from_run_config({"local-layers": "net.3.*"})
    with pytest.raises(ConfigError, match=r"'freeze'.*empty pattern"):
        from_run_config({"freeze": "net.0.*,"})


# -- local layers (FedPer) --------------------------------------------------------------


def test_local_layers_never_travel_and_each_silo_keeps_its_own_encrypted(tmp_path: Path) -> None:
    summary, grid = federate(tmp_path, **PERSONAL)
    assert summary["stop_reason"] == "completed"
    for message, reply in grid.answered:
        kind = message.metadata.message_type
        assert not (names(message) | names(reply)) & HEAD, kind
        if kind in ("train", "evaluate"):
            assert names(message) == FIRST
    initial = initial_kept(grid)
    assert set(initial) == HEAD  # sent once, in the statistics query
    key = resolve_key(None)
    silos = sorted(summary["personalized"]["by_silo"])
    assert len(silos) == 3
    heads = []
    for silo in silos:
        path = kept_file(silo)
        raw = path.read_bytes()
        assert is_encrypted_file(path) and b"net.3.weight" not in raw
        kept = personal.load_kept(path, key=key)
        assert set(kept.local) == HEAD
        assert np.array_equal(kept.fixed["net.3.weight"].numpy(), initial["net.3.weight"])
        heads.append(kept.local["net.3.weight"].numpy())
        assert not np.array_equal(heads[-1], initial["net.3.weight"])  # trained here
    assert not np.array_equal(heads[0], heads[1]) and not np.array_equal(heads[1], heads[2])
    # the server's files are complete: shared weights trained, the head the initial one
    best = load_model(Path(summary["run_dir"]) / "best-model.bin", key=key).model.state_dict()
    assert np.array_equal(best["net.3.weight"].numpy(), initial["net.3.weight"])


def test_a_silo_s_local_layers_carry_over_from_one_round_to_the_next(tmp_path: Path) -> None:
    seen: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}

    def recording(msg: Message, context: Context) -> Message:
        silo = f"breast-cancer-iid-3-s0-p{context.node_config['partition-id']}"
        key = resolve_key(None)
        before = personal.load_kept(kept_file(silo), key=key).local["net.3.weight"].numpy()
        reply = honest(msg, context)
        after = personal.load_kept(kept_file(silo), key=key).local["net.3.weight"].numpy()
        seen.setdefault(context.node_id, []).append((before.copy(), after.copy()))
        return reply

    behaviours = {n: (lambda r: recording if r >= 1 else honest) for n in (101, 102, 103)}
    federate(tmp_path, behaviours=behaviours, **PERSONAL, **{"num-server-rounds": 3})
    assert sorted(seen) == [101, 102, 103]
    for rounds in seen.values():
        assert len(rounds) == 3
        for (_, after), (before_next, _) in itertools.pairwise(rounds):
            assert np.array_equal(after, before_next)  # what round r left, round r+1 uses
        assert all(not np.array_equal(before, after) for before, after in rounds)


def test_kept_layers_that_do_not_decrypt_with_the_silo_s_key_are_refused(
    tmp_path: Path,
) -> None:
    other_key = "ab" * 32
    silo = "breast-cancer-iid-3-s0-p0"
    raw: list[bytes] = []

    def other_key_in_round_2(msg: Message, context: Context) -> Message:
        raw.append(kept_file(silo).read_bytes())
        os.environ["FEDSILO_KEY"] = other_key
        try:
            return honest(msg, context)
        finally:
            del os.environ["FEDSILO_KEY"]

    behaviours = {101: lambda r: other_key_in_round_2 if r == 2 else honest}
    summary, _ = federate(tmp_path, behaviours=behaviours, **PERSONAL)
    second = history(summary)[2]
    assert "does not decrypt with this silo's key" in second["failed"]["node 101"]
    assert second["num_clients"] == 2
    assert kept_file(silo).read_bytes() == raw[0]  # refused, not replaced


def test_the_summary_reports_personalized_and_global_accuracy_by_silo(tmp_path: Path) -> None:
    summary, _ = federate(tmp_path, **PERSONAL)
    best_round = summary["best_round"]
    entry = history(summary)[best_round]
    for name, prefix in (("personalized", ""), ("global", "global_")):
        figures = summary[name]
        assert figures["round"] == best_round
        by_silo = figures["by_silo"]
        assert len(by_silo) == 3 and all(0 <= a <= 1 for a in by_silo.values())
        assert figures["mean_accuracy"] == pytest.approx(sum(by_silo.values()) / 3)
        assert figures["pooled_accuracy"] == entry[f"{prefix}val_accuracy"]
    assert summary["best_metrics"]["val_accuracy"] == summary["personalized"]["pooled_accuracy"]
    assert set(summary["personalized"]["by_silo"]) == set(summary["global"]["by_silo"])


# -- FedBN ------------------------------------------------------------------------------


def test_fedbn_keeps_every_batchnorm_weight_and_statistic_on_its_silo(tmp_path: Path) -> None:
    summary, grid = federate(
        tmp_path,
        nodes=2,
        dataset="digits",
        model="examples.resnet_small:build",
        **{"model-args": '{"width": 8, "norm": "batch"}'},
        personalization="fedbn",
        validation="federated",
    )
    assert summary["stop_reason"] == "completed"
    initial = initial_kept(grid)
    norm = {n for n in initial if ".running_mean" in n}
    assert len(norm) == 8  # the stem's, two per block, and the one shortcut's that has one
    for message, reply in grid.answered:
        assert not (names(message) | names(reply)) & set(initial)
    key = resolve_key(None)
    means = []
    for silo in summary["personalized"]["by_silo"]:
        kept = personal.load_kept(kept_file(silo), key=key)
        assert set(kept.local) == set(initial)
        means.append(torch.cat([kept.local[n] for n in sorted(norm)]).numpy())
        assert not np.allclose(means[-1], 0.0)  # statistics of this silo's rows
    assert not np.allclose(means[0], means[1])
