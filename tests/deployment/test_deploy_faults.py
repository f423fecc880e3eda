"""Faults a deployed federation survives, with real processes killed mid-run.

- A SuperNode killed (SIGKILL) mid-round: the round completes with the others, the
  history names the failed node, the run finishes, and the restarted node rejoins.
- The SuperLink killed (SIGKILL, with its ServerApp) mid-run: a rerun with
  ``resume=true`` continues from the last checkpoint; no completed round is lost, and
  every silo's privacy ledger holds exactly the trainings it really did.
- A silo out of privacy budget declines; the others go on, or the run stops with
  ``privacy-budget-exhausted`` when too many silos have declined.

What "really trained" means (asserted exactly below): a silo trained round r of a run
when its ClientApp reserved budget for (run, r) and ran DP-SGD, whether or not its
update reached the server. For every round the server completed, the silos with a
ledger entry for it are exactly the silos whose update the server aggregated
(``clients`` in the history). The round in flight when the SuperLink died may have been
trained and then lost with the server; it is trained again after the resume, and the
ledger counts both trainings (each released an update computed on the data). Nothing
else is in the ledger: no completed round twice, no round missing.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from typing import Any

import pytest
from deploy_helpers import RUN_TIMEOUT, exhaust_budget, start_deployment

from privacy import keys
from privacy.ledger import LedgerEntry, PrivacyLedger
from simulations.deploy_local import DeployedRun, LocalDeployment, wait_until

pytestmark = pytest.mark.deployment

BUDGET, DELTA = 10.0, 1e-5
DP: dict[str, Any] = {
    "dp": True,
    "target-epsilon": 4.0,
    "privacy-budget": BUDGET,
    "target-delta": DELTA,
}
# A healthy round takes well under this, even on two busy cores; a round with a dead
# node ends when the SuperLink declares it offline (missed heartbeats, at most 60 s).
ROUND_TIMEOUT = 150.0
VICTIM, EXHAUSTED = 2, 2  # the killed silo (DP off), then the silo out of budget (DP on)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory):
    # The silos' own budget is the one the test exhausts, counted by the same accountant.
    policy = {
        "privacy": {
            "require-dp": False,
            "max-epsilon-per-run": BUDGET,
            "budget": BUDGET,
            "accountant": "rdp",
        }
    }
    yield from start_deployment(
        tmp_path_factory.mktemp("faults"), silos=3, policies=dict.fromkeys(range(3), policy)
    )


def _node(federation: LocalDeployment, index: int) -> str:
    return f"node {federation.silos[index].node_id}"


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
    assert _node(federation, VICTIM) in first["failed"], first
    assert sorted(first["clients"]) == sorted([_node(federation, 0), _node(federation, 1)])
    assert not first["skipped"] and first["num_failed"] == 1


def test_the_run_finishes_and_the_restarted_node_rejoins(federation, node_killed):
    summary = node_killed.summary
    assert summary["stop_reason"] == "completed" and summary["rounds_completed"] == 4
    later = node_killed.history()[2:]
    assert any(_node(federation, VICTIM) in h["clients"] for h in later), later
    assert all(not h["failed"] for h in later if _node(federation, VICTIM) in h["clients"])


# -- the SuperLink killed mid-run, then resumed --------------------------------------------


@dataclass
class Interrupted:
    before: list[dict[str, Any]]  # the history when the SuperLink was killed
    first: DeployedRun  # the run that was interrupted
    resumed: DeployedRun


@pytest.fixture(scope="module")
def interrupted(federation: LocalDeployment) -> Interrupted:
    exhaust_budget(federation, EXHAUSTED, budget=BUDGET, delta=DELTA)
    settings = {
        **DP,
        "num-server-rounds": 3,
        "min-nodes": 2,
        "round-timeout": ROUND_TIMEOUT,
        "validation": "server",
        "run-name": "superlink-killed",
    }
    honest = federation.silos[:2]
    seen = [federation.received(s) for s in honest]
    first = federation.submit(settings)

    def round_two_under_way() -> bool:
        if first.proc.poll() is not None:
            raise AssertionError("the run ended before it was interrupted:\n" + first.output)
        done = any(h["round"] == 1 for h in first.history())
        started = zip(honest, seen, strict=True)
        return done and all(federation.received(s) >= n + 2 for s, n in started)

    wait_until(round_two_under_way, timeout=2 * RUN_TIMEOUT, what="round 2 to start")
    time.sleep(2.0)
    before = first.history()
    federation.kill_superlink(signal.SIGKILL)  # the ServerApp dies with it
    first.proc.kill()
    first.proc.wait(timeout=30)

    federation.start_superlink()
    federation.wait_online([s.node_id for s in federation.silos], timeout=120)
    resumed = federation.run({**settings, "resume": True}, timeout=2 * RUN_TIMEOUT)
    assert resumed.returncode == 0, resumed.output[-4000:]
    return Interrupted(before, first, resumed)


def test_the_rerun_resumes_after_the_last_checkpointed_round(interrupted):
    checkpointed = max(h["round"] for h in interrupted.before if "clients" in h)
    assert checkpointed >= 1
    assert f"after round {checkpointed}" in interrupted.resumed.output
    summary = interrupted.resumed.summary
    assert summary["stop_reason"] == "completed" and summary["rounds_completed"] == 3


def test_no_completed_round_is_lost(interrupted):
    history = interrupted.resumed.history()
    assert [h["round"] for h in history] == [0, 1, 2, 3]
    completed = [h for h in interrupted.before if "clients" in h or h["round"] == 0]
    for old in completed:
        assert history[old["round"]] == old  # kept exactly as recorded before the kill


def _ledger(federation: LocalDeployment, index: int) -> list[LedgerEntry]:
    silo = federation.silos[index]
    key = keys.load_key_file(silo.key_file)
    ledger = PrivacyLedger.open(silo.ledger, key=key, budget_epsilon=BUDGET, delta=DELTA)
    assert not ledger.pending(), ledger.pending()  # every training settled its steps
    assert ledger.spent_epsilon() <= BUDGET
    return [e for e in ledger.entries if e.label != "earlier"]


def test_each_ledger_holds_exactly_the_rounds_its_silo_really_trained(federation, interrupted):
    history = {h["round"]: h for h in interrupted.resumed.history()}
    checkpointed = max(h["round"] for h in interrupted.before if "clients" in h)
    in_flight = checkpointed + 1
    runs = (f"flwr-run-{interrupted.first.run_id}", f"flwr-run-{interrupted.resumed.run_id}")
    for index in (0, 1):
        node = _node(federation, index)
        entries = _ledger(federation, index)  # the silo's entries are labelled by run
        first = sorted(e.round for e in entries if e.run == runs[0])
        second = sorted(e.round for e in entries if e.run == runs[1])
        assert {e.run for e in entries} <= set(runs)
        aggregated = {r for r, h in history.items() if r > 0 and node in h.get("clients", [])}
        # the first run: every checkpointed round it contributed to, plus at most the
        # round that was in flight when the SuperLink died
        assert set(first) - {in_flight} == {r for r in aggregated if r <= checkpointed}
        assert len(first) == len(set(first))
        # the resumed run: exactly the rounds it contributed to after the checkpoint
        assert second == sorted(r for r in aggregated if r > checkpointed), (first, second)


def test_a_silo_out_of_budget_declines_and_the_others_go_on(federation, interrupted):
    node = _node(federation, EXHAUSTED)
    history = interrupted.resumed.history()
    declined = [h["round"] for h in history[1:] if node in h["declined"]]
    # asked once, then left out: the checkpoint remembers it, so the resumed run does too
    assert declined == [1]
    for entry in history[1:]:
        assert node not in entry["clients"] and len(entry["clients"]) == 2, entry
        assert entry["num_sampled"] == (3 if entry["round"] in declined else 2)
    assert "privacy budget exhausted" in history[1]["declined"][node]
    assert _ledger(federation, EXHAUSTED) == []  # declining spends nothing


def test_the_run_stops_when_too_many_silos_are_out_of_budget(federation, interrupted):
    run = federation.run(
        {
            **DP,
            "num-server-rounds": 2,
            "min-nodes": 2,
            "max-exhausted-fraction": 0.3,
            "validation": "server",
            "run-name": "out-of-budget",
        },
        timeout=RUN_TIMEOUT,
    )
    assert run.returncode == 0, run.output[-4000:]
    summary = run.summary
    assert summary["stop_reason"] == "privacy-budget-exhausted", summary
    # the round in which the silo declined is complete (the others trained it), and
    # the run stops before the next one
    assert summary["stopped_early"] and summary["rounds_completed"] == 1
    first = run.history()[1]
    assert _node(federation, EXHAUSTED) in first["declined"] and len(first["clients"]) == 2
