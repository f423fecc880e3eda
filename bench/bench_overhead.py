"""What fedsilo adds on top of Flower and on top of the training itself.

``run(quick)`` returns a dict; ``python bench/bench_overhead.py [--quick]`` prints it.
The same federation three ways, one after the other in one process tree:

(a) fedsilo via ``flwr run .`` (federated statistics, validation of every reply,
    server-side validation each round, checkpoints, best model, int8 export);
(b) a plain Flower FedAvg app (``bench/plain_flower``: Flower's own ``Strategy.start``
    loop, no validation, no checkpoints) doing the same local training with the same
    trainer, via ``flwr run``;
(c) the same local training done sequentially in this process, with FedAvg in numpy:
    the lower bound.

Synthetic data, 20 features, 2,000 training rows per client, 10 clients, an MLP
(128, 64), 2 local epochs, 10 rounds (quick: 2 clients, 500 rows each, 2 rounds). Both
Flower runs use the same local SuperLink (state in memory) and one CPU per simulated
client (Flower's default client resources). The full run also tries what Flower lets us
tune: two CPUs per client (one trains at a time), and a SuperLink keeping its state in
SQLite.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(BENCH / "plain_flower") not in sys.path:
    sys.path.insert(0, str(BENCH / "plain_flower"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from plain_app.task import client_data, model_spec, train_config  # noqa: E402

from core_training.models import build_model  # noqa: E402
from core_training.trainer import fit  # noqa: E402
from harness.local_run import LocalFlwr  # noqa: E402

FEATURES, ROWS, EPOCHS, BATCH = 20, 2000, 2, 32


def sequential(clients: int, rounds: int, rows: int = ROWS) -> dict[str, float]:
    """(c): every client's local training in turn, FedAvg by hand, no Flower."""
    torch.manual_seed(0)
    global_state = build_model(model_spec(FEATURES)).state_dict()
    config = train_config(EPOCHS, BATCH, 0)
    # Data is made before the clock starts: the Flower clients cache theirs too.
    data = [client_data(c, clients, rows, FEATURES, 0) for c in range(clients)]
    started = time.perf_counter()
    train = 0.0
    for _ in range(rounds):
        states, sizes = [], []
        for c in range(clients):
            X, y = data[c]
            model = build_model(model_spec(FEATURES))
            model.load_state_dict(global_state)
            result = fit(model, X, y, config)
            train += float(result.metrics["seconds"])
            states.append(model.state_dict())
            sizes.append(len(y))
        weights = np.asarray(sizes, dtype=np.float64) / sum(sizes)
        global_state = {
            k: sum(w * s[k] for w, s in zip(weights, states, strict=True)) for k in states[0]
        }
    return {"seconds": round(time.perf_counter() - started, 3), "train_seconds": round(train, 3)}


def _fedsilo_config(clients: int, rounds: int, name: str, rows: int) -> dict[str, Any]:
    # fedsilo holds out 20% on the server and 20% of each silo for validation: size the
    # table so that each client still trains on `rows` rows, like the other two arms.
    return {
        "dataset": "synthetic",
        "synthetic-rows": round(rows * clients / (0.8 * 0.8)),
        "synthetic-features": FEATURES,
        "num-server-rounds": rounds,
        "local-epochs": EPOCHS,
        "batch-size": BATCH,
        "model": "mlp",
        "class-weighting": "none",
        "early-stopping-patience": 1000,
        "run-name": name,
    }


def _warm_up(flwr: LocalFlwr) -> None:
    """Start the SuperLink with a tiny run, so that no measured arm pays for it."""
    run = flwr.run(
        {"num-server-rounds": 1, "run-name": "warmup", "dataset": "wine", "model": "mlp"},
        supernodes=2,
    )
    if run.returncode != 0:
        raise RuntimeError(run.output[-3000:])


def _fedsilo(
    flwr: LocalFlwr,
    clients: int,
    rounds: int,
    name: str,
    federation: dict[str, Any] | None = None,
    rows: int = ROWS,
) -> dict[str, Any]:
    """(a), with the ServerApp's time split into its phases."""
    a = flwr.run(
        _fedsilo_config(clients, rounds, name, rows),
        supernodes=clients,
        timeout=3600,
        federation=federation,
    )
    if a.returncode != 0:
        raise RuntimeError(a.output[-3000:])
    timing = a.summary["timing"]
    rounds_ = [h for h in a.history if h["round"] > 0]
    server = timing["setup_seconds"] + timing["rounds_seconds"] + timing["finish_seconds"]
    return {
        "flwr_run_seconds": round(a.seconds, 2),
        # set-up is the statistics query: the first message, so the Ray workers start
        # and import torch in it; the rounds include checkpoints; the end is the export
        "setup_seconds": timing["setup_seconds"],
        "rounds_seconds": timing["rounds_seconds"],
        "finish_seconds": timing["finish_seconds"],
        "server_seconds": round(server, 3),
        "outside_server_seconds": round(a.seconds - server, 2),
        "train_seconds": round(sum(h.get("train_seconds", 0.0) for h in rounds_), 3),
        # parsing and checking every reply (replies.py), timed inside each round
        "checks_seconds": round(sum(h.get("checks_seconds", 0.0) for h in rounds_), 6),
        "round_seconds": round(sum(h.get("seconds", 0.0) for h in rounds_), 3),
    }


def _plain(flwr: LocalFlwr, clients: int, rounds: int, rows: int = ROWS) -> dict[str, Any]:
    """(b). Flower's Strategy.start: its first round also starts the Ray workers."""
    b = flwr.run(
        {
            "num-server-rounds": rounds,
            "local-epochs": EPOCHS,
            "batch-size": BATCH,
            "rows-per-client": rows,
            "features": FEATURES,
        },
        supernodes=clients,
        timeout=3600,
        app=BENCH / "plain_flower",
    )
    match = re.search(r"PLAIN-FLOWER-RESULT rounds=(\d+) rounds_seconds=([\d.]+)", b.output)
    if b.returncode != 0 or not match:
        raise RuntimeError(b.output[-3000:])
    server = float(match.group(2))
    return {
        "flwr_run_seconds": round(b.seconds, 2),
        "server_seconds": server,
        "outside_server_seconds": round(b.seconds - server, 2),
    }


def run(quick: bool = False) -> dict[str, Any]:
    clients, rounds, rows = (2, 2, 500) if quick else (10, 10, ROWS)
    out: dict[str, Any] = {
        "quick": quick,
        "clients": clients,
        "rounds": rounds,
        "rows_per_client": rows,
    }
    tuning: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fedsilo-overhead-") as tmp:
        flwr = LocalFlwr(Path(tmp) / "in-memory")
        try:
            if not quick:
                _warm_up(flwr)
            a = _fedsilo(flwr, clients, rounds, "overhead", rows=rows)
            b = _plain(flwr, clients, rounds, rows)
            if not quick:
                # What Flower lets us tune: how many simulated clients share the CPUs
                # (default: one CPU each, so two train at once on two cores; Flower
                # takes whole CPUs only).
                tuning["client_cpus_2"] = _fedsilo(
                    flwr,
                    clients,
                    rounds,
                    "cpus-2",
                    federation={"client-resources-num-cpus": 2},
                )
        finally:
            flwr.stop()
        if not quick:
            # And where the local SuperLink keeps its state: a SQLite file (the default
            # of `flwr run`) against memory (what fedsilo's scripts use).
            sqlite = LocalFlwr(Path(tmp) / "sqlite", in_memory=False)
            try:
                _warm_up(sqlite)
                tuning["sqlite_superlink"] = _fedsilo(sqlite, clients, rounds, "sqlite")
            finally:
                sqlite.stop()
    c = sequential(clients, rounds, rows)
    out.update(fedsilo=a, plain_flower=b, sequential=c, tuning=tuning)
    out["flwr_run_a_over_b"] = round(a["flwr_run_seconds"] / b["flwr_run_seconds"], 3)
    out["server_a_over_b"] = round(a["server_seconds"] / b["server_seconds"], 3)
    out["rounds_a_over_c"] = round(a["rounds_seconds"] / c["seconds"], 3)
    out["flwr_run_a_over_c"] = round(a["flwr_run_seconds"] / c["seconds"], 3)
    out["checks_share_of_rounds"] = round(a["checks_seconds"] / a["round_seconds"], 5)
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
