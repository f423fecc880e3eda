"""Centralized baseline: the same trainer on pooled data, the bar federations aim at.

    python -m simulations.centralized --dataset digits
    python -m simulations.centralized --data silo.csv --schema schema.toml

The data is split three ways: test rows (``--test-fraction``) that nothing chooses on,
validation rows (``--val-fraction`` of the rest) that pick the epoch with the lowest
validation loss (the rule a federation's server uses to pick its best round), and the
training rows. The picked epoch's model is scored once on the test rows. Prints one
JSON object on stdout: the test metrics, and the picked epoch with its validation
metrics.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from typing import Any

from core_training.config import TrainConfig
from core_training.data import BUILTIN_DATASETS, Table, load_table
from core_training.models import build_model
from core_training.pipeline import model_spec_for, prepare_local, split
from core_training.trainer import evaluate, fit
from fl_common.cli import settings_from

DEFAULT_EPOCHS = 30
DEFAULT_VAL_FRACTION = 0.2  # as a federation server's server-val-fraction


def run_centralized(
    table: Table,
    config: TrainConfig,
    *,
    test_fraction: float = 0.25,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test: Table | None = None,
) -> dict[str, Any]:
    """Train on ``table`` less its validation and test rows; keep the epoch with the
    lowest validation loss; report that model's metrics on the test rows.

    ``test`` given: those are the test rows and all of ``table`` is train + validation
    (split as a federation's server splits a data file: stratified, ``config.seed``).
    Otherwise ``test_fraction`` of ``table`` is held out first (stratified, same seed).
    """
    if test is None:
        table, test = split(table, test_fraction=test_fraction, seed=config.seed)
    train, val = split(table, test_fraction=val_fraction, seed=config.seed)
    prepared = prepare_local(train, config)
    val_X = prepared.preprocessor.transform(val.X)
    spec = model_spec_for(table, config)
    import torch

    torch.manual_seed(config.seed)
    model = build_model(spec)
    best: dict[str, Any] = {"epoch": 0, "loss": float("inf")}

    def on_epoch(epoch: int) -> None:
        metrics = evaluate(model, val_X, val.y)
        model.train()  # evaluate switched it to eval mode; the next epoch trains
        if metrics["loss"] < best["loss"]:
            best.update(epoch=epoch, loss=metrics["loss"], metrics=metrics)
            best["state"] = copy.deepcopy(model.state_dict())

    result = fit(
        model,
        prepared.X,
        prepared.y,
        config,
        class_weights=prepared.class_weights,
        on_epoch=on_epoch,
        image_shape=table.schema.image_shape,
    )
    model.load_state_dict(best["state"])
    metrics = evaluate(model, prepared.preprocessor.transform(test.X), test.y)
    chosen = best["metrics"]
    return {
        "dataset": table.source,
        "model": spec.kind,
        "train_rows": len(prepared.y),
        "val_rows": len(val),
        "test_rows": len(test),
        "epochs": config.local_epochs,
        "best_epoch": best["epoch"],
        "val_loss": chosen["loss"],
        "val_accuracy": chosen["accuracy"],
        "val_balanced_accuracy": chosen["balanced_accuracy"],
        "val_macro_f1": chosen["macro_f1"],
        "train_seconds": round(float(result.metrics["seconds"]), 3),
        **metrics,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.centralized",
        description="Train on pooled data, pick the epoch on validation rows, and print "
        "its metrics on held-out test rows as JSON.",
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=BUILTIN_DATASETS)
    src.add_argument("--data", help="CSV or NPZ file (with --schema)")
    parser.add_argument("--schema", help="schema TOML for --data")
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=DEFAULT_VAL_FRACTION,
        help="share of the non-test rows that picks the epoch",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training setting, e.g. --set local-epochs=20 --set optimizer=sgd",
    )
    args = parser.parse_args(argv)
    try:
        for name in ("test_fraction", "val_fraction"):
            value = getattr(args, name)
            if not 0 < value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be in (0, 1), got {value}")
        config = TrainConfig.from_dict({"local-epochs": DEFAULT_EPOCHS, **settings_from(args.set)})
        table = load_table(args.dataset or args.data, args.schema)
        metrics = run_centralized(
            table, config, test_fraction=args.test_fraction, val_fraction=args.val_fraction
        )
    except ValueError as exc:  # ConfigError and DataError included
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
