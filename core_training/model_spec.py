"""What describes a model without building it: :class:`ModelSpec`, the inputs a custom
factory is called with, and model references (``package.module:name``) with their
``model-args``. No torch here: settings, statistics and the command line use these
before any model is built (models.py builds them)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_REFERENCE = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}")


def is_reference(text: str) -> bool:
    """True for a plain ``package.module:name`` (no paths, no attribute chains)."""
    return _REFERENCE.fullmatch(text) is not None


def parse_model_args(text: str) -> dict[str, Any]:
    """``model-args``: empty, or a JSON object with string keys."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise ValueError('must be a JSON object such as {"width": 64}')
    bad = [k for k in value if not k.isidentifier()]
    if bad:
        raise ValueError(f"keys must be Python identifiers, got {bad[0]!r}")
    return value


@dataclass(frozen=True)
class CategoricalBlock:
    """One categorical schema feature: its one-hot columns are ``start`` to
    ``start + size - 1`` of the model's input."""

    name: str
    start: int
    size: int


@dataclass(frozen=True)
class ModelInputs:
    """What the data implies about a model: the factory's first argument."""

    in_features: int
    num_classes: int
    image_shape: tuple[int, int, int] | None = None  # (channels, height, width)
    categorical: tuple[CategoricalBlock, ...] = ()

    @property
    def numeric_columns(self) -> tuple[int, ...]:
        """Input columns that are not part of a one-hot block."""
        one_hot = {b.start + i for b in self.categorical for i in range(b.size)}
        return tuple(i for i in range(self.in_features) if i not in one_hot)


MODEL_KINDS = ("mlp", "cnn", "custom")


@dataclass(frozen=True)
class ModelSpec:
    """What is needed to rebuild a model: its kind, input and output sizes, layers.

    A ``custom`` model records its factory reference and arguments (``factory``,
    ``factory_args``) and the one-hot blocks of categorical features (``categorical``:
    name, first column, number of columns), everything its factory was called with.
    """

    kind: str
    in_features: int
    num_classes: int
    hidden_sizes: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    image_shape: tuple[int, int, int] | None = None  # (channels, height, width), CNN only
    channels: tuple[int, ...] = (16, 32)
    factory: str = ""  # custom only: "package.module:factory" in the app folder
    factory_args: dict[str, Any] = field(default_factory=dict)
    categorical: tuple[tuple[str, int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model kind {self.kind!r} is not one of {', '.join(MODEL_KINDS)}")
        if self.in_features < 1 or self.num_classes < 2:
            raise ValueError("a model needs at least one input feature and two classes")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if any(h < 1 for h in self.hidden_sizes) or any(c < 1 for c in self.channels):
            raise ValueError("hidden sizes and channels must be positive")
        if self.kind == "custom" and not is_reference(self.factory):
            raise ValueError(
                f"a custom model needs a 'package.module:factory' reference, got {self.factory!r}"
            )
        if self.kind == "cnn" and self.image_shape is None:
            raise ValueError("a CNN needs an image shape (channels, height, width)")
        if self.image_shape is not None:
            c, h, w = self.image_shape
            if c * h * w != self.in_features:
                raise ValueError(
                    f"image shape {self.image_shape} holds {c * h * w} values, "
                    f"but the data has {self.in_features} features"
                )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model spec keys: {', '.join(sorted(unknown))}")
        kwargs = dict(data)
        for key in ("hidden_sizes", "channels"):
            if key in kwargs:
                kwargs[key] = tuple(int(v) for v in kwargs[key])
        if kwargs.get("image_shape") is not None:
            kwargs["image_shape"] = tuple(int(v) for v in kwargs["image_shape"])
        if "categorical" in kwargs:
            kwargs["categorical"] = tuple(
                (str(n), int(s), int(k)) for n, s, k in kwargs["categorical"]
            )
        return cls(**kwargs)

    def inputs(self) -> ModelInputs:
        """What a custom model's factory is called with."""
        blocks = tuple(CategoricalBlock(n, s, k) for n, s, k in self.categorical)
        return ModelInputs(self.in_features, self.num_classes, self.image_shape, blocks)
