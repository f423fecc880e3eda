"""Helpers for deployment tests: real SuperLink and SuperNodes on loopback.

Each deployment runs in its own folder with its own ports, certificates and keys, and
every process it starts is stopped in the fixture's finalizer, also when a test fails.
Every wait is bounded (there is no pytest-timeout): runs, node start-up, log lines.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.deploy_local import LocalDeployment
from privacy import keys
from privacy.ledger import PrivacyLedger

# Small and quick: breast-cancer (569 rows) with the MLP, one local epoch per round.
FAST: dict[str, Any] = {
    "model": "mlp",
    "hidden-sizes": "32",
    "local-epochs": 1,
    "batch-size": 32,
    "learning-rate": 0.003,
    "export-int8": False,
    "node-wait-timeout": 60.0,
}
RUN_TIMEOUT = 240  # seconds for one `flwr run` of a few rounds on two shared cores
# Silos of the shared federation (conftest.py): what each one does.
HONEST, NAN, SHAPE = 0, 1, 2


def start_deployment(base: Path, **kwargs: Any) -> Iterator[LocalDeployment]:
    deployment = LocalDeployment(base, dataset="breast-cancer", run_config=FAST, **kwargs)
    try:
        deployment.start(timeout=120)
        yield deployment
    finally:
        deployment.stop()


def node_name(deployment: LocalDeployment, index: int) -> str:
    """How the server's history names a silo's node."""
    return f"node {deployment.silos[index].node_id}"


def exhaust_budget(deployment: LocalDeployment, index: int, *, budget: float, delta: float) -> None:
    """Spend all but a sliver of a silo's privacy budget in its own ledger, as earlier
    runs would have: its next private training cannot fit."""
    silo = deployment.silos[index]
    ledger = PrivacyLedger.open(
        silo.ledger,
        key=keys.load_key_file(silo.key_file),
        budget_epsilon=budget,
        delta=delta,
    )
    for sigma, q in ((0.8, 1.0), (2.0, 0.1), (5.0, 0.01)):  # coarse, then finer steps
        steps = ledger.max_steps(noise_multiplier=sigma, sample_rate=q)
        if steps:
            reservation = ledger.reserve(
                noise_multiplier=sigma, sample_rate=q, steps=steps, label="earlier"
            )
            reservation.settle(steps)
    assert ledger.spent_epsilon() <= budget
    assert ledger.projected_epsilon(noise_multiplier=2.0, sample_rate=0.1, steps=1) > budget


# -- the federation the fault tests kill processes in ----------------------------------------

FAULTS_BUDGET, FAULTS_DELTA = 10.0, 1e-5
# A healthy round takes well under this, even on two busy cores; a round with a dead
# node ends when the SuperLink declares it offline (missed heartbeats, at most 60 s).
ROUND_TIMEOUT = 150.0


def faults_federation(base: Path) -> Iterator[LocalDeployment]:
    """Three silos whose policies allow runs without DP and hold a budget of
    ``FAULTS_BUDGET``, counted by RDP (the accountant the budget tests exhaust it with)."""
    policy = {
        "privacy": {
            "require-dp": False,
            "max-epsilon-per-run": FAULTS_BUDGET,
            "budget": FAULTS_BUDGET,
            "accountant": "rdp",
        }
    }
    yield from start_deployment(base, silos=3, policies=dict.fromkeys(range(3), policy))
