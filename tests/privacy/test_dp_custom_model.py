"""Custom models under DP-SGD: a layer Opacus cannot train is refused by name (fedsilo
never swaps layers behind the author's back); the worked examples train privately."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core_training.config import TrainConfig
from core_training.models import ModelSpec, build_model
from core_training.trainer import fit
from privacy.dp import DPSession, IncompatibleModelError, incompatible_layers, require_compatible

DIGITS = {"kind": "custom", "in_features": 64, "num_classes": 10, "image_shape": (1, 8, 8)}


def resnet(norm: str) -> torch.nn.Module:
    spec = ModelSpec(
        **DIGITS,
        factory="examples.resnet_small:build",
        factory_args={"width": 8, "norm": norm},
    )
    return build_model(spec)


def test_batchnorm_layers_are_named_in_one_line() -> None:
    model = resnet("batch")
    expected = [
        f"{name} (BatchNorm2d)"
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    ]
    assert len(expected) == 8 and incompatible_layers(model) == expected
    with pytest.raises(IncompatibleModelError) as caught:
        require_compatible(model, what="model 'examples.resnet_small:build'")
    text = str(caught.value)
    assert "\n" not in text and "stem.1 (BatchNorm2d)" in text and "GroupNorm" in text


def test_the_groupnorm_resnet_is_accepted_unchanged() -> None:
    model = resnet("group")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    require_compatible(model, what="resnet")
    assert incompatible_layers(model) == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_embedding_model_trains_under_dp_sgd() -> None:
    spec = ModelSpec(
        kind="custom",
        in_features=6,
        num_classes=2,
        factory="examples.tabular_embed:build",
        categorical=(("colour", 1, 4),),
    )
    torch.manual_seed(0)
    model = build_model(spec)
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 4, 512)
    X = np.column_stack([rng.normal(size=512), np.eye(4)[colour], rng.normal(size=512)])
    y = (colour >= 2).astype(np.int64)
    session = DPSession(max_grad_norm=1.0, delta=1e-5, noise_multiplier=1.0, epochs=1)
    config = TrainConfig(local_epochs=1, batch_size=64, learning_rate=0.1, optimizer="sgd")
    before = model.embeddings[0].weight.detach().clone()
    fit(model, X, y, config, privatize=session)
    assert session.steps_taken == 8  # one epoch of 512 rows at expected batch 64
    assert not torch.equal(before, model.embeddings[0].weight.detach())


def test_under_dp_sgd_frozen_layers_stay_unchanged_and_the_noise_reaches_only_the_rest() -> None:
    from core_training.layers import freeze_, plan_layers

    torch.manual_seed(0)
    model = build_model(ModelSpec(kind="mlp", in_features=4, num_classes=2, hidden_sizes=(8,)))
    plan = plan_layers(model, freeze="net.0.*")
    freeze_(model, plan.frozen)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    session = DPSession(max_grad_norm=1.0, delta=1e-5, noise_multiplier=1.0, epochs=1)
    config = TrainConfig(local_epochs=1, batch_size=64, learning_rate=0.1, optimizer="sgd")
    fit(model, X, y, config, privatize=session)
    after = session.release().state_dict()
    assert session.steps_taken == 4
    for name, value in before.items():
        # Opacus noises every parameter its optimizer holds: a frozen one would move
        assert torch.equal(value, after[name]) == (name in plan.frozen), name
