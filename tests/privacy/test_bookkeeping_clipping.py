"""Book-keeping clipping against Opacus: the same clipped sums, steps and accounting."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core_training.config import TrainConfig
from core_training.data import load_builtin
from core_training.models import ModelSpec, build_model
from core_training.pipeline import model_spec_for
from privacy import dp
from privacy.bookkeeping import BookkeepingClipper, UnsupportedLayerError, unsupported_layers
from privacy.dp import DPSession

DELTA = 1e-5

pytestmark = [
    pytest.mark.filterwarnings("ignore:Secure RNG turned off"),
    pytest.mark.filterwarnings("ignore:Full backward hook is firing"),
    pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha"),
]


class _EveryLayer(nn.Module):
    """Each supported layer in a less common form: a strided, grouped convolution,
    GroupNorm, LayerNorm and linear layers on sequences (one of them with a frozen bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2, groups=2)
        self.group_norm = nn.GroupNorm(2, 4)
        self.layer_norm = nn.LayerNorm(9)
        self.wide = nn.Linear(9, 8)  # 4 positions of 9: the Gram matrices are smaller
        self.narrow = nn.Linear(8, 3)  # per-example gradients are smaller
        self.narrow.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.group_norm(self.conv(x.reshape(-1, 2, 6, 6))).flatten(2)  # (n, 4, 9)
        return self.narrow(torch.relu(self.wide(self.layer_norm(h)))).mean(1)


def _digits_cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    table = load_builtin("digits")
    model = build_model(model_spec_for(table, TrainConfig(model="cnn")))
    X = torch.as_tensor(table.X[:48], dtype=torch.float32)
    return model, (X - X.mean()) / X.std(), torch.as_tensor(table.y[:48], dtype=torch.long)


def _mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = build_model(ModelSpec(kind="mlp", in_features=20, num_classes=3))  # (128, 64)
    return model, torch.randn(48, 20), torch.randint(0, 3, (48,))


def _every_layer() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    return _EveryLayer(), torch.randn(48, 72), torch.randint(0, 3, (48,))


def _opacus(
    model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, criterion: nn.Module, clip: float
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Opacus's clipped sum (hooks mode, its DP optimizer's clip_and_accumulate) and the
    per-example gradient norms, on a copy of ``model``; dropout draws from seed 5."""
    model = copy.deepcopy(model)
    wrapped = GradSampleModule(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = DPOptimizer(
        torch.optim.SGD(params, lr=0.1),
        noise_multiplier=0.0,
        max_grad_norm=clip,
        expected_batch_size=len(yb),
    )
    per_example = copy.deepcopy(criterion)
    per_example.reduction = "none"
    torch.manual_seed(5)
    # a mean loss: Opacus's hooks multiply by the batch size, so grad_sample holds the
    # gradient of each example's own loss
    per_example(wrapped(xb), yb).mean().backward()
    norms = torch.cat([p.grad_sample.reshape(len(yb), -1) for p in params], 1).norm(dim=1)
    optimizer.clip_and_accumulate()
    return [p.summed_grad for p in params], norms


@pytest.mark.parametrize("build", [_mlp, _digits_cnn, _every_layer])
def test_the_clipped_sum_is_opacus_per_example_clipping_with_class_weights(build) -> None:
    torch.manual_seed(0)
    model, X, y = build()
    weights = torch.linspace(0.5, 2.0, model(X[:1]).shape[1])
    criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=0.1)  # as the trainer's
    _, norms = _opacus(model, X, y, criterion, clip=1.0)
    clip = float(norms.median())  # about half the examples are clipped
    expected, _ = _opacus(model, X, y, criterion, clip=clip)

    session = DPSession(max_grad_norm=clip, delta=DELTA, noise_multiplier=1.0, epochs=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(X, y), batch_size=16)
    private_model, _, _, private_criterion = session(model, optimizer, loader, criterion)
    torch.manual_seed(5)
    private_criterion(private_model(X), y).backward()  # the trainer's loss.backward()

    assert session.used_grad_sample_mode == "bookkeeping"
    assert (norms > clip).any() and (norms < clip).any()
    got = [p.grad for p in model.parameters() if p.requires_grad]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=0)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_every_step_is_counted_as_opacus_counts_it_empty_batches_included() -> None:
    torch.manual_seed(3)
    X, y = torch.randn(20, 10), torch.randint(0, 2, (20,))
    model = build_model(ModelSpec(kind="mlp", in_features=10, num_classes=2))
    session = DPSession(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, epochs=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(X, y), batch_size=2)  # q = 1/10: empty batches
    private_model, private_optimizer, private_loader, criterion = session(
        model, optimizer, loader, nn.CrossEntropyLoss()
    )
    steps = empty = 0
    for _ in range(3):
        for xb, yb in private_loader:
            private_optimizer.zero_grad(set_to_none=True)
            criterion(private_model(xb), yb).backward()
            if len(yb) == 0:
                empty += 1
                assert all(torch.count_nonzero(p.grad) == 0 for p in model.parameters())
            private_optimizer.step()
            if len(yb) == 0:  # pure noise: std sigma * C over the expected batch size (2)
                noise = torch.cat([p.grad.flatten() for p in model.parameters()])
                assert float(noise.std()) == pytest.approx(1.0 * 1.0 / 2, rel=0.05)
            steps += 1
    assert session.used_grad_sample_mode == "bookkeeping"
    assert empty > 0
    assert session.steps_taken == steps == dp.steps_for(3, 1 / 10)
    reference = RDPAccountant()
    reference.history = [(1.0, 1 / 10, steps)]
    assert session.epsilon() == pytest.approx(reference.get_epsilon(delta=DELTA))


def test_the_trainer_trains_privately_with_class_weights_and_fedprox() -> None:
    from core_training.trainer import fit

    torch.manual_seed(0)
    model, X, y = _digits_cnn()
    config = TrainConfig(
        local_epochs=2, batch_size=16, optimizer="sgd", learning_rate=0.1, label_smoothing=0.1
    )
    session = DPSession(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, epochs=2)
    plan = session.plan(num_examples=len(y), batch_size=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(
        model,
        X.numpy(),
        y.numpy(),
        config,
        class_weights=np.linspace(0.5, 2.0, 10),
        privatize=session,
        proximal_mu=0.1,
    )
    assert session.used_grad_sample_mode == "bookkeeping"
    assert session.steps_taken == plan.steps == result.steps
    assert np.isfinite(result.metrics["train_loss"])
    state = dp.unwrapped_state_dict(model)
    assert any(not torch.equal(state[k], before[k]) for k in before)
    assert session.release() is model
    assert not model._forward_hooks and not any(m._forward_hooks for m in model.modules())


class _Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3)
        self.head = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x[:, None, :]).flatten(1))


def test_a_layer_without_a_rule_is_named_and_the_session_falls_back_to_ghost() -> None:
    model = _Conv1dNet()
    assert unsupported_layers(model) == ["conv (Conv1d)"]
    with pytest.raises(UnsupportedLayerError, match=r"conv \(Conv1d\).*grad_sample_mode='ghost'"):
        BookkeepingClipper(model, max_grad_norm=1.0)

    from core_training.trainer import fit

    X, y = np.random.default_rng(0).normal(size=(64, 10)), np.arange(64) % 2
    session = DPSession(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, epochs=1)
    config = TrainConfig(local_epochs=1, batch_size=16, optimizer="sgd", class_weighting="none")
    result = fit(model, X, y, config, privatize=session)
    assert session.used_grad_sample_mode == "ghost"
    assert session.steps_taken == result.steps == 4


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(torch.relu(self.layer(x)))


def test_a_layer_used_twice_in_one_forward_pass_is_refused() -> None:
    model = _Shared()
    clipper = BookkeepingClipper(model, max_grad_norm=1.0)
    loss = clipper.criterion(nn.CrossEntropyLoss())(model(torch.randn(8, 4)), torch.zeros(8).long())
    with pytest.raises(RuntimeError, match=r"more than once.*ghost"):
        loss.backward()


def test_a_forward_pass_outside_the_loss_does_not_disturb_clipping() -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(kind="mlp", in_features=20, num_classes=3, dropout=0.0))
    X, y = torch.randn(48, 20), torch.randint(0, 3, (48,))
    criterion = nn.CrossEntropyLoss()
    expected, _ = _opacus(model, X, y, criterion, clip=0.5)
    clipper = BookkeepingClipper(model, max_grad_norm=0.5)
    model(X[:5])  # e.g. logits for a metric, with gradients enabled
    clipper.criterion(criterion)(model(X), y).backward()
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, atol=1e-5, rtol=0)
