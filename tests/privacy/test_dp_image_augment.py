"""Augmented image batches under DP-SGD: Opacus still computes, clips and noises one
gradient per image, and the accountant counts the same steps as without augmentation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from core_training.config import TrainConfig
from core_training.models import ModelSpec, build_model
from core_training.trainer import fit
from privacy.dp import DPSession

pytestmark = [
    pytest.mark.filterwarnings("ignore:Secure RNG turned off"),
    pytest.mark.filterwarnings("ignore:Full backward hook is firing"),
    pytest.mark.filterwarnings("ignore:Optimal order"),
]

SPEC = ModelSpec(kind="cnn", in_features=64, num_classes=2, image_shape=(1, 8, 8))


def session() -> DPSession:
    return DPSession(max_grad_norm=1.0, delta=1e-5, noise_multiplier=1.0, epochs=2)


def test_private_training_with_crop_flip_takes_the_planned_steps() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(128, 64)).astype(np.float32)
    y = rng.integers(0, 2, 128)
    torch.manual_seed(0)
    model = build_model(SPEC)
    before = [p.detach().clone() for p in model.parameters()]
    cfg = TrainConfig(local_epochs=2, batch_size=32, optimizer="sgd", learning_rate=0.5)
    private = session()
    plan = private.plan(num_examples=128, batch_size=32)
    result = fit(
        model,
        X,
        y,
        replace(cfg, augment="crop-flip"),
        privatize=private,
        image_shape=(1, 8, 8),
    )
    assert result.steps == private.steps_taken == plan.steps
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    plain = session()
    fit(build_model(SPEC), X, y, cfg, privatize=plain, image_shape=(1, 8, 8))
    assert plain.epsilon() == pytest.approx(private.epsilon())
