"""Model files: encrypted, self-describing, and the int8 export. Both sides use them
(the server writes global models, a silo's ``fl-client train`` writes updates), so the
format lives here, not in either app.

Every model file holds the weights and, in its metadata, the ``ModelSpec`` and the
schema it was trained for, so any file can be turned back into a working model (for
evaluation, export, or as the start of a new federation) without outside knowledge. A
custom model's spec records its factory reference and arguments: loading imports that
factory from the app folder (``core_training.custom_model``) and calls it, nothing else.
Where the federation fitted one, the metadata also holds the preprocessing (the fitted
preprocessor's arrays and the class weights, ``preprocessing``), so data is cleaned the
way the model was trained wherever the file goes. A model whose weights are partly
frozen records the patterns (``freeze``, :mod:`fl_common.frozen`); its updates hold only
the trained weights and are not whole models.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core_training.models import ModelSpec, build_model
from core_training.preprocess import Preprocessor
from core_training.quantize import PACKING, Int8Model, load_int8, pack_int8
from core_training.schema import Schema
from fl_common.frozen import FREEZE_KEY, UPDATE_NAMES_KEY
from privacy import store

MODEL_KINDS_FP32 = ("model", "update", "checkpoint")
# What an update file carries over from the global model it was trained from, and an
# aggregated model from its base: the federation's model-level settings.
CARRIED_KEYS = ("train_config", "preprocessing", "preprocessing_source", FREEZE_KEY)


@dataclass
class LoadedModel:
    model: nn.Module
    spec: ModelSpec
    schema: Schema | None
    metadata: dict[str, Any]
    quantized: bool


def serialized_size(state: dict[str, Any]) -> int:
    """Bytes of a state dict as ``torch.save`` writes it (before encryption)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.tell()


def model_metadata(spec: ModelSpec, schema: Schema | None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"model_spec": spec.to_dict(), **extra}
    if schema is not None:
        meta["schema"] = schema.to_dict()
    return meta


def save_model(
    path: Path,
    state: dict[str, torch.Tensor],
    *,
    key: bytes,
    spec: ModelSpec,
    schema: Schema | None,
    kind: str = "model",
    **extra: Any,
) -> Path:
    return store.save_state(
        path, state, key=key, kind=kind, metadata=model_metadata(spec, schema, **extra)
    )


def load_model(path: str | Path, *, key: bytes) -> LoadedModel:
    """Any model file we write (model, update, checkpoint, int8 export) as a model."""
    info = store.read_info(path, key=key)
    kind = info["kind"]
    if kind not in (*MODEL_KINDS_FP32, "export"):
        raise ValueError(f"{path} holds a {kind}, not a model")
    payload, meta = store.load_state(path, key=key, kind=kind)
    if kind == "update" and meta.get(UPDATE_NAMES_KEY) is not None:
        raise ValueError(
            f"{path} is an update of a model with frozen weights: it holds only the trained "
            "ones; use the model fl-server aggregate --base makes of it"
        )
    if kind == "checkpoint":
        payload = payload["best_state"]
    spec = ModelSpec.from_dict(meta["model_spec"])
    schema = Schema.from_dict(meta["schema"], source=str(path)) if meta.get("schema") else None
    model = build_model(spec)
    quantized = kind == "export"
    if quantized:
        # Exports written before static quantization hold a plain dynamic state dict.
        method = meta.get("int8_method", "dynamic")
        model = load_int8(model, payload, method, packed=meta.get("int8_packing") == PACKING)
    else:
        model.load_state_dict(payload)
    model.eval()
    return LoadedModel(model, spec, schema, meta, quantized)


def save_int8(
    path: Path,
    int8: Int8Model,
    *,
    key: bytes,
    spec: ModelSpec,
    schema: Schema | None,
    **extra: Any,
) -> tuple[Path, int]:
    """Write an int8 model as kind ``export`` in the packed layout, recording how it
    was quantized; returns the path and the payload's size before encryption."""
    payload = pack_int8(int8.model.state_dict())
    path = save_model(
        path,
        payload,
        key=key,
        spec=spec,
        schema=schema,
        kind="export",
        int8_method=int8.method,
        int8_fallback_reason=int8.fallback_reason,
        int8_packing=PACKING,
        **extra,
    )
    return path, serialized_size(payload)


def state_from_arrays(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in arrays.items()}


def arrays_from_state(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in state.items()}


def weights_digest(state: Mapping[str, Any]) -> str:
    """A fingerprint of a model's weights (names, dtypes, shapes, values): an update
    records the digest of the model it started from, so aggregation can check that all
    updates of a round started from the same global model."""
    h = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        array = np.ascontiguousarray(array)
        h.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        h.update(array.tobytes())
    return h.hexdigest()[:32]


def preprocessing_metadata(prep: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The preprocessor's arrays and ``class_weights`` (the layout of ``RunState.prep``)
    as JSON lists, for a model file's ``preprocessing`` metadata."""
    return {k: np.asarray(v, dtype=np.float64).tolist() for k, v in prep.items()}


def preprocessing_from(
    metadata: Mapping[str, Any],
) -> tuple[Preprocessor, np.ndarray | None] | None:
    """The preprocessor and class weights a model file carries (None if it has none)."""
    data = dict(metadata.get("preprocessing") or {})
    if not data:
        return None
    weights = data.pop("class_weights", None)
    return Preprocessor.from_dict(data), None if weights is None else np.asarray(weights)
