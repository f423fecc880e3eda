"""A model file on a data set: cleaned the way the model was trained, evaluated, its
features ranked by permutation importance, or exported to int8 and compared.

``fl-server evaluate`` and ``fl-server export`` are thin wrappers around these; they
work as well from Python (a notebook on the server's validation data).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core_training.config import TrainConfig
from core_training.data import Table
from core_training.importance import permutation_importance
from core_training.models import quantize_int8
from core_training.pipeline import fit_preparation, local_stats
from core_training.preprocess import Preprocessor
from core_training.quantize import Int8Model, quantize_for_export
from core_training.schema import DataError, schema_difference
from core_training.trainer import evaluate, predict_proba
from fl_common.modelfile import LoadedModel, preprocessing_from, save_int8, serialized_size
from privacy import store

FROM_FILE = "from the model file"
FITTED_HERE = "fitted on the evaluation data (the model file has none)"


@dataclass
class Prepared:
    """Evaluation data cleaned for one model, and where the cleaning came from."""

    X: np.ndarray
    y: np.ndarray
    table: Table
    preprocessing: str  # FROM_FILE or FITTED_HERE


def prepare(loaded: LoadedModel, path: str | Path, table: Table, *, key: bytes) -> Prepared:
    """Check ``table`` against the model's schema and clean it with the model file's
    preprocessing (a checkpoint's lives in its payload); without one, fit it here."""
    if loaded.schema is not None and (diff := schema_difference(table.schema, loaded.schema)):
        raise DataError(f"{table.source}: the data's schema differs from the model's: {diff}")
    if table.schema.num_features != loaded.spec.in_features:
        raise DataError(
            f"{table.source} has {table.schema.num_features} feature columns; the model "
            f"expects {loaded.spec.in_features}"
        )
    shared = preprocessing_from(loaded.metadata) or _checkpoint_preprocessing(loaded, path, key)
    if shared is not None:
        return Prepared(shared[0].transform(table.X), table.y, table, FROM_FILE)
    config = TrainConfig.from_dict(loaded.metadata.get("train_config", {}))
    pre, _ = fit_preparation(local_stats(table, config), table, config)
    return Prepared(pre.transform(table.X), table.y, table, FITTED_HERE)


def _checkpoint_preprocessing(
    loaded: LoadedModel, path: str | Path, key: bytes
) -> tuple[Preprocessor, np.ndarray | None] | None:
    if "best_round" not in loaded.metadata or "config" not in loaded.metadata:
        return None  # not a checkpoint
    payload, _ = store.load_state(path, key=key, kind="checkpoint")
    prep = {k: v.numpy() for k, v in payload.get("prep", {}).items()}
    weights = prep.pop("class_weights", None)
    return (Preprocessor.from_dict(prep), weights) if prep else None


def describe(loaded: LoadedModel, path: str | Path) -> dict[str, Any]:
    return {
        "model": str(path),
        "kind": loaded.spec.kind,
        "round": loaded.metadata.get("round"),
        "int8": loaded.quantized,
    }


def evaluation(loaded: LoadedModel, path: str | Path, data: Prepared) -> dict[str, Any]:
    """Loss, accuracy, balanced accuracy, macro-F1 and per-class recall."""
    return {
        **describe(loaded, path),
        "data": data.table.source,
        "rows": len(data.y),
        "class_names": [str(c) for c in data.table.schema.classes],
        "preprocessing": data.preprocessing,
        "metrics": evaluate(loaded.model, data.X, data.y),
    }


def importance(
    loaded: LoadedModel,
    data: Prepared,
    *,
    scoring: str = "accuracy",
    repeats: int = 5,
    seed: int = 0,
    on_feature: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Permutation importance of each schema feature for this model on this data."""

    def predict(rows: np.ndarray) -> np.ndarray:
        return predict_proba(loaded.model, rows).argmax(1)

    baseline, found = permutation_importance(
        predict,
        data.X,
        data.y,
        data.table.schema,
        scoring=scoring,
        n_repeats=repeats,
        seed=seed,
        on_feature=on_feature,
    )
    return {
        "scoring": scoring,
        "baseline": baseline,
        "repeats": repeats,
        "features": [asdict(i) for i in found],
    }


def export_int8(
    loaded: LoadedModel, path: str | Path, out: Path, *, key: bytes, data: Prepared | None
) -> dict[str, Any]:
    """Quantize to int8 (static, calibrated on ``data``; dynamic without data or where
    static quantization fails), save encrypted as kind ``export`` (keeping the model's
    metadata), and compare sizes and, on ``data``, accuracies."""
    if loaded.quantized:
        raise ValueError(f"{path} is already an int8 export")
    if data is None:
        reason = "no data given to calibrate on (--data or --dataset)"
        int8 = Int8Model(quantize_int8(loaded.model), "dynamic", reason)
    else:
        int8 = quantize_for_export(loaded.model, data.X)
    result: dict[str, Any] = {
        **describe(loaded, path),
        "fp32_bytes": serialized_size(loaded.model.state_dict()),
        "fp32_accuracy": None,
        "int8_accuracy": None,
        "int8_method": int8.method,
        "int8_fallback_reason": int8.fallback_reason,
    }
    if data is not None:
        result["fp32_accuracy"] = evaluate(loaded.model, data.X, data.y)["accuracy"]
        result["int8_accuracy"] = evaluate(int8.model, data.X, data.y)["accuracy"]
        result.update(data=data.table.source, rows=len(data.y), preprocessing=data.preprocessing)
    carried = {
        k: v
        for k, v in loaded.metadata.items()
        if k not in ("model_spec", "schema", "fp32_accuracy", "int8_accuracy")
        and not k.startswith("int8_")
    }
    saved, result["int8_bytes"] = save_int8(
        out,
        int8,
        key=key,
        spec=loaded.spec,
        schema=loaded.schema,
        **carried,
        fp32_accuracy=result["fp32_accuracy"],
        int8_accuracy=result["int8_accuracy"],
    )
    result.update(path=str(saved), file_bytes=saved.stat().st_size)
    return result


def export_onnx(
    loaded: LoadedModel, path: str | Path, out: Path, *, int8: bool, data: Prepared | None
) -> dict[str, Any]:
    """Write the model as plain (unencrypted) ONNX to ``out``, atomically. ``int8``:
    the static int8 model (an int8 export file's, or quantized here, calibrated on
    ``data``); refused where only dynamic int8 is possible."""
    from core_training.onnx_export import OnnxUnsupported, onnx_bytes

    if loaded.quantized and not int8:
        raise ValueError(f"{path} is an int8 export: add --int8, or give the fp32 model")
    method, reason = "fp32", None
    model = loaded.model
    if int8 and loaded.quantized:
        method = loaded.metadata.get("int8_method", "dynamic")
        reason = loaded.metadata.get("int8_fallback_reason")
    elif int8:
        if data is None:
            raise ValueError(
                "--int8 from an fp32 model needs rows to calibrate on: give --data or "
                "--dataset, or an int8 export file"
            )
        quantized = quantize_for_export(loaded.model, data.X)
        model, method, reason = quantized.model, quantized.method, quantized.fallback_reason
    if int8 and method != "static":
        why = f" ({reason})" if reason else ""
        raise OnnxUnsupported(
            f"cannot export int8 as ONNX: the model is dynamic int8{why}, which ONNX QDQ "
            "cannot express"
        )
    content = onnx_bytes(model, loaded.spec.in_features)
    out.parent.mkdir(parents=True, exist_ok=True)
    with store.atomic_write(out) as handle:
        handle.write(content)
    result: dict[str, Any] = {
        **describe(loaded, path),
        "path": str(out),
        "format": "onnx",
        "precision": "int8" if int8 else "fp32",
        "int8_method": method if int8 else None,
        "file_bytes": out.stat().st_size,
        "encrypted": False,
        "input": {"name": "features", "shape": ["batch", loaded.spec.in_features]},
        "output": {"name": "logits", "shape": ["batch", loaded.spec.num_classes]},
        "accuracy": None,
    }
    if data is not None:
        result.update(
            accuracy=evaluate(model, data.X, data.y)["accuracy"],
            data=data.table.source,
            rows=len(data.y),
        )
    return result
