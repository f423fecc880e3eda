"""Faults a deployed federation survives, with real processes killed mid-run (a
SuperNode killed mid-round: test_deploy_node_killed.py).

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
from deploy_helpers import (
    FAULTS_BUDGET,
    FAULTS_DELTA,
    ROUND_TIMEOUT,
    RUN_TIMEOUT,
    exhaust_budget,
    faults_federation,
    node_name,
)

from harness.deploy_local import DeployedRun, LocalDeployment, wait_until
from privacy import keys
from privacy.ledger import LedgerEntry, PrivacyLedger

pytestmark = pytest.mark.deployment


BUDGET, DELTA = FAULTS_BUDGET, FAULTS_DELTA
DP: dict[str, Any] = {
    "dp": True,
    "target-epsilon": 4.0,
    "privacy-budget": BUDGET,
    "target-delta": DELTA,
}
EXHAUSTED = 2  # the silo out of budget (DP on)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory):
    yield from faults_federation(tmp_path_factory.mktemp("faults"))


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
        node = node_name(federation, index)
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
    node = node_name(federation, EXHAUSTED)
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
    assert node_name(federation, EXHAUSTED) in first["declined"] and len(first["clients"]) == 2
