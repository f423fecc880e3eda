"""Glue between the pieces: from a loaded table to cleaned arrays and a model spec.

Used the same way by the centralized baseline, every federated client and the CLIs, so
a silo's data is prepared identically wherever it is trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._split import train_test_indices
from .channel_stats import channel_preprocessor, compute_channel_stats
from .config import TrainConfig
from .data import Table
from .model_spec import ModelSpec, is_reference, parse_model_args
from .preprocess import FeatureStats, Preprocessor, compute_stats, drop_duplicates
from .sampling import class_weights


def model_spec_for(table_or_schema: Table | object, config: TrainConfig) -> ModelSpec:
    """The model a config asks for on this schema; ``auto`` picks the CNN for images."""
    schema = getattr(table_or_schema, "schema", table_or_schema)
    image_shape = getattr(schema, "image_shape", None)
    kind = config.model
    if is_reference(kind):
        return ModelSpec(
            kind="custom",
            in_features=schema.num_features,  # type: ignore[attr-defined]
            num_classes=schema.num_classes,  # type: ignore[attr-defined]
            image_shape=image_shape,
            factory=kind,
            factory_args=parse_model_args(config.model_args),
            categorical=categorical_blocks(schema),
        )
    if kind == "auto":
        kind = "cnn" if image_shape else "mlp"
    if kind == "cnn" and not image_shape:
        raise ValueError("model 'cnn' needs image-shaped data (a schema with image_shape)")
    return ModelSpec(
        kind=kind,
        in_features=schema.num_features,  # type: ignore[attr-defined]
        num_classes=schema.num_classes,  # type: ignore[attr-defined]
        hidden_sizes=config.hidden,
        dropout=config.dropout,
        image_shape=image_shape if kind == "cnn" else None,
    )


def categorical_blocks(schema: object) -> tuple[tuple[str, int, int], ...]:
    """(feature name, first input column, number of columns) of each categorical
    feature's one-hot block, in schema order."""
    blocks, start = [], 0
    for feature in schema.features:  # type: ignore[attr-defined]
        width = len(feature.encoded_names)
        if not feature.is_numeric:
            blocks.append((feature.name, start, width))
        start += width
    return tuple(blocks)


def split(table: Table, *, test_fraction: float, seed: int) -> tuple[Table, Table]:
    """Stratified split when every class has two rows or more, plain otherwise."""
    idx = np.arange(len(table))
    counts = np.bincount(table.y)
    stratify = table.y if counts[counts > 0].min() >= 2 else None
    n_test = max(1, round(len(idx) * test_fraction))
    if stratify is not None and n_test < np.count_nonzero(counts):
        stratify = None
    train_idx, test_idx = train_test_indices(len(idx), n_test, seed=seed, stratify=stratify)
    return table.subset(np.sort(train_idx)), table.subset(np.sort(test_idx))


# A test split needs this many rows left for training and validation after it.
MIN_ROWS_AFTER_TEST = 10


@dataclass(frozen=True)
class HeldOut:
    """A table with its test rows taken out (``test`` None: too few rows, ``note`` why)."""

    rest: Table
    test: Table | None
    note: str = ""


def hold_out_test(table: Table, *, fraction: float, seed: int) -> HeldOut:
    """Take ``fraction`` of the rows out as a test split (stratified when every class has
    two rows or more, as :func:`split`), before anything else touches them. A table that
    would keep fewer than ``MIN_ROWS_AFTER_TEST`` rows, or hold out a single row, gets
    no test split, and ``note`` says so: its training rows are never scored as test."""
    if fraction <= 0:
        return HeldOut(table, None, "")
    n_test = round(len(table) * fraction)
    if n_test < 2 or len(table) - n_test < MIN_ROWS_AFTER_TEST:
        return HeldOut(
            table,
            None,
            f"too few rows ({len(table)}) to hold out a test split of {fraction:g}: it "
            f"needs two test rows and {MIN_ROWS_AFTER_TEST} rows left to train and validate",
        )
    rest, test = split(table, test_fraction=fraction, seed=seed)
    return HeldOut(rest, test)


def deduplicate(table: Table, config: TrainConfig) -> tuple[Table, int]:
    if not config.drop_duplicates:
        return table, 0
    X, y, dropped = drop_duplicates(table.X, table.y)
    return Table(X, y, table.schema, table.source, list(table.warnings)), dropped


def local_stats(table: Table, config: TrainConfig) -> FeatureStats:
    """Statistics of a (deduplicated) table, with histograms when median imputation
    is configured; per channel for images (:mod:`.channel_stats`)."""
    if table.schema.is_image:
        assert table.schema.image_shape is not None
        return compute_channel_stats(
            table.X, table.y, table.schema.num_classes, table.schema.image_shape
        )
    return compute_stats(
        table.X,
        table.y,
        table.schema.num_classes,
        histograms=config.imputation == "median",
    )


def fit_preprocessor(
    stats: FeatureStats, table_or_schema: object, config: TrainConfig
) -> Preprocessor:
    schema = getattr(table_or_schema, "schema", table_or_schema)
    if getattr(schema, "is_image", False):  # per channel: no imputation, log1p or clipping
        return channel_preprocessor(stats, schema.image_shape)  # type: ignore[attr-defined]
    return Preprocessor.fit(
        stats,
        numeric=np.asarray(schema.numeric_mask),  # type: ignore[attr-defined]
        imputation=config.imputation,
        skew_threshold=config.skew_threshold,
        outlier_z=config.outlier_z,
    )


def fit_preparation(
    stats: FeatureStats, table_or_schema: object, config: TrainConfig
) -> tuple[Preprocessor, np.ndarray | None]:
    """The preprocessor and class weights (None with ``class-weighting = none``) that
    (merged) statistics give."""
    pre = fit_preprocessor(stats, table_or_schema, config)
    if config.class_weighting == "none":
        return pre, None
    return pre, class_weights(stats.class_counts, config.class_weighting)


@dataclass
class PreparedData:
    """Cleaned arrays ready for the trainer, and what cleaned them."""

    X: np.ndarray
    y: np.ndarray
    preprocessor: Preprocessor
    class_weights: np.ndarray | None
    duplicates_dropped: int


def prepare_local(table: Table, config: TrainConfig) -> PreparedData:
    """Clean a table with statistics of its own rows (centralized training, or a silo
    before federated statistics are available)."""
    table, dropped = deduplicate(table, config)
    pre, weights = fit_preparation(local_stats(table, config), table, config)
    return PreparedData(pre.transform(table.X), table.y, pre, weights, dropped)
