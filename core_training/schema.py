"""The data contract every silo of a federation agrees on.

A schema is a small TOML file::

    [label]
    column = "target"
    classes = [0, 1]

    [features]
    age = "numeric"
    income = { range = [0, 500000] }   # numeric, with public bounds
    smoker = { categories = ["no", "yes"] }

An image silo's schema names the image size instead of features::

    [image]
    channels = 1        # 1: grayscale, 3: RGB
    height = 16
    width = 16

    [label]
    classes = ["cat", "dog"]   # a folder silo's class sub-folders have these names

Its table has one column per pixel value (``channels * height * width``, in
channel, row, column order); the columns are made here, never listed by the user.

Features keep the order of the file. A ``range`` is public knowledge about a numeric
column (not a statistic of anyone's data): silos that release their statistics with
differential privacy clip to it, and never reveal their own minimum and maximum. A
categorical feature is one-hot encoded in the order of its categories, so every silo
produces the same columns in the same order.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """Input data or a schema cannot be used; the message says where and what to do."""


@dataclass(frozen=True)
class Feature:
    name: str
    categories: tuple[str, ...] | None = None  # None: numeric
    bounds: tuple[float, float] | None = None  # a numeric column's public range

    @property
    def is_numeric(self) -> bool:
        return self.categories is None

    @property
    def encoded_names(self) -> list[str]:
        if self.categories is None:
            return [self.name]
        return [f"{self.name}={c}" for c in self.categories]


IMAGE_CHANNELS = {1: "grayscale", 3: "RGB"}
MAX_IMAGE_SIDE = 512  # the whole table is held in memory, one column per value
IMAGE_LABEL = "label"  # an image schema's label name when [label] gives no column


@dataclass(frozen=True)
class Schema:
    label: str
    classes: tuple[Any, ...]
    features: tuple[Feature, ...]
    image_shape: tuple[int, int, int] | None = None  # set for image-like built-in sets
    # "table": rows of named features (digits too, whose rows are 8x8 images);
    # "image": image files or an (N, C, H, W) array, one feature per pixel value
    kind: str = "table"

    def __post_init__(self) -> None:
        if len(self.classes) < 2:
            raise DataError(f"schema: label {self.label!r} needs at least two classes")
        if len(set(map(str, self.classes))) != len(self.classes):
            raise DataError(f"schema: label {self.label!r} lists a class twice")
        if not self.features:
            raise DataError("schema: [features] is empty; list at least one feature column")
        names = [f.name for f in self.features]
        if self.label in names:
            raise DataError(f"schema: {self.label!r} is both the label and a feature")
        if len(set(names)) != len(names):
            raise DataError("schema: a feature column is listed twice")
        if self.kind not in ("table", "image"):
            raise DataError(f"schema: kind must be table or image, got {self.kind!r}")
        if self.is_image and (
            self.image_shape is None or len(self.features) != math.prod(self.image_shape)
        ):
            raise DataError("schema: an image schema needs one feature per pixel value")

    @classmethod
    def image(
        cls, classes: tuple[Any, ...], channels: int, height: int, width: int, label: str = ""
    ) -> Schema:
        """An image schema: one numeric feature per pixel value, named
        ``c{channel}_y{row}_x{column}`` in the order the values are flattened."""
        names = (
            f"c{c}_y{y}_x{x}" for c in range(channels) for y in range(height) for x in range(width)
        )
        features = tuple(Feature(n, bounds=(0.0, 1.0)) for n in names)
        shape = (channels, height, width)
        return cls(label or IMAGE_LABEL, tuple(classes), features, shape, kind="image")

    @property
    def is_image(self) -> bool:
        return self.kind == "image"

    @property
    def stats_width(self) -> int:
        """Columns of the statistics a silo shares: one per channel for images
        (per-channel normalization), else one per encoded column."""
        if self.is_image:
            assert self.image_shape is not None
            return self.image_shape[0]
        return self.num_features

    @property
    def feature_names(self) -> list[str]:
        """Names of the encoded columns, in order (one per one-hot category)."""
        return [n for f in self.features for n in f.encoded_names]

    @property
    def numeric_mask(self) -> list[bool]:
        """Per encoded column: True for numeric, False for a one-hot category column."""
        return [f.is_numeric for f in self.features for _ in f.encoded_names]

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_index(self) -> dict[str, int]:
        """Class label (as text, the way it appears in a CSV) -> index."""
        return {_label_text(c): i for i, c in enumerate(self.classes)}

    # -- files -------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"schema file {path} does not exist; pass the path of a TOML schema")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"schema file {path} is not valid TOML: {exc}") from None
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "schema") -> Schema:
        label = raw.get("label")
        if "image" in raw and isinstance(label, dict) and "column" not in label:
            label = {**label, "column": IMAGE_LABEL}
        if not isinstance(label, dict) or not isinstance(label.get("column"), str):
            raise DataError(f'{source}: needs a [label] table with column = "NAME"')
        classes = label.get("classes")
        if not isinstance(classes, list) or not classes:
            raise DataError(f"{source}: [label] needs classes = [...] listing every class")
        if not all(isinstance(c, (int, str)) and not isinstance(c, bool) for c in classes):
            raise DataError(f"{source}: label classes must be integers or strings")
        if "image" in raw:
            return _image_schema(raw, label["column"], tuple(classes), source)
        feats = raw.get("features")
        if not isinstance(feats, dict) or not feats:
            raise DataError(f"{source}: needs a [features] table with at least one column")
        features = []
        for name, kind in feats.items():
            if kind == "numeric":
                features.append(Feature(name))
            elif isinstance(kind, dict) and set(kind) == {"range"}:
                features.append(Feature(name, bounds=_bounds(kind["range"], name, source)))
            elif isinstance(kind, dict) and isinstance(kind.get("categories"), list):
                cats = kind["categories"]
                if len(cats) < 1 or len(set(map(str, cats))) != len(cats):
                    raise DataError(
                        f"{source}: feature {name!r} needs distinct categories, got {cats!r}"
                    )
                features.append(Feature(name, tuple(str(c) for c in cats)))
            else:
                raise DataError(
                    f'{source}: feature {name!r} must be "numeric", {{ range = [low, high] }} '
                    f'or {{ categories = ["a", "b"] }}, got {kind!r}'
                )
        shape = raw.get("image_shape")
        if shape is not None and not (
            isinstance(shape, (list, tuple))
            and len(shape) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)
        ):
            raise DataError(
                f"{source}: image_shape must be [channels, height, width] (three positive "
                f"integers), got {shape!r}"
            )
        image_shape = tuple(shape) if shape else None
        return cls(label["column"], tuple(classes), tuple(features), image_shape)

    def to_dict(self) -> dict[str, Any]:
        if self.is_image:
            assert self.image_shape is not None
            return {
                "image": dict(zip(_IMAGE_KEYS, self.image_shape, strict=True)),
                "label": {"column": self.label, "classes": list(self.classes)},
            }
        out: dict[str, Any] = {
            "label": {"column": self.label, "classes": list(self.classes)},
            "features": {f.name: _feature_value(f) for f in self.features},
        }
        if self.image_shape:
            out["image_shape"] = list(self.image_shape)
        return out

    def to_toml(self) -> str:
        lines = []
        if self.is_image:
            assert self.image_shape is not None
            lines.append("[image]")
            lines += [f"{k} = {v}" for k, v in zip(_IMAGE_KEYS, self.image_shape, strict=True)]
            lines += ["", "[label]", f"column = {_toml_str(self.label)}"]
            lines.append("classes = [" + ", ".join(_toml_value(c) for c in self.classes) + "]")
            return "\n".join(lines) + "\n"
        if self.image_shape:
            lines.append(f"image_shape = {list(self.image_shape)}")
            lines.append("")
        lines += ["[label]", f"column = {_toml_str(self.label)}"]
        lines.append("classes = [" + ", ".join(_toml_value(c) for c in self.classes) + "]")
        lines += ["", "[features]"]
        for f in self.features:
            if f.bounds is not None:
                low, high = (repr(float(b)) for b in f.bounds)
                lines.append(f"{_toml_str(f.name)} = {{ range = [{low}, {high}] }}")
            elif f.is_numeric:
                lines.append(f'{_toml_str(f.name)} = "numeric"')
            else:
                cats = ", ".join(_toml_str(c) for c in f.categories or ())
                lines.append(f"{_toml_str(f.name)} = {{ categories = [{cats}] }}")
        return "\n".join(lines) + "\n"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_toml(), encoding="utf-8")
        return path


def schema_difference(got: Schema, want: Schema) -> str:
    """What differs between two schemas, in words ("" when they are equal)."""
    if got == want:
        return ""
    if got.label != want.label:
        return f"label column {got.label!r}, expected {want.label!r}"
    if tuple(map(str, got.classes)) != tuple(map(str, want.classes)):
        return f"classes {list(got.classes)}, expected {list(want.classes)}"
    if got.classes != want.classes:
        return "the same classes, written as numbers in one and as text in the other"
    if got.kind != want.kind:
        return f"{got.kind} data, expected {want.kind} data"
    if got.image_shape != want.image_shape:
        return f"image shape {got.image_shape}, expected {want.image_shape}"
    names, wanted = [f.name for f in got.features], [f.name for f in want.features]
    missing = [n for n in wanted if n not in names]
    extra = [n for n in names if n not in wanted]
    if missing or extra:
        return f"features missing {missing[:5]} and unexpected {extra[:5]}"
    if names != wanted:
        return "the same features in another order"
    return "feature types or categories differ"


_IMAGE_KEYS = ("channels", "height", "width")


def _image_schema(raw: dict[str, Any], label: str, classes: tuple[Any, ...], source: str) -> Schema:
    """The schema of an ``[image]`` table: its size, and no feature list."""
    image = raw["image"]
    extra = sorted(set(raw) - {"image", "label"})
    if extra:
        raise DataError(
            f"{source}: an image schema has [image] and [label] only; remove {', '.join(extra)} "
            "(its features are the pixel values)"
        )
    if not isinstance(image, dict) or set(image) != set(_IMAGE_KEYS):
        raise DataError(
            f"{source}: [image] needs exactly channels, height and width, got "
            f"{sorted(image) if isinstance(image, dict) else image!r}"
        )
    sizes = [image[k] for k in _IMAGE_KEYS]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in sizes):
        raise DataError(f"{source}: [image] channels, height and width must be integers")
    channels, height, width = sizes
    if channels not in IMAGE_CHANNELS:
        raise DataError(
            f"{source}: [image] channels must be 1 (grayscale) or 3 (RGB), got {channels}"
        )
    if not (1 <= height <= MAX_IMAGE_SIDE and 1 <= width <= MAX_IMAGE_SIDE):
        raise DataError(
            f"{source}: [image] height and width must be in 1..{MAX_IMAGE_SIDE}, "
            f"got {height} x {width}"
        )
    return Schema.image(classes, channels, height, width, label=label)


def _bounds(value: Any, name: str, source: str) -> tuple[float, float]:
    ok = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(v) for v in value)
        and value[0] < value[1]
    )
    if not ok:
        raise DataError(
            f"{source}: feature {name!r} range must be [low, high] with finite numbers "
            f"and low < high, got {value!r}"
        )
    return float(value[0]), float(value[1])


def _feature_value(f: Feature) -> Any:
    if f.bounds is not None:
        return {"range": list(f.bounds)}
    return "numeric" if f.is_numeric else {"categories": list(f.categories or ())}


def _label_text(value: Any) -> str:
    return str(value)


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_value(value: Any) -> str:
    return str(value) if isinstance(value, int) else _toml_str(str(value))
