"""Strategies, update validation and aggregation, shared by the ServerApp round loop
and the offline ``fl-server aggregate`` command (so both treat updates identically).

Aggregation itself is Flower's: each strategy's ``aggregate_train``. What we add is the
gate in front of it: every update is checked against the current global model (same
keys, shapes and dtypes, finite values, a positive example count) and a bad one is
rejected by name before it can reach the model.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, MessageType, Metadata, MetricRecord, RecordDict
from flwr.app.message.message import make_message
from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    Strategy,
)

from fl_common.protocol import ARRAYS, METRICS, NUM_EXAMPLES, numpy_to_record
from fl_common.settings import RunSettings


@dataclass
class Update:
    """One silo's contribution to a round."""

    name: str  # node id, or file name offline
    arrays: dict[str, np.ndarray]
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


def make_strategy(settings: RunSettings, *, strategy: str | None = None) -> Strategy:
    """Flower's strategy for ``settings.strategy`` (or the name given). Sampling is done
    by our round loop, so the strategy is told to use every node it is shown."""
    name = strategy or settings.strategy
    common = {
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0,
        "min_train_nodes": 1,
        "min_evaluate_nodes": 1,
        "min_available_nodes": 1,
    }
    if name == "fedavg":
        return FedAvg(**common)
    if name == "fedprox":
        return FedProx(**common, proximal_mu=settings.proximal_mu)
    if name == "fedadam":
        return FedAdam(**common, eta=settings.server_learning_rate, eta_l=0.01, tau=1e-3)
    if name == "fedmedian":
        return FedMedian(**common)
    if name == "trimmed-mean":
        return FedTrimmedAvg(**common, beta=settings.trimmed_beta)
    if name == "krum":
        return Krum(**common, num_malicious_nodes=settings.krum_malicious)
    raise ValueError(f"unknown strategy {name!r}")


def check_update(
    arrays: dict[str, np.ndarray], reference: dict[str, np.ndarray], num_examples: float
) -> list[str]:
    """Every reason this update cannot be aggregated (empty when it can)."""
    problems = []
    missing = sorted(set(reference) - set(arrays))
    extra = sorted(set(arrays) - set(reference))
    if missing:
        problems.append(f"missing arrays {missing}")
    if extra:
        problems.append(f"unexpected arrays {extra}")
    for key in sorted(set(arrays) & set(reference)):
        got, want = arrays[key], reference[key]
        if got.shape != want.shape:
            problems.append(f"{key}: shape {got.shape}, expected {want.shape}")
        elif got.dtype != want.dtype:
            problems.append(f"{key}: dtype {got.dtype}, expected {want.dtype}")
        elif not np.isfinite(got).all():
            problems.append(f"{key}: holds NaN or infinite values")
    # numbers.Real admits numpy scalars (np.int64 counts are counts); bool is not a count
    if (
        isinstance(num_examples, bool)
        or not isinstance(num_examples, numbers.Real)
        or not np.isfinite(num_examples)
        or num_examples <= 0
    ):
        problems.append(f"num-examples must be a positive number, got {num_examples!r}")
    return problems


def split_valid(
    updates: Iterable[Update], reference: dict[str, np.ndarray]
) -> tuple[list[Update], dict[str, list[str]]]:
    """Updates that pass :func:`check_update`, and the reasons for the others by name."""
    valid, rejected = [], {}
    for update in updates:
        problems = check_update(update.arrays, reference, update.num_examples)
        if problems:
            rejected[update.name] = problems
        else:
            valid.append(update)
    return valid, rejected


def aggregate(strategy: Strategy, server_round: int, updates: list[Update]) -> ArrayRecord:
    """Combine validated updates with the strategy's own ``aggregate_train``."""
    if not updates:
        raise ValueError("no valid updates to aggregate")
    # Replies are rebuilt from the validated arrays so the same path serves the round
    # loop and offline files; only content is read by aggregate_train.
    messages = [
        make_message(
            Metadata(0, "", 0, 0, "", "", 0.0, 0.0, MessageType.TRAIN),
            RecordDict(
                {
                    ARRAYS: numpy_to_record(u.arrays),
                    METRICS: MetricRecord({NUM_EXAMPLES: float(u.num_examples)}),
                }
            ),
        )
        for u in updates
    ]
    arrays, _ = strategy.aggregate_train(server_round, messages)
    if arrays is None:
        raise ValueError(f"strategy {type(strategy).__name__} could not aggregate the updates")
    # FedAdam computes in float64; the next round checks replies against this result, so
    # it keeps the updates' dtypes (else every float32 reply is rejected as mistyped).
    dtypes = {k: v.dtype for k, v in updates[0].arrays.items()}
    return numpy_to_record(
        {k: a.numpy().astype(dtypes.get(k, a.dtype), copy=False) for k, a in arrays.items()}
    )


# Server-side optimizer state of FedOpt strategies (FedAdam's first and second moments):
# kept in checkpoints so that a resumed run continues the same optimization.
_STRATEGY_STATE = ("m_t", "v_t")


def strategy_state(strategy: Strategy) -> dict[str, dict[str, np.ndarray]]:
    """The strategy's own state as plain arrays (empty for stateless strategies)."""
    out = {}
    for name in _STRATEGY_STATE:
        value = getattr(strategy, name, None)
        if value:
            out[name] = {k: np.asarray(v).copy() for k, v in value.items()}
    return out


def restore_strategy_state(strategy: Strategy, state: dict[str, dict[str, np.ndarray]]) -> None:
    for name, value in state.items():
        if name in _STRATEGY_STATE and hasattr(strategy, name):
            setattr(strategy, name, {k: np.asarray(v).copy() for k, v in value.items()})
