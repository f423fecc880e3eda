"""Federation settings from Flower's run-config, validated in one place.

A run-config holds two kinds of keys: the local trainer's (``TrainConfig``) and the
federation's (``RunSettings``). :func:`from_run_config` splits them and refuses a key
that belongs to neither, naming it. The defaults here are the ones in
``[tool.flwr.app.config]`` of ``pyproject.toml`` (a test keeps the two equal).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from core_training.config import ConfigError, TrainConfig, coerce_value, require, require_choice
from core_training.data import BUILTIN_DATASETS
from core_training.layers import PERSONALIZATION, parse_patterns
from privacy.keys import fedsilo_home

__all__ = [
    "SCORE_METRICS",
    "STOP_METRICS",
    "VAL_METRICS",
    "RunSettings",
    "fedsilo_home",
    "from_run_config",
]
from core_training.sampling import RESAMPLING_UNDER_DP

STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedmedian", "trimmed-mean", "krum")
PARTITIONERS = ("iid", "dirichlet", "quantity")
VALIDATION = ("server", "federated")
TRACKERS = ("none", "tensorboard", "mlflow")
STOP_METRICS = {  # the validation metrics, every one; -> True when larger is better
    "val_loss": False,
    "val_accuracy": True,
    "val_balanced_accuracy": True,
    "val_macro_f1": True,
}
VAL_METRICS = tuple(STOP_METRICS)
SCORE_METRICS = tuple(k for k, higher in STOP_METRICS.items() if higher)  # in [0, 1]


@dataclass(frozen=True)
class RunSettings:
    """Everything about a federation that is not a local training setting."""

    num_server_rounds: int = 10
    fraction_train: float = 1.0
    min_nodes: int = 2
    round_timeout: float = 300.0  # seconds to wait for the replies of one round
    node_wait_timeout: float = 120.0  # seconds to wait for min-nodes to connect
    dataset: str = "digits"
    schema: str = ""
    synthetic_rows: int = 2000
    synthetic_features: int = 20
    synthetic_classes: int = 2
    synthetic_minority_fraction: float = 0.0  # 0: balanced classes
    server_val_fraction: float = 0.2
    local_val_fraction: float = 0.2
    # each silo's held-out test split, taken before its train/validation split and
    # scored once, at the end, with the kept model (0: none; federated validation only)
    silo_test_fraction: float = 0.0
    partitioner: str = "iid"
    dirichlet_alpha: float = 0.5
    min_partition_size: int = 10
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    server_learning_rate: float = 0.03
    trimmed_beta: float = 0.2
    krum_malicious: int = 0
    dp: bool = False
    target_epsilon: float = 4.0
    target_delta: float = 1e-5
    dp_max_grad_norm: float = 1.0
    privacy_budget: float = 10.0
    max_exhausted_fraction: float = 0.5
    validation: str = "server"
    validation_data: str = ""  # the operator's validation file, used whole (server mode)
    early_stopping_metric: str = "val_loss"
    early_stopping_patience: int = 3
    early_stopping_min_delta: float = 0.0
    export_int8: bool = True
    artifacts_dir: str = "artifacts"
    run_name: str = ""
    key_file: str = ""
    resume: bool = False
    initial_model: str = ""
    # transfer learning and personalization (core_training.layers): fnmatch patterns
    freeze: str = ""  # weights not trained and never sent: the initial model's
    local_layers: str = ""  # FedPer: weights each silo trains for itself, never sent
    personalization: str = "none"  # "fedbn": every normalization layer is local
    tracking: str = "none"  # experiment tracker: none, tensorboard or mlflow
    tracking_uri: str = ""  # MLflow: empty = a local store inside the run folder

    def __post_init__(self) -> None:
        require(
            self.num_server_rounds >= 1,
            "num-server-rounds",
            "must be at least 1",
            self.num_server_rounds,
        )
        require(
            0 < self.fraction_train <= 1, "fraction-train", "must be in (0, 1]", self.fraction_train
        )
        require(self.min_nodes >= 1, "min-nodes", "must be at least 1", self.min_nodes)
        require(self.round_timeout > 0, "round-timeout", "must be positive", self.round_timeout)
        require(
            self.node_wait_timeout > 0,
            "node-wait-timeout",
            "must be positive",
            self.node_wait_timeout,
        )
        for key in ("server_val_fraction", "local_val_fraction"):
            value = getattr(self, key)
            require(0 < value < 1, key.replace("_", "-"), "must be in (0, 1)", value)
        require(
            0 <= self.silo_test_fraction < 1,
            "silo-test-fraction",
            "must be in [0, 1)",
            self.silo_test_fraction,
        )
        require(
            self.dirichlet_alpha > 0, "dirichlet-alpha", "must be positive", self.dirichlet_alpha
        )
        require(
            self.min_partition_size >= 1,
            "min-partition-size",
            "must be at least 1",
            self.min_partition_size,
        )
        require(self.proximal_mu >= 0, "proximal-mu", "must be non-negative", self.proximal_mu)
        require(
            self.server_learning_rate > 0,
            "server-learning-rate",
            "must be positive",
            self.server_learning_rate,
        )
        require(
            0 <= self.trimmed_beta < 0.5, "trimmed-beta", "must be in [0, 0.5)", self.trimmed_beta
        )
        require(
            self.krum_malicious >= 0, "krum-malicious", "must be non-negative", self.krum_malicious
        )
        require(self.target_epsilon > 0, "target-epsilon", "must be positive", self.target_epsilon)
        require(0 < self.target_delta < 1, "target-delta", "must be in (0, 1)", self.target_delta)
        require(
            self.dp_max_grad_norm > 0, "dp-max-grad-norm", "must be positive", self.dp_max_grad_norm
        )
        require(self.privacy_budget > 0, "privacy-budget", "must be positive", self.privacy_budget)
        require(
            0 < self.max_exhausted_fraction <= 1,
            "max-exhausted-fraction",
            "must be in (0, 1]",
            self.max_exhausted_fraction,
        )
        require(
            self.early_stopping_patience >= 1,
            "early-stopping-patience",
            "must be at least 1",
            self.early_stopping_patience,
        )
        require(
            self.early_stopping_min_delta >= 0,
            "early-stopping-min-delta",
            "must be non-negative",
            self.early_stopping_min_delta,
        )
        require(
            0 <= self.synthetic_minority_fraction < 1,
            "synthetic-minority-fraction",
            "must be in [0, 1)",
            self.synthetic_minority_fraction,
        )
        require_choice("strategy", self.strategy, STRATEGIES)
        require_choice("partitioner", self.partitioner, PARTITIONERS)
        require_choice("validation", self.validation, VALIDATION)
        require_choice("early-stopping-metric", self.early_stopping_metric, tuple(STOP_METRICS))
        require_choice("tracking", self.tracking, TRACKERS)
        require_choice("personalization", self.personalization, PERSONALIZATION)
        parse_patterns(self.freeze, "freeze")
        parse_patterns(self.local_layers, "local-layers")
        if self.personal and self.validation != "federated":
            raise ConfigError(
                'local-layers and personalization need validation = "federated": the '
                "server's model lacks each silo's own layers, so only the silos can "
                "validate their personalized models"
            )
        if self.silo_test_fraction > 0 and self.validation != "federated":
            raise ConfigError(
                "setting 'silo-test-fraction' needs validation = \"federated\": the test "
                "rows and the validation rows are both the silos' own"
            )
        if self.dataset not in BUILTIN_DATASETS and not self.schema:
            raise ConfigError(
                f"setting 'dataset' is {self.dataset!r}, which is not a built-in set "
                f"({', '.join(BUILTIN_DATASETS)}); a data file also needs 'schema'"
            )
        if self.run_name and not _plain_name(self.run_name):
            raise ConfigError(
                f"setting 'run-name' must be a plain folder name (letters, digits, '-', '_', "
                f"'.'; no '/', not '..'), got {self.run_name!r}"
            )
        if self.validation_data and not self.schema:
            raise ConfigError(
                "setting 'validation-data' needs 'schema': the federation's schema TOML"
            )
        if self.resume and not self.run_name:
            raise ConfigError("setting 'resume' needs 'run-name': the name of the run to continue")
        if self.dp and self.privacy_budget < self.target_epsilon:
            raise ConfigError(
                f"setting 'privacy-budget' ({self.privacy_budget}) is below 'target-epsilon' "
                f"({self.target_epsilon}): the run could never finish; raise the budget"
            )

    @property
    def personal(self) -> bool:
        """Each silo keeps layers of its own (FedPer or FedBN)."""
        return bool(self.local_layers.strip()) or self.personalization != "none"

    @property
    def builtin(self) -> bool:
        return self.dataset in BUILTIN_DATASETS

    def synthetic_params(self) -> dict[str, Any]:
        if self.dataset != "synthetic":
            return {}
        return {
            "rows": self.synthetic_rows,
            "features": self.synthetic_features,
            "classes": self.synthetic_classes,
            "minority_fraction": self.synthetic_minority_fraction or None,
        }

    def artifacts_root(self) -> Path:
        """``artifacts-dir`` as given when absolute; a relative one lives under
        ``$FEDSILO_HOME`` (default ``~/.fedsilo``), because the ServerApp's working
        directory is wherever the SuperLink was started, not the project folder."""
        path = Path(self.artifacts_dir).expanduser()
        return path if path.is_absolute() else fedsilo_home() / path

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name.replace("_", "-") for f in fields(cls))

    def to_dict(self) -> dict[str, Any]:
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}


def _plain_name(name: str) -> bool:
    return (
        len(name) <= 128
        and name not in (".", "..")
        and all(c.isalnum() or c in "-_." for c in name)
    )


def from_run_config(run_config: dict[str, Any]) -> tuple[RunSettings, TrainConfig]:
    """Split and validate a Flower run-config; unknown keys are errors. Training keys left
    to the recipe (``optimizer = "auto"``, ``learning-rate``, ``batch-size`` or
    ``local-epochs`` 0) get the recipe of the run's mode (``TrainConfig.for_mode``): the
    server and every client resolve them here, from the same run config."""
    train_keys = set(TrainConfig.keys())
    run_fields = {f.name: f for f in fields(RunSettings)}
    run_kwargs: dict[str, Any] = {}
    train_values: dict[str, Any] = {}
    for key, value in run_config.items():
        if key in train_keys:
            train_values[key] = value
            continue
        name = key.replace("-", "_")
        if name not in run_fields:
            raise ConfigError(
                f"unknown setting {key!r}; see docs/simulation.md for every key "
                f"(federation: {', '.join(RunSettings.keys())}; "
                f"training: {', '.join(TrainConfig.keys())})"
            )
        run_kwargs[name] = coerce_value(key, value, type(getattr(RunSettings(), name)))
    settings = RunSettings(**run_kwargs)
    config = TrainConfig.from_dict(train_values).for_mode(dp=settings.dp)
    if settings.dp and config.resampling != "none":  # refused before any round starts
        raise ConfigError(RESAMPLING_UNDER_DP)
    return settings, config


def recipe_keys(run_config: dict[str, Any]) -> tuple[str, ...]:
    """The training keys a run config leaves to its mode's recipe (for the log)."""
    return TrainConfig.from_dict(run_config, ignore_unknown=True).auto_keys()
