"""A deployed federation under load, and robust aggregation against a misbehaving silo.

``run(quick)`` returns a dict; ``python bench/bench_deployment.py [--quick]`` prints it.
One SuperLink and N SuperNodes on loopback (TLS, SuperNode authentication, each silo
with its own data file, keys and ports: :mod:`harness.deploy_local`) through R
rounds on the digits set (MLP, one local epoch, server-side validation). Full: 10
nodes, 20 rounds; quick: 3 nodes, 3 rounds. Measured:

- peak resident memory (VmRSS, sampled every 0.5 s) of the SuperLink process, and of
  its whole tree (the SuperExec and the ServerApp it starts), and of the largest
  SuperNode tree (SuperNode, SuperExec, ClientApp);
- seconds per round (from the run's history: send, wait, validate, aggregate, evaluate,
  checkpoint), the set-up time (certificates, keys, data, processes) and the run's wall
  time.

``python bench/bench_deployment.py --robustness [--quick]`` compares FedAvg, trimmed
mean and Krum when one of five silos sends a scaled-up (``scale:10``) or sign-flipped
update (node-config ``attack``), against the same federation with every silo honest:
final validation accuracy on rows no silo holds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.deploy_local import LocalDeployment  # noqa: E402

SETTINGS: dict[str, Any] = {
    "model": "mlp",
    "local-epochs": 1,
    "learning-rate": 0.003,
    "validation": "server",
    "export-int8": False,
    "round-timeout": 600.0,
    "node-wait-timeout": 120.0,
    "early-stopping-patience": 1000,
}


class _Sampler:
    """Peak VmRSS of the deployment's processes, sampled in a background thread."""

    def __init__(self, deployment: LocalDeployment, interval: float = 0.5) -> None:
        self.deployment, self.interval = deployment, interval
        self.peak = {"superlink": 0, "superlink_tree": 0, "supernode_tree": 0, "all": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        d = self.deployment
        while not self._stop.is_set():
            link = d.rss_kib("superlink")
            nodes = [d.rss_kib(f"node:{s.name}")["tree"] for s in d.silos]
            sample = {
                "superlink": link["main"],
                "superlink_tree": link["tree"],
                "supernode_tree": max(nodes, default=0),
                "all": link["tree"] + sum(nodes),
            }
            for key, value in sample.items():
                self.peak[key] = max(self.peak[key], value)
            self._stop.wait(self.interval)


def run(quick: bool = False, *, database: bool = False) -> dict[str, Any]:
    """The load figures. ``database=True`` keeps the SuperLink's state in SQLite (as
    a deployment that must survive restarts does) instead of in memory."""
    nodes, rounds = (3, 3) if quick else (10, 20)
    with tempfile.TemporaryDirectory(prefix="fedsilo-bench-deploy-") as base:
        started = time.perf_counter()
        with LocalDeployment(
            base, silos=nodes, dataset="digits", run_config=SETTINGS, database=database
        ) as d:
            setup = time.perf_counter() - started
            with _Sampler(d) as sampler:
                t0 = time.perf_counter()
                result = d.run({"num-server-rounds": rounds, "run-name": "load"}, timeout=7200)
                wall = time.perf_counter() - t0
            if result.returncode != 0:
                raise RuntimeError(result.output[-4000:])
            history = result.history()
            summary = result.summary
    per_round = [h["seconds"] for h in history if h["round"] > 0]
    mib = {k: round(v / 1024, 1) for k, v in sampler.peak.items()}
    return {
        "nodes": nodes,
        "rounds": rounds,
        "dataset": "digits",
        "superlink_state": "sqlite" if database else "memory",
        "setup_seconds": round(setup, 1),
        "run_wall_seconds": round(wall, 1),
        "round_seconds_mean": round(statistics.mean(per_round), 2),
        "round_seconds_median": round(statistics.median(per_round), 2),
        "round_seconds_max": round(max(per_round), 2),
        "peak_rss_mib": {
            "superlink_process": mib["superlink"],
            "superlink_tree": mib["superlink_tree"],
            "largest_supernode_tree": mib["supernode_tree"],
            "all_processes": mib["all"],
        },
        "final_val_accuracy": round(history[-1]["val_accuracy"], 4),
        "rounds_completed": summary["rounds_completed"],
        "rejected_or_failed": sum(
            h.get("num_rejected", 0) + h.get("num_failed", 0) for h in history
        ),
    }


ATTACKS = ("honest", "scale:10", "sign-flip")
STRATEGIES = {
    "fedavg": {"strategy": "fedavg"},
    "trimmed-mean": {"strategy": "trimmed-mean", "trimmed-beta": 0.2},
    "krum": {"strategy": "krum", "krum-malicious": 1},
}


def robustness(quick: bool = False) -> dict[str, Any]:
    """Final validation accuracy per (attack, strategy); silo 4 of 5 is the attacker."""
    silos, rounds = 5, (3 if quick else 8)
    accuracy: dict[str, dict[str, float]] = {}
    for attack in ATTACKS:
        node_config = {} if attack == "honest" else {silos - 1: {"attack": attack}}
        with (
            tempfile.TemporaryDirectory(prefix="fedsilo-bench-robust-") as base,
            LocalDeployment(
                base,
                silos=silos,
                dataset="digits",
                run_config=SETTINGS,
                node_config=node_config,
                database=False,
            ) as d,
        ):
            for name, strategy in STRATEGIES.items():
                run_config = {**strategy, "num-server-rounds": rounds, "run-name": name}
                result = d.run(run_config, timeout=7200)
                if result.returncode != 0:
                    raise RuntimeError(result.output[-4000:])
                final = result.history()[-1]["val_accuracy"]
                accuracy.setdefault(attack, {})[name] = round(final, 4)
                print(f"[robustness] {attack:10s} {name:13s} {final:.4f}", file=sys.stderr)
    honest = accuracy["honest"]["fedavg"]
    return {
        "silos": silos,
        "attackers": 1,
        "rounds": rounds,
        "dataset": "digits",
        "final_val_accuracy": accuracy,
        "points_below_honest_fedavg": {
            attack: {s: round(100 * (honest - a), 1) for s, a in row.items()}
            for attack, row in accuracy.items()
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 nodes, 3 rounds")
    parser.add_argument("--robustness", action="store_true", help="attacks vs strategies")
    parser.add_argument("--database", action="store_true", help="SuperLink state in SQLite")
    args = parser.parse_args()
    out = robustness(args.quick) if args.robustness else run(args.quick, database=args.database)
    print(json.dumps(out, indent=2))
