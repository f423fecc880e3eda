"""Transfer learning offline: ``init --initial-model --freeze``, silos' updates that hold
only the trained weights, and ``aggregate --base`` that puts the frozen ones back.

The starting point is a real earlier round (the module's first round, aggregated); the
expected values come from the files themselves, read with the store and computed again
in numpy: frozen tensors byte-equal to the starting model's, the rest the example-
weighted mean of the updates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_helpers import FAST, Round, Workspace, assert_one_line_error, call, run_cli

import fl_client.local_round
from privacy import store
from privacy.keys import load_key_file

FROZEN = {"net.0.weight", "net.0.bias"}  # the MLP's first layer (hidden-sizes=16)
TRAINED = {"net.3.weight", "net.3.bias"}  # its classifier


@dataclass
class Transfer:
    """An earlier round's model, the frozen model started from it, its round's updates
    and the model aggregated from them."""

    ws: Workspace
    start: Path
    model: Path
    updates: list[Path]
    aggregated: Path


def states(path: Path, ws: Workspace, kind: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    state, meta = store.load_state(path, key=load_key_file(ws.key), kind=kind)
    return {k: v.numpy() for k, v in state.items()}, meta


def train(ws: Workspace, model: Path, silo: Path, out: Path, *extra: str | Path) -> Any:
    return call(
        "fl-client", "train", "--model", model, "--data", silo, "--schema", ws.schema,
        "--out", out, "--key-file", ws.key, "--policy", ws.home / "policy.toml", *extra,
    )  # fmt: skip


def aggregate(ws: Workspace, files: list[Path], out: Path, *extra: str | Path) -> dict:
    result = call(
        "fl-server", "aggregate", *files, "--out", out, "--key-file", ws.key, "--json", *extra
    )
    assert result.code == 0, result.err
    return json.loads(result.out)


@pytest.fixture(scope="module")
def transfer(first_round: Round) -> Transfer:
    ws = first_round.ws
    start = ws.path("round-1.bin")
    aggregate(ws, first_round.updates, start, "--base", first_round.model)
    model = ws.path("tl-0.bin")
    init = call(
        "fl-server", "init", "--dataset", "breast-cancer", *FAST, "--initial-model", start,
        "--freeze", "net.0.*", "--out", model, "--key-file", ws.key,
    )  # fmt: skip
    assert init.code == 0, init.err
    header, *rows = ws.silos[0].read_text().splitlines()
    small = ws.root / "data" / "silo-small-tl.csv"  # fewer examples: a weight of its own
    small.write_text("\n".join([header, *rows[:60]]) + "\n")
    updates = []
    for name, silo in zip("abcs", [*ws.silos, small], strict=True):
        out = ws.path("updates", f"tl-1-{name}.bin")
        done = train(ws, model, silo, out)
        assert done.code == 0, done.err
        updates.append(out)
    aggregated = ws.path("tl-1.bin")
    aggregate(ws, updates, aggregated, "--base", model)
    return Transfer(ws, start, model, updates, aggregated)


def test_init_starts_from_the_initial_models_weights_and_records_the_freeze(
    transfer: Transfer,
) -> None:
    start, _ = states(transfer.start, transfer.ws, "model")
    got, meta = states(transfer.model, transfer.ws, "model")
    assert list(got) == list(start)
    for name, value in start.items():
        assert got[name].tobytes() == value.tobytes(), name
    assert meta["round"] == 0 and meta["initial_model"] == str(transfer.start)
    first = 30 * 16 + 16
    assert meta["freeze"] == {
        "patterns": "net.0.*",
        "names": sorted(FROZEN),
        "weights": first,
        "total_weights": first + 16 * 2 + 2,
    }


def test_an_update_holds_only_the_trained_weights_and_is_smaller_than_a_full_one(
    transfer: Transfer, first_round: Round
) -> None:
    full = first_round.updates[0]  # an update of the same model with nothing frozen
    whole, _ = states(full, transfer.ws, "update")
    assert set(whole) == FROZEN | TRAINED
    for path in transfer.updates:
        arrays, meta = states(path, transfer.ws, "update")
        assert set(arrays) == TRAINED
        assert set(meta["weight_names"]) == TRAINED
        assert meta["freeze"]["patterns"] == "net.0.*"
        assert path.stat().st_size < full.stat().st_size


def test_frozen_weights_stay_the_initial_models_bytes_and_the_rest_is_the_weighted_mean(
    transfer: Transfer,
) -> None:
    start, _ = states(transfer.start, transfer.ws, "model")
    got, meta = states(transfer.aggregated, transfer.ws, "model")
    assert list(got) == list(start)  # complete, in the model's own order
    for name in FROZEN:
        assert got[name].dtype == start[name].dtype
        assert got[name].tobytes() == start[name].tobytes(), name
    updates = [states(path, transfer.ws, "update") for path in transfer.updates]
    counts = np.array([float(m["num_examples"]) for _, m in updates])
    assert len(set(counts)) > 1  # unequal weights, or a plain mean would do as well
    for name in TRAINED:
        stack = np.stack([a[name].astype(np.float64) for a, _ in updates])
        want = np.tensordot(counts, stack, axes=1) / counts.sum()
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-7, err_msg=name)
        assert not np.array_equal(got[name], start[name]), name  # it did train
    assert meta["round"] == 1 and meta["freeze"]["patterns"] == "net.0.*"  # carried on


def hostile(transfer: Transfer, case: str) -> Path:
    """A copy of silo a's update, under the right key and metadata, that also holds a
    frozen weight or lacks a trained one."""
    key = load_key_file(transfer.ws.key)
    state, meta = store.load_state(transfer.updates[0], key=key, kind="update")
    if case == "holds-frozen":
        state["net.0.weight"] = torch.zeros(16, 30)
    else:
        del state["net.3.bias"]
    out = transfer.ws.path("updates", f"hostile-{case}.bin")
    return store.save_state(out, state, key=key, kind="update", metadata=meta)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("holds-frozen", "holds frozen weights ['net.0.weight']"),
        ("misses-trained", "missing arrays ['net.3.bias']"),
    ],
)
def test_an_update_with_frozen_or_without_trained_weights_is_refused_by_name(
    transfer: Transfer, case: str, reason: str
) -> None:
    bad = hostile(transfer, case)
    good = transfer.updates[1:]
    out = transfer.ws.path(f"tl-1-{case}.bin")
    report = aggregate(transfer.ws, [bad, *good], out, "--base", transfer.model)
    assert report["used"] == [str(p) for p in good]
    assert list(report["rejected"]) == [str(bad)]
    assert reason in " ".join(report["rejected"][str(bad)])
    start, _ = states(transfer.start, transfer.ws, "model")
    got, _ = states(out, transfer.ws, "model")
    for name in FROZEN:
        assert got[name].tobytes() == start[name].tobytes(), name


def test_frozen_updates_without_base_are_refused_saying_to_give_it(transfer: Transfer) -> None:
    out = transfer.ws.path("never.bin")
    result = run_cli(
        transfer.ws, "fl-server", "aggregate", *transfer.updates, "--out", out,
        "--key-file", transfer.ws.key,
    )  # fmt: skip
    assert_one_line_error(result, "frozen weights", "give --base MODEL")
    assert not out.exists()


def test_without_base_a_frozen_update_costs_only_its_own_place(
    transfer: Transfer, first_round: Round
) -> None:
    whole, partial = first_round.updates[0], transfer.updates[0]
    report = aggregate(transfer.ws, [whole, partial], transfer.ws.path("mixed.bin"))
    assert report["used"] == [str(whole)]
    assert list(report["rejected"]) == [str(partial)]
    assert "aggregate it with --base" in report["rejected"][str(partial)][0]


def test_a_partial_update_is_not_evaluated_as_a_model(transfer: Transfer) -> None:
    result = call(
        "fl-server", "evaluate", transfer.updates[0], "--dataset", "breast-cancer",
        "--key-file", transfer.ws.key,
    )  # fmt: skip
    assert_one_line_error(result, "holds only the trained ones", "aggregate --base")


@pytest.mark.parametrize(
    ("patterns", "reason"),
    [
        ("features.*", "pattern 'features.*' matches no parameter"),
        ("net.*", "freezes every parameter"),
        ("net.0.*,", "empty pattern"),
    ],
)
def test_init_refuses_freeze_patterns_the_run_setting_refuses(
    transfer: Transfer, patterns: str, reason: str
) -> None:
    out = transfer.ws.path("never.bin")
    result = call(
        "fl-server", "init", "--dataset", "breast-cancer", *FAST, "--freeze", patterns,
        "--out", out, "--key-file", transfer.ws.key,
    )  # fmt: skip
    assert_one_line_error(result, "--freeze", reason)
    assert not out.exists()


@pytest.mark.parametrize(
    ("init_args", "reason"),
    [
        (["--dataset", "breast-cancer", "--set", "hidden-sizes=8"], "--set hidden-sizes"),
        (["--dataset", "wine", *FAST], "is for another schema"),
        (["--dataset", "breast-cancer", *FAST], "is an int8 export"),
    ],
)
def test_init_refuses_an_initial_model_it_cannot_start_from(
    transfer: Transfer, init_args: list[str], reason: str
) -> None:
    ws = transfer.ws
    start = transfer.start
    if "int8" in reason:
        start = ws.path("round-1-int8.bin")
        made = call("fl-server", "export", transfer.start, "--out", start, "--key-file", ws.key)
        assert made.code == 0, made.err
    out = ws.path("never.bin")
    result = call(
        "fl-server", "init", *init_args, "--initial-model", start, "--out", out,
        "--key-file", ws.key,
    )  # fmt: skip
    assert_one_line_error(result, f"--initial-model {start}", reason)
    assert not out.exists()


def test_inspect_shows_the_frozen_patterns_and_counts(transfer: Transfer) -> None:
    ws = transfer.ws
    for path in (transfer.model, transfer.aggregated, transfer.updates[0]):
        shown = call("fl-server", "inspect", path, "--key-file", ws.key)
        assert shown.code == 0, shown.err
        line = next(x for x in shown.out.splitlines() if x.startswith("freeze "))
        assert line.split(None, 1)[1] == "net.0.*: 2 tensor(s), 496 of 530 weights not trained"
    update = call("fl-server", "inspect", transfer.updates[0], "--key-file", ws.key).out
    line = next(x for x in update.splitlines() if x.startswith("weight_names "))
    assert "2 tensor(s), the trained ones" in line and "net.3.weight" in line


def test_private_training_of_a_frozen_model_trains_and_sends_only_the_rest(
    transfer: Transfer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = transfer.ws
    trained: list[Any] = []
    real = fl_client.local_round.train_round

    def spy(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        trained.append(result)
        return result

    monkeypatch.setattr(fl_client.local_round, "train_round", spy)
    policy = ws.root / "dp-policy.toml"
    policy.write_text("[privacy]\nbudget = 3.0\n")  # DP required, as a deployed silo's
    out = ws.path("updates", "tl-dp.bin")
    done = call(
        "fl-client", "train", "--model", transfer.model, "--data", ws.silos[0],
        "--schema", ws.schema, "--out", out, "--key-file", ws.key, "--policy", policy,
        "--ledger", ws.root / "ledgers" / "tl.ledger", "--dp", "--target-epsilon", "1.0",
        "--set", "local-epochs=1",
    )  # fmt: skip
    assert done.code == 0, done.err
    base, _ = states(transfer.model, ws, "model")
    (result,) = trained
    after = {k: v.detach().numpy() for k, v in result.state.items()}
    for name in FROZEN:  # Opacus noises every weight its optimizer holds: these it lacks
        assert after[name].tobytes() == base[name].tobytes(), name
    for name in TRAINED:
        assert not np.array_equal(after[name], base[name]), name
    arrays, meta = states(out, ws, "update")
    assert set(arrays) == TRAINED
    assert 0.0 < meta["epsilon"] <= 1.0 + 1e-6
    model = ws.path("tl-1-dp.bin")
    aggregate(ws, [out], model, "--base", transfer.model)
    got, _ = states(model, ws, "model")
    for name in FROZEN:
        assert got[name].tobytes() == base[name].tobytes(), name
