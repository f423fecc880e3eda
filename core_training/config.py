"""Training settings: one frozen, validated dataclass built from Flower-style keys.

Flower's run-config uses kebab-case keys (``local-epochs``); Python uses snake_case.
:meth:`TrainConfig.from_dict` is the one place that translates between them, and it
refuses unknown keys and out-of-range values by name, so a typo in a TOML file is an
error rather than a silently ignored setting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .model_spec import is_reference, parse_model_args

OPTIMIZERS = ("auto", "sgd", "adam", "adamw")
LR_SCHEDULES = ("none", "cosine")
CLASS_WEIGHTING = ("none", "balanced")
RESAMPLING = ("none", "over", "under")
MODELS = ("auto", "mlp", "cnn")
AUGMENTATIONS = ("none", "crop-flip")  # of image rows, in training only (augment.py)
IMPUTATION = ("mean", "median")


class ConfigError(ValueError):
    """A setting is unknown or out of range; the message names the key."""


# What "auto" (optimizer) and 0 (learning-rate, batch-size, local-epochs) stand for: the
# recipe of the run's mode. DP-SGD adds noise of a fixed size to the sum of each batch's
# clipped gradients, so large batches drown less of the signal, and Adam would divide
# every coordinate by a running variance that is mostly the noise's. Plain SGD with
# momentum, a large step and batches of 256 lost 2.8 points at epsilon 8 on the synthetic
# federation where Adam's defaults lost 6.9 (BENCHMARKS.md; bench/dp_recipe_check.py).
AUTO: dict[str, Any] = {
    "optimizer": "auto",
    "learning_rate": 0.0,
    "batch_size": 0,
    "local_epochs": 0,
}
RECIPES: dict[str, dict[str, Any]] = {
    "plain": {"optimizer": "adam", "learning_rate": 1e-3, "batch_size": 32, "local_epochs": 2},
    "dp": {"optimizer": "sgd", "learning_rate": 1.0, "batch_size": 512, "local_epochs": 3},
}


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of the local trainer and its data preparation."""

    local_epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    dropout: float = 0.1
    label_smoothing: float = 0.0
    class_weighting: str = "balanced"
    # Balance classes among the training rows only (validation rows are never repeated).
    resampling: str = "none"
    input_noise_std: float = 0.0
    max_grad_norm: float = 0.0  # 0 disables clipping
    lr_schedule: str = "none"
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    model: str = "auto"  # auto: CNN for image-shaped data, else MLP; or "pkg.module:factory"
    model_args: str = ""  # a custom model's factory arguments: a JSON object
    hidden_sizes: str = "128,64"
    imputation: str = "mean"
    skew_threshold: float = 1.0  # |skewness| above which a non-negative column gets log1p
    outlier_z: float = 3.0  # clip at mean +- outlier_z * sd; 0 disables clipping
    drop_duplicates: bool = True
    # image data only: "crop-flip" randomly crops (after padding) and flips training
    # batches (core_training.augment); validation rows are never augmented
    augment: str = "none"

    def __post_init__(self) -> None:
        # 0 (and optimizer "auto") leave the value to the mode's recipe: for_mode()
        require(
            self.local_epochs >= 0,
            "local-epochs",
            "must be at least 1 (0: auto)",
            self.local_epochs,
        )
        require(self.batch_size >= 0, "batch-size", "must be at least 1 (0: auto)", self.batch_size)
        require(
            self.learning_rate >= 0,
            "learning-rate",
            "must be positive (0: auto)",
            self.learning_rate,
        )
        require(0 <= self.momentum < 1, "momentum", "must be in [0, 1)", self.momentum)
        require(self.weight_decay >= 0, "weight-decay", "must be non-negative", self.weight_decay)
        require(0 <= self.dropout < 1, "dropout", "must be in [0, 1)", self.dropout)
        require(
            0 <= self.label_smoothing < 1,
            "label-smoothing",
            "must be in [0, 1)",
            self.label_smoothing,
        )
        require(
            self.input_noise_std >= 0,
            "input-noise-std",
            "must be non-negative",
            self.input_noise_std,
        )
        require(
            self.max_grad_norm >= 0,
            "max-grad-norm",
            "must be non-negative (0 = off)",
            self.max_grad_norm,
        )
        require(self.skew_threshold > 0, "skew-threshold", "must be positive", self.skew_threshold)
        require(self.outlier_z >= 0, "outlier-z", "must be non-negative (0 = off)", self.outlier_z)
        require(self.seed >= 0, "seed", "must be non-negative", self.seed)
        require_choice("optimizer", self.optimizer, OPTIMIZERS)
        require_choice("lr-schedule", self.lr_schedule, LR_SCHEDULES)
        require_choice("class-weighting", self.class_weighting, CLASS_WEIGHTING)
        require_choice("resampling", self.resampling, RESAMPLING)
        require(
            self.model in MODELS or is_reference(self.model),
            "model",
            f"must be one of {', '.join(MODELS)} or a 'package.module:factory' reference "
            "to a factory in the app folder",
            self.model,
        )
        try:
            parse_model_args(self.model_args)
        except ValueError as exc:
            raise ConfigError(f"setting 'model-args' {exc}, got {self.model_args!r}") from None
        require(
            not self.model_args.strip() or is_reference(self.model),
            "model-args",
            "is only for a custom model ('package.module:factory')",
            self.model_args,
        )
        require_choice("imputation", self.imputation, IMPUTATION)
        require_choice("augment", self.augment, AUGMENTATIONS)
        dev = self.device
        require(
            dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:"),
            "device",
            "must be auto, cpu, cuda or cuda:N",
            dev,
        )
        try:
            sizes = self.hidden
        except ValueError:
            sizes = ()
        require(
            len(sizes) >= 1 and all(s >= 1 for s in sizes),
            "hidden-sizes",
            'must be a comma-separated list of positive integers such as "128,64"',
            self.hidden_sizes,
        )

    def auto_keys(self) -> tuple[str, ...]:
        """The kebab-case keys left to the mode's recipe ("auto" or 0)."""
        return tuple(k.replace("_", "-") for k, v in AUTO.items() if getattr(self, k) == v)

    def for_mode(self, *, dp: bool) -> TrainConfig:
        """This config with every key left to the recipe set from ``RECIPES``: "dp" under
        DP-SGD, else "plain". Keys given a value of their own keep it."""
        recipe = RECIPES["dp" if dp else "plain"]
        chosen = {k: recipe[k] for k, v in AUTO.items() if getattr(self, k) == v}
        return replace(self, **chosen) if chosen else self

    @property
    def hidden(self) -> tuple[int, ...]:
        """Hidden layer sizes as integers (Flower config values cannot be lists)."""
        return tuple(int(s) for s in str(self.hidden_sizes).split(",") if s.strip())

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The kebab-case keys this config accepts."""
        return tuple(f.name.replace("_", "-") for f in fields(cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, ignore_unknown: bool = False) -> TrainConfig:
        """Build from kebab-case (or snake_case) keys; types are coerced and checked.

        With ``ignore_unknown`` keys that are not training settings are skipped (for a
        run-config that also holds federation settings, validated elsewhere).
        """
        by_name = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for raw_key, value in values.items():
            name = raw_key.replace("-", "_")
            if name not in by_name:
                if ignore_unknown:
                    continue
                raise ConfigError(
                    f"unknown training setting {raw_key!r}; valid keys: {', '.join(cls.keys())}"
                )
            kwargs[name] = coerce_value(raw_key, value, type(getattr(cls(), name)))
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Kebab-case dict, the inverse of :meth:`from_dict`."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}


def coerce_value(key: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"setting {key!r} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise ConfigError(f"setting {key!r} must be an integer, got {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"setting {key!r} must be a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"setting {key!r} must be a string, got {value!r}")
    return value


def require(ok: bool, key: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"setting {key!r} {rule}, got {value!r}")


def require_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"setting {key!r} must be one of {', '.join(allowed)}, got {value!r}")
