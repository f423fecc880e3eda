"""A federation's state between rounds, and its encrypted checkpoint.

The checkpoint is written atomically after every completed round (so a stopped run
loses no finished round) and holds everything ``resume=true`` needs: the current and
the best global model, the round, early-stopping state, the strategy's own state
(FedAdam's moments), the federated preprocessing, and the history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core_training.models import ModelSpec
from core_training.schema import Schema
from fl_common.modelfile import arrays_from_state, model_metadata, state_from_arrays
from privacy import store

from .early_stopping import EarlyStopping

CHECKPOINT_FILE = "checkpoint.bin"
BEST_MODEL_FILE = "best-model.bin"
EXPORT_FILE = "model-int8.bin"

Arrays = dict[str, np.ndarray]


@dataclass
class NodeBook:
    """What the run knows of each node, from what it said and did: the rows it
    reported at the statistics step (the most it may claim to train on), and why a
    node is no longer sampled. Checkpointed, so a resumed run remembers it."""

    rows: dict[int, int] = field(default_factory=dict)
    budget_exhausted: set[int] = field(default_factory=set)
    policy_declined: dict[int, str] = field(default_factory=dict)
    other_schema: set[int] = field(default_factory=set)
    known: set[int] = field(default_factory=set)
    no_statistics: dict[int, str] = field(default_factory=dict)  # failed or rejected
    # the silo id each node gave at the statistics step, kept only where no other node
    # gave the same one: a node cannot take another silo's name in the history
    names: dict[int, str] = field(default_factory=dict)

    def excluded(self) -> set[int]:
        return self.budget_exhausted | set(self.policy_declined) | self.other_schema

    def name_nodes(self, claims: dict[int, str]) -> list[tuple[str, list[int]]]:
        """Bind the names in ``claims`` (node -> the silo id it says it has) to their
        nodes, with the names the book already holds for nodes not in ``claims``. A name
        claimed by two or more nodes goes to none of them; those come back as
        ``(name, nodes)``. A node's name is fixed here: what it says later is not read."""
        said = {**{n: s for n, s in self.names.items() if n not in claims}, **claims}
        by_name: dict[str, list[int]] = {}
        for node, name in said.items():
            if name:
                by_name.setdefault(name, []).append(node)
        self.names = {nodes[0]: name for name, nodes in by_name.items() if len(nodes) == 1}
        return [(name, sorted(nodes)) for name, nodes in by_name.items() if len(nodes) > 1]

    def label(self, node: int) -> str:
        """How the history and trackers name ``node``: its silo id, else ``node <id>``."""
        return self.names.get(node) or f"node {node}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": {str(k): v for k, v in self.rows.items()},
            "budget_exhausted": sorted(self.budget_exhausted),
            "policy_declined": {str(k): v for k, v in self.policy_declined.items()},
            "other_schema": sorted(self.other_schema),
            "known": sorted(self.known),
            "no_statistics": {str(k): v for k, v in self.no_statistics.items()},
            "names": {str(k): v for k, v in self.names.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeBook:
        return cls(
            rows={int(k): int(v) for k, v in data.get("rows", {}).items()},
            budget_exhausted={int(n) for n in data.get("budget_exhausted", [])},
            policy_declined={int(k): str(v) for k, v in data.get("policy_declined", {}).items()},
            other_schema={int(n) for n in data.get("other_schema", [])},
            known={int(n) for n in data.get("known", [])},
            no_statistics={int(k): str(v) for k, v in data.get("no_statistics", {}).items()},
            names={int(k): str(v) for k, v in data.get("names", {}).items()},
        )


@dataclass
class RunState:
    spec: ModelSpec
    schema: Schema
    current: Arrays
    best: Arrays
    early_stopping: EarlyStopping
    prep: Arrays = field(default_factory=dict)  # preprocessor arrays + class weights
    round: int = 0  # last completed round
    history: list[dict[str, Any]] = field(default_factory=list)
    strategy_state: dict[str, Arrays] = field(default_factory=dict)
    declined_silos: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    nodes: NodeBook = field(default_factory=NodeBook)
    model_round: int = 0  # the round whose aggregation made ``current`` (0: initial)
    stop_reason: str = ""  # why the run last ended ("" while it has not)
    stop_detail: str = ""
    # federated validation: model round -> the round whose replies validated it
    judged_in: dict[int, int] = field(default_factory=dict)
    test: dict[str, Any] | None = None  # the test evaluation's figures, once done

    def entry(self, server_round: int) -> dict[str, Any]:
        """The history entry of a round (created empty if needed)."""
        for item in self.history:
            if item["round"] == server_round:
                return item
        item = {"round": server_round}
        self.history.append(item)
        self.history.sort(key=lambda h: h["round"])
        return item


def save_checkpoint(run_dir: Path, state: RunState, *, key: bytes, config: dict[str, Any]) -> Path:
    payload = {
        "round": state.round,
        "state": state_from_arrays(state.current),
        "best_state": state_from_arrays(state.best),
        "prep": state_from_arrays(state.prep),
        "strategy_state": {k: state_from_arrays(v) for k, v in state.strategy_state.items()},
        "early_stopping": state.early_stopping.to_dict(),
        "history": state.history,
        "declined_silos": list(state.declined_silos),
        "elapsed": state.elapsed,
        "nodes": state.nodes.to_dict(),
        "model_round": state.model_round,
        "stop_reason": state.stop_reason,
        "stop_detail": state.stop_detail,
        "judged_in": {str(k): v for k, v in state.judged_in.items()},
        "test": state.test,
    }
    meta = model_metadata(
        state.spec,
        state.schema,
        round=state.round,
        best_round=state.early_stopping.best_round,
        best_value=state.early_stopping.best,
        config=config,
    )
    return store.save_state(
        run_dir / CHECKPOINT_FILE, payload, key=key, kind="checkpoint", metadata=meta
    )


def load_checkpoint(path: Path, *, key: bytes) -> tuple[RunState, dict[str, Any]]:
    payload, meta = store.load_state(path, key=key, kind="checkpoint")
    state = RunState(
        spec=ModelSpec.from_dict(meta["model_spec"]),
        schema=Schema.from_dict(meta["schema"], source=str(path)),
        current=arrays_from_state(payload["state"]),
        best=arrays_from_state(payload["best_state"]),
        early_stopping=EarlyStopping.from_dict(payload["early_stopping"]),
        prep=arrays_from_state(payload["prep"]),
        round=int(payload["round"]),
        history=list(payload["history"]),
        strategy_state={k: arrays_from_state(v) for k, v in payload["strategy_state"].items()},
        declined_silos=list(payload["declined_silos"]),
        elapsed=float(payload["elapsed"]),
        nodes=NodeBook.from_dict(payload.get("nodes", {})),
        model_round=int(payload.get("model_round", payload["round"])),
        stop_reason=str(payload.get("stop_reason", "")),
        stop_detail=str(payload.get("stop_detail", "")),
        judged_in={int(k): int(v) for k, v in payload.get("judged_in", {}).items()},
        test=payload.get("test"),
    )
    return state, meta
