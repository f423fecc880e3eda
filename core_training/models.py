"""Models every silo can train, with and without differential privacy.

Both models avoid BatchNorm: its running statistics mix examples of a batch, which
breaks per-sample gradients under DP-SGD. The CNN uses GroupNorm instead.

A model is described by a :class:`ModelSpec`, a small JSON-able record that travels
inside checkpoints and update files so that any file can be turned back into a model
without knowing how it was made.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .custom_model import build_custom
from .model_spec import MODEL_KINDS, ModelSpec

__all__ = ["MLP", "MODEL_KINDS", "ModelSpec", "SmallCNN", "build_model", "quantize_int8"]


class MLP(nn.Module):
    """Fully connected network: Linear -> ReLU -> Dropout per hidden layer."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden_sizes: tuple[int, ...] = (128, 64),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv blocks with GroupNorm, then a linear head; for small images such as
    8x8 digits. Input arrives flat (as every table does) and is reshaped here."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        channels: tuple[int, ...] = (16, 32),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        blocks: list[nn.Module] = []
        in_ch = image_shape[0]
        for out_ch in channels:
            groups = _largest_divisor_at_most(out_ch, 8)
            blocks += [
                nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1),
                nn.GroupNorm(groups, out_ch),
                nn.ReLU(),
            ]
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d((2, 2))
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_ch * 4, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.image_shape)
        return self.head(self.pool(self.features(x)))


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def build_model(spec: ModelSpec, *, app_dir: Path | None = None) -> nn.Module:
    """A fresh, randomly initialised model for ``spec`` (seed torch first for repeatability).

    A custom model's factory is imported from ``app_dir`` (default: the app folder,
    ``custom_model.app_dir``); any failure is a ``ModelFactoryError`` of one line."""
    if spec.kind == "custom":
        return build_custom(spec.factory, spec.inputs(), dict(spec.factory_args), app_dir)
    if spec.kind == "mlp":
        return MLP(spec.in_features, spec.num_classes, spec.hidden_sizes, spec.dropout)
    assert spec.image_shape is not None  # checked in ModelSpec
    return SmallCNN(spec.image_shape, spec.num_classes, spec.channels, spec.dropout)


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of the linear layers (weights int8, activations
    quantized on the fly); convolutions stay fp32. CPU inference only."""
    model = model.to("cpu").eval()
    with warnings.catch_warnings():
        # torch.ao eager quantization is deprecated in favour of torchao, which is not a
        # dependency of ours; the eager API still produces the smallest working model.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
