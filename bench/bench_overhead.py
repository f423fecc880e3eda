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
(128, 64), 2 local epochs, 10 rounds (quick: 4 clients, 3 rounds). Both Flower runs use
one simulated client per CPU at a time (Flower's default client resources).
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
from simulations.local_run import LocalFlwr  # noqa: E402

FEATURES, ROWS, EPOCHS, BATCH = 20, 2000, 2, 32


def sequential(clients: int, rounds: int) -> dict[str, float]:
    """(c): every client's local training in turn, FedAvg by hand, no Flower."""
    torch.manual_seed(0)
    global_state = build_model(model_spec(FEATURES)).state_dict()
    config = train_config(EPOCHS, BATCH, 0)
    started = time.perf_counter()
    train = 0.0
    for _ in range(rounds):
        states, sizes = [], []
        for c in range(clients):
            X, y = client_data(c, clients, ROWS, FEATURES, 0)
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


def run(quick: bool = False) -> dict[str, Any]:
    clients, rounds = (4, 3) if quick else (10, 10)
    # fedsilo holds out 20% on the server and 20% of each silo for validation: size the
    # table so that each client still trains on ROWS rows, like the other two arms.
    fedsilo_rows = round(ROWS * clients / (0.8 * 0.8))
    out: dict[str, Any] = {"clients": clients, "rounds": rounds, "rows_per_client": ROWS}
    with tempfile.TemporaryDirectory(prefix="fedsilo-overhead-") as tmp:
        flwr = LocalFlwr(Path(tmp))
        try:
            # warm-up: start the SuperLink once so neither arm pays for it
            flwr.run(
                {
                    "num-server-rounds": 1,
                    "run-name": "warmup",
                    "dataset": "wine",
                    "model": "mlp",
                    "local-epochs": 1,
                },
                supernodes=2,
            )
            a = flwr.run(
                {
                    "dataset": "synthetic",
                    "synthetic-rows": fedsilo_rows,
                    "synthetic-features": FEATURES,
                    "num-server-rounds": rounds,
                    "local-epochs": EPOCHS,
                    "batch-size": BATCH,
                    "model": "mlp",
                    "class-weighting": "none",
                    "early-stopping-patience": 1000,
                    "run-name": "overhead",
                },
                supernodes=clients,
                timeout=3600,
            )
            if a.returncode != 0:
                raise RuntimeError(a.output[-3000:])
            b = flwr.run(
                {
                    "num-server-rounds": rounds,
                    "local-epochs": EPOCHS,
                    "batch-size": BATCH,
                    "rows-per-client": ROWS,
                    "features": FEATURES,
                },
                supernodes=clients,
                timeout=3600,
                app=BENCH / "plain_flower",
            )
            if b.returncode != 0:
                raise RuntimeError(b.output[-3000:])
        finally:
            flwr.stop()
    c = sequential(clients, rounds)
    history = a.history
    fed_rounds = sum(h.get("seconds", 0.0) for h in history if h["round"] > 0)
    fed_train = sum(h.get("train_seconds", 0.0) for h in history if h["round"] > 0)
    match = re.search(r"PLAIN-FLOWER-RESULT rounds=(\d+) rounds_seconds=([\d.]+)", b.output)
    plain_rounds = float(match.group(2)) if match else float("nan")
    out["fedsilo"] = {
        "flwr_run_seconds": round(a.seconds, 2),
        "rounds_seconds": round(fed_rounds, 3),
        "server_seconds": a.summary["seconds"],
        "train_seconds": round(fed_train, 3),
    }
    out["plain_flower"] = {"flwr_run_seconds": round(b.seconds, 2), "rounds_seconds": plain_rounds}
    out["sequential"] = c
    out["rounds_a_over_b"] = round(fed_rounds / plain_rounds, 3)
    out["flwr_run_a_over_b"] = round(a.seconds / b.seconds, 3)
    out["rounds_a_over_c"] = round(fed_rounds / c["seconds"], 3)
    out["flwr_run_a_over_c"] = round(a.seconds / c["seconds"], 3)
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
