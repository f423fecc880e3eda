"""Accuracy at a fixed epsilon, side by side: the same federation without DP and with
DP-SGD at epsilon 8, 3 and 1, with the settings a user gets by default.

``run(quick)`` returns a dict; ``python bench/bench_dp_accuracy.py [--quick]`` prints it.

Each arm is a real ``flwr run .`` whose run config names only the data, the number of
silos and, for the private arms, ``dp = true`` and ``target-epsilon``: the model, the
rounds, early stopping and the local training are fedsilo's defaults, so a DP arm trains
with the DP recipe (``core_training.config.RECIPES``) and the arm without DP with the
plain one. Every data set is split once as in bench_federation.py: test rows that
nothing chooses on, the server's validation rows (which pick the round), and the rest
partitioned IID over the silos. Each budget runs on silos of their own, since a silo's
ledger remembers what earlier runs spent.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_federation import ROOT, federated_arm, hold_out

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core_training.data import load_table
from harness.local_run import LocalFlwr

BUDGETS = (8.0, 3.0, 1.0)
DELTA = 1e-5  # fedsilo's default target-delta, stated here for the report
# Targets on the synthetic federation: points below no DP at each epsilon.
TARGETS = {"synthetic": {8.0: 3.0, 3.0: 4.0}}


def _datasets(quick: bool) -> dict[str, dict[str, Any]]:
    if quick:
        return {"synthetic": {"rows": 2_000, "clients": 2}}
    return {"synthetic": {"rows": 100_000, "clients": 10}, "digits": {"clients": 10}}


def _arms(
    flwr: LocalFlwr, name: str, clients: int, held: Any, budgets: tuple[float, ...]
) -> dict[str, Any]:
    """The no-DP arm and one arm per budget, each on the same held-out split."""
    out: dict[str, Any] = {"no_dp": federated_arm(flwr, f"{name}-no-dp", clients, {}, held)}
    for eps in budgets:
        own = LocalFlwr(flwr.base / f"{name}-dp-eps{eps:g}")
        try:
            arm = {"dp": True, "target-epsilon": eps}
            result = federated_arm(own, f"{name}-dp-eps{eps:g}", clients, arm, held)
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
    budgets = (8.0,) if quick else BUDGETS
    results: dict[str, Any] = {"quick": quick, "budgets": list(budgets), "delta": DELTA}
    with tempfile.TemporaryDirectory(prefix="fedsilo-bench-dp-") as tmp:
        flwr = LocalFlwr(Path(tmp))
        try:
            for name, spec in _datasets(quick).items():
                table = (
                    load_table("synthetic", rows=spec["rows"], features=20)
                    if name == "synthetic"
                    else load_table(name)
                )
                held = hold_out(table, Path(tmp) / "data", name)
                arms = _arms(flwr, name, spec["clients"], held, budgets)
                # each arm reports the settings it resolved to
                results[name] = {"rows": len(table.y), "clients": spec["clients"], **arms}
        finally:
            flwr.stop()
    return results


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
