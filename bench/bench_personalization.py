"""Personalization under label skew, and what freezing saves on the wire.

``run(quick)`` returns a dict; ``python bench/bench_personalization.py [--quick]`` prints
it. Every arm is a real ``flwr run .`` (Ray simulation) on a private local SuperLink.

Digits in 10 simulated silos with Dirichlet label skew (alpha 0.1), the built-in CNN
(GroupNorm), federated validation in every arm, so every figure is measured on the
same rows: each silo's own validation split (the partitions and splits depend on the
seed only). Arms:

- ``fedavg``: one global model; each silo's accuracy is the global model's on its rows.
- ``fedper``: ``local-layers = "head.*"``: each silo keeps its own classifier head.
- ``fedbn``: ``personalization = "fedbn"``: each silo keeps its own GroupNorm weights.
- ``transfer``: starts from ``fedavg``'s best model with ``freeze = "features.*"``:
  only the head trains and travels. Its bytes per round against ``fedavg``'s are the
  saving freezing buys.

Every silo holds out a test split (``silo-test-fraction``) before its train/validation
split; the run picks its round on the validation rows (lowest pooled validation loss)
and, when it has ended, scores the model of that round once on the test rows
(``fl_server.held_out``). Each arm reports the test figures: the mean over silos of each
silo's test accuracy (``mean_accuracy``, each silo's in ``by_silo``; the personalized
models of the picked round in the personal arms) and the accuracy pooled over all test
rows (``pooled_accuracy``), and in the personal arms the global model's as well
(``global_*``: shared layers with the initial local ones). ``points_above_fedavg``
compares the silos' mean test accuracies. The validation figures of the picked round
are kept beside them (``val_*``): those rows chose the round, so they are not held-out
figures.
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.local_run import LocalFlwr  # noqa: E402

# the federation suite's local training for small digits silos
COMMON = {
    "dataset": "digits",
    "model": "cnn",
    "partitioner": "dirichlet",
    "dirichlet-alpha": 0.1,
    "min-partition-size": 20,
    "validation": "federated",
    "local-epochs": 5,
    "batch-size": 16,
    "learning-rate": 0.003,
    "early-stopping-patience": 6,
    "export-int8": False,
    "silo-test-fraction": 0.2,
}
ARMS: dict[str, dict[str, Any]] = {
    "fedavg": {},
    "fedper": {"local-layers": "head.*"},
    "fedbn": {"personalization": "fedbn"},
    "transfer": {"freeze": "features.*"},  # + initial-model: fedavg's best model
}
QUICK_ARMS = ("fedavg", "fedper", "transfer")


def arm_figures(run: Any, personal: bool) -> dict[str, Any]:
    """What one run measured: the silos' test accuracies of the picked round's model,
    its validation accuracies (which picked it), bytes moved."""
    summary, history = run.summary, run.history
    best = summary["best_round"]
    entry = next(h for h in history if h["round"] == best)
    val_by_silo = entry.get("val_accuracy_by_silo") or {}
    test = summary["test"]
    if test["round"] != best:
        raise RuntimeError(f"the test scored round {test['round']}, the run kept {best}")
    scored = test["personalized" if personal else "global"]
    rounds = [h for h in history if h["round"] > 0 and not h.get("skipped")]
    moved = [h["arrays_bytes_sent"] + h["arrays_bytes_received"] for h in rounds]
    out = {
        "rounds_completed": summary["rounds_completed"],
        "best_round": best,
        "silos": len(scored["by_silo"]),
        "split": "test",  # the figures below without a prefix are the test rows'
        "mean_accuracy": scored["mean_accuracy"],
        "pooled_accuracy": scored["pooled_accuracy"],
        "test_examples": scored["examples"],
        "by_silo": scored["by_silo"],
        "test_left_out": test["left_out"],
        "val_mean_accuracy": (
            sum(val_by_silo.values()) / len(val_by_silo) if val_by_silo else None
        ),
        "val_pooled_accuracy": entry.get("val_accuracy"),
        "val_by_silo": val_by_silo,
        "bytes_per_round": round(sum(moved) / len(moved)) if moved else None,
        "flwr_run_seconds": round(run.seconds, 2),
    }
    if personal:
        out["global_mean_accuracy"] = test["global"]["mean_accuracy"]
        out["global_pooled_accuracy"] = test["global"]["pooled_accuracy"]
        out["global_val_mean_accuracy"] = summary["global"]["mean_accuracy"]
    return out


def run(quick: bool = False) -> dict[str, Any]:
    clients = 3 if quick else 10
    rounds = 2 if quick else 20
    common = {**COMMON, "num-server-rounds": rounds}
    if quick:
        common["local-epochs"] = 1
    wanted = QUICK_ARMS if quick else tuple(ARMS)
    results: dict[str, Any] = {
        "quick": quick,
        "clients": clients,
        "dataset": "digits",
        "dirichlet_alpha": COMMON["dirichlet-alpha"],
        "silo_test_fraction": COMMON["silo-test-fraction"],
        "rounds": rounds,
        "arms": list(wanted),
    }
    with tempfile.TemporaryDirectory(prefix="fedsilo-bench-") as tmp:
        flwr = LocalFlwr(Path(tmp))
        try:
            for arm in wanted:
                config = {**common, **ARMS[arm], "run-name": arm}
                if arm == "transfer":
                    config["initial-model"] = str(results["fedavg"]["run_dir"] / "best-model.bin")
                    config["num-server-rounds"] = max(1, rounds // 2)
                done = flwr.run(config, supernodes=clients, timeout=3000)
                if done.returncode != 0:
                    raise RuntimeError(f"flwr run {arm} failed:\n{done.output[-3000:]}")
                personal = "local-layers" in ARMS[arm] or "personalization" in ARMS[arm]
                results[arm] = {**arm_figures(done, personal), "run_dir": done.run_dir}
                results[arm]["measured"] = datetime.now(UTC).isoformat(timespec="seconds")
        finally:
            flwr.stop()
    for arm in wanted:
        results[arm].pop("run_dir")
    base = results["fedavg"]["mean_accuracy"]
    for arm in ("fedper", "fedbn", "transfer"):
        mean = results.get(arm, {}).get("mean_accuracy")
        if base is not None and mean is not None:  # test accuracies, never validation
            results[arm]["points_above_fedavg"] = round(100 * (mean - base), 2)
    results["freeze_bytes_ratio"] = round(
        results["transfer"]["bytes_per_round"] / results["fedavg"]["bytes_per_round"], 4
    )
    results["shared_parameters"] = _parameters()
    return results


def _parameters() -> dict[str, int]:
    """The CNN's parameters, and those that travel with the head alone (freeze
    features.*), counted on the model itself."""
    from core_training.models import SmallCNN

    model = SmallCNN((1, 8, 8), 10)
    every = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for n, p in model.named_parameters() if n.startswith("head."))
    return {"all": every, "head": head}


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
