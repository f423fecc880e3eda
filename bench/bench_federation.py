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

Digits in 10 simulated silos: IID with FedAvg, and Dirichlet label skew (alpha 0.3 and
0.1), each with FedAvg, FedProx and FedAdam. Accuracy under DP is bench_dp_accuracy.py's.
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
from datetime import UTC, datetime
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
from harness.local_run import LocalFlwr  # noqa: E402
from privacy.keys import load_key_file  # noqa: E402
from simulations.centralized import DEFAULT_EPOCHS, run_centralized  # noqa: E402

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
QUICK_ARMS = ("iid_fedavg", "dirichlet0.3_fedprox")
ARMS = DIGITS_ARMS
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


# The resolved settings an arm reports (what "the defaults" came to in that run).
REPORTED_SETTINGS = (
    "model",
    "hidden-sizes",
    "num-server-rounds",
    "early-stopping-patience",
    "local-epochs",
    "batch-size",
    "optimizer",
    "learning-rate",
    "momentum",
    "dp-max-grad-norm",
    "target-delta",
)


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


def federated_arm(
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
        "settings": {k: summary["settings"].get(k) for k in REPORTED_SETTINGS},
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


# What makes two federation runs comparable: the same split, silos and baseline.
SAME_SETUP = ("quick", "clients", "dataset", "test_fraction", "test_seed", "server_val_fraction")


def carry_arms(new: dict[str, Any], earlier: dict[str, Any] | None) -> dict[str, Any]:
    """``new`` with the arms an earlier run measured and this one did not, when both
    ran the same set-up and their centralized baselines agree to the last digit (a
    difference means the code or data changed, and the earlier arms are dropped). A
    federated arm itself need not repeat exactly (the order replies arrive in, a silo
    late under load), so a full run, which carries nothing, is the one to quote. Each
    arm keeps the time it was measured (``measured``)."""
    if not earlier or any(earlier.get(k) != new.get(k) for k in SAME_SETUP):
        return new
    baseline = ("accuracy", "val_loss", "best_epoch")
    if any(earlier["centralized"].get(k) != new["centralized"].get(k) for k in baseline):
        return new
    carried = {
        arm: {**earlier[arm], "measured": earlier[arm].get("measured", earlier.get("when"))}
        for arm in earlier.get("arms_done", [])
        if arm in earlier and arm not in new["arms_planned"]
    }
    if not carried:
        return new
    done = set(new["arms_done"]) | set(carried)
    planned = set(new["arms_planned"]) | set(carried)
    return {
        **new,
        **carried,
        "arms_done": [a for a in ARMS if a in done],
        "arms_planned": [a for a in ARMS if a in planned],
        "arms_carried": sorted(carried, key=ARMS.index),
    }


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
        results[arm]["measured"] = datetime.now(UTC).isoformat(timespec="seconds")
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
                part, strategy = arm.split("_", 1)
                config_arm = {**common, **PARTITIONS[part], **STRATEGIES[strategy]}
                value = federated_arm(flwr, arm.replace("_", "-"), clients, config_arm, held)
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
