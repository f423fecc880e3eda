"""Early stopping on a validation metric, with patience and a minimum improvement."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class EarlyStopping:
    """Tracks the best value of a metric and how many rounds passed without beating it.

    A round *improves* when its value beats the best by more than ``min_delta``
    (lower for losses, higher otherwise). After ``patience`` rounds without
    improvement, :attr:`should_stop` turns true. The state is plain data so that it
    is saved in checkpoints and restored on resume.
    """

    patience: int
    min_delta: float = 0.0
    higher_is_better: bool = False
    best: float | None = None
    best_round: int = 0
    rounds_without_improvement: int = 0

    def update(self, server_round: int, value: float) -> bool:
        """Record a round's value; return True when it is a new best."""
        if value != value:  # NaN never improves
            self.rounds_without_improvement += 1
            return False
        if self.best is None or self._beats(value, self.best):
            self.best = value
            self.best_round = server_round
            self.rounds_without_improvement = 0
            return True
        self.rounds_without_improvement += 1
        return False

    def _beats(self, value: float, best: float) -> bool:
        if self.higher_is_better:
            return value > best + self.min_delta
        return value < best - self.min_delta

    @property
    def should_stop(self) -> bool:
        return self.rounds_without_improvement >= self.patience

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EarlyStopping:
        return cls(**data)
