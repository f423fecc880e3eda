"""``fl-client``: the data owner's command line.

Check a data file against the federation's schema, share the plain statistics that fit
the common preprocessing, train one offline round into an update file (under DP within
the silo's privacy budget), and see that budget. Nothing here opens a network port: a
silo that cannot connect hands its update file over by any means it trusts.
``fl-client COMMAND --help`` shows each command with an example; output conventions,
exit codes and common flags: :mod:`fl_common.cli`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fl_common.cli import (
    CLIError,
    Command,
    Progress,
    arg,
    check_schema,
    fields,
    key_from,
    ledger_summary,
    load_data,
    make_main,
    settings_from,
    table,
)
from fl_common.settings import RunSettings

# Settings fixed by the global model file (its model spec), not by a silo.
MODEL_SETTINGS = ("model", "hidden-sizes", "dropout")


# -- check-data ------------------------------------------------------------------------


def check_data(args: argparse.Namespace) -> dict[str, Any]:
    from core_training.importance import feature_columns
    from core_training.preprocess import drop_duplicates
    from core_training.schema import DataError

    try:
        data = load_data(args)
    except DataError as exc:
        problems = getattr(exc, "problems", None)
        if problems:
            raise CLIError(
                f"{args.data} cannot be used: {len(problems)} problem(s)", details=problems
            ) from None
        raise
    assert data is not None
    schema = data.schema
    _, _, duplicates = drop_duplicates(data.X, data.y)
    missing = {  # an image has no missing values: its loader refuses any
        name: int(np.isnan(data.X[:, cols]).any(axis=1).sum())
        for name, cols in ([] if schema.is_image else feature_columns(schema))
    }
    counts = np.bincount(data.y, minlength=schema.num_classes)
    classes = {str(c): int(n) for c, n in zip(schema.classes, counts, strict=True)}
    notes = [f"{duplicates} duplicate row(s) (dropped before training)"] if duplicates else []
    problems = _unusable_because(classes, missing, len(data), len(data) - duplicates)
    return {
        "file": data.source,
        "rows": len(data),
        "features": len(schema.features),
        "encoded_columns": schema.num_features,
        "image_shape": list(schema.image_shape) if schema.is_image else None,
        "duplicates": duplicates,
        "missing": missing,
        "classes": classes,
        "notes": notes,
        "problems": problems,
        "usable": not problems,
        "policy": _policy(args).describe(),
    }


def _unusable_because(
    classes: dict[str, int], missing: dict[str, int], rows: int, distinct_rows: int
) -> list[str]:
    """Why a file that loads still cannot train a silo's share of the model, each with
    what to do. A silo validates on a held-out split only from MIN_ROWS_TO_HOLD_OUT
    distinct rows, and its metrics and class weights need every class present."""
    from fl_client.silo import MIN_ROWS_TO_HOLD_OUT

    problems = []
    if distinct_rows < MIN_ROWS_TO_HOLD_OUT:
        problems.append(
            f"only {distinct_rows} distinct row(s), at least {MIN_ROWS_TO_HOLD_OUT} are needed "
            "to hold out a validation split: add rows"
        )
    present = [c for c, n in classes.items() if n > 0]
    if len(present) == 1:
        problems.append(f"every row is of class {present[0]!r}, so the model learns no other")
    problems += [
        f"class {c!r} of the schema has no row: add rows of it or remove it from the schema"
        for c, n in classes.items()
        if n == 0
    ]
    problems += [
        f"column {c!r} is missing in every row: fill it in or remove it from the schema"
        for c, n in missing.items()
        if n == rows
    ]
    return problems


def check_data_verdict(r: dict[str, Any]) -> str | None:
    if r["usable"]:
        return None
    return f"{r['file']} is not usable: " + "; ".join(r["problems"])


def check_data_text(r: dict[str, Any]) -> str:
    missing = {k: v for k, v in r["missing"].items() if v}
    if r.get("image_shape"):
        shape = " x ".join(map(str, r["image_shape"]))
        described = ("image", f"{shape} (channels x height x width), {r['encoded_columns']} values")
    else:
        described = ("features", f"{r['features']} ({r['encoded_columns']} encoded columns)")
    lines = [
        fields(
            [("file", r["file"]), ("rows", r["rows"]), described, ("duplicates", r["duplicates"])]
        ),
        "classes:",
        table([[c, n] for c, n in r["classes"].items()], ["class", "rows"]),
    ]
    if missing:
        lines += [
            "missing values:",
            table([[c, n] for c, n in missing.items()], ["column", "rows"]),
        ]
    else:
        lines.append("missing values: none")
    lines += [f"note: {n}" for n in r["notes"]]
    lines += [f"problem: {n}" for n in r["problems"]]
    lines.append("usable: yes" if r["usable"] else "usable: no")
    return "\n".join(lines)


def _policy(args: argparse.Namespace) -> Any:
    from fl_common.settings import fedsilo_home
    from privacy.policy import find_policy

    return find_policy(args.policy, fedsilo_home(), simulated=False)


# -- shared by stats and train ---------------------------------------------------------


def _silo(args: argparse.Namespace, config: Any, ledger: str | None = None) -> Any:
    """The silo exactly as a deployed ClientApp sees it (same split, id and ledger)."""
    from fl_client.silo import silo_for

    node_config = {
        "data-path": args.data,
        "schema": args.schema,
        "ledger-path": ledger or "",
        "policy": getattr(args, "policy", None) or "",
        "key-file": getattr(args, "key_file", None) or "",
    }
    return silo_for(node_config, RunSettings(local_val_fraction=args.val_fraction), config)


# -- stats -----------------------------------------------------------------------------


def stats_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from core_training.config import TrainConfig
    from core_training.pipeline import local_stats
    from core_training.stats import STATS_CONTENT
    from privacy import store

    config = TrainConfig.from_dict(settings_from(args.set))
    silo = _silo(args, config)
    stats = local_stats(silo.train, config)
    meta = {
        "content": STATS_CONTENT,
        "schema": silo.train.schema.to_dict(),
        "rows": len(silo.train),
        "silo": silo.silo_id,
    }
    path = store.save_json(Path(args.out), stats.to_dict(), key=key_from(args), metadata=meta)
    return {"path": str(path), "silo": silo.silo_id, "rows": len(silo.train)}


def stats_text(r: dict[str, Any]) -> str:
    return (
        f"wrote {r['path']}: counts, means and deviation sums of {r['rows']} training rows "
        f"of {r['silo']} (no rows); give it to the server for fl-server init --stats"
    )


# -- train -----------------------------------------------------------------------------


def train_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from core_training.config import TrainConfig
    from fl_common.frozen import UPDATE_NAMES_KEY, patterns_of, trainable
    from fl_common.modelfile import (
        CARRIED_KEYS,
        load_model,
        preprocessing_from,
        save_model,
        weights_digest,
    )
    from privacy.policy import PolicyDeclined, RunRequest, decide

    from .local_round import DPOptions, open_ledger, preparation, train_round

    key = key_from(args)
    loaded = load_model(args.model, key=key)
    if loaded.quantized:
        raise CLIError(f"{args.model} is an int8 export; train from the fp32 global model")
    overrides = settings_from(args.set)
    fixed = sorted(k for k in overrides if k.replace("_", "-") in MODEL_SETTINGS)
    if fixed:
        raise CLIError(f"{', '.join(fixed)} is fixed by the model file (set it at fl-server init)")
    config = TrainConfig.from_dict({**loaded.metadata.get("train_config", {}), **overrides})
    frozen = _frozen(loaded, args.model)
    silo = _silo(args, config, args.ledger)
    check_schema(silo.train.schema, loaded.schema, args.data)
    shared = preprocessing_from(loaded.metadata)
    pre, weights = preparation(silo.train, config, shared)
    request = RunRequest(
        dp=args.dp,
        target_epsilon=args.target_epsilon,
        delta=args.delta,
        budget=args.budget if args.budget is not None else silo.policy.privacy.budget,
        local_epochs=config.local_epochs,
        batch_size=config.batch_size,
        median_imputation=config.imputation == "median",
        num_parameters=sum(t.numel() for t in loaded.model.parameters()),
    )
    try:
        grant = decide(silo.policy, request)
    except PolicyDeclined as declined:
        raise CLIError(f"{declined} ({silo.policy.source}). No update was written.") from None
    dp = None
    if grant.dp:
        dp = DPOptions.from_grant(
            grant, max_grad_norm=args.max_grad_norm, planned_rounds=args.planned_rounds
        )
    ledger = open_ledger(silo.ledger_path, key=key, dp=dp) if dp else None
    base_digest = weights_digest(loaded.model.state_dict())
    server_round = int(loaded.metadata.get("round", 0)) + 1
    with Progress(config.local_epochs, "training") as bar:
        result = train_round(
            loaded.model,
            silo,
            config,
            preprocessor=pre,
            class_weights=weights,
            server_round=server_round,
            dp=dp,
            ledger=ledger,
            on_epoch=lambda epoch: bar.advance(note=f"epoch {epoch}"),
        )
    if not result.ok:
        raise CLIError(f"{result.reason} Ledger: {silo.ledger_path}. No update was written.")
    metrics = result.metrics()
    meta = {k: loaded.metadata[k] for k in CARRIED_KEYS if k in loaded.metadata}
    meta.update(
        round=server_round,
        base_digest=base_digest,
        num_examples=result.num_examples,
        silo=silo.silo_id,
        metrics=metrics,
        epsilon=result.epsilon,
        dp=dp.__dict__ if dp else None,
        local_train_config=config.to_dict(),
        local_preprocessing="federation" if shared else "fitted on this silo's rows",
    )
    state = trainable(result.state or {}, frozen)  # the frozen weights are the base's
    if frozen:
        meta[UPDATE_NAMES_KEY] = list(state)
    path = save_model(
        Path(args.out),
        state,
        key=key,
        spec=loaded.spec,
        schema=loaded.schema,
        kind="update",
        **meta,
    )
    return {
        "path": str(path),
        "round": server_round,
        "silo": silo.silo_id,
        "num_examples": result.num_examples,
        "val_examples": metrics["val_examples"],
        "metrics": metrics,
        "epsilon": result.epsilon,
        "ledger": str(silo.ledger_path) if dp else None,
        "preprocessing": meta["local_preprocessing"],
        "policy": silo.policy.describe(),
        "frozen": patterns_of(loaded.metadata) if frozen else None,
        "update_names": list(state),
    }


def _frozen(loaded: Any, path: str) -> frozenset[str]:
    """The weights the model file freezes, with training turned off for them: they stay
    the base model's, so the update leaves them out (smaller, and nothing to check)."""
    from core_training.layers import freeze_
    from fl_common.frozen import frozen_names

    try:
        frozen = frozen_names(loaded.model, loaded.metadata)
    except ValueError as exc:  # ConfigError too: patterns that do not fit the model
        raise CLIError(f"{path}: {exc}") from None
    freeze_(loaded.model, frozen)
    return frozen


def train_text(r: dict[str, Any]) -> str:
    m = r["metrics"]
    return fields(
        [
            ("wrote", f"{r['path']} (update for round {r['round']})"),
            ("silo", r["silo"]),
            ("trained on", f"{r['num_examples']} rows"),
            ("train loss", m["train_loss"]),
            ("train accuracy", m["train_accuracy"]),
            (
                "base model",
                f"val_accuracy {m['val_accuracy']:.4f} on {r['val_examples']} rows held out here",
            ),
            ("preprocessing", r["preprocessing"]),
            *_frozen_fields(r),
            ("epsilon spent", r["epsilon"]),
            ("ledger", r["ledger"]),
            ("policy", r["policy"]),
        ]
    )


def _frozen_fields(r: dict[str, Any]) -> list[tuple[str, Any]]:
    """train's line about frozen weights (none when the model freezes nothing)."""
    if not r.get("frozen"):
        return []
    held = len(r["update_names"])
    return [("frozen", f"{r['frozen']}: not trained; the update holds the other {held} tensor(s)")]


# -- budget ----------------------------------------------------------------------------


def budget_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from core_training.config import TrainConfig
    from fl_common.settings import fedsilo_home

    key = key_from(args)
    if args.ledger:
        paths = [Path(args.ledger)]
    elif args.data:
        if not args.schema:
            raise CLIError(f"--data {args.data} needs --schema FILE (the data contract)")
        paths = [_silo(args, TrainConfig()).ledger_path]
    else:
        folder = fedsilo_home() / "ledgers"
        paths = sorted(folder.glob("*.ledger"))
        if not paths:
            raise CLIError(
                f"no privacy ledger in {folder}; pass --ledger PATH or --data FILE --schema FILE"
            )
    return {"ledgers": [ledger_summary(path, key) for path in paths]}


def budget_text(r: dict[str, Any]) -> str:
    parts = []
    for led in r["ledgers"]:
        head = fields(
            [
                ("ledger", led["path"]),
                ("budget", f"epsilon {led['budget_epsilon']:g} at delta {led['delta']:g}"),
                ("spent", f"{led['spent_epsilon']:.4f} ({led['accountant']} accountant)"),
                ("remaining", led["remaining_epsilon"]),
                ("rounds", f"{led['rounds_recorded']} ({led['pending_reservations']} pending)"),
            ]
        )
        rows = [
            [
                e["round"],
                e["label"],
                e["noise_multiplier"],
                e["sample_rate"],
                e["steps"],
                e["status"],
                e["settled_at"] or e["reserved_at"],
            ]
            for e in led["entries"]
        ]
        headers = ["round", "silo", "noise", "rate", "steps", "status", "at"]
        parts.append(head + ("\n" + table(rows, headers) if rows else ""))
    return "\n\n".join(parts)


# -- registry --------------------------------------------------------------------------

_POLICY = arg(
    "--policy",
    metavar="FILE",
    help="the silo's policy TOML (default: $FEDSILO_HOME/policy.toml if present, else the "
    "built-in defaults, which require DP)",
)

_DATA = [
    arg("--data", required=True, metavar="FILE", help="the silo's CSV or NPZ file"),
    arg("--schema", required=True, metavar="FILE", help="the federation's schema TOML"),
    arg(
        "--val-fraction",
        type=float,
        default=RunSettings.local_val_fraction,
        help="share held out to validate the received model (default %(default)s)",
    ),
]

COMMANDS = [
    Command(
        "check-data",
        "check a data file against the schema: rows, duplicates, missing values, classes",
        "fl-client check-data --data hospital-a.csv --schema schema.toml",
        check_data,
        check_data_text,
        [_POLICY],
        data="required",
        verdict=check_data_verdict,
    ),
    Command(
        "stats",
        "write this silo's plain statistics (counts and moments, never rows) for fl-server init",
        "fl-client stats --data hospital-a.csv --schema schema.toml --out hospital-a.stats",
        stats_cmd,
        stats_text,
        [
            *_DATA,
            arg("--out", required=True, metavar="FILE", help="statistics file to write"),
            _POLICY,
        ],
        key=True,
        settings=True,
    ),
    Command(
        "train",
        "one offline round: global model file in, local training, encrypted update file out",
        "fl-client train --model round-0.bin --data hospital-a.csv --schema schema.toml \\\n"
        "    --out hospital-a-round-1.bin --set local-epochs=2\n"
        "fl-client train --model round-0.bin --data hospital-a.csv --schema schema.toml \\\n"
        "    --out update.bin --dp --target-epsilon 2 --delta 1e-5 --budget 8",
        train_cmd,
        train_text,
        [
            arg("--model", required=True, metavar="MODEL", help="the global model file"),
            *_DATA,
            arg("--out", required=True, metavar="UPDATE", help="update file to write"),
            arg("--dp", action="store_true", help="train with DP-SGD within the silo's budget"),
            arg(
                "--target-epsilon",
                type=float,
                default=RunSettings.target_epsilon,
                help="epsilon of --planned-rounds rounds like this one (default %(default)s)",
            ),
            arg(
                "--planned-rounds",
                type=int,
                default=1,
                help="rounds the target epsilon covers (default %(default)s)",
            ),
            arg(
                "--delta",
                type=float,
                default=RunSettings.target_delta,
                help="delta of the guarantee and the ledger (default %(default)s)",
            ),
            arg(
                "--max-grad-norm",
                type=float,
                default=RunSettings.dp_max_grad_norm,
                help="per-sample clipping norm (default %(default)s)",
            ),
            arg(
                "--budget",
                type=float,
                default=None,
                help="stop this training if the silo's total epsilon would pass this; the "
                "lifetime budget itself is the policy's privacy.budget",
            ),
            _POLICY,
            arg(
                "--ledger",
                metavar="PATH",
                help="privacy ledger (default $FEDSILO_HOME/ledgers/<silo-id>.ledger)",
            ),
        ],
        key=True,
        settings=True,
    ),
    Command(
        "budget",
        "show the silo's privacy ledger: epsilon spent, remaining, rounds recorded",
        "fl-client budget --data hospital-a.csv --schema schema.toml\n"
        "fl-client budget --ledger ~/.fedsilo/ledgers/silo-1a2b3c4d5e6f.ledger --json",
        budget_cmd,
        budget_text,
        [
            arg(
                "--ledger",
                metavar="PATH",
                help="a ledger file (default: the silo's, or all under $FEDSILO_HOME/ledgers)",
            ),
            arg("--data", metavar="FILE", help="the silo's data file: show its default ledger"),
            arg("--schema", metavar="FILE", help="schema TOML of --data"),
            _POLICY,
            arg(
                "--val-fraction",
                type=float,
                default=RunSettings.local_val_fraction,
                help=argparse.SUPPRESS,
            ),
        ],
        key=True,
    ),
]


main = make_main(
    "fl-client",
    "fedsilo silo tools: check data, share statistics, train offline, see the budget.",
    COMMANDS,
)


if __name__ == "__main__":
    sys.exit(main())
