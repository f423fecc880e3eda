"""Each silo owns its privacy: a real deployment whose first silo's policy requires DP,
limits a run to epsilon 2 and sets a lifetime budget of 6. The run config can ask for
more protection, never for less: the silo declines before it sends anything, and the
budget, key and ledger it uses are its own."""

from __future__ import annotations

import pytest
from deploy_helpers import RUN_TIMEOUT, node_name, start_deployment

from privacy import keys, store
from privacy.crypto import DecryptionError
from privacy.ledger import PrivacyLedger

pytestmark = pytest.mark.deployment

STRICT = 0  # the silo whose policy is strict; the two others allow runs without DP
POLICY = {
    "silo-id": "hospital-a",
    "privacy": {"require-dp": True, "max-epsilon-per-run": 2.0, "budget": 6.0},
}
# One round: each assertion is about the statistics step or the first training.
RUN = {"num-server-rounds": 1, "min-nodes": 2, "validation": "server"}


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory):
    yield from start_deployment(
        tmp_path_factory.mktemp("policy-federation"),
        silos=3,
        policies={STRICT: POLICY},
        database=False,
    )


def _run(federation, **config):
    run = federation.run({**RUN, **config}, timeout=RUN_TIMEOUT)
    assert run.returncode == 0, run.output[-4000:]
    return run


def test_a_run_without_dp_is_declined_before_the_silo_sends_anything(federation):
    silo = federation.silos[STRICT]
    run = _run(federation, dp=False, **{"run-name": "no-dp"})
    strict = node_name(federation, STRICT)
    reason = run.summary["policy_declined"][strict]
    assert "privacy.require-dp" in reason
    assert run.history()[0]["policy_declined"] == {strict: reason}
    for entry in run.history()[1:]:  # never sampled, so it never sent weights
        assert entry["num_sampled"] == 2 and strict not in entry["clients"]
    assert f"Statistics: {strict} declined" in run.output
    assert not silo.ledger.exists()  # nothing was spent, not even opened
    assert run.summary["stop_reason"] == "completed"


def test_a_run_above_the_silos_epsilon_per_run_is_declined(federation):
    run = _run(federation, dp=True, **{"target-epsilon": 3.0, "run-name": "eps-3"})
    reason = run.summary["policy_declined"][node_name(federation, STRICT)]
    assert "privacy.max-epsilon-per-run" in reason and "3" in reason
    assert not federation.silos[STRICT].ledger.exists()


def test_the_silo_keeps_its_own_budget_key_and_ledger_whatever_the_run_config_says(
    federation, tmp_path
):
    silo = federation.silos[STRICT]
    operator_key = keys.generate_key_file(tmp_path / "operator.key")
    run = _run(
        federation,
        dp=True,
        **{
            "target-epsilon": 1.5,
            "privacy-budget": 100.0,  # larger than the silo's: the policy's holds
            "key-file": str(operator_key),  # the server's own key; no silo opens it
            "run-name": "eps-1-5",
        },
    )
    assert run.summary["policy_declined"] == {}
    assert node_name(federation, STRICT) in run.history()[-1]["clients"]
    silo_key = keys.load_key_file(silo.key_file)
    ledger = PrivacyLedger.open(
        silo.ledger, key=silo_key, budget_epsilon=6.0, delta=1e-5, accountant="prv"
    )
    assert ledger.budget_epsilon == 6.0
    assert 0 < ledger.spent_epsilon() <= 1.5 + 0.01  # the policy's PRV, stated within 0.01
    assert {e.label for e in ledger.entries} == {"hospital-a"}  # the policy's silo id
    with pytest.raises(DecryptionError):
        store.load_json(silo.ledger, key=keys.load_key_file(operator_key), kind="ledger")
    # what the silo reported is its ledger's total: the server shows it per silo id
    reported = run.history()[-1]["epsilon_by_silo"]["hospital-a"]
    assert reported == pytest.approx(ledger.spent_epsilon())
