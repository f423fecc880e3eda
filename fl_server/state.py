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
from privacy import store

from .early_stopping import EarlyStopping
from .modelfile import arrays_from_state, model_metadata, state_from_arrays

CHECKPOINT_FILE = "checkpoint.bin"
BEST_MODEL_FILE = "best-model.bin"
EXPORT_FILE = "model-int8.bin"

Arrays = dict[str, np.ndarray]


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
    )
    return state, meta


def latest_run_dir(root: Path) -> Path | None:
    """The run folder under ``root`` whose checkpoint was written last."""
    candidates = [p for p in root.glob(f"*/{CHECKPOINT_FILE}") if p.is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime).parent
