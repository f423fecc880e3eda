"""``fl-server``: the server operator's command line.

Make keys, start an offline federation (``init``), combine silos' update files
(``aggregate``), evaluate, export to int8, inspect and re-key any file fedsilo writes,
and report on a run folder. ``fl-server COMMAND --help`` shows each with an example.
Output conventions, exit codes and common flags: :mod:`fl_common.cli`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core_training.importance import SCORES
from fl_common.cli import (
    CLIError,
    Command,
    Progress,
    arg,
    fields,
    key_from,
    ledger_summary,
    load_data,
    make_main,
    metrics_text,
    progress,
    settings_from,
    table,
)

OFFLINE_STRATEGIES = ("fedavg", "fedmedian", "trimmed-mean", "krum")


# -- keygen ----------------------------------------------------------------------------


def keygen(args: argparse.Namespace) -> dict[str, Any]:
    from privacy.keys import generate_key_file, key_id, load_key_file

    path = generate_key_file(Path(args.out))
    return {"path": str(path), "key_id": key_id(load_key_file(path)), "mode": "0600"}


def keygen_text(r: dict[str, Any]) -> str:
    return (
        f"created key file {r['path']} (mode {r['mode']}, key id {r['key_id']})\n"
        f"use it with --key-file {r['path']}; keep it out of artifact folders and back it up"
    )


# -- init ------------------------------------------------------------------------------


def init(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from core_training.augment import augment_problem
    from core_training.config import TrainConfig
    from core_training.models import build_model
    from core_training.pipeline import fit_preparation, local_stats, model_spec_for
    from core_training.schema import Schema
    from fl_common.frozen import FREEZE_KEY
    from fl_common.modelfile import save_model

    values = settings_from(args.set)
    if args.seed is not None:
        values["seed"] = args.seed
    config = TrainConfig.from_dict(values)
    data = load_data(args)
    schema = data.schema if data is not None else Schema.load(args.schema) if args.schema else None
    if schema is None:
        raise CLIError("init needs the federation's schema: --schema FILE or --dataset NAME")
    if not args.stats and data is None and not args.per_silo_preprocessing:
        raise CLIError(NO_SHARED_STATISTICS)
    if problem := augment_problem(config.augment, schema.image_shape):
        raise CLIError(problem)
    spec = model_spec_for(schema, config)
    torch.manual_seed(config.seed)
    model = build_model(spec)
    key = key_from(args)
    meta: dict[str, Any] = {"round": 0, "train_config": config.to_dict()}
    if args.initial_model:
        model.load_state_dict(_initial_state(args.initial_model, spec, schema, key))
        meta["initial_model"] = args.initial_model
    if args.freeze and args.freeze.strip():
        meta[FREEZE_KEY] = _freeze_record(model, args.freeze)
    state = model.state_dict()
    if args.stats:
        stats, rows = _merged_stats(args.stats, schema, key)
        source = f"federated statistics of {len(args.stats)} silo(s), {rows} rows"
    elif data is not None:
        stats = local_stats(data, config)
        source = f"fitted on {data.source} ({len(data)} rows)"
    else:
        stats, source = None, "none: each silo fits its own (--per-silo-preprocessing)"
    if stats is not None:
        meta["preprocessing"] = _prep_metadata(*fit_preparation(stats, schema, config))
    meta["preprocessing_source"] = source
    path = save_model(Path(args.out), state, key=key, spec=spec, schema=schema, **meta)
    return {
        "path": str(path),
        "model_spec": spec.to_dict(),
        "parameters": sum(int(v.numel()) for v in state.values()),
        "features": schema.num_features,
        "image_shape": list(schema.image_shape) if schema.is_image else None,
        "classes": list(schema.classes),
        "preprocessing": source,
        "train_config": config.to_dict(),
        "initial_model": args.initial_model,
        "freeze": meta.get(FREEZE_KEY),
    }


# Silos that standardize with their own means and spreads feed the averaged model
# differently scaled inputs: a weight means something else in every silo.
NO_SHARED_STATISTICS = (
    "init needs statistics every silo shares: run fl-client stats on each silo and pass the "
    "files with --stats (or fit on the server's own data with --data/--dataset); "
    "--per-silo-preprocessing lets each silo standardize on its own instead"
)


# A model spec's fields and the settings (``--set``) or data that decide them.
_SPEC_SETTINGS = {
    "kind": "model",
    "hidden_sizes": "hidden-sizes",
    "dropout": "dropout",
    "channels": "model",
    "factory": "model",
    "factory_args": "model-args",
}


def _initial_state(path: str, spec: Any, schema: Any, key: bytes) -> dict[str, Any]:
    """The weights of ``--initial-model``: an fp32 model file of the very model this
    init builds, for the same schema, so every silo can load them as they are."""
    from fl_common.cli import schema_difference
    from fl_common.modelfile import load_model

    loaded = load_model(path, key=key)
    if loaded.quantized:
        raise CLIError(
            f"--initial-model {path} is an int8 export; start from an fp32 model file "
            "(a run's best-model.bin, a global model or a checkpoint)"
        )
    if loaded.schema is not None and (diff := schema_difference(loaded.schema, schema)):
        raise CLIError(f"--initial-model {path} is for another schema: {diff}")
    if loaded.spec != spec:
        raise CLIError(
            f"--initial-model {path} is {_meta_text('model_spec', loaded.spec.to_dict())}, "
            f"not the model this init builds: {_spec_difference(loaded.spec, spec)}"
        )
    return loaded.model.state_dict()


def _spec_difference(got: Any, want: Any) -> str:
    """How two model specs differ, as the settings that would make them agree."""
    mine, theirs = got.to_dict(), want.to_dict()
    parts = [
        f"{field} {mine.get(field)} in the file, {theirs.get(field)} here"
        + (f" (--set {_SPEC_SETTINGS[field]}=...)" if field in _SPEC_SETTINGS else " (schema)")
        for field in sorted(set(mine) | set(theirs))
        if mine.get(field) != theirs.get(field)
    ]
    return "; ".join(parts)


def _freeze_record(model: Any, patterns: str) -> dict[str, Any]:
    """``--freeze`` checked as the run setting ``freeze`` is, before anything is written."""
    from core_training.config import ConfigError
    from fl_common.frozen import freeze_record

    try:
        return freeze_record(model, patterns)
    except ConfigError as exc:
        raise CLIError(f"--freeze: {exc}") from None


def _merged_stats(paths: list[str], schema: Any, key: bytes) -> tuple[Any, int]:
    from core_training.preprocess import FeatureStats, merge_stats
    from core_training.schema import Schema
    from core_training.stats import STATS_CONTENT
    from fl_common.cli import schema_difference
    from privacy import store

    from .replies import check_stats

    parts = []
    for path in paths:
        payload, meta = store.load_json(path, key=key, kind="json")
        if meta.get("content") != STATS_CONTENT:
            raise CLIError(f"{path} is not a statistics file (make one with fl-client stats)")
        diff = schema_difference(Schema.from_dict(meta["schema"], source=path), schema)
        if diff:
            raise CLIError(f"{path}: the silo's schema differs from the federation's: {diff}")
        try:
            stats = FeatureStats.from_dict(payload)
            # checked as a statistics reply is: shapes from the schema, counts, ranges
            check_stats(stats, schema, rows=int(meta.get("rows", -1)), exact=True)
        except ValueError as exc:
            raise CLIError(f"{path}: {exc} (fl-client stats on that silo)") from None
        parts.append(stats)
    merged = merge_stats(parts)
    return merged, merged.num_rows


def _prep_metadata(pre: Any, weights: Any) -> dict[str, Any]:
    from fl_common.modelfile import preprocessing_metadata

    prep = dict(pre.to_dict())
    if weights is not None:
        prep["class_weights"] = weights
    return preprocessing_metadata(prep)


def _data_shape(r: dict[str, Any]) -> str:
    if r.get("image_shape"):
        return (
            "images of " + " x ".join(map(str, r["image_shape"])) + " (channels x height x width)"
        )
    return f"{r['features']} features"


def init_text(r: dict[str, Any]) -> str:
    return fields(
        [
            ("wrote", r["path"]),
            ("model", f"{_meta_text('model_spec', r['model_spec'])}, {r['parameters']} weights"),
            ("data", f"{_data_shape(r)}, classes {r['classes']}"),
            ("preprocessing", r["preprocessing"]),
            ("local epochs", r["train_config"]["local-epochs"]),
            *_transfer_fields(r),
        ]
    )


def _transfer_fields(r: dict[str, Any]) -> list[tuple[str, Any]]:
    """init's lines about the initial weights and the frozen ones (none without them)."""
    from fl_common.frozen import describe

    out: list[tuple[str, Any]] = []
    if r.get("initial_model"):
        out.append(("initial weights", r["initial_model"]))
    if r.get("freeze"):
        out.append(("frozen", describe(r["freeze"])))
    return out


# -- aggregate -------------------------------------------------------------------------


def aggregate_cmd(args: argparse.Namespace) -> dict[str, Any]:
    import logging

    from fl_common.modelfile import save_model, state_from_arrays
    from fl_common.protocol import record_to_numpy
    from fl_common.settings import RunSettings

    from .aggregation import aggregate, make_strategy
    from .offline import collect_updates

    if args.min_updates < 1:
        raise CLIError(f"--min-updates must be at least 1, got {args.min_updates}")
    settings = RunSettings(trimmed_beta=args.trimmed_beta, krum_malicious=args.krum_malicious)
    key = key_from(args)
    batch = collect_updates(args.updates, key=key, base=args.base)
    used = batch.valid
    if len(used) < args.min_updates:
        reasons = "; ".join(f"{n}: {r[0]}" for n, r in batch.rejected.items())
        raise CLIError(
            f"{len(used)} good update(s) of {len(args.updates)}, fewer than --min-updates "
            f"{args.min_updates}" + (f"; rejected {reasons}" if reasons else "")
        )
    strategy = make_strategy(settings, strategy=args.strategy)
    logging.getLogger("flwr").setLevel(logging.WARNING)  # its per-call INFO lines are noise here
    arrays = batch.complete(record_to_numpy(aggregate(strategy, max(batch.round, 1), used)))
    total = sum(int(u.num_examples) for u in used)
    summary = {
        "strategy": args.strategy,
        "used": [u.name for u in used],
        "rejected": batch.rejected,
        "num_examples": total,
    }
    if batch.frozen:  # the base's weights, as they were: no update may change them
        summary["frozen"] = {"patterns": batch.patterns, "names": sorted(batch.frozen)}
    meta = {**batch.carried, "round": batch.round, "aggregation": summary}
    meta["metrics"] = batch.weighted_metrics()
    path = save_model(
        Path(args.out),
        state_from_arrays(arrays),
        key=key,
        spec=batch.spec,
        schema=batch.schema,
        **meta,
    )
    return {
        "path": str(path),
        "round": batch.round,
        **summary,
        "updates": batch.rows,
        "metrics": meta["metrics"],
    }


def aggregate_text(r: dict[str, Any]) -> str:
    rows = [[u["name"], u["num_examples"], u["train_loss"], u["status"]] for u in r["updates"]]
    lines = [table(rows, ["update", "examples", "train_loss", "status"]), ""]
    lines.append(
        f"wrote {r['path']}: round {r['round']}, {r['strategy']} of {len(r['used'])} "
        f"update(s), {r['num_examples']} examples; {len(r['rejected'])} rejected"
    )
    frozen = r.get("frozen")
    if frozen:
        lines.append(
            f"frozen weights ({frozen['patterns']}: {len(frozen['names'])} tensor(s)) copied "
            "unchanged from the base model"
        )
    return "\n".join(lines)


# -- evaluate and export ---------------------------------------------------------------


def _prepared(args: argparse.Namespace, key: bytes) -> tuple[Any, Any]:
    """The model file and, when data was given, that data cleaned for it."""
    from fl_common.modelfile import load_model

    from .evaluation import prepare

    loaded = load_model(args.model, key=key)
    data = load_data(args)
    return loaded, None if data is None else prepare(loaded, args.model, data, key=key)


def evaluate_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from .evaluation import evaluation, importance

    loaded, data = _prepared(args, key_from(args))
    result = evaluation(loaded, args.model, data)
    if args.importance:
        from .report import plot_importance

        with Progress(len(data.table.schema.features), "permutation importance") as bar:
            found = importance(
                loaded,
                data,
                scoring=args.scoring,
                repeats=args.repeats,
                seed=args.seed,
                on_feature=lambda name: bar.advance(note=name),
            )
        rows = [(f["feature"], f["mean"], f["std"]) for f in found["features"]]
        plot = plot_importance(
            rows, _plot_path(args), title=f"permutation importance ({args.scoring})"
        )
        result["importance"] = {**found, "plot": str(plot)}
    if args.out:
        from fl_common.jsonio import write_json

        result["out"] = str(write_json(Path(args.out), result))
    return result


def _plot_path(args: argparse.Namespace) -> Path:
    if args.plot:
        return Path(args.plot)
    if args.out:
        out = Path(args.out)
        return out.with_name(out.stem + "-importance.png")
    return Path.cwd() / "importance.png"


def evaluate_text(r: dict[str, Any]) -> str:
    head = fields(
        [
            (
                "model",
                f"{r['model']} ({r['kind']}, round {r['round']}{', int8' if r['int8'] else ''})",
            ),
            ("data", f"{r['data']} ({r['rows']} rows)"),
            ("preprocessing", r["preprocessing"]),
        ]
    )
    text = head + "\n\n" + metrics_text(r["metrics"], r["class_names"])
    imp = r.get("importance")
    if imp:
        rows = [[f["feature"], f["mean"], f["std"]] for f in imp["features"]]
        text += (
            f"\n\npermutation importance ({imp['scoring']} drop, {imp['repeats']} repeats; "
            f"baseline {imp['baseline']:.4f}):\n"
            + table(rows, ["feature", "importance", "std"])
            + f"\nplot: {imp['plot']}"
        )
    if r.get("out"):
        text += f"\nwrote {r['out']}"
    return text


def export_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from .evaluation import export_int8, export_onnx

    key = key_from(args)
    if args.int8 and args.format != "onnx":
        raise CLIError("--int8 goes with --format onnx (the default format is int8 already)")
    loaded, data = _prepared(args, key)
    if args.format == "onnx":
        return export_onnx(loaded, args.model, Path(args.out), int8=args.int8, data=data)
    return export_int8(loaded, args.model, Path(args.out), key=key, data=data)


def _acc(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def export_text(r: dict[str, Any]) -> str:
    if r.get("format") == "onnx":
        return _onnx_text(r)
    ratio = r["fp32_bytes"] / max(r["int8_bytes"], 1)
    lines = [
        f"wrote {r['path']} (int8, kind export, {r['file_bytes']} bytes encrypted)",
        f"size      fp32 {r['fp32_bytes']} bytes -> int8 {r['int8_bytes']} bytes ({ratio:.1f}x)",
        f"accuracy  fp32 {_acc(r['fp32_accuracy'])} -> int8 {_acc(r['int8_accuracy'])}"
        + (f" on {r['data']} ({r['rows']} rows)" if r.get("data") else " (no data given)"),
        f"method    {r['int8_method']}"
        + (f" ({r['int8_fallback_reason']})" if r.get("int8_fallback_reason") else ""),
    ]
    return "\n".join(lines)


def _onnx_text(r: dict[str, Any]) -> str:
    precision = "int8, static QDQ" if r["precision"] == "int8" else "fp32"
    lines = [
        f"wrote {r['path']} (ONNX, {precision}, {r['file_bytes']} bytes)",
        "NOT encrypted: anyone with this file can run the model; keep it where the model may go",
        f"input     {r['input']['name']}: float32 [batch, {r['input']['shape'][1]}], the"
        " features cleaned with the model file's preprocessing (not in the ONNX file)",
        f"output    {r['output']['name']}: float32 [batch, {r['output']['shape'][1]}]",
    ]
    if r.get("data"):
        lines.append(f"accuracy  {_acc(r['accuracy'])} on {r['data']} ({r['rows']} rows)")
    return "\n".join(lines)


# -- inspect ---------------------------------------------------------------------------


def inspect_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from privacy import store
    from privacy.keys import is_encrypted_file

    path = Path(args.file)
    if not path.is_file():
        raise CLIError(f"{path} does not exist or is not a file")
    if not is_encrypted_file(path):
        raise CLIError(
            f"{path} is not a fedsilo encrypted file (plain outputs such as history.json are "
            "readable as they are; fl-server report shows a run folder)"
        )
    key = key_from(args)
    info = store.read_info(path, key=key)
    meta = dict(info["metadata"])
    if "preprocessing" in meta:
        prep = meta["preprocessing"] or {}
        meta["preprocessing"] = {
            "columns": len(prep.get("mean", [])),
            "class_weights": prep.get("class_weights"),
        }
    if info["kind"] == "ledger":
        summary = ledger_summary(path, key)
        meta.update((k, summary[k]) for k in ("rounds_recorded", "pending_reservations"))
    return {k: v for k, v in info.items() if k != "metadata"} | {"metadata": meta}


def inspect_text(r: dict[str, Any]) -> str:
    top = [(k, r[k]) for k in ("path", "kind", "format_version", "created", "size_bytes")]
    return fields(top + [(k, _meta_text(k, v)) for k, v in r["metadata"].items()])


def _meta_text(name: str, value: Any) -> str:
    """One metadata entry on one line, the known ones in words."""
    if name == "model_spec" and isinstance(value, dict) and value.get("kind") == "custom":
        args = json.dumps(value.get("factory_args") or {}, sort_keys=True)
        return (
            f"custom {value.get('factory')} {args}: {value.get('in_features')} features -> "
            f"{value.get('num_classes')} classes"
        )
    if name == "model_spec" and isinstance(value, dict):
        layers = list(value.get("hidden_sizes" if value.get("kind") == "mlp" else "channels") or [])
        return (
            f"{value.get('kind')}: {value.get('in_features')} features -> {layers} -> "
            f"{value.get('num_classes')} classes"
        )
    if name == "schema" and isinstance(value, dict):
        label = value.get("label", {})
        return (
            f"label {label.get('column')!r}, classes {label.get('classes')}, "
            f"{len(value.get('features', {}))} features"
        )
    if name in ("train_config", "local_train_config", "config") and isinstance(value, dict):
        from core_training.config import TrainConfig

        defaults = TrainConfig().to_dict()
        changed = {k: v for k, v in value.items() if k in defaults and defaults[k] != v}
        return _brief(changed) + " (others default)" if changed else "defaults"
    if name == "aggregation" and isinstance(value, dict):
        return (
            f"{value.get('strategy')} of {len(value.get('used', []))} update(s), "
            f"{value.get('num_examples')} examples, {len(value.get('rejected', {}))} rejected"
        )
    if name == "freeze" and isinstance(value, dict):
        from fl_common.frozen import describe

        return describe(value)
    if name == "weight_names" and isinstance(value, list):
        return f"{len(value)} tensor(s), the trained ones: " + _brief(value, 120)
    return _brief(value)


def _brief(value: Any, limit: int = 160) -> str:
    """A value on one line: dicts as key=value, floats short, long text cut."""
    if isinstance(value, dict):
        text = ", ".join(f"{k}={_brief(v, 40)}" for k, v in value.items())
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(_brief(v, 20) for v in value) + "]"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- rekey -----------------------------------------------------------------------------


def rekey_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from privacy import store
    from privacy.keys import key_id, load_key_file, rekey_file

    old = load_key_file(args.old_key_file)
    new = key_from(args)
    if old == new:
        raise CLIError("the old and the new key are the same key; nothing to do")
    files = [Path(f) for f in args.files]
    # Check that the old key opens every file before changing any of them.
    for path in progress(files, "checking"):
        try:
            store.read_info(path, key=old)
        except store.DecryptionError as exc:
            raise CLIError(f"{exc} No file was changed.") from None
    for path in progress(files, "re-encrypting"):
        rekey_file(path, old, new)
    return {"files": [str(f) for f in files], "old_key_id": key_id(old), "new_key_id": key_id(new)}


def rekey_text(r: dict[str, Any]) -> str:
    lines = [f"re-encrypted {len(r['files'])} file(s): key {r['old_key_id']} -> {r['new_key_id']}"]
    return "\n".join(lines + [f"  {f}" for f in r["files"]])


# -- report ----------------------------------------------------------------------------


def report_cmd(args: argparse.Namespace) -> dict[str, Any]:
    if len(args.run_dir) > 1:
        return compare_cmd(args)
    if args.out:
        raise CLIError("--out plots a comparison of several run folders; for one, use --plot")
    from .report import CURVES_FILE, history_table, plot_curves

    run_dir = Path(args.run_dir[0])
    history, summary = _read_run(run_dir)
    curves = plot_curves(history, Path(args.plot) if args.plot else run_dir / CURVES_FILE)
    return {
        "run_dir": str(run_dir),
        "table": history_table(history),
        "history": history,
        "summary": summary,
        "curves": str(curves),
    }


def _read_run(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    from .report import HISTORY_FILE, SUMMARY_FILE

    history_path = run_dir / HISTORY_FILE
    if not history_path.is_file():
        raise CLIError(f"{run_dir} holds no {HISTORY_FILE}; pass the folder of a run")
    history = _read_json(history_path)
    summary = _read_json(run_dir / SUMMARY_FILE) if (run_dir / SUMMARY_FILE).is_file() else None
    return history, summary


def compare_cmd(args: argparse.Namespace) -> dict[str, Any]:
    """Several run folders side by side (the settings that differ, best metrics, ...)."""
    if args.plot:
        raise CLIError("--plot redraws one run's curves; to plot a comparison use --out FILE")
    from .report import compare_runs, plot_comparison

    dirs = [Path(d) for d in args.run_dir]
    names = [d.name for d in dirs]
    if len(set(names)) < len(names):  # same folder name under different roots
        names = [str(d) for d in dirs]
    runs = [
        {"name": n, **dict(zip(("history", "summary"), _read_run(d), strict=True))}
        for n, d in zip(names, dirs, strict=True)
    ]
    result = {"run_dirs": [str(d) for d in dirs], **compare_runs(runs)}
    if args.out:
        result["plot"] = str(plot_comparison(runs, Path(args.out)))
    return result


def compare_text(r: dict[str, Any]) -> str:
    metrics = r["metrics"]
    headers = [
        "run",
        *r["differing_settings"],
        "rounds",
        "stop",
        "best round",
        *[f"best {m}" for m in metrics],
        "epsilon",
    ]
    rows = [
        [
            row["run"],
            *[_setting_cell(row["settings"][k]) for k in r["differing_settings"]],
            row["rounds"],
            row["stop_reason"],
            row["best_round"],
            *[row["best_metrics"][m] for m in metrics],
            row["epsilon_max"],
        ]
        for row in r["rows"]
    ]
    text = table(rows, headers)
    if not r["differing_settings"]:
        text += "\n(the runs use the same settings)"
    return text + (f"\nplot: {r['plot']}" if r.get("plot") else "")


def _setting_cell(value: Any) -> Any:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CLIError(f"{path} is not valid JSON: {exc}") from None


def report_text(r: dict[str, Any]) -> str:
    if "rows" in r:
        return compare_text(r)
    text = r["table"]
    s = r["summary"]
    if s:
        best = s.get("best_metrics") or {}
        text += "\n\n" + fields(
            [
                ("stopped", f"{s.get('stop_reason')} after {s.get('rounds_completed')} round(s)"),
                ("best round", s.get("best_round")),
                ("best val_accuracy", best.get("val_accuracy")),
                ("epsilon", s.get("epsilon_max")),
                ("export", (s.get("export") or {}).get("path")),
            ]
        )
    return text + f"\ncurves: {r['curves']}"


# -- registry --------------------------------------------------------------------------

COMMANDS = [
    Command(
        "keygen",
        "make a new 256-bit key file (mode 0600); never overwrites",
        "fl-server keygen --out ~/.fedsilo/keys/federation.key",
        keygen,
        keygen_text,
        [arg("--out", required=True, metavar="K", help="key file to create")],
    ),
    Command(
        "init",
        "write a fresh global model to start an offline federation from",
        "fl-server init --dataset breast-cancer --set hidden-sizes=64,32 --set local-epochs=2 \\\n"
        "    --seed 0 --out models/round-0.bin\n"
        "fl-server init --schema schema.toml --stats silo-a.stats silo-b.stats --out round-0.bin\n"
        "fl-server init --schema schema.toml --stats silo-a.stats silo-b.stats \\\n"
        "    --set hidden-sizes=32 --initial-model best-model.bin --freeze 'net.0.*' \\\n"
        "    --out tl-0.bin",
        init,
        init_text,
        [
            arg("--out", required=True, metavar="MODEL", help="model file to write"),
            arg("--seed", type=int, help="seed of the initial weights (training setting seed)"),
            arg(
                "--stats",
                nargs="+",
                metavar="FILE",
                help="silos' statistics files (fl-client stats): fit the shared preprocessing",
            ),
            arg(
                "--per-silo-preprocessing",
                action="store_true",
                help="without --stats or data: let each silo standardize with its own "
                "statistics (its inputs are then scaled differently from the others')",
            ),
            arg(
                "--initial-model",
                metavar="MODEL",
                help="start from this fp32 model file's weights (e.g. an earlier run's "
                "best-model.bin); same model settings and schema as this init",
            ),
            arg(
                "--freeze",
                metavar="PATTERNS",
                help="weights the silos do not train and do not send, by state-dict name: "
                "fnmatch patterns, comma-separated (e.g. 'net.0.*'); kept in every later "
                "model file",
            ),
        ],
        key=True,
        data="optional",
        settings=True,
    ),
    Command(
        "aggregate",
        "combine silos' update files into a new global model",
        "fl-server aggregate updates/*.bin --base models/round-0.bin --out models/round-1.bin\n"
        "fl-server aggregate a.bin b.bin c.bin --strategy trimmed-mean --out round-1.bin",
        aggregate_cmd,
        aggregate_text,
        [
            arg("updates", nargs="+", metavar="UPDATE", help="update files (fl-client train)"),
            arg("--out", required=True, metavar="MODEL", help="model file to write"),
            arg("--strategy", choices=OFFLINE_STRATEGIES, default="fedavg"),
            arg("--base", metavar="MODEL", help="the global model the updates started from"),
            arg("--min-updates", type=int, default=1, help="good updates needed (default 1)"),
            arg("--trimmed-beta", type=float, default=0.2, help="trimmed-mean: cut per end"),
            arg("--krum-malicious", type=int, default=0, help="krum: malicious silos tolerated"),
        ],
        key=True,
    ),
    Command(
        "evaluate",
        "evaluate a model file (fp32 or int8) on a data set",
        "fl-server evaluate models/round-3.bin --dataset breast-cancer --importance \\\n"
        "    --plot importance.png",
        evaluate_cmd,
        evaluate_text,
        [
            arg("model", metavar="MODEL"),
            arg("--importance", action="store_true", help="permutation feature importance"),
            arg("--scoring", default="accuracy", choices=SCORES, help="importance score"),
            arg("--repeats", type=int, default=5, help="shuffles per feature (default 5)"),
            arg("--seed", type=int, default=0, help="seed of the shuffles"),
            arg("--plot", metavar="FILE", help="importance chart (default next to --out)"),
            arg("--out", metavar="FILE", help="also write the results as JSON here"),
        ],
        key=True,
        data="required",
    ),
    Command(
        "export",
        "quantize a model file to int8 (kind export) and compare size and accuracy; "
        "or write it as plain, unencrypted ONNX (--format onnx)",
        "fl-server export models/round-3.bin --out models/model-int8.bin --dataset breast-cancer\n"
        "fl-server export models/round-3.bin --format onnx --int8 --out model.onnx "
        "--dataset breast-cancer",
        export_cmd,
        export_text,
        [
            arg("model", metavar="MODEL"),
            arg("--out", required=True, metavar="FILE"),
            arg(
                "--format",
                choices=("int8", "onnx"),
                default="int8",
                help="int8: the encrypted int8 export (default); onnx: a plain ONNX file, "
                "NOT encrypted",
            ),
            arg(
                "--int8",
                action="store_true",
                help="with --format onnx: the static int8 model (QDQ); from an fp32 model "
                "it is calibrated on the data given",
            ),
        ],
        key=True,
        data="optional",
    ),
    Command(
        "inspect",
        "describe any encrypted file fedsilo writes (never prints weights)",
        "fl-server inspect ~/.fedsilo/artifacts/digits-20250101-120000-1/checkpoint.bin",
        inspect_cmd,
        inspect_text,
        [arg("file", metavar="FILE")],
        key=True,
    ),
    Command(
        "rekey",
        "re-encrypt files from an old key to a new one (all are checked first)",
        "fl-server rekey artifacts/run/*.bin --old-key-file old.key --key-file new.key",
        rekey_cmd,
        rekey_text,
        [
            arg("files", nargs="+", metavar="FILE"),
            arg("--old-key-file", required=True, metavar="K1", help="the key they use now"),
        ],
        key=True,
    ),
    Command(
        "report",
        "show a run folder's history and redraw curves.png, or compare several runs",
        "fl-server report ~/.fedsilo/artifacts/digits-20250101-120000-1\n"
        "fl-server report ~/.fedsilo/artifacts/wine-* --out comparison.png",
        report_cmd,
        report_text,
        [
            arg("run_dir", nargs="+", metavar="RUN_DIR"),
            arg("--plot", metavar="FILE", help="one run: where to write its curves"),
            arg("--out", metavar="FILE", help="several runs: plot their validation curves here"),
        ],
    ),
]


_main = make_main(
    "fl-server",
    "fedsilo server tools: keys, offline federation, evaluation, export, inspection. "
    "Deployment certificates: fl-server certs {ca,server,node,all} (see fl-server certs -h).",
    COMMANDS,
)


def main(argv: Sequence[str] | None = None) -> int:
    """``fl-server``; ``fl-server certs ...`` is the certificate tool of fl_server.certs,
    which has subcommands of its own."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["certs"]:
        from .certs import main as certs_main

        return certs_main(args[1:])
    return _main(args)


if __name__ == "__main__":
    sys.exit(main())
