"""Offline rounds: update files in, the checked set of updates to aggregate out.

A silo that cannot connect runs ``fl-client train`` and hands over an encrypted update
file (kind ``update``). Its metadata (besides the model spec and schema that every model
file carries):

- ``round``: the round this update is for (the base model's round + 1);
- ``base_digest``: :func:`~fl_common.modelfile.weights_digest` of the global model the
  silo started from, so all updates of a round can be checked to share it;
- ``num_examples``: training rows (the aggregation weight); ``silo``: the silo's id;
- ``metrics``: the same metrics a ClientApp's train reply carries (train loss, the base
  model's validation metrics on the silo's split, ``epsilon``, ...);
- ``epsilon`` (None without DP) and ``dp``: the DP terms used;
- ``local_train_config``: the training settings the silo used;
- ``train_config``, ``preprocessing``, ``preprocessing_source``: carried unchanged from
  the base model, so the next global model keeps the federation's settings.

:func:`collect_updates` checks every file the way the ServerApp checks replies
(:func:`~fl_server.aggregation.split_valid` against the global model), after the checks
only files need: it opens (right key, not tampered), it is an update, same model spec,
schema and base model. Each rejected file is named with its reasons.

A silo's statistics file (``fl-client stats``, for ``fl-server init --stats``) is an
encrypted JSON file (kind ``json``) holding ``FeatureStats.to_dict()`` of its training
rows, with metadata ``content`` = :data:`fl_common.modelfile.STATS_CONTENT`, the schema,
rows and silo id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core_training.models import ModelSpec
from core_training.schema import Schema, schema_difference
from fl_common.cli import CLIError, one_line, progress
from fl_common.modelfile import CARRIED_KEYS, arrays_from_state, load_model, weights_digest
from privacy import store
from privacy.crypto import DecryptionError
from privacy.store import ArtifactFormatError

from .aggregation import Update, check_update, split_valid


@dataclass
class UpdateFile:
    name: str
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    spec: ModelSpec
    schema: Schema | None

    @property
    def num_examples(self) -> Any:
        return self.meta.get("num_examples")


def read_update(path: str, *, key: bytes) -> UpdateFile:
    """An update file; DecryptionError, OSError or ValueError when it cannot be one."""
    state, meta = store.load_state(path, key=key, kind="update")
    if not isinstance(state, dict) or "model_spec" not in meta:
        raise ValueError("not an update written by fl-client train (no model spec)")
    schema = Schema.from_dict(meta["schema"], source=path) if meta.get("schema") else None
    return UpdateFile(
        path, arrays_from_state(state), meta, ModelSpec.from_dict(meta["model_spec"]), schema
    )


@dataclass
class UpdateBatch:
    """The updates of one offline round, sorted into valid and rejected."""

    valid: list[Update]
    rejected: dict[str, list[str]]
    spec: ModelSpec
    schema: Schema | None
    round: int
    carried: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def weighted_metrics(self) -> dict[str, float | None]:
        """Example-weighted train metrics of the used updates, and the largest epsilon."""
        total = sum(float(u.num_examples) for u in self.valid)
        out: dict[str, float | None] = {}
        for name in ("train_loss", "train_accuracy"):
            pairs = [(u.metrics.get(name), float(u.num_examples)) for u in self.valid]
            pairs = [(v, w) for v, w in pairs if v is not None]
            out[name] = sum(v * w for v, w in pairs) / total if pairs and total else None
        eps = [u.metrics["epsilon"] for u in self.valid if u.metrics.get("epsilon", -1) >= 0]
        out["epsilon_max"] = max(eps) if eps else None
        return out


def collect_updates(paths: list[str], *, key: bytes, base: str | None) -> UpdateBatch:
    """Read and check update files against ``base`` (a global model file) or, without
    one, against the first update that is sound on its own."""
    twice = sorted({p for p in paths if paths.count(p) > 1})
    if twice:
        raise CLIError(f"update file(s) given more than once: {', '.join(twice)}")
    rejected: dict[str, list[str]] = {}
    files: list[UpdateFile] = []
    for path in progress(paths, "reading updates"):
        try:
            files.append(read_update(path, key=key))
        except ArtifactFormatError as exc:
            rejected[path] = [one_line(str(exc))]
        except DecryptionError:
            rejected[path] = [
                "cannot be opened: another key, damaged or tampered, or not an update"
            ]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            rejected[path] = [one_line(str(exc)) or type(exc).__name__]
    if base is not None:
        loaded = load_model(base, key=key)
        if loaded.quantized:
            raise CLIError(f"--base {base} is an int8 export; give the fp32 global model")
        state = loaded.model.state_dict()
        reference, spec, schema = arrays_from_state(state), loaded.spec, loaded.schema
        digest, origin = weights_digest(state), f"the base model {base}"
        round_ = int(loaded.metadata.get("round", 0)) + 1
        carried = loaded.metadata
    else:
        first = next(
            (f for f in files if not check_update(f.arrays, f.arrays, f.num_examples)), None
        )
        if first is None:
            reasons = "; ".join(f"{n}: {r[0]}" for n, r in rejected.items())
            raise CLIError(
                f"no usable update among {len(paths)} file(s)" + (f": {reasons}" if reasons else "")
            )
        reference, spec, schema = first.arrays, first.spec, first.schema
        digest, origin = first.meta.get("base_digest"), f"the first good update {first.name}"
        round_ = int(first.meta.get("round", 1))
        carried = first.meta
    candidates = []
    for f in files:
        problems = _contract_problems(f, spec, schema, digest, origin)
        if problems:
            rejected[f.name] = problems
        else:
            candidates.append(Update(f.name, f.arrays, f.num_examples, _numbers(f.meta)))
    valid, bad = split_valid(candidates, reference)
    rejected.update(bad)
    by_name = {f.name: f for f in files}
    rows = []
    for path in paths:
        f = by_name.get(path)
        status = "used" if path not in rejected else "rejected: " + "; ".join(rejected[path])
        rows.append(
            {
                "name": path,
                "num_examples": f.num_examples if f else None,
                "train_loss": (f.meta.get("metrics") or {}).get("train_loss") if f else None,
                "status": status,
            }
        )
    kept = {k: carried[k] for k in CARRIED_KEYS if k in carried}
    ordered = {p: rejected[p] for p in paths if p in rejected}
    return UpdateBatch(valid, ordered, spec, schema, round_, kept, rows)


def _contract_problems(
    f: UpdateFile, spec: ModelSpec, schema: Schema | None, digest: str | None, origin: str
) -> list[str]:
    problems = []
    if f.spec != spec:
        problems.append(f"model spec differs from {origin}")
    if (
        schema is not None
        and f.schema is not None
        and (diff := schema_difference(f.schema, schema))
    ):
        problems.append(f"schema differs from {origin}: {diff}")
    if digest is not None and f.meta.get("base_digest") != digest:
        problems.append(f"started from another global model than {origin}")
    return problems


def _numbers(meta: dict[str, Any]) -> dict[str, float]:
    metrics = meta.get("metrics") or {}
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
