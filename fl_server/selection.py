"""Model selection: which model of the run is the best, and when to stop looking.

One object owns the question: :meth:`ModelSelector.observe` takes a model's round, its
arrays and its validation metrics, and answers with a :class:`Verdict`. The app saves
the best model when ``improved`` and stops when ``stop``; nothing else decides either.

``model_round`` is explicit because federated validation judges the model a round
*sent* (round r's replies describe round r - 1's model). A round that aggregated no
update produced no new model, so nothing is observed for it and no patience is spent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .state import Arrays, RunState


@dataclass(frozen=True)
class Verdict:
    improved: bool
    stop: bool


class ModelSelector:
    """Early stopping on ``metric`` over the models of ``state`` (its ``early_stopping``
    and ``best`` are the selector's state, checkpointed with the run)."""

    def __init__(self, state: RunState, metric: str) -> None:
        self.state, self.metric = state, metric

    def observe(self, model_round: int, arrays: Arrays, metrics: dict[str, Any]) -> Verdict:
        entry = self.state.entry(model_round)
        entry.update(metrics)
        value = metrics.get(self.metric)
        stopping = self.state.early_stopping
        if value is None:  # nothing to judge (no validation reached the server)
            return Verdict(improved=False, stop=stopping.should_stop)
        improved = stopping.update(model_round, float(value))
        entry["improved"] = improved
        if improved:
            self.state.best = {k: v.copy() for k, v in arrays.items()}
        return Verdict(improved=improved, stop=stopping.should_stop)

    @property
    def best_round(self) -> int:
        return self.state.early_stopping.best_round
