"""Data and model shared by the plain Flower app and the in-process baseline."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from core_training.config import TrainConfig
from core_training.data import synthetic
from core_training.models import ModelSpec
from core_training.preprocess import Preprocessor, compute_stats


def client_data(
    partition: int, partitions: int, rows_per_client: int, features: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Client ``partition``'s rows of one synthetic table, standardized."""
    X, y = _table(rows_per_client * partitions, features, seed)
    part = slice(partition * rows_per_client, (partition + 1) * rows_per_client)
    return X[part], y[part]


@lru_cache(maxsize=2)
def _table(rows: int, features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole table, made once per process: a worker serves many clients."""
    table = synthetic(rows=rows, features=features, seed=seed)
    pre = Preprocessor.fit(compute_stats(table.X, table.y, 2))
    return pre.transform(table.X), table.y


def train_config(local_epochs: int, batch_size: int, seed: int) -> TrainConfig:
    return TrainConfig(
        local_epochs=local_epochs,
        batch_size=batch_size,
        seed=seed,
        class_weighting="none",
        learning_rate=0.001,
    )


def model_spec(features: int) -> ModelSpec:
    return ModelSpec("mlp", features, 2, hidden_sizes=(128, 64), dropout=0.1)
