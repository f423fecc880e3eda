"""A small residual CNN for image-shaped tables (such as digits, 1x8x8).

Run config::

    model = "examples.resnet_small:build"
    model-args = '{"width": 32, "norm": "group"}'

Built from Conv2d, a norm layer, ReLU, average pooling and Linear only, with the residual
additions in a ``FloatFunctional`` and quant/dequant stubs at the ends, so that eager
static int8 quantization (``torch.ao.quantization.prepare`` / ``convert``) needs no
change to the model. ``norm = "group"`` (the default) trains under DP-SGD; ``"batch"``
(BatchNorm) does not, and a DP run refuses it before round 1.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.ao.nn.quantized import FloatFunctional
from torch.ao.quantization import DeQuantStub, QuantStub

from core_training.custom_model import ModelInputs


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    raise ValueError(f'norm must be "group" or "batch", got {kind!r}')


class Block(nn.Module):
    """Two 3x3 convolutions with a shortcut (a 1x1 convolution when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(norm, cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = _norm(norm, cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), _norm(norm, cout)
            )
        self.add = FloatFunctional()
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.norm2(self.conv2(self.relu1(self.norm1(self.conv1(x)))))
        return self.relu2(self.add.add(out, self.shortcut(x)))


class ResNetSmall(nn.Module):
    def __init__(
        self, image_shape: tuple[int, int, int], num_classes: int, width: int, norm: str
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.quant = QuantStub()
        self.stem = nn.Sequential(
            nn.Conv2d(image_shape[0], width, 3, padding=1, bias=False),
            _norm(norm, width),
            nn.ReLU(),
        )
        self.blocks = nn.Sequential(
            Block(width, width, 1, norm),
            Block(width, 2 * width, 2, norm),
            Block(2 * width, 2 * width, 1, norm),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * width, num_classes)
        self.dequant = DeQuantStub()

    def forward(self, x: Tensor) -> Tensor:
        x = self.quant(x.reshape(x.shape[0], *self.image_shape))
        x = self.pool(self.blocks(self.stem(x))).flatten(1)
        return self.dequant(self.head(x))


def build(inputs: ModelInputs, *, width: int = 32, norm: str = "group") -> nn.Module:
    """The factory: needs image-shaped data (a schema with ``image_shape``)."""
    if inputs.image_shape is None:
        raise ValueError("resnet_small needs image-shaped data (a schema with image_shape)")
    if width < 8:
        raise ValueError(f"width must be at least 8, got {width}")
    return ResNetSmall(inputs.image_shape, inputs.num_classes, int(width), norm)
