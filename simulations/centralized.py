"""Centralized baseline: the same trainer on pooled data, the bar federations aim at.

    python -m simulations.centralized --dataset digits
    python -m simulations.centralized --data silo.csv --schema schema.toml

Prints the test metrics as one JSON object on stdout.
"""

from __future__ import annotations

import argparse
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


def run_centralized(
    table: Table, config: TrainConfig, *, test_fraction: float = 0.25
) -> dict[str, Any]:
    """Train on a stratified (1 - test_fraction) split, report metrics on the rest."""
    train, test = split(table, test_fraction=test_fraction, seed=config.seed)
    prepared = prepare_local(train, config)
    spec = model_spec_for(table, config)
    import torch

    torch.manual_seed(config.seed)
    model = build_model(spec)
    result = fit(model, prepared.X, prepared.y, config, class_weights=prepared.class_weights)
    metrics = evaluate(model, prepared.preprocessor.transform(test.X), test.y)
    return {
        "dataset": table.source,
        "model": spec.kind,
        "train_rows": len(prepared.y),
        "test_rows": len(test),
        "train_seconds": round(float(result.metrics["seconds"]), 3),
        **metrics,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.centralized",
        description="Train on pooled data and print test metrics as JSON.",
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=BUILTIN_DATASETS)
    src.add_argument("--data", help="CSV or NPZ file (with --schema)")
    parser.add_argument("--schema", help="schema TOML for --data")
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training setting, e.g. --set local-epochs=20 --set optimizer=sgd",
    )
    args = parser.parse_args(argv)
    try:
        config = TrainConfig.from_dict({"local-epochs": DEFAULT_EPOCHS, **settings_from(args.set)})
        table = load_table(args.dataset or args.data, args.schema)
        metrics = run_centralized(table, config, test_fraction=args.test_fraction)
    except ValueError as exc:  # ConfigError and DataError included
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
