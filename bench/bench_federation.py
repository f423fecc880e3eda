"""Federated against centralized accuracy, and where a simulation's time goes.

``run(quick)`` returns a dict; ``python bench/bench_federation.py [--quick]`` prints it.
Every federated run is a real ``flwr run .`` (Ray simulation) on a private local
SuperLink, in one process tree, side by side with the centralized baseline.

(a) accuracy: the centralized baseline (``simulations.centralized``: the same trainer on
    the pooled data) and federations over 10 simulated silos, all validated on the same
    held-out 25% split (stratified, seed 0) of digits: IID with FedAvg, and Dirichlet
    label skew (alpha 0.3) with FedAvg, FedProx and FedAdam.
(b) time: a 10-round, 10-client federation; ``flwr run`` wall time, the ServerApp's
    round time, and the local training time summed over all clients and rounds.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core_training.config import TrainConfig  # noqa: E402
from core_training.data import load_table  # noqa: E402
from simulations.centralized import DEFAULT_EPOCHS, run_centralized  # noqa: E402
from simulations.local_run import LocalFlwr  # noqa: E402

TEST_FRACTION = 0.25
# Local training per round: 5 epochs in batches of 16 gives each small digits silo
# (~110 rows) enough steps per round to make progress, without drifting under IID.
FED_TRAIN = {"local-epochs": 5, "batch-size": 16, "learning-rate": 0.003}


def _federated(flwr: LocalFlwr, name: str, clients: int, config: dict[str, Any]) -> dict[str, Any]:
    run = flwr.run(
        {"run-name": name, "server-val-fraction": TEST_FRACTION, **config},
        supernodes=clients,
        timeout=3000,
    )
    if run.returncode != 0:
        raise RuntimeError(f"flwr run {name} failed:\n{run.output[-3000:]}")
    summary, history = run.summary, run.history
    best = summary["best_metrics"]
    rounds = [h for h in history if h["round"] > 0]
    return {
        "clients": clients,
        "rounds_completed": summary["rounds_completed"],
        "best_round": summary["best_round"],
        "accuracy": best["val_accuracy"],
        "balanced_accuracy": best["val_balanced_accuracy"],
        "macro_f1": best["val_macro_f1"],
        "final_accuracy": rounds[-1]["val_accuracy"] if rounds else None,
        "flwr_run_seconds": round(run.seconds, 2),
        "server_seconds": summary["seconds"],
        "round_seconds_sum": round(sum(h.get("seconds", 0.0) for h in rounds), 3),
        "train_seconds_sum": round(sum(h.get("train_seconds", 0.0) for h in rounds), 3),
        "int8_accuracy": summary["export"]["int8_accuracy"],
    }


def run(quick: bool = False) -> dict[str, Any]:
    clients = 4 if quick else 10
    rounds = 3 if quick else 30
    results: dict[str, Any] = {"quick": quick, "clients": clients, "dataset": "digits"}
    config = TrainConfig.from_dict({"local-epochs": 3 if quick else DEFAULT_EPOCHS})
    started = time.perf_counter()
    central = run_centralized(load_table("digits"), config, test_fraction=TEST_FRACTION)
    results["centralized"] = {
        "accuracy": central["accuracy"],
        "balanced_accuracy": central["balanced_accuracy"],
        "macro_f1": central["macro_f1"],
        "model": central["model"],
        "epochs": config.local_epochs,
        "seconds": round(time.perf_counter() - started, 2),
    }
    with tempfile.TemporaryDirectory(prefix="fedsilo-bench-") as tmp:
        flwr = LocalFlwr(Path(tmp))
        try:
            common = {**FED_TRAIN, "num-server-rounds": rounds, "early-stopping-patience": 6}
            results["iid_fedavg"] = _federated(flwr, "iid-fedavg", clients, common)
            skew = {
                **common,
                "partitioner": "dirichlet",
                "dirichlet-alpha": 0.3,
                "min-partition-size": 20,
            }
            arms = {
                "fedavg": {"strategy": "fedavg"},
                "fedprox": {"strategy": "fedprox", "proximal-mu": 0.01},
                "fedadam": {"strategy": "fedadam", "server-learning-rate": 0.01},
                "fedadam_eta0.03": {"strategy": "fedadam", "server-learning-rate": 0.03},
            }
            for name, arm in arms.items():
                results[f"dirichlet0.3_{name}"] = _federated(
                    flwr, f"dirichlet-{name}", clients, {**skew, **arm}
                )
            timing = _federated(
                flwr,
                "timing",
                clients,
                {
                    "num-server-rounds": 3 if quick else 10,
                    "local-epochs": 2,
                    "early-stopping-patience": 100,
                    "model": "mlp",
                },
            )
            timing["wall_over_training"] = round(
                timing["server_seconds"] / max(timing["train_seconds_sum"], 1e-9), 3
            )
            timing["flwr_run_over_training"] = round(
                timing["flwr_run_seconds"] / max(timing["train_seconds_sum"], 1e-9), 3
            )
            results["timing_10_rounds"] = timing
        finally:
            flwr.stop()
    base = results["centralized"]["accuracy"]
    for value in results.values():
        if isinstance(value, dict) and "clients" in value and "accuracy" in value:
            value["points_below_centralized"] = round(100 * (base - value["accuracy"]), 2)
    return results


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
