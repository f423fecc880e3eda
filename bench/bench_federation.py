"""Federated against centralized accuracy, on test rows that no choice touches.

``run(quick)`` returns a dict; ``python bench/bench_federation.py [--quick]`` prints it.
Every federated run is a real ``flwr run .`` (Ray simulation) on a private local
SuperLink, in one process tree, side by side with the centralized baseline.

Each data set is split once (stratified, seed ``TEST_SEED``) into test rows and the
rest. Only the rest is written to a CSV file that the federations run on: the server
carves its validation rows (``server-val-fraction``) from it and picks the best round
on them, and the silos partition what is left. The centralized baseline trains on the
same rest and picks its epoch on the same validation rows. Each chosen model is then
scored once on the test rows, and every comparison (points below centralized, points
below no DP) is made on those test figures.

(a) digits in 10 simulated silos: IID with FedAvg, and Dirichlet label skew (alpha 0.3
    and 0.1), each with FedAvg, FedProx and FedAdam; (b) synthetic rows (100,000, 20
    features) in 10 silos without DP and with DP-SGD at epsilon 3 and 8.
Where a simulation's time goes is measured by bench_overhead.py, side by side with a
plain Flower app and with no Flower at all.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core_training.config import TrainConfig  # noqa: E402
from core_training.data import Table, load_table, write_csv  # noqa: E402
from core_training.pipeline import split  # noqa: E402
from fl_common.modelfile import load_model  # noqa: E402
from fl_server.evaluation import evaluation, prepare  # noqa: E402
from privacy.keys import load_key_file  # noqa: E402
from simulations.centralized import DEFAULT_EPOCHS, run_centralized  # noqa: E402
from simulations.local_run import LocalFlwr  # noqa: E402

TEST_FRACTION = 0.25  # of the whole data set, held out before anything runs
TEST_SEED = 1
SERVER_VAL_FRACTION = 0.2  # of the rest: the server's validation rows, which pick a round
# Local training per round: 5 epochs in batches of 16 gives each small digits silo
# (~85 rows) enough steps per round to make progress, without drifting under IID.
FED_TRAIN = {"local-epochs": 5, "batch-size": 16, "learning-rate": 0.003}

# The arms in the order a full run makes them: the ones the comparison rests on first.
DIGITS_ARMS = (
    "iid_fedavg",
    "dirichlet0.3_fedavg",
    "dirichlet0.1_fedavg",
    "iid_fedprox",
    "dirichlet0.3_fedprox",
    "dirichlet0.1_fedprox",
    "iid_fedadam",
    "dirichlet0.3_fedadam",
    "dirichlet0.1_fedadam",
    "dirichlet0.3_fedadam_eta0.01",
)
QUICK_ARMS = ("iid_fedavg", "dirichlet0.3_fedprox", "synthetic_dp")
ARMS = (*DIGITS_ARMS, "synthetic_dp")
PARTITIONS = {
    "iid": {},
    "dirichlet0.3": {"partitioner": "dirichlet", "dirichlet-alpha": 0.3, "min-partition-size": 20},
    "dirichlet0.1": {"partitioner": "dirichlet", "dirichlet-alpha": 0.1, "min-partition-size": 20},
}
STRATEGIES = {
    "fedavg": {"strategy": "fedavg"},
    "fedprox": {"strategy": "fedprox", "proximal-mu": 0.01},
    "fedadam": {"strategy": "fedadam", "server-learning-rate": 0.03},
    # why the default server learning rate for FedAdam is 0.03, not 0.01
    "fedadam_eta0.01": {"strategy": "fedadam", "server-learning-rate": 0.01},
}


@dataclass
class HeldOut:
    """A data set split once: the rest as files a federation runs on, and test rows."""

    rest: Table
    test: Table
    data_config: dict[str, Any]  # run-config keys that point a federation at the rest


def hold_out(table: Table, folder: Path, name: str) -> HeldOut:
    """Split off the test rows and write the rest (CSV + schema TOML) under ``folder``."""
    rest, test = split(table, test_fraction=TEST_FRACTION, seed=TEST_SEED)
    folder.mkdir(parents=True, exist_ok=True)
    data = write_csv(rest, folder / f"{name}.csv")
    schema = rest.schema.save(folder / f"{name}.toml")
    config = {
        "dataset": str(data.resolve()),
        "schema": str(Path(schema).resolve()),
        "server-val-fraction": SERVER_VAL_FRACTION,
    }
    return HeldOut(rest, test, config)


def score_on_test(flwr: LocalFlwr, run_dir: Path, test: Table) -> dict[str, Any]:
    """The run's best model (picked on the server's validation rows), scored once on
    the test rows."""
    key = load_key_file(flwr.base / "fedsilo-home" / "key")
    path = run_dir / "best-model.bin"
    loaded = load_model(path, key=key)
    data = prepare(loaded, path, test, key=key)
    return evaluation(loaded, path, data)["metrics"]


def _federated(
    flwr: LocalFlwr, name: str, clients: int, config: dict[str, Any], held: HeldOut
) -> dict[str, Any]:
    run = flwr.run(
        {"run-name": name, **config, **held.data_config},
        supernodes=clients,
        timeout=3000,
    )
    if run.returncode != 0:
        raise RuntimeError(f"flwr run {name} failed:\n{run.output[-3000:]}")
    summary, history = run.summary, run.history
    best = summary["best_metrics"]
    test = score_on_test(flwr, run.run_dir, held.test)
    rounds = [h for h in history if h["round"] > 0]
    return {
        "clients": clients,
        "rounds_completed": summary["rounds_completed"],
        "best_round": summary["best_round"],
        "val_loss": best["val_loss"],
        "val_accuracy": best["val_accuracy"],
        "accuracy": test["accuracy"],
        "balanced_accuracy": test["balanced_accuracy"],
        "macro_f1": test["macro_f1"],
        "test_rows": test["num_examples"],
        "final_val_accuracy": rounds[-1]["val_accuracy"] if rounds else None,
        "flwr_run_seconds": round(run.seconds, 2),
        "server_seconds": summary["seconds"],
        "round_seconds_sum": round(sum(h.get("seconds", 0.0) for h in rounds), 3),
        "train_seconds_sum": round(sum(h.get("train_seconds", 0.0) for h in rounds), 3),
        "int8_val_accuracy": summary["export"]["int8_accuracy"],
        "epsilon_max": summary["epsilon_max"],
    }


def _centralized(held: HeldOut, config: TrainConfig) -> dict[str, Any]:
    started = time.perf_counter()
    c = run_centralized(held.rest, config, val_fraction=SERVER_VAL_FRACTION, test=held.test)
    keys = ("model", "epochs", "best_epoch", "val_loss", "val_accuracy", "accuracy")
    return {
        **{k: c[k] for k in keys},
        "balanced_accuracy": c["balanced_accuracy"],
        "macro_f1": c["macro_f1"],
        "train_rows": c["train_rows"],
        "val_rows": c["val_rows"],
        "test_rows": c["test_rows"],
        "seconds": round(time.perf_counter() - started, 2),
    }


# Local training that suits DP-SGD: larger batches (the noise is divided by the batch
# size) and SGD with momentum (Adam rescales every coordinate by its own noisy variance).
DP_TUNED = {"batch-size": 256, "optimizer": "sgd", "learning-rate": 0.5, "momentum": 0.9}


def _synthetic_dp(flwr: LocalFlwr, quick: bool, folder: Path) -> dict[str, Any]:
    """Synthetic rows in silos without DP and with DP-SGD at two budgets; the same
    rounds, epochs and model, picked on the same server split and scored on the same
    test rows. Twice: with the default local training, and (full run) with DP_TUNED."""
    rows, clients, rounds = (2_000, 2, 2) if quick else (100_000, 10, 10)
    held = hold_out(load_table("synthetic", rows=rows, features=20), folder, "synthetic")
    data = {
        "model": "mlp",
        "num-server-rounds": rounds,
        "local-epochs": 1,
        "batch-size": 64,
        "early-stopping-patience": rounds,
    }
    out: dict[str, Any] = {"rows": rows, "clients": clients, "rounds": rounds, "delta": 1e-5}
    config = TrainConfig.from_dict({"local-epochs": 1 if quick else 10, "batch-size": 64})
    out["centralized"] = _centralized(held, config)
    budgets = (8.0,) if quick else (3.0, 8.0)
    out.update(_dp_arms(flwr, "synthetic", clients, data, budgets, out["delta"], held))
    if not quick:
        tuned = {**data, **DP_TUNED}
        out["tuned"] = {
            "train": DP_TUNED,
            **_dp_arms(flwr, "tuned", clients, tuned, budgets[-1:], out["delta"], held),
        }
    return out


def _dp_arms(
    flwr: LocalFlwr,
    name: str,
    clients: int,
    data: dict[str, Any],
    budgets: tuple[float, ...],
    delta: float,
    held: HeldOut,
) -> dict[str, Any]:
    out = {"no_dp": _federated(flwr, f"{name}-no-dp", clients, data, held)}
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
            result = _federated(own, f"{name}-dp-eps{eps:g}", clients, arm, held)
        finally:
            own.stop()
        if result["epsilon_max"] is None:
            raise RuntimeError(f"the DP run at epsilon {eps:g} spent nothing: silos declined")
        result["points_below_no_dp"] = round(
            100 * (out["no_dp"]["accuracy"] - result["accuracy"]), 2
        )
        out[f"dp_eps{eps:g}"] = result
    return out


def run(
    quick: bool = False,
    arms: Iterable[str] | None = None,
    on_arm: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """``arms``: a subset of ARMS to run (default: all; quick mode: QUICK_ARMS).
    ``on_arm(results)`` is called after the baseline and after every arm with the
    results so far, so a run stopped early keeps what it measured."""
    wanted = list(QUICK_ARMS if quick and arms is None else arms or ARMS)
    unknown = sorted(set(wanted) - set(ARMS))
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; choose from {', '.join(ARMS)}")
    clients = 2 if quick else 10
    rounds = 2 if quick else 30
    results: dict[str, Any] = {
        "quick": quick,
        "clients": clients,
        "dataset": "digits",
        "test_fraction": TEST_FRACTION,
        "test_seed": TEST_SEED,
        "server_val_fraction": SERVER_VAL_FRACTION,
        "arms_planned": wanted,
        "arms_done": [],
    }

    def done(arm: str) -> None:
        results["arms_done"].append(arm)
        if on_arm is not None:
            on_arm(results)

    with tempfile.TemporaryDirectory(prefix="fedsilo-bench-") as tmp:
        held = hold_out(load_table("digits"), Path(tmp) / "data", "digits")
        config = TrainConfig.from_dict({"local-epochs": 3 if quick else DEFAULT_EPOCHS})
        results["centralized"] = _centralized(held, config)
        if on_arm is not None:
            on_arm(results)
        base = results["centralized"]["accuracy"]
        flwr = LocalFlwr(Path(tmp))
        try:
            common = {**FED_TRAIN, "num-server-rounds": rounds, "early-stopping-patience": 6}
            if quick:
                common["local-epochs"] = 1
            for arm in wanted:
                if arm == "synthetic_dp":
                    results[arm] = _synthetic_dp(flwr, quick, Path(tmp) / "data")
                    done(arm)
                    continue
                part, strategy = arm.split("_", 1)
                config_arm = {**common, **PARTITIONS[part], **STRATEGIES[strategy]}
                value = _federated(flwr, arm.replace("_", "-"), clients, config_arm, held)
                value["points_below_centralized"] = round(100 * (base - value["accuracy"]), 2)
                results[arm] = value
                done(arm)
        finally:
            flwr.stop()
    return results


if __name__ == "__main__":
    picked = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--arms=")), None)
    print(
        json.dumps(
            run(quick="--quick" in sys.argv, arms=picked.split(",") if picked else None),
            indent=2,
        )
    )
