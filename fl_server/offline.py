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
- ``train_config``, ``preprocessing``, ``preprocessing_source``, ``freeze``: carried
  unchanged from the base model, so the next global model keeps the federation's
  settings;
- ``weight_names``: with ``freeze``, the names the update holds: only the trained ones.

With ``freeze`` (:mod:`fl_common.frozen`) the base model decides what an update must
hold: exactly its names that are not frozen, with their shapes. An update that holds a
frozen weight, or misses a trained one, is rejected by name; the new global model takes
the frozen weights from the base unchanged. Such updates need ``--base``.

:func:`collect_updates` checks every file the way the ServerApp checks replies
(:func:`~fl_server.aggregation.split_valid` against the global model), after the checks
only files need: it opens (right key, not tampered), it is an update, same model spec,
schema and base model. Each rejected file is named with its reasons.

A silo's statistics file (``fl-client stats``, for ``fl-server init --stats``) is an
encrypted JSON file (kind ``json``) holding ``FeatureStats.to_dict()`` of its training
rows, with metadata ``content`` = :data:`core_training.stats.STATS_CONTENT`, the schema,
rows and silo id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core_training.models import ModelSpec
from core_training.schema import Schema, schema_difference
from fl_common.cli import CLIError, one_line, progress
from fl_common.frozen import FREEZE_KEY, frozen_names, patterns_of, trainable
from fl_common.modelfile import CARRIED_KEYS, arrays_from_state, load_model, weights_digest
from privacy import store
from privacy.crypto import DecryptionError
from privacy.store import ArtifactFormatError

from .aggregation import Update, check_update, split_valid

# Why an update of a model with frozen weights is rejected without --base.
NEEDS_BASE = "holds only the trained weights of a model with frozen ones; aggregate it with --base"


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
    order: list[str] = field(default_factory=list)  # the model's names, in its order
    frozen: dict[str, np.ndarray] = field(default_factory=dict)  # the base's, unchanged
    patterns: str = ""  # the base model's freeze patterns

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

    def complete(self, aggregated: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The new global model: the aggregated weights, and the frozen ones as the base
        holds them (updates never carry those), in the model's own order."""
        merged = {**aggregated, **self.frozen}
        return {k: merged[k] for k in self.order or list(merged)}


@dataclass
class Reference:
    """What a round's updates are checked against: the base model (``--base``) or,
    without one, the first update that is sound on its own. ``arrays`` holds exactly
    the names and shapes an update must hold (with freeze: the trained ones only)."""

    arrays: dict[str, np.ndarray]
    spec: ModelSpec
    schema: Schema | None
    digest: str | None
    origin: str
    round: int
    carried: dict[str, Any]
    order: list[str]
    frozen: dict[str, np.ndarray] = field(default_factory=dict)
    patterns: str = ""


def collect_updates(paths: list[str], *, key: bytes, base: str | None) -> UpdateBatch:
    """Read and check update files against ``base`` (a global model file) or, without
    one, against the first update that is sound on its own."""
    twice = sorted({p for p in paths if paths.count(p) > 1})
    if twice:
        raise CLIError(f"update file(s) given more than once: {', '.join(twice)}")
    files, rejected = _read_all(paths, key=key)
    if base is not None:
        ref = _reference_from_base(base, key=key)
    else:
        ref = _reference_from_updates(files, rejected, len(paths))
    candidates = []
    for f in (f for f in files if f.name not in rejected):
        problems = _contract_problems(f, ref)
        if problems:
            rejected[f.name] = problems
        else:
            candidates.append(Update(f.name, f.arrays, f.num_examples, _numbers(f.meta)))
    valid, bad = split_valid(candidates, ref.arrays)
    rejected.update(bad)
    rows = _rows(paths, files, rejected)
    kept = {k: ref.carried[k] for k in CARRIED_KEYS if k in ref.carried}
    ordered = {p: rejected[p] for p in paths if p in rejected}
    return UpdateBatch(
        valid,
        ordered,
        ref.spec,
        ref.schema,
        ref.round,
        kept,
        rows,
        order=ref.order,
        frozen=ref.frozen,
        patterns=ref.patterns,
    )


def _read_all(paths: list[str], *, key: bytes) -> tuple[list[UpdateFile], dict[str, list[str]]]:
    """The update files that open, and why each of the others does not."""
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
    return files, rejected


def _reference_from_base(base: str, *, key: bytes) -> Reference:
    """The base model as the reference. Its own freeze patterns (checked again on its
    model) decide which names an update must hold and which weights the new model
    takes from it unchanged."""
    loaded = load_model(base, key=key)
    if loaded.quantized:
        raise CLIError(f"--base {base} is an int8 export; give the fp32 global model")
    try:
        frozen = frozen_names(loaded.model, loaded.metadata)
    except ValueError as exc:  # ConfigError too: a pattern that no longer fits the model
        raise CLIError(f"--base {base}: {one_line(str(exc))}") from None
    state = loaded.model.state_dict()
    arrays = arrays_from_state(state)
    return Reference(
        arrays=trainable(arrays, frozen),
        spec=loaded.spec,
        schema=loaded.schema,
        digest=weights_digest(state),
        origin=f"the base model {base}",
        round=int(loaded.metadata.get("round", 0)) + 1,
        carried=loaded.metadata,
        order=list(arrays),
        frozen={k: v for k, v in arrays.items() if k in frozen},
        patterns=patterns_of(loaded.metadata) if frozen else "",
    )


def _reference_from_updates(
    files: list[UpdateFile], rejected: dict[str, list[str]], count: int
) -> Reference:
    """The first update that is sound on its own as the reference. An update of a model
    with frozen weights holds only the trained ones, and the model it makes needs the
    frozen ones from the base: without ``--base`` it is rejected (all of them: exit 2)."""
    partial = [f for f in files if f.meta.get(FREEZE_KEY)]
    if partial and len(partial) == len(files):
        raise CLIError(
            f"the update(s) are of a model with frozen weights (freeze "
            f"{_patterns_text(partial[0].meta)}) and hold only the trained ones: give "
            "--base MODEL, the global model they started from; the new model takes the "
            "frozen weights from it"
        )
    for f in partial:
        rejected[f.name] = [NEEDS_BASE]
    whole = [f for f in files if f not in partial]
    first = next((f for f in whole if not check_update(f.arrays, f.arrays, f.num_examples)), None)
    if first is None:
        reasons = "; ".join(f"{n}: {r[0]}" for n, r in rejected.items())
        raise CLIError(
            f"no usable update among {count} file(s)" + (f": {reasons}" if reasons else "")
        )
    return Reference(
        arrays=first.arrays,
        spec=first.spec,
        schema=first.schema,
        digest=first.meta.get("base_digest"),
        origin=f"the first good update {first.name}",
        round=int(first.meta.get("round", 1)),
        carried=first.meta,
        order=list(first.arrays),
    )


def _patterns_text(meta: dict[str, Any]) -> str:
    try:
        return repr(patterns_of(meta))
    except ValueError:
        return "unreadable"


def _rows(
    paths: list[str], files: list[UpdateFile], rejected: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """One row per file given, in order: its examples, train loss and fate."""
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
    return rows


def _contract_problems(f: UpdateFile, ref: Reference) -> list[str]:
    problems = []
    if f.spec != ref.spec:
        problems.append(f"model spec differs from {ref.origin}")
    if (
        ref.schema is not None
        and f.schema is not None
        and (diff := schema_difference(f.schema, ref.schema))
    ):
        problems.append(f"schema differs from {ref.origin}: {diff}")
    if ref.digest is not None and f.meta.get("base_digest") != ref.digest:
        problems.append(f"started from another global model than {ref.origin}")
    held = sorted(set(f.arrays) & set(ref.frozen))
    if held:  # the server takes these from its own base model, never from a silo
        problems.append(
            f"holds frozen weights {held} (the base model freezes {ref.patterns!r}); an "
            "update holds only the trained ones"
        )
    return problems


def _numbers(meta: dict[str, Any]) -> dict[str, float]:
    metrics = meta.get("metrics") or {}
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
