"""An offline federation end to end, and offline aggregation against the server's own.

Three silos train from one global model file, the server aggregates their update files,
and evaluates every round's model; bad updates among them are named and skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import FAST, Round, Workspace, call

from fl_server.cli import OFFLINE_STRATEGIES
from privacy import store
from privacy.keys import load_key_file


def train_silos(ws: Workspace, model: Path, name: str) -> list[Path]:
    outs = []
    for i, silo in enumerate(ws.silos):
        out = ws.path("updates", f"{name}-{'abc'[i]}.bin")
        result = call(
            "fl-client", "train", "--model", model, "--data", silo, "--schema", ws.schema,
            "--out", out, "--key-file", ws.key,
        )  # fmt: skip
        assert result.code == 0, result.err
        outs.append(out)
    return outs


def evaluate(ws: Workspace, model: Path) -> dict:
    result = call(
        "fl-server", "evaluate", model, "--data", ws.test, "--schema", ws.schema,
        "--key-file", ws.key, "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    return json.loads(result.out)["metrics"]


def aggregate_files(ws: Workspace, files: list[Path], out: Path, *extra: str) -> dict:
    result = call(
        "fl-server", "aggregate", *files, "--out", out, "--key-file", ws.key, "--json", *extra
    )
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_three_rounds_of_three_silos_raise_accuracy(ws: Workspace) -> None:
    key = call("fl-server", "keygen", "--out", ws.root / "keys2" / "run.key")
    assert key.code == 0, key.err
    model = ws.path("round-0.bin")
    init = call(
        "fl-server", "init", "--dataset", "breast-cancer", *FAST, "--seed", "1",
        "--set", "learning-rate=0.002", "--out", model, "--key-file", ws.key,
    )  # fmt: skip
    assert init.code == 0, init.err
    scores = [evaluate(ws, model)]
    for r in range(1, 4):
        updates = train_silos(ws, model, f"r{r}")
        model = ws.path(f"round-{r}.bin")
        report = aggregate_files(ws, updates, model, "--base", ws.path(f"round-{r - 1}.bin"))
        assert report["round"] == r and len(report["used"]) == 3 and not report["rejected"]
        scores.append(evaluate(ws, model))
    acc = [s["accuracy"] for s in scores]
    loss = [s["loss"] for s in scores]
    assert acc[1] > acc[0] + 0.1 and acc[3] >= acc[1] and acc[3] >= 0.9, acc
    assert loss[0] > loss[1] > loss[2] > loss[3], loss


def nan_update(path: Path, out: Path, key: bytes) -> Path:
    state, meta = store.load_state(path, key=key, kind="update")
    name = next(iter(state))
    state[name] = torch.full_like(state[name], float("nan"))
    return store.save_state(out, state, key=key, kind="update", metadata=meta)


def tampered(path: Path, out: Path) -> Path:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    out.write_bytes(bytes(raw))
    return out


def test_aggregation_names_and_skips_a_tampered_and_a_nan_update(first_round: Round) -> None:
    ws = first_round.ws
    key = load_key_file(ws.key)
    good = first_round.updates
    bad_nan = nan_update(good[0], ws.path("updates", "nan.bin"), key)
    bad_bits = tampered(good[1], ws.path("updates", "tampered.bin"))
    files = [good[0], bad_nan, good[1], bad_bits, good[2]]
    out = ws.path("round-1-mixed.bin")
    report = aggregate_files(ws, files, out, "--base", first_round.model)
    assert report["used"] == [str(p) for p in good]
    assert list(report["rejected"]) == [str(bad_nan), str(bad_bits)]
    assert "NaN" in " ".join(report["rejected"][str(bad_nan)])
    assert "cannot be opened" in " ".join(report["rejected"][str(bad_bits)])
    clean = aggregate_files(ws, good, ws.path("round-1-clean.bin"), "--base", first_round.model)
    mixed_state, _ = store.load_state(out, key=key, kind="model")
    clean_state, _ = store.load_state(clean["path"], key=key, kind="model")
    for name, value in clean_state.items():
        assert torch.equal(mixed_state[name], value)


def test_text_output_names_each_rejected_update(first_round: Round) -> None:
    ws = first_round.ws
    bad = tampered(first_round.updates[2], ws.path("updates", "flipped.bin"))
    result = call(
        "fl-server", "aggregate", first_round.updates[0], bad, "--out", ws.path("m.bin"),
        "--key-file", ws.key,
    )  # fmt: skip
    assert result.code == 0, result.err
    row = next(line for line in result.out.splitlines() if line.startswith(str(bad)))
    assert "rejected" in row
    assert "1 rejected" in result.out


@pytest.fixture(scope="module")
def four_updates(first_round: Round) -> tuple[list[Path], list[dict[str, np.ndarray]], list[int]]:
    """The round's three updates and a fourth from a smaller silo (fewer examples), with
    their weights and example counts as read from the files."""
    ws = first_round.ws
    header, *rows = ws.silos[0].read_text().splitlines()
    small = ws.root / "data" / "silo-small.csv"
    small.write_text("\n".join([header, *rows[:60]]) + "\n")
    out = ws.path("updates", "r1-small.bin")
    done = call(
        "fl-client", "train", "--model", first_round.model, "--data", small,
        "--schema", ws.schema, "--out", out, "--key-file", ws.key,
        "--policy", ws.home / "policy.toml",
    )  # fmt: skip
    assert done.code == 0, done.err
    paths = [*first_round.updates, out]
    key = load_key_file(ws.key)
    arrays, counts = [], []
    for path in paths:
        state, meta = store.load_state(path, key=key, kind="update")
        arrays.append({k: v.double().numpy() for k, v in state.items()})
        counts.append(int(meta["num_examples"]))
    assert len(set(counts)) == 2  # unequal weights, or fedavg would be a plain mean
    return paths, arrays, counts


def _krum_choice(arrays: list[dict[str, np.ndarray]], malicious: int) -> int:
    """Blanchard et al. (2017): the update whose n - f - 2 nearest others are closest
    in squared L2 distance over all weights."""
    flat = np.stack([np.concatenate([a[k].ravel() for k in sorted(a)]) for a in arrays])
    dist = ((flat[:, None, :] - flat[None, :, :]) ** 2).sum(-1)
    nearest = max(1, len(arrays) - malicious - 2)
    scores = [np.sort(np.delete(row, i))[:nearest].sum() for i, row in enumerate(dist)]
    return int(np.argmin(scores))


def _expected(strategy: str, arrays: list[dict[str, np.ndarray]], counts: list[int], name: str):
    stack = np.stack([a[name] for a in arrays])
    if strategy == "fedavg":
        return np.tensordot(np.asarray(counts, float), stack, axes=1) / sum(counts)
    if strategy == "fedmedian":
        return np.median(stack, axis=0)
    if strategy == "trimmed-mean":  # beta 0.25 of 4 updates: drop the extremes per weight
        return np.sort(stack, axis=0)[1:3].mean(axis=0)
    return arrays[_krum_choice(arrays, 0)][name]


@pytest.mark.parametrize("strategy", OFFLINE_STRATEGIES)
def test_offline_aggregation_matches_each_rule_computed_in_numpy(
    first_round: Round, four_updates: tuple, strategy: str
) -> None:
    ws = first_round.ws
    paths, arrays, counts = four_updates
    out = ws.path(f"agg-{strategy}.bin")
    aggregate_files(ws, paths, out, "--strategy", strategy, "--trimmed-beta", "0.25")
    got, meta = store.load_state(out, key=load_key_file(ws.key), kind="model")
    assert set(got) == set(arrays[0])
    for name in arrays[0]:
        want = _expected(strategy, arrays, counts, name)
        np.testing.assert_allclose(got[name].numpy(), want, rtol=1e-5, atol=1e-6, err_msg=name)
    assert meta["aggregation"]["strategy"] == strategy


def update_from_new_model(ws: Workspace, name: str, *init_args: str) -> Path:
    """An update trained from a global model other than the round's."""
    model = ws.path(f"{name}-base.bin")
    init = call("fl-server", "init", "--dataset", "breast-cancer", *init_args, "--out", model,
                "--key-file", ws.key)  # fmt: skip
    assert init.code == 0, init.err
    out = ws.path("updates", f"{name}.bin")
    done = call(
        "fl-client", "train", "--model", model, "--data", ws.silos[0], "--schema", ws.schema,
        "--out", out, "--key-file", ws.key, "--policy", ws.home / "policy.toml",
    )  # fmt: skip
    assert done.code == 0, done.err
    return out


def test_an_update_from_another_base_model_is_rejected(first_round: Round) -> None:
    ws = first_round.ws
    stray = update_from_new_model(ws, "stray", *FAST, "--seed", "7")
    report = aggregate_files(
        ws, [*first_round.updates, stray], ws.path("m2.bin"), "--base", first_round.model
    )
    assert list(report["rejected"]) == [str(stray)]
    assert "another global model" in report["rejected"][str(stray)][0]


def test_an_update_of_another_model_spec_is_rejected(first_round: Round) -> None:
    ws = first_round.ws
    odd = update_from_new_model(ws, "odd", "--set", "hidden-sizes=8")
    report = aggregate_files(ws, [*first_round.updates, odd], ws.path("m3.bin"))
    assert "model spec differs" in report["rejected"][str(odd)][0]


def test_too_few_good_updates_is_exit_2_naming_the_rejected(first_round: Round) -> None:
    ws = first_round.ws
    bad = tampered(first_round.updates[0], ws.path("updates", "bad.bin"))
    result = call(
        "fl-server", "aggregate", first_round.updates[1], bad, "--min-updates", "2",
        "--out", ws.path("never.bin"), "--key-file", ws.key,
    )  # fmt: skip
    assert result.code == 2
    assert len(result.err_lines) == 1 and str(bad) in result.err
    assert not ws.path("never.bin").exists()
