"""Settings the end-to-end modules share."""

from __future__ import annotations

# Quick to learn: digits with the MLP, two local epochs a round.
DIGITS_FAST = {"local-epochs": 2, "learning-rate": 0.003, "model": "mlp"}
