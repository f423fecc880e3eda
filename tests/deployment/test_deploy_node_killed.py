"""A SuperNode killed (SIGKILL) mid-round in a deployed federation: the round completes
with the others, the history names the failed node, the run finishes, and the restarted
node rejoins. (Its own federation, so it runs beside test_deploy_faults.py.)"""

from __future__ import annotations

import signal
import time

import pytest
from deploy_helpers import ROUND_TIMEOUT, RUN_TIMEOUT, faults_federation, node_name

from harness.deploy_local import DeployedRun, LocalDeployment, wait_until

pytestmark = pytest.mark.deployment
VICTIM = 2  # the killed silo (DP off)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory):
    yield from faults_federation(tmp_path_factory.mktemp("node-killed"))


# -- a SuperNode killed mid-round ---------------------------------------------------------


@pytest.fixture(scope="module")
def node_killed(federation: LocalDeployment) -> DeployedRun:
    victim = federation.silos[VICTIM]
    seen = federation.received(victim)
    run = federation.submit(
        {
            # round 1: killed; round 2 starts before the SuperLink lets it back in; it is
            # back by round 3 or 4, however fast rounds are
            "num-server-rounds": 4,
            "min-nodes": 2,
            "round-timeout": ROUND_TIMEOUT,
            "validation": "server",
            "run-name": "node-killed",
        }
    )
    wait_until(
        lambda: federation.received(victim) > seen or run.proc.poll() is not None,
        timeout=RUN_TIMEOUT,
        what="round 1's train message to reach the victim",
    )
    time.sleep(1.0)  # its ClientApp is training
    federation.kill_node(victim, signal.SIGKILL)
    federation.restart_node(victim, timeout=ROUND_TIMEOUT)
    run.wait(RUN_TIMEOUT + ROUND_TIMEOUT)
    assert run.returncode == 0, run.output[-4000:]
    return run


def test_the_round_completes_with_the_others_and_names_the_killed_node(federation, node_killed):
    first = node_killed.history()[1]
    assert node_name(federation, VICTIM) in first["failed"], first
    assert sorted(first["clients"]) == sorted([node_name(federation, 0), node_name(federation, 1)])
    assert not first["skipped"] and first["num_failed"] == 1


def test_the_run_finishes_and_the_restarted_node_rejoins(federation, node_killed):
    summary = node_killed.summary
    assert summary["stop_reason"] == "completed" and summary["rounds_completed"] == 4
    later = node_killed.history()[2:]
    assert any(node_name(federation, VICTIM) in h["clients"] for h in later), later
    assert all(not h["failed"] for h in later if node_name(federation, VICTIM) in h["clients"])
