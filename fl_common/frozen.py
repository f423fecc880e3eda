"""Frozen weights in offline model files (transfer learning without a live federation).

``fl-server init --freeze PATTERNS`` records the patterns in the model file's metadata
(:data:`FREEZE_KEY`) and every later file carries them (updates, aggregated models):
a silo's ``fl-client train`` does not train the weights they name and leaves them out
of its update, and ``fl-server aggregate --base`` copies them from the base model.

The patterns mean what the run setting ``freeze`` means (:mod:`core_training.layers`).
Which names they match is worked out from the model every time (``plan_layers``), never
read from a file: the names and counts recorded beside the patterns describe the file
for ``fl-server inspect``, which opens no payload, and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from torch import nn

from core_training.layers import parse_patterns, plan_layers

FREEZE_KEY = "freeze"  # model-level metadata: the patterns, the names, their counts
UPDATE_NAMES_KEY = "weight_names"  # an update's metadata: the names it holds

T = TypeVar("T")


def freeze_record(model: nn.Module, patterns: str) -> dict[str, Any]:
    """The metadata of ``freeze = patterns`` on ``model``; ``ConfigError`` (the run
    setting's) when a pattern matches no parameter or every parameter is frozen."""
    frozen = sorted(plan_layers(model, freeze=patterns).frozen)
    state = model.state_dict()
    return {
        "patterns": ", ".join(parse_patterns(patterns, "freeze")),
        "names": frozen,
        "weights": sum(int(state[n].numel()) for n in frozen),
        "total_weights": sum(int(v.numel()) for v in state.values()),
    }


def patterns_of(metadata: Mapping[str, Any]) -> str:
    """The freeze patterns a model file records ("" when nothing is frozen)."""
    record = metadata.get(FREEZE_KEY)
    if not record:
        return ""
    if not isinstance(record, Mapping) or not isinstance(record.get("patterns"), str):
        raise ValueError(f"the model file's {FREEZE_KEY!r} metadata is not a freeze record")
    return record["patterns"]


def frozen_names(model: nn.Module, metadata: Mapping[str, Any]) -> frozenset[str]:
    """The state-dict names of ``model`` that the file's patterns freeze; the patterns
    are checked again (``ConfigError``), as a silo checks a run's settings."""
    patterns = patterns_of(metadata)
    return plan_layers(model, freeze=patterns).frozen if patterns else frozenset()


def trainable(weights: Mapping[str, T], frozen: frozenset[str]) -> dict[str, T]:
    """The part of ``weights`` an update holds: every name that is not frozen."""
    return {k: v for k, v in weights.items() if k not in frozen}


def describe(record: Mapping[str, Any]) -> str:
    """A freeze record in words, for init and inspect."""
    names = list(record.get("names") or [])
    return (
        f"{record.get('patterns')}: {len(names)} tensor(s), {record.get('weights')} of "
        f"{record.get('total_weights')} weights not trained"
    )
