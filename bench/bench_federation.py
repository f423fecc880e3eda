"""Federated against centralized accuracy.

``run(quick)`` returns a dict; ``python bench/bench_federation.py [--quick]`` prints it.
Every federated run is a real ``flwr run .`` (Ray simulation) on a private local
SuperLink, in one process tree, side by side with the centralized baseline.

(a) accuracy: the centralized baseline (``simulations.centralized``: the same trainer on
    the pooled data) and federations over 10 simulated silos, all validated on the same
    held-out 25% split (stratified, seed 0) of digits: IID with FedAvg, and Dirichlet
    label skew (alpha 0.3 and 0.1), each with FedAvg, FedProx and FedAdam; and synthetic
    rows (100,000, 20 features) in 10 silos without DP and with DP-SGD at epsilon 3 and 8.
Where a simulation's time goes is measured by bench_overhead.py, side by side with a
plain Flower app and with no Flower at all.

Quick mode (CI): 2 silos, 2 rounds of 1 local epoch, IID with FedAvg only; synthetic
rows (2,000) in 2 silos without DP and with DP at epsilon 8.
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
        "epsilon_max": summary["epsilon_max"],
    }


# Local training that suits DP-SGD: larger batches (the noise is divided by the batch
# size) and SGD with momentum (Adam rescales every coordinate by its own noisy variance).
DP_TUNED = {"batch-size": 256, "optimizer": "sgd", "learning-rate": 0.5, "momentum": 0.9}


def _synthetic_dp(flwr: LocalFlwr, quick: bool) -> dict[str, Any]:
    """Synthetic rows in silos without DP and with DP-SGD at two budgets; the same
    rounds, epochs and model, validated on the same server split. Twice: with the
    default local training, and (full run) with the training DP_TUNED."""
    rows, clients, rounds = (2_000, 2, 2) if quick else (100_000, 10, 10)
    data = {
        "dataset": "synthetic",
        "synthetic-rows": rows,
        "synthetic-features": 20,
        "model": "mlp",
        "num-server-rounds": rounds,
        "local-epochs": 1,
        "batch-size": 64,
        "early-stopping-patience": rounds,
    }
    out: dict[str, Any] = {"rows": rows, "clients": clients, "rounds": rounds, "delta": 1e-5}
    table = load_table("synthetic", rows=rows, features=20)
    central = run_centralized(
        table, TrainConfig.from_dict({"local-epochs": 2 if quick else 10, "batch-size": 64})
    )
    out["centralized_accuracy"] = central["accuracy"]
    budgets = (8.0,) if quick else (3.0, 8.0)
    out.update(_dp_arms(flwr, "synthetic", clients, data, budgets, out["delta"]))
    if not quick:
        out["tuned"] = {
            "train": DP_TUNED,
            **_dp_arms(flwr, "tuned", clients, {**data, **DP_TUNED}, budgets, out["delta"]),
        }
    return out


def _dp_arms(
    flwr: LocalFlwr,
    name: str,
    clients: int,
    data: dict[str, Any],
    budgets: tuple[float, ...],
    delta: float,
) -> dict[str, Any]:
    out = {"no_dp": _federated(flwr, f"{name}-no-dp", clients, data)}
    for eps in budgets:
        # Each budget gets silos of its own: a silo's ledger remembers what earlier runs
        # spent, so the same silos would decline a second private run.
        own = LocalFlwr(flwr.base / f"{name}-dp-eps{eps:g}")
        arm = {
            **data,
            "dp": True,
            "target-epsilon": eps,
            "privacy-budget": eps,
            "target-delta": delta,
        }
        try:
            result = _federated(own, f"{name}-dp-eps{eps:g}", clients, arm)
        finally:
            own.stop()
        if result["epsilon_max"] is None:
            raise RuntimeError(f"the DP run at epsilon {eps:g} spent nothing: silos declined")
        result["points_below_no_dp"] = round(
            100 * (out["no_dp"]["accuracy"] - result["accuracy"]), 2
        )
        out[f"dp_eps{eps:g}"] = result
    return out


def run(quick: bool = False) -> dict[str, Any]:
    clients = 2 if quick else 10
    rounds = 2 if quick else 30
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
            if quick:
                common["local-epochs"] = 1
            partitions = {
                "iid": {},
                "dirichlet0.3": {"partitioner": "dirichlet", "dirichlet-alpha": 0.3},
                "dirichlet0.1": {"partitioner": "dirichlet", "dirichlet-alpha": 0.1},
            }
            arms = {
                "fedavg": {"strategy": "fedavg"},
                "fedprox": {"strategy": "fedprox", "proximal-mu": 0.01},
                "fedadam": {"strategy": "fedadam", "server-learning-rate": 0.03},
            }
            for part, part_config in partitions.items():
                if quick and part != "iid":
                    continue
                for name, arm in arms.items():
                    if quick and name != "fedavg":
                        continue
                    skew = {"min-partition-size": 20, **part_config} if part_config else {}
                    results[f"{part}_{name}"] = _federated(
                        flwr, f"{part}-{name}", clients, {**common, **skew, **arm}
                    )
            if not quick:
                # why the default server learning rate for FedAdam is 0.03, not 0.01
                results["dirichlet0.3_fedadam_eta0.01"] = _federated(
                    flwr,
                    "dirichlet0.3-fedadam-eta0.01",
                    clients,
                    {
                        **common,
                        **partitions["dirichlet0.3"],
                        "min-partition-size": 20,
                        "strategy": "fedadam",
                        "server-learning-rate": 0.01,
                    },
                )
            results["synthetic_dp"] = _synthetic_dp(flwr, quick)
        finally:
            flwr.stop()
    base = results["centralized"]["accuracy"]
    for value in results.values():
        if isinstance(value, dict) and "clients" in value and "accuracy" in value:
            value["points_below_centralized"] = round(100 * (base - value["accuracy"]), 2)
    return results


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
