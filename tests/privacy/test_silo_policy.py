"""The silo's policy: a run config may only ask for more protection, never less."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from privacy.policy import (
    PolicyDeclined,
    PolicyError,
    RunRequest,
    SiloPolicy,
    decide,
    find_policy,
)


def request(**changes: object) -> RunRequest:
    base = {
        "dp": True,
        "target_epsilon": 3.0,
        "delta": 1e-5,
        "budget": 10.0,
        "local_epochs": 2,
        "batch_size": 32,
    }
    return RunRequest(**{**base, **changes})  # type: ignore[arg-type]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_a_deployed_silo_without_a_policy_requires_dp() -> None:
    with pytest.raises(PolicyDeclined) as caught:
        decide(SiloPolicy.defaults(), request(dp=False))
    assert caught.value.key == "privacy.require-dp"


def test_a_simulated_silo_may_train_without_dp_by_default() -> None:
    grant = decide(SiloPolicy.defaults(simulated=True), request(dp=False))
    assert grant.dp is False


def test_running_without_dp_is_the_silos_explicit_choice(tmp_path: Path) -> None:
    policy = SiloPolicy.load(write(tmp_path, "[privacy]\nrequire-dp = false\n"))
    assert decide(policy, request(dp=False)).dp is False


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"target_epsilon": 4.5}, "privacy.max-epsilon-per-run"),
        ({"delta": 1e-7}, "privacy.delta"),
        ({"local_epochs": 21}, "resources.max-local-epochs"),
        ({"batch_size": 4097}, "resources.max-batch-size"),
        ({"num_parameters": 20_000_001}, "resources.max-parameters"),
    ],
)
def test_a_request_beyond_the_defaults_is_declined_naming_the_key(
    changes: dict[str, object], key: str
) -> None:
    with pytest.raises(PolicyDeclined) as caught:
        decide(SiloPolicy.defaults(), request(**changes))
    assert caught.value.key == key
    assert key in str(caught.value)


def test_the_lifetime_budget_is_the_policys_and_a_request_only_lowers_the_runs_cap() -> None:
    larger = decide(SiloPolicy.defaults(), request(budget=50.0))
    assert larger.budget == 10.0 and larger.budget_cap == 10.0
    smaller = decide(SiloPolicy.defaults(), request(budget=5.0))
    assert smaller.budget == 10.0 and smaller.budget_cap == 5.0


def test_the_delta_is_the_policys_even_when_the_run_asks_for_a_looser_one() -> None:
    assert decide(SiloPolicy.defaults(), request(delta=1e-3)).delta == 1e-5


def test_dp_statistics_take_their_epsilon_from_the_runs_target(tmp_path: Path) -> None:
    policy = SiloPolicy.load(write(tmp_path, '[statistics]\nshare = "dp"\nepsilon = 0.5\n'))
    grant = decide(policy, request(target_epsilon=3.0))
    assert grant.target_epsilon == pytest.approx(2.5)
    assert grant.run_epsilon == pytest.approx(3.0)
    with pytest.raises(PolicyDeclined, match=r"statistics\.epsilon"):
        decide(policy, request(target_epsilon=0.5))


def test_median_imputation_is_declined_when_histograms_are_not_shared(tmp_path: Path) -> None:
    policy = SiloPolicy.load(write(tmp_path, "[statistics]\nhistograms = false\n"))
    with pytest.raises(PolicyDeclined, match=r"statistics\.histograms"):
        decide(policy, request(median_imputation=True))


def test_a_full_policy_file_is_read(tmp_path: Path) -> None:
    text = """
silo-id = "hospital-a"
[privacy]
require-dp = true
max-epsilon-per-run = 2
budget = 6.5
delta = 1e-6
min-noise-multiplier = 0.8
[statistics]
share = "none"
histograms = false
[evaluation]
max-evaluations-per-run = 1
[resources]
max-local-epochs = 3
max-batch-size = 128
max-parameters = 1_000
"""
    policy = SiloPolicy.load(write(tmp_path, text))
    assert policy.silo_id == "hospital-a"
    assert policy.privacy.budget == 6.5 and policy.privacy.max_epsilon_per_run == 2.0
    assert policy.privacy.delta == 1e-6 and policy.privacy.min_noise_multiplier == 0.8
    assert policy.statistics.share == "none" and not policy.statistics.histograms
    assert policy.evaluation.max_evaluations_per_run == 1
    assert policy.resources.max_parameters == 1000
    assert policy.source.endswith("policy.toml")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("budget = 3\n", "unknown key(s) budget"),
        ("[privacy]\nbugdet = 3.0\n", "no key 'bugdet'"),
        ("[privacy]\nbudget = -1.0\n", "privacy.budget must be a positive number"),
        ("[privacy]\nbudget = inf\n", "privacy.budget must be a positive number"),
        ("[privacy]\nrequire-dp = 1\n", "privacy.require-dp must be bool"),
        ('[statistics]\nshare = "some"\n', "statistics.share must be one of"),
        ('silo-id = "../other"\n', "silo-id must be a plain name"),
        ("[privacy\n", "not valid TOML"),
    ],
)
def test_a_bad_policy_file_is_one_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(PolicyError) as caught:
        SiloPolicy.load(write(tmp_path, text))
    assert needle in str(caught.value)
    assert "policy.toml" in str(caught.value)


def test_a_named_policy_that_is_missing_is_an_error_not_the_defaults(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        find_policy(str(tmp_path / "nope.toml"), tmp_path, simulated=False)


def test_the_policy_in_the_silos_home_applies_when_none_is_named(tmp_path: Path) -> None:
    write(tmp_path, "[privacy]\nbudget = 2.0\n")
    assert find_policy(None, tmp_path, simulated=False).privacy.budget == 2.0
    assert find_policy(None, tmp_path / "empty", simulated=False).privacy.require_dp


def test_the_grant_never_lets_the_run_spend_more_than_it_asked() -> None:
    grant = decide(SiloPolicy.defaults(), request(target_epsilon=2.0))
    assert grant.run_epsilon == 2.0
    assert math.isfinite(grant.budget_cap)


def test_the_accountant_is_the_policys_and_prv_by_default(tmp_path: Path) -> None:
    assert decide(SiloPolicy.defaults(), request()).accountant == "prv"
    assert decide(SiloPolicy.defaults(simulated=True), request()).accountant == "prv"
    policy = SiloPolicy.load(write(tmp_path, '[privacy]\naccountant = "rdp"\n'))
    assert decide(policy, request()).accountant == "rdp"
    assert "accountant rdp" in policy.describe()


def test_an_unknown_accountant_is_refused_by_its_key(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"privacy\.accountant must be one of prv, rdp"):
        SiloPolicy.load(write(tmp_path, '[privacy]\naccountant = "moments"\n'))


def test_dp_statistics_above_the_runs_target_are_declined(tmp_path: Path) -> None:
    text = '[privacy]\nrequire-dp = false\n[statistics]\nshare = "dp"\nepsilon = 3.0\n'
    policy = SiloPolicy.load(write(tmp_path, text))
    with pytest.raises(PolicyDeclined) as caught:
        decide(policy, request(dp=False, target_epsilon=2.0))
    assert caught.value.key == "statistics.epsilon"
