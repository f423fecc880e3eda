"""The two accountants a silo may choose: PRV checked against an independent privacy
loss distribution (Google's dp_accounting, PLD accountant, add-or-remove-one), RDP kept
for ledgers that ask for it; a ledger's history reads under either."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from privacy import dp, store
from privacy.ledger import LEDGER_FORMAT, LEDGER_VERSION, BudgetExhaustedError, PrivacyLedger

pld_accountant = pytest.importorskip("dp_accounting.pld.pld_privacy_accountant")
dp_event = pytest.importorskip("dp_accounting.dp_event")

DELTA = 1e-5

pytestmark = [pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")]

HISTORIES = {
    "one long run": [(1.0, 0.01, 1000)],
    "few large batches": [(1.1, 0.25, 24)],
    "two runs, two noise levels": [(0.8, 0.05, 200), (1.5, 0.1, 60)],
}


def pld_epsilon(history: list[tuple[float, float, int]], delta: float = DELTA) -> float:
    """Epsilon of the same history by dp_accounting's PLD accountant (its pessimistic,
    upper estimate), for Poisson-sampled Gaussian steps, both neighbouring directions."""
    accountant = pld_accountant.PLDAccountant(value_discretization_interval=1e-4)
    for sigma, q, steps in history:
        event = dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma))
        accountant.compose(event, steps)
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize("name", list(HISTORIES))
def test_prv_epsilon_is_within_its_error_below_and_2_percent_above_an_independent_pld(
    name: str,
) -> None:
    history = HISTORIES[name]
    reference = pld_epsilon(history)
    epsilon, accountant = dp.account(history, delta=DELTA, accountant="prv")
    assert accountant == "prv"
    assert epsilon >= reference - dp.PRV_EPS_ERROR
    assert epsilon <= reference * 1.02


@pytest.mark.parametrize("name", list(HISTORIES))
def test_prv_is_tighter_than_rdp_for_the_same_history(name: str) -> None:
    history = HISTORIES[name]
    prv = dp.epsilon_of_history(history, delta=DELTA, accountant="prv")
    rdp = dp.epsilon_of_history(history, delta=DELTA, accountant="rdp")
    assert prv < rdp
    assert rdp >= pld_epsilon(history)  # RDP is a valid, looser bound


def test_rounds_of_one_noise_level_cost_prv_one_mechanism() -> None:
    rounds = [(1.0, 0.01, 100)] * 30
    assert dp.account(rounds, delta=DELTA, accountant="prv") == dp.account(
        [(1.0, 0.01, 3000)], delta=DELTA, accountant="prv"
    )


def test_a_history_of_many_mechanisms_is_accounted_by_rdp_and_says_so() -> None:
    history = [(0.8 + 0.1 * i, 0.01, 50) for i in range(dp.PRV_MAX_MECHANISMS + 1)]
    epsilon, accountant = dp.account(history, delta=DELTA, accountant="prv")
    assert accountant == "rdp"
    assert epsilon == dp.epsilon_of_history(history, delta=DELTA, accountant="rdp")


def test_noise_for_a_target_by_prv_meets_it_and_needs_less_than_rdp() -> None:
    kwargs = {"target_epsilon": 3.0, "target_delta": DELTA, "sample_rate": 0.02, "steps": 500}
    sigma_prv = dp.noise_for_target(**kwargs, accountant="prv")
    sigma_rdp = dp.noise_for_target(**kwargs, accountant="rdp")
    assert sigma_prv < sigma_rdp
    reached = pld_epsilon([(sigma_prv, 0.02, 500)])
    assert 3.0 * 0.97 <= reached <= 3.0  # the independent epsilon is at or just below it


def test_a_target_below_prvs_resolution_is_unreachable() -> None:
    with pytest.raises(dp.TargetUnreachableError):
        dp.noise_for_target(
            target_epsilon=0.005, target_delta=DELTA, sample_rate=0.25, steps=16, accountant="prv"
        )


def _rounds(ledger: PrivacyLedger) -> None:
    for r in range(3):
        ledger.reserve(noise_multiplier=1.0, sample_rate=0.01, steps=300, round=r).settle(300)


def test_a_ledger_written_under_rdp_reads_under_either(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "ledger.enc"
    written = PrivacyLedger.open(path, key=key, budget_epsilon=10.0, delta=DELTA)
    _rounds(written)
    assert written.summary()["accountant"] == "rdp"
    history = [(1.0, 0.01, 900)]
    as_prv = PrivacyLedger.open(path, key=key, budget_epsilon=10.0, delta=DELTA, accountant="prv")
    assert as_prv.spent() == (dp.epsilon_of_history(history, delta=DELTA, accountant="prv"), "prv")
    assert as_prv.summary()["accountant"] == "prv"
    as_rdp = PrivacyLedger.open(path, key=key, budget_epsilon=10.0, delta=DELTA, accountant="rdp")
    assert as_rdp.spent_epsilon() == written.spent_epsilon()
    assert as_prv.spent_epsilon() < as_rdp.spent_epsilon()


def test_a_ledger_file_in_todays_format_opens_under_prv(tmp_path: Path, key: bytes) -> None:
    # The record and metadata exactly as ledgers were written before accountants could
    # be chosen (no accountant in the metadata).
    path = tmp_path / "old.ledger"
    entry = {
        "id": "a1",
        "run": "r1",
        "round": 1,
        "label": "silo",
        "noise_multiplier": 1.0,
        "sample_rate": 0.01,
        "planned_steps": 300,
        "steps": 300,
        "status": "settled",
        "reserved_at": "2026-11-29T10:00:00+00:00",
        "settled_at": "2026-11-29T10:01:00+00:00",
    }
    record = {
        "format": LEDGER_FORMAT,
        "version": LEDGER_VERSION,
        "accountant": "rdp",
        "delta": DELTA,
        "budget_epsilon": 10.0,
        "created": "2026-11-29T10:00:00+00:00",
        "budget_changes": [],
        "entries": [entry],
    }
    metadata = {"budget_epsilon": 10.0, "delta": DELTA, "spent_epsilon": 1.0, "entries": 1}
    store.save_json(path, record, key=key, kind="ledger", metadata=metadata)
    ledger = PrivacyLedger.open(path, key=key, budget_epsilon=10.0, delta=DELTA, accountant="prv")
    assert ledger.spent() == (
        dp.epsilon_of_history([(1.0, 0.01, 300)], delta=DELTA, accountant="prv"),
        "prv",
    )


def test_the_budget_is_enforced_by_the_ledgers_accountant(tmp_path: Path, key: bytes) -> None:
    # 900 steps at sigma 1, q 0.01 cost ~1.2 by PRV and ~1.4 by RDP (dp_accounting: ~1.2):
    # a budget between the two admits the third round under PRV only.
    history = [(1.0, 0.01, 900)]
    prv = dp.epsilon_of_history(history, delta=DELTA, accountant="prv")
    rdp = dp.epsilon_of_history(history, delta=DELTA, accountant="rdp")
    budget = (prv + rdp) / 2
    assert pld_epsilon(history) <= budget
    for accountant, fits in (("prv", True), ("rdp", False)):
        path = tmp_path / f"{accountant}.ledger"
        ledger = PrivacyLedger.open(
            path, key=key, budget_epsilon=budget, delta=DELTA, accountant=accountant
        )
        ledger.reserve(noise_multiplier=1.0, sample_rate=0.01, steps=600).settle(600)
        try:
            ledger.check(noise_multiplier=1.0, sample_rate=0.01, steps=300)
        except BudgetExhaustedError:
            assert not fits
        else:
            assert fits


def test_prv_on_a_ledger_of_one_run_is_fast_enough_for_every_message() -> None:
    dp._epsilon.cache_clear()
    started = time.perf_counter()
    dp.account([(1.0, 0.01, 100)] * 50, delta=DELTA, accountant="prv")
    assert time.perf_counter() - started < 30  # measured: ~0.3 s idle, a few s under load
