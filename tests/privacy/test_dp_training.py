"""DP-SGD through DPSession with real Opacus: epsilon, clipping, unwrapping, Poisson batches."""

from __future__ import annotations

import math

import pytest
import rdp_reference
import torch
from opacus.accountants import RDPAccountant
from opacus.data_loader import DPDataLoader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core_training.models import ModelSpec, build_model
from privacy import dp
from privacy.dp import DPSession, IncompatibleModelError

SPEC = ModelSpec(kind="mlp", in_features=10, num_classes=2, hidden_sizes=(16, 8), dropout=0.0)
DELTA = 1e-5

pytestmark = [
    pytest.mark.filterwarnings("ignore:Secure RNG turned off"),
    pytest.mark.filterwarnings("ignore:Full backward hook is firing"),
    pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha"),
]


def _train(
    session: DPSession, model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, batch_size: int
):
    """The trainer's loop in miniature: every batch, empty or not, takes a step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(X, y), batch_size=batch_size, shuffle=True)
    private_model, private_optimizer, private_loader = session(model, optimizer, loader)
    criterion = nn.CrossEntropyLoss()
    empty = 0
    for _ in range(session.epochs):
        for xb, yb in private_loader:
            empty += len(yb) == 0
            private_optimizer.zero_grad()
            criterion(private_model(xb), yb).backward()
            private_optimizer.step()
    return private_model, private_optimizer, private_loader, empty


def test_reported_epsilon_matches_opacus_rdp_accountant(blobs) -> None:
    X, y = blobs
    torch.manual_seed(0)
    session = DPSession(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.1, epochs=3)
    _train(session, build_model(SPEC), X, y, batch_size=64)
    q = 64 / 512
    assert session.sample_rate == pytest.approx(q)
    assert session.steps_taken == 3 * 8
    reference = RDPAccountant()
    reference.history = [(1.1, q, 24)]
    expected = reference.get_epsilon(delta=DELTA)
    assert session.epsilon() == pytest.approx(expected, rel=0.01)
    # And a reference from the papers, over integer orders only (an upper bound).
    bound = rdp_reference.epsilon([(1.1, q, 24)], delta=DELTA)
    assert 0.97 * bound <= session.epsilon() <= bound * (1 + 1e-9)


def test_planned_steps_equal_the_steps_taken(blobs) -> None:
    X, y = blobs
    session = DPSession(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, epochs=2)
    plan = session.plan(num_examples=len(X), batch_size=50)
    _train(session, build_model(SPEC), X, y, batch_size=50)
    assert session.used_plan == plan
    assert session.steps_taken == plan.steps == dp.steps_for(2, plan.sample_rate)


def test_per_sample_gradients_are_clipped_before_noise(blobs) -> None:
    X, y = blobs
    clip = 0.01  # far below the raw per-sample norms, so clipping must act
    torch.manual_seed(0)
    session = DPSession(max_grad_norm=clip, delta=DELTA, noise_multiplier=1.0, epochs=1)
    model = build_model(SPEC)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(X, y), batch_size=64)
    private_model, private_optimizer, private_loader = session(model, optimizer, loader)
    xb, yb = next(batch for batch in private_loader if len(batch[1]) > 0)
    nn.CrossEntropyLoss()(private_model(xb), yb).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    per_sample = torch.cat([p.grad_sample.reshape(len(yb), -1) for p in params], dim=1)
    raw_norms = per_sample.norm(dim=1)
    assert (raw_norms > clip).all()

    private_optimizer.clip_and_accumulate()
    factors = (clip / (raw_norms + 1e-6)).clamp(max=1.0)
    clipped_norms = (per_sample * factors[:, None]).norm(dim=1)
    assert (clipped_norms <= clip * (1 + 1e-4)).all()
    summed = torch.cat([p.summed_grad.reshape(-1) for p in params])
    assert torch.allclose(summed, (per_sample * factors[:, None]).sum(0), atol=1e-6)
    assert summed.norm() <= clip * len(yb) * (1 + 1e-4)

    private_optimizer.add_noise()
    noisy = torch.cat([p.grad.reshape(-1) for p in params])
    assert not torch.allclose(noisy, summed)


def test_unwrapped_state_dict_loads_strictly_into_a_fresh_model(blobs) -> None:
    X, y = blobs
    model = build_model(SPEC)
    private_model, *_ = _train(
        DPSession(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, epochs=1),
        model,
        X,
        y,
        batch_size=64,
    )
    state = dp.unwrapped_state_dict(private_model)
    assert list(state) == list(build_model(SPEC).state_dict())
    assert not any("_module" in name for name in state)
    fresh = build_model(SPEC)
    fresh.load_state_dict(state, strict=True)
    assert all(
        torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), state.values(), strict=True)
    )


def test_target_epsilon_mode_lands_at_or_below_the_target(blobs) -> None:
    X, y = blobs
    session = DPSession(max_grad_norm=1.0, delta=DELTA, target_epsilon=2.0, epochs=3)
    _train(session, build_model(SPEC), X, y, batch_size=64)
    assert session.steps_taken == 24
    assert session.epsilon() <= 2.0
    assert session.epsilon() > 1.9  # and not far below: the noise was not overestimated


def test_poisson_loader_may_yield_empty_batches_and_each_still_takes_a_noisy_step() -> None:
    torch.manual_seed(3)
    X, y = torch.randn(20, 10), torch.randint(0, 2, (20,))
    session = DPSession(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, epochs=3)
    model = build_model(SPEC)
    _, _, private_loader, empty = _train(session, model, X, y, batch_size=2)
    assert isinstance(private_loader, DPDataLoader)
    assert empty > 0
    assert session.steps_taken == dp.steps_for(3, 1 / 10) == 30
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("batches", [7, 10, 93, 99])
def test_steps_for_mirrors_the_opacus_sampler(batches: int) -> None:
    dataset = TensorDataset(torch.zeros(batches, 1))
    dp_loader = DPDataLoader.from_data_loader(DataLoader(dataset, batch_size=1))
    assert dp.steps_for(1, 1 / batches) == len(dp_loader)
    assert dp.steps_for(3, 1 / batches) == 3 * len(dp_loader)


def test_noise_for_target_reaches_the_target_with_the_given_steps() -> None:
    sigma = dp.noise_for_target(
        target_epsilon=3.0, target_delta=DELTA, sample_rate=0.01, steps=1000
    )
    eps = rdp_reference.epsilon([(sigma, 0.01, 1000)], delta=DELTA)
    # The reference searches integer orders only, so it may sit up to ~2% above.
    assert 2.95 <= eps <= 3.0 * 1.02


def _rdp_floor(delta: float, max_order: int) -> float:
    """The smallest epsilon the RDP conversion (Balle et al. 2020) can state at any
    noise: with Renyi divergence 0, the best order up to ``max_order`` alone costs this."""
    return min(
        (math.log(1 / delta) - math.log(a)) / (a - 1) + math.log((a - 1) / a)
        for a in range(2, max_order + 1)
    )


def test_a_target_below_what_any_noise_reaches_is_refused_by_name() -> None:
    floor = _rdp_floor(DELTA, 63)  # Opacus's RDP orders end at 63: about 0.103
    with pytest.raises(dp.TargetUnreachableError, match="no noise level") as caught:
        dp.noise_for_target(
            target_epsilon=floor * 0.9, target_delta=DELTA, sample_rate=0.25, steps=16
        )
    assert caught.value.steps == 16 and caught.value.sample_rate == 0.25
    assert isinstance(caught.value, ValueError)  # callers catching ValueError still do


def test_a_target_just_above_the_floor_gets_a_noise_level() -> None:
    floor = _rdp_floor(DELTA, 63)
    sigma = dp.noise_for_target(
        target_epsilon=floor * 1.3, target_delta=DELTA, sample_rate=0.25, steps=16
    )
    eps = rdp_reference.epsilon([(sigma, 0.25, 16)], delta=DELTA)
    assert eps <= floor * 1.3 * 1.02


def test_noise_for_run_plans_all_rounds_at_the_loader_rate() -> None:
    # 100 rows in batches of 32: 4 batches, q = 1/4; 2 epochs x 3 rounds = 24 steps
    sigma = dp.noise_for_run(
        target_epsilon=2.0, delta=DELTA, num_examples=100, batch_size=32, epochs=6
    )
    assert sigma == dp.noise_for_target(
        target_epsilon=2.0, target_delta=DELTA, sample_rate=0.25, steps=24
    )


def test_privacy_parameters_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        dp.epsilon_for(1.1, 0.01, 100, DELTA)  # type: ignore[misc]
    with pytest.raises(TypeError):
        DPSession(1.0, DELTA, 1)  # type: ignore[misc]


def test_a_session_is_used_once(blobs) -> None:
    X, y = blobs
    session = DPSession(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, epochs=1)
    _train(session, build_model(SPEC), X, y, batch_size=64)
    with pytest.raises(RuntimeError, match="new one per round"):
        _train(session, build_model(SPEC), X, y, batch_size=64)


def test_a_loader_other_than_the_planned_one_is_refused(blobs) -> None:
    X, y = blobs
    session = DPSession(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, epochs=1)
    session.plan(num_examples=len(X), batch_size=64)
    with pytest.raises(ValueError, match="planned"):
        _train(session, build_model(SPEC), X, y, batch_size=32)


def test_batchnorm_is_refused_by_the_hook_with_the_fix_named() -> None:
    model = nn.Sequential(nn.Linear(10, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    session = DPSession(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, epochs=1)
    loader = DataLoader(
        TensorDataset(torch.zeros(8, 10), torch.zeros(8, dtype=torch.long)), batch_size=4
    )
    with pytest.raises(IncompatibleModelError, match="make_compatible"):
        session(model, torch.optim.SGD(model.parameters(), lr=0.1), loader)


def test_make_compatible_replaces_batchnorm_with_groupnorm() -> None:
    model = nn.Sequential(nn.Linear(10, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    fixed = dp.make_compatible(model)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in fixed.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in fixed.modules())
    assert dp.check_compatible(fixed) == []


class _RunningScale(nn.Module):
    """A trainable layer that keeps running statistics: nothing in Opacus can fix it."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4))
        self.register_buffer("running", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


def test_make_compatible_names_what_cannot_be_fixed() -> None:
    model = nn.Sequential(nn.Linear(10, 4), _RunningScale())
    with pytest.raises(IncompatibleModelError, match="no automatic fix") as caught:
        dp.make_compatible(model)
    assert "_RunningScale" in str(caught.value)


def test_small_cnn_with_groupnorm_trains_privately() -> None:
    spec = ModelSpec(
        kind="cnn", in_features=64, num_classes=3, image_shape=(1, 8, 8), channels=(4, 8)
    )
    torch.manual_seed(0)
    X, y = torch.randn(96, 64), torch.randint(0, 3, (96,))
    session = DPSession(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, epochs=1)
    private_model, *_ = _train(session, build_model(spec), X, y, batch_size=32)
    assert session.steps_taken == 3
    build_model(spec).load_state_dict(dp.unwrapped_state_dict(private_model), strict=True)


def test_release_removes_opacus_hooks(blobs) -> None:
    X, y = blobs
    model = build_model(SPEC)
    session = DPSession(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, epochs=1)
    _train(session, model, X, y, batch_size=64)
    plain = session.release()
    assert plain is model
    model(X[:4]).sum().backward()
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())


def test_the_trainer_accepts_a_session_as_its_privatize_hook(blobs) -> None:
    trainer = pytest.importorskip("core_training.trainer")
    from core_training.config import TrainConfig

    X, y = blobs
    config = TrainConfig(
        local_epochs=2, batch_size=64, optimizer="sgd", learning_rate=0.1, device="cpu", amp=False
    )
    session = DPSession(
        max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, epochs=config.local_epochs
    )
    plan = session.plan(num_examples=len(X), batch_size=config.batch_size)
    model = build_model(SPEC)
    result = trainer.fit(model, X.numpy(), y.numpy(), config, privatize=session)
    assert session.steps_taken == plan.steps == result.steps
    assert session.epsilon() == pytest.approx(plan.epsilon())
    build_model(SPEC).load_state_dict(dp.unwrapped_state_dict(model), strict=True)


def test_dp_noise_and_sampling_cannot_be_replayed_from_the_training_seed():
    """The trainer's seed is known to the server; the DP noise must not follow from it."""
    import numpy as np

    from core_training import trainer
    from core_training.config import TrainConfig

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 8)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)

    def private_weights() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = build_model(ModelSpec("mlp", 8, 2))
        session = DPSession(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, epochs=2)
        trainer.fit(model, X, y, TrainConfig(local_epochs=2, batch_size=20), privatize=session)
        return model.state_dict()

    first, second = private_weights(), private_weights()
    assert any(not torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("mode", ["bookkeeping", "ghost", "hooks", "functorch", "ew"])
def test_every_grad_sample_mode_trains_through_the_trainer_with_the_same_accounting(
    blobs, mode
) -> None:
    from core_training.config import TrainConfig
    from core_training.trainer import evaluate, fit

    X, y = blobs
    config = TrainConfig(
        local_epochs=4, batch_size=64, optimizer="sgd", learning_rate=0.2, device="cpu", amp=False
    )
    session = DPSession(
        max_grad_norm=1.0,
        delta=DELTA,
        noise_multiplier=0.5,
        epochs=config.local_epochs,
        grad_sample_mode=mode,
    )
    plan = session.plan(num_examples=len(X), batch_size=config.batch_size)
    model = build_model(SPEC)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, X.numpy(), y.numpy(), config, privatize=session)
    assert session.used_grad_sample_mode == mode
    assert session.steps_taken == plan.steps == result.steps
    assert session.epsilon() == pytest.approx(plan.epsilon())
    state = dp.unwrapped_state_dict(model)
    assert list(state) == list(before)
    assert any(not torch.equal(state[k], before[k]) for k in before)
    fresh = build_model(SPEC)
    fresh.load_state_dict(state, strict=True)
    # the noise is OS-seeded, so this run differs from any other: a separable problem
    # is learned well above chance whatever the draw
    assert evaluate(fresh, X.numpy(), y.numpy())["accuracy"] > 0.9


def test_an_unknown_grad_sample_mode_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="bookkeeping, ghost, hooks, functorch, ew"):
        DPSession(
            max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, epochs=1, grad_sample_mode="x"
        )
