"""augment = "crop-flip": the trainer's training batches are randomly cropped (after
padding) and flipped images, its validation rows never; tabular data is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core_training.augment import make_augment
from core_training.config import ConfigError, TrainConfig
from core_training.trainer import evaluate, fit

SHAPE = (1, 8, 8)


class Recorder(nn.Module):
    """Passes its input on, keeping what training and evaluation fed the model."""

    def __init__(self) -> None:
        super().__init__()
        self.train_rows: list[np.ndarray] = []
        self.eval_rows: list[np.ndarray] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = self.train_rows if self.training else self.eval_rows
        seen.extend(x.detach().cpu().numpy())
        return x


def recorded_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(Recorder(), nn.Linear(64, 2))


def images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 64)).astype(np.float32), rng.integers(0, 2, n)


def config(augment: str) -> TrainConfig:
    return TrainConfig(local_epochs=2, batch_size=8, augment=augment, amp=False, device="cpu")


def _found(row: np.ndarray, X: np.ndarray) -> bool:
    return bool(np.isclose(X, row, atol=1e-6).all(axis=1).any())


def test_without_augmentation_the_model_trains_on_the_rows_themselves() -> None:
    X, y = images(24, 0)
    model = recorded_model()
    fit(model, X, y, config("none"), image_shape=SHAPE)
    seen = model[0].train_rows
    assert len(seen) == 48 and all(_found(r, X) for r in seen)


def test_crop_flip_changes_training_batches_but_never_validation_rows() -> None:
    X, y = images(24, 0)
    X_val, y_val = images(10, 1)
    model = recorded_model()
    fit(model, X, y, config("crop-flip"), image_shape=SHAPE)
    seen = model[0].train_rows
    changed = [r for r in seen if not _found(r, X)]
    assert len(seen) == 48 and len(changed) >= 40  # an unchanged draw has odds 1 / 18
    evaluate(model, X_val, y_val)
    assert np.array_equal(np.stack(model[0].eval_rows), X_val)


def test_each_augmented_image_is_a_shifted_and_maybe_flipped_original() -> None:
    X = np.arange(64, dtype=np.float32)[None] + 1.0  # distinct values: positions are known
    augment = make_augment("crop-flip", SHAPE)
    assert augment is not None
    torch.manual_seed(0)
    out = augment(torch.as_tensor(np.repeat(X, 50, axis=0))).numpy().reshape(50, 8, 8)
    original = X.reshape(8, 8)
    padded = np.pad(original, 1)  # one pixel of zeros on 8 x 8 (an eighth of the side)
    candidates = [
        (padded[dy : dy + 8, dx : dx + 8])[:, ::flip]
        for dy in range(3)
        for dx in range(3)
        for flip in (1, -1)
    ]
    matches = [next(i for i, c in enumerate(candidates) if np.array_equal(o, c)) for o in out]
    assert len(set(matches)) > 6  # offsets and flips differ from image to image


def test_augmentation_on_tabular_data_is_refused_with_the_reason() -> None:
    X, y = images(10, 0)
    with pytest.raises(ValueError, match="needs image data"):
        fit(recorded_model(), X, y, config("crop-flip"), image_shape=None)


def test_unknown_augmentation_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'augment' must be one of none, crop-flip"):
        TrainConfig(augment="rotate")
