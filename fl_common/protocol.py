"""What travels between the fedsilo ServerApp and ClientApp, in Flower records.

Every message is a ``RecordDict``; these are its keys and how our objects map to them.

server -> client (query "stats"): ``config`` {"action": "stats"}, and when the run
    keeps weights on the silos (freeze, local-layers, fedbn) ``fixed``: those weights'
    initial values, sent this once (``fl_client.personal``)
client -> server: ``stats`` ArrayRecord (FeatureStats fields), ``metrics`` with
    ``num-examples``, ``info`` ConfigRecord with the silo's schema as TOML
server -> client (train / evaluate): ``arrays`` (the global model's shared weights:
    all of them unless the run keeps some on the silos), ``config``, and once
    federated statistics exist, ``prep`` ArrayRecord (the fitted preprocessor and
    global class weights) so every silo cleans and weights its data the same way
server -> client (evaluate, ``silo-test-fraction`` > 0, once at the end): ``arrays``
    (the kept model's shared weights), ``prep`` and ``config`` {``test``: true,
    ``model-round``: the kept round, ``judged-round``: the round whose replies validated
    it}; train messages then also name ``keep-layers-since`` (the round that judged the
    best model so far), so a silo with local layers knows which snapshots to keep
client -> server (test): ``metrics`` with ``num-examples``, ``test_held_out`` (0: no
    test split, ``info`` says why) and ``test_examples``, ``test_loss``,
    ``test_accuracy``, ``test_balanced_accuracy``, ``test_macro_f1``,
    ``test_confusion`` (with local layers the personalized model of the kept round,
    ``global_test_*`` the global model, and ``test_layers_round``); never rows
client -> server (train): ``arrays`` (updated model), ``metrics`` (always the same
    keys: see ``TRAIN_METRIC_KEYS``), ``info`` ConfigRecord with ``status``
    ("ok" or "declined") and a human-readable ``reason``. With local layers the
    ``val_*`` metrics describe the silo's personalized model (the shared weights
    received with its own local layers) and ``global_val_*`` the global model (with
    the initial local layers, as the server's files hold it)
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord

from core_training.preprocess import FeatureStats, Preprocessor

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
PREP = "prep"
FIXED = "fixed"
STATS = "stats"
INFO = "info"
NUM_EXAMPLES = "num-examples"

STATUS_OK = "ok"
STATUS_DECLINED = "declined"

# Metrics every train reply carries (Flower aggregates only replies with equal keys).
# val_* describe the global model the client received, on its local validation split.
TRAIN_METRIC_KEYS = (
    NUM_EXAMPLES,
    "train_loss",
    "train_accuracy",
    "val_examples",
    "val_held_out",  # 0: too few rows to hold out, validated on the training rows
    "val_loss",
    "val_accuracy",
    "val_balanced_accuracy",
    "val_macro_f1",
    "val_confusion",  # flattened (true class, predicted class) counts
    "epsilon",
    "budget_exhausted",
    "train_seconds",
)
GLOBAL_PREFIX = "global_"  # with local layers: the global model's val_* metrics

# the test evaluation (silo-test-fraction): config keys of the messages
TEST = "test"
MODEL_ROUND = "model-round"
JUDGED_ROUND = "judged-round"
KEEP_LAYERS_SINCE = "keep-layers-since"

EVAL_METRIC_KEYS = (
    NUM_EXAMPLES,
    "val_held_out",
    "val_loss",
    "val_accuracy",
    "val_balanced_accuracy",
    "val_macro_f1",
    "val_confusion",
)


def state_to_record(state: dict[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord({k: Array(v.detach().cpu().numpy()) for k, v in state.items()})


def record_to_state(record: ArrayRecord) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.array(v.numpy(), copy=True)) for k, v in record.items()}


def record_to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def numpy_to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def stats_to_record(stats: FeatureStats) -> ArrayRecord:
    return numpy_to_record({k: np.asarray(v) for k, v in stats.to_dict().items()})


def record_to_stats(record: ArrayRecord) -> FeatureStats:
    return FeatureStats.from_dict(record_to_numpy(record))


def prep_to_record(pre: Preprocessor, class_weights: np.ndarray | None) -> ArrayRecord:
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in pre.to_dict().items()}
    if class_weights is not None:
        arrays["class_weights"] = np.asarray(class_weights, dtype=np.float64)
    return numpy_to_record(arrays)


def record_to_prep(record: ArrayRecord) -> tuple[Preprocessor, np.ndarray | None]:
    arrays = record_to_numpy(record)
    weights = arrays.pop("class_weights", None)
    return Preprocessor.from_dict(arrays), weights


def info_record(status: str, reason: str = "", **extra: str) -> ConfigRecord:
    return ConfigRecord({"status": status, "reason": reason, **extra})


def schema_digest(schema_toml: str) -> str:
    """A short fingerprint of a schema, to check that silos agree on the contract."""
    return hashlib.sha256(schema_toml.encode()).hexdigest()[:16]
