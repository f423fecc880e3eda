"""The private round exactly as the ClientApp runs it: ghost clipping with class weights
and the FedProx term, the ledger reserved and settled, the run held to its target."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "privacy"))
import rdp_reference

from core_training.config import TrainConfig
from core_training.data import load_builtin
from core_training.models import build_model
from core_training.pipeline import model_spec_for, prepare_local, split
from fl_client.local_round import DPOptions, open_ledger, train_round
from fl_client.silo import Silo
from privacy.dp import sample_rate_for, steps_for
from privacy.policy import SiloPolicy

pytestmark = [
    pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha"),
    pytest.mark.filterwarnings("ignore:Secure RNG turned off"),
    pytest.mark.filterwarnings("ignore:Full backward hook is firing"),
]


@pytest.fixture
def silo(tmp_path: Path) -> Silo:
    table = load_builtin("synthetic", rows=600, features=8, minority_fraction=0.2, seed=3)
    train, val = split(table, test_fraction=0.2, seed=0)
    return Silo("silo-p", train, val, 0, tmp_path / "p.ledger", SiloPolicy.defaults())


@pytest.mark.parametrize("proximal_mu", [0.0, 0.1])
def test_a_private_round_with_class_weights_spends_what_an_independent_accountant_says(
    silo: Silo, key: bytes, proximal_mu: float
) -> None:
    torch.manual_seed(0)
    config = TrainConfig(local_epochs=2, batch_size=64, class_weighting="balanced")
    prepared = prepare_local(silo.train, config)
    assert prepared.class_weights is not None and prepared.class_weights[1] > 1.5
    model = build_model(model_spec_for(silo.train, config))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dp = DPOptions(target_epsilon=2.0, delta=1e-5, max_grad_norm=1.0, budget=10.0)
    ledger = open_ledger(silo.ledger_path, key=key, dp=dp, run="r1")
    result = train_round(
        model,
        silo,
        config,
        preprocessor=prepared.preprocessor,
        class_weights=prepared.class_weights,
        server_round=1,
        proximal_mu=proximal_mu,
        dp=dp,
        ledger=ledger,
    )
    assert result.ok and result.state is not None
    assert any(not torch.equal(before[k], result.state[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in result.state.values())
    (entry,) = ledger.entries
    q = sample_rate_for(num_examples=len(silo.train), batch_size=64)
    assert entry.sample_rate == pytest.approx(q)
    assert entry.steps == steps_for(2, q) and entry.status == "settled"
    bound = rdp_reference.epsilon([(entry.noise_multiplier, q, entry.steps)], delta=1e-5)
    assert 0.97 * bound <= result.epsilon <= bound * (1 + 1e-9)
    assert result.epsilon <= 2.0 + 1e-6


def test_a_run_is_held_to_its_target_when_the_server_sends_more_rounds(
    silo: Silo, key: bytes
) -> None:
    config = TrainConfig(local_epochs=1, batch_size=64)
    prepared = prepare_local(silo.train, config)
    dp = DPOptions(target_epsilon=1.0, delta=1e-5, max_grad_norm=1.0, budget=10.0, run_epsilon=1.0)
    results = []
    for server_round in (1, 2, 3):  # the noise was calibrated for one round
        ledger = open_ledger(silo.ledger_path, key=key, dp=dp, run="flwr-run-7")
        model = build_model(model_spec_for(silo.train, config))
        results.append(
            train_round(
                model,
                silo,
                config,
                preprocessor=prepared.preprocessor,
                class_weights=None,
                server_round=server_round,
                dp=dp,
                ledger=ledger,
            )
        )
    assert [r.status for r in results] == ["ok", "declined", "declined"]
    assert "this run's epsilon limit" in results[1].reason
    assert results[0].epsilon == pytest.approx(results[2].epsilon)  # nothing more spent
    assert np.isfinite(results[0].epsilon) and results[0].epsilon <= 1.0 + 1e-6
