"""The privacy ledger: composition across rounds and runs, refusals before spending, crashes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import rdp_reference
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core_training.models import ModelSpec, build_model
from privacy import dp, store
from privacy.crypto import DecryptionError
from privacy.dp import DPSession
from privacy.ledger import BudgetExhaustedError, LedgerMismatchError, PrivacyLedger

DELTA = 1e-5
SIGMA, Q, STEPS = 1.0, 0.01, 200

pytestmark = [
    pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha"),
    pytest.mark.filterwarnings("ignore:Secure RNG turned off"),
    pytest.mark.filterwarnings("ignore:Full backward hook is firing"),
]


@pytest.fixture
def path(artifacts: Path) -> Path:
    return artifacts / "ledger.enc"


def _round(ledger: PrivacyLedger, steps: int = STEPS, taken: int | None = None, **labels) -> None:
    with ledger.reserve(noise_multiplier=SIGMA, sample_rate=Q, steps=steps, **labels) as r:
        r.settle(steps if taken is None else taken)


def test_epsilon_after_k_rounds_is_one_accountant_over_all_steps(path: Path, key: bytes) -> None:
    ledger = PrivacyLedger.open(path, key=key, budget_epsilon=50.0, delta=DELTA)
    for round_number in (1, 2, 3):
        _round(ledger, round=round_number, label=f"round {round_number}")
    # One run of 3 * STEPS steps, accounted independently (integer orders: an upper bound).
    bound = rdp_reference.epsilon([(SIGMA, Q, 3 * STEPS)], delta=DELTA)
    assert 0.97 * bound <= ledger.spent_epsilon() <= bound * (1 + 1e-9)
    per_round = rdp_reference.epsilon([(SIGMA, Q, STEPS)], delta=DELTA)
    assert ledger.spent_epsilon() < 3 * 0.97 * per_round  # tighter than adding epsilons
    assert ledger.rounds_recorded == 3
    assert [e.round for e in ledger.entries] == [1, 2, 3]


def test_rounds_with_different_noise_compose_in_one_accountant(path: Path, key: bytes) -> None:
    ledger = PrivacyLedger.open(path, key=key, budget_epsilon=50.0, delta=DELTA)
    for sigma, q, steps in [(1.0, 0.01, 100), (2.0, 0.02, 300)]:
        ledger.reserve(noise_multiplier=sigma, sample_rate=q, steps=steps).settle(steps)
    bound = rdp_reference.epsilon([(1.0, 0.01, 100), (2.0, 0.02, 300)], delta=DELTA)
    assert 0.97 * bound <= ledger.spent_epsilon() <= bound * (1 + 1e-9)
    alone = rdp_reference.epsilon([(1.0, 0.01, 100)], delta=DELTA)
    assert ledger.spent_epsilon() > alone  # the second run is counted


def test_a_round_over_budget_is_refused_before_anything_is_recorded(path: Path, key: bytes) -> None:
    ledger = PrivacyLedger.open(path, key=key, budget_epsilon=2.0, delta=DELTA)
    _round(ledger, steps=50)
    spent, on_disk = ledger.spent_epsilon(), path.read_bytes()
    with pytest.raises(BudgetExhaustedError) as caught:
        ledger.reserve(noise_multiplier=SIGMA, sample_rate=Q, steps=100_000)
    error = caught.value
    assert error.spent == pytest.approx(spent)
    assert error.budget == 2.0
    assert error.projected > 2.0
    assert "nothing was spent" in str(error)
    assert len(ledger.entries) == 1
    assert path.read_bytes() == on_disk
    reopened = PrivacyLedger.open(path, key=key, budget_epsilon=2.0, delta=DELTA)
    assert reopened.spent_epsilon() == pytest.approx(spent)


def test_check_answers_before_a_round_without_recording(path: Path, key: bytes) -> None:
    ledger = PrivacyLedger.open(path, key=key, budget_epsilon=5.0, delta=DELTA)
    projected = ledger.check(noise_multiplier=SIGMA, sample_rate=Q, steps=STEPS)
    assert projected == pytest.approx(
        dp.epsilon_for(noise_multiplier=SIGMA, sample_rate=Q, steps=STEPS, delta=DELTA)
    )
    assert ledger.entries == () and ledger.spent_epsilon() == 0.0


def test_a_restart_reloads_the_same_spent_epsilon(path: Path, key: bytes) -> None:
    ledger = PrivacyLedger.open(path, key=key, budget_epsilon=10.0, delta=DELTA, run="run-1")
    _round(ledger, round=1)
    _round(ledger, round=2)
    reopened = PrivacyLedger.open(path, key=key, budget_epsilon=10.0, delta=DELTA, run="run-2")
    assert reopened.spent_epsilon() == ledger.spent_epsilon() > 0
    assert reopened.entries == ledger.entries
    _round(reopened, round=1)
    assert {e.run for e in reopened.entries} == {"run-1", "run-2"}
    assert reopened.spent_epsilon() > ledger.spent_epsilon()


def test_an_exhausted_budget_is_refused_in_the_next_run_too(path: Path, key: bytes) -> None:
    ledger = PrivacyLedger.open(path, key=key, budget_epsilon=1.0, delta=DELTA, run="run-1")
    allowed = ledger.max_steps(noise_multiplier=SIGMA, sample_rate=Q)
    _round(ledger, steps=allowed)
    next_run = PrivacyLedger.open(path, key=key, budget_epsilon=1.0, delta=DELTA, run="run-2")
    with pytest.raises(BudgetExhaustedError):
        next_run.reserve(noise_multiplier=SIGMA, sample_rate=Q, steps=1)
    assert len(next_run.entries) == 1


def test_max_steps_is_exactly_the_budget_boundary(path: Path, key: bytes) -> None:
    ledger = PrivacyLedger.open(path, key=key, budget_epsilon=2.0, delta=DELTA)
    n = ledger.max_steps(noise_multiplier=SIGMA, sample_rate=Q)
    assert ledger.check(noise_multiplier=SIGMA, sample_rate=Q, steps=n) <= 2.0
    with pytest.raises(BudgetExhaustedError):
        ledger.check(noise_multiplier=SIGMA, sample_rate=Q, steps=n + 1)


def test_an_unsettled_reservation_still_counts_after_reopening(path: Path, key: bytes) -> None:
    ledger = PrivacyLedger.open(path, key=key, budget_epsilon=10.0, delta=DELTA)
    ledger.reserve(noise_multiplier=SIGMA, sample_rate=Q, steps=STEPS, label="crashed")
    del ledger  # the process dies between training and settling
    reopened = PrivacyLedger.open(path, key=key, budget_epsilon=10.0, delta=DELTA)
    planned = dp.epsilon_for(noise_multiplier=SIGMA, sample_rate=Q, steps=STEPS, delta=DELTA)
    assert reopened.spent_epsilon() == pytest.approx(planned)
    assert [e.label for e in reopened.pending()] == ["crashed"]


def test_an_exception_during_training_keeps_the_reservation_counted(path: Path, key: bytes) -> None:
    ledger = PrivacyLedger.open(path, key=key, budget_epsilon=10.0, delta=DELTA)
    with pytest.raises(RuntimeError, match="trainer failed"):  # noqa: SIM117 - the order matters here
        with ledger.reserve(noise_multiplier=SIGMA, sample_rate=Q, steps=STEPS):
            raise RuntimeError("trainer failed")
    assert len(ledger.pending()) == 1
    assert ledger.spent_epsilon() > 0


def test_settling_replaces_planned_steps_by_steps_taken(path: Path, key: bytes) -> None:
    ledger = PrivacyLedger.open(path, key=key, budget_epsilon=10.0, delta=DELTA)
    reservation = ledger.reserve(noise_multiplier=SIGMA, sample_rate=Q, steps=STEPS)
    entry = reservation.settle(STEPS // 2)
    assert (entry.planned_steps, entry.steps, entry.status) == (STEPS, STEPS // 2, "settled")
    half = dp.epsilon_for(noise_multiplier=SIGMA, sample_rate=Q, steps=STEPS // 2, delta=DELTA)
    assert PrivacyLedger.open(
        path, key=key, budget_epsilon=10.0, delta=DELTA
    ).spent_epsilon() == pytest.approx(half)
    with pytest.raises(ValueError, match="already settled"):
        reservation.settle(1)


def test_opening_with_another_delta_is_refused(path: Path, key: bytes) -> None:
    PrivacyLedger.open(path, key=key, budget_epsilon=5.0, delta=DELTA)
    with pytest.raises(LedgerMismatchError, match="delta"):
        PrivacyLedger.open(path, key=key, budget_epsilon=5.0, delta=1e-6)


def test_a_larger_budget_needs_explicit_permission_and_is_recorded(path: Path, key: bytes) -> None:
    PrivacyLedger.open(path, key=key, budget_epsilon=5.0, delta=DELTA)
    with pytest.raises(LedgerMismatchError, match="allow_budget_increase"):
        PrivacyLedger.open(path, key=key, budget_epsilon=8.0, delta=DELTA)
    raised = PrivacyLedger.open(
        path, key=key, budget_epsilon=8.0, delta=DELTA, allow_budget_increase=True
    )
    assert raised.budget_epsilon == 8.0
    record, _ = store.load_json(path, key=key, kind="ledger")
    assert [(c["from"], c["to"]) for c in record["budget_changes"]] == [(5.0, 8.0)]


def test_a_smaller_budget_is_adopted(path: Path, key: bytes) -> None:
    PrivacyLedger.open(path, key=key, budget_epsilon=5.0, delta=DELTA)
    PrivacyLedger.open(path, key=key, budget_epsilon=3.0, delta=DELTA)
    assert PrivacyLedger.open(path, key=key, budget_epsilon=3.0, delta=DELTA).budget_epsilon == 3.0


def test_the_ledger_is_encrypted_on_disk(path: Path, key: bytes) -> None:
    ledger = PrivacyLedger.open(path, key=key, budget_epsilon=5.0, delta=DELTA)
    _round(ledger, label="round-label-visible?")
    assert b"noise_multiplier" not in path.read_bytes()
    assert b"round-label-visible" not in path.read_bytes()
    with pytest.raises(DecryptionError):
        PrivacyLedger.open(path, key=os.urandom(32), budget_epsilon=5.0, delta=DELTA)
    assert store.read_info(path, key=key)["metadata"]["spent_epsilon"] == pytest.approx(
        ledger.spent_epsilon()
    )


def test_a_private_round_through_the_ledger_spends_what_the_session_reports(
    path: Path, key: bytes, blobs
) -> None:
    X, y = blobs
    ledger = PrivacyLedger.open(path, key=key, budget_epsilon=10.0, delta=DELTA)
    session = DPSession(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, epochs=2)
    plan = session.plan(num_examples=len(X), batch_size=64)
    with ledger.reserve_plan(plan, round=1) as reservation:
        spec = ModelSpec(kind="mlp", in_features=10, num_classes=2, hidden_sizes=(8,))
        model = build_model(spec)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loader = DataLoader(TensorDataset(X, y), batch_size=64, shuffle=True)
        private_model, private_optimizer, private_loader = session(model, optimizer, loader)
        for _ in range(session.epochs):
            for xb, yb in private_loader:
                private_optimizer.zero_grad()
                nn.CrossEntropyLoss()(private_model(xb), yb).backward()
                private_optimizer.step()
        reservation.settle(session.steps_taken)
    assert ledger.spent_epsilon() == pytest.approx(session.epsilon(), rel=1e-9)
    assert ledger.entries[0].steps == plan.steps


# -- several processes of one silo, and per-process limits -----------------------------

_RESERVER = """
import os, sys, time
from pathlib import Path
from privacy.ledger import PrivacyLedger
path, me, other, n = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
ledger = PrivacyLedger.open(path, key=bytes.fromhex(os.environ["LEDGER_KEY"]),
                            budget_epsilon=1000.0, delta=1e-5, run=me.name)
me.touch()
deadline = time.monotonic() + 60
while not other.exists() and time.monotonic() < deadline:  # both hold the old ledger now
    time.sleep(0.01)
for i in range(n):
    ledger.reserve(noise_multiplier=1.0, sample_rate=0.01, steps=10, round=i).settle(10)
"""


def test_two_processes_reserving_on_one_ledger_lose_no_entry(path: Path, key: bytes) -> None:
    import subprocess
    import sys

    PrivacyLedger.open(path, key=key, budget_epsilon=1000.0, delta=DELTA)
    ready = [path.parent / "proc-a", path.parent / "proc-b"]
    env = {**os.environ, "LEDGER_KEY": key.hex()}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RESERVER, str(path), str(me), str(other), "4"], env=env
        )
        for me, other in (ready, ready[::-1])
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    ledger = PrivacyLedger.open(path, key=key, budget_epsilon=1000.0, delta=DELTA)
    assert sorted(e.run for e in ledger.entries) == ["proc-a"] * 4 + ["proc-b"] * 4
    assert all(e.status == "settled" for e in ledger.entries)
    bound = rdp_reference.epsilon([(1.0, 0.01, 80)], delta=DELTA)  # all 8 rounds, composed
    assert 0.97 * bound <= ledger.spent_epsilon() <= bound


def test_a_run_limit_refuses_what_the_runs_own_entries_would_pass(path: Path, key: bytes) -> None:
    earlier = PrivacyLedger.open(path, key=key, budget_epsilon=50.0, delta=DELTA, run="earlier")
    _round(earlier, steps=2000)
    ledger = PrivacyLedger.open(path, key=key, budget_epsilon=50.0, delta=DELTA, run="this")
    one_round = dp.epsilon_for(noise_multiplier=SIGMA, sample_rate=Q, steps=STEPS, delta=DELTA)
    two = dp.epsilon_for(noise_multiplier=SIGMA, sample_rate=Q, steps=2 * STEPS, delta=DELTA)
    ledger.restrict(run=(one_round + two) / 2)  # one round fits, two do not
    _round(ledger)
    assert ledger.run_epsilon() == pytest.approx(one_round)
    with pytest.raises(BudgetExhaustedError, match="this run's epsilon limit"):
        _round(ledger)
    assert len(ledger.entries) == 2  # the refusal recorded nothing


def test_a_total_cap_below_the_budget_holds_for_this_process_only(path: Path, key: bytes) -> None:
    ledger = PrivacyLedger.open(path, key=key, budget_epsilon=50.0, delta=DELTA)
    ledger.restrict(total=0.01)
    with pytest.raises(BudgetExhaustedError, match="this run's budget"):
        _round(ledger)
    reopened = PrivacyLedger.open(path, key=key, budget_epsilon=50.0, delta=DELTA)
    assert reopened.budget_epsilon == 50.0
    _round(reopened)  # no cap in this process
