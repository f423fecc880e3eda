"""Hostile silos in a real deployment: SuperNodes started with node-config ``attack``
send NaN or wrongly shaped arrays; the server rejects them by node every round and
goes on with the honest silo."""

from __future__ import annotations

import math
from typing import Any

import pytest
from deploy_helpers import HONEST, NAN, RUN_TIMEOUT, SHAPE, node_name

pytestmark = pytest.mark.deployment


@pytest.fixture(scope="module")
def hostile_run(shared_federation):
    run = shared_federation.run(
        {"num-server-rounds": 2, "min-nodes": 1, "validation": "server", "run-name": "hostile"},
        timeout=RUN_TIMEOUT,
    )
    assert run.returncode == 0, run.output[-4000:]
    return run


def _rounds(run) -> list[dict[str, Any]]:
    return [h for h in run.history() if h["round"] > 0]


def test_nan_and_wrongly_shaped_updates_are_rejected_every_round_by_node(
    shared_federation, hostile_run
):
    nan, shape = node_name(shared_federation, NAN), node_name(shared_federation, SHAPE)
    rounds = _rounds(hostile_run)
    assert [h["round"] for h in rounds] == [1, 2]
    for entry in rounds:
        assert entry["num_sampled"] == 3
        assert set(entry["rejected"]) == {nan, shape}, entry
        assert entry["num_rejected"] == 2
        assert any("NaN or infinite" in p for p in entry["rejected"][nan])
        assert any("shape" in p for p in entry["rejected"][shape])
    assert f"rejected the update of {nan}" in hostile_run.output
    assert f"rejected the update of {shape}" in hostile_run.output


def test_only_the_honest_update_is_aggregated_and_the_model_learns(shared_federation, hostile_run):
    honest = node_name(shared_federation, HONEST)
    history = hostile_run.history()
    for entry in history[1:]:
        assert entry["clients"] == [honest] and not entry["skipped"]
        assert math.isfinite(entry["val_loss"])
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    summary = hostile_run.summary
    assert summary["stop_reason"] == "completed" and summary["rounds_completed"] == 2
