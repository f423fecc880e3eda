"""The federation's round loop on Flower's Grid.

Flower's ``Strategy.start()`` has no place for early stopping, checkpoints, reply
validation or a bounded wait for nodes, so the loop is ours; the strategies' own
``configure_train`` and ``aggregate_train`` do the federated arithmetic.

One round: wait (bounded) for ``min-nodes``, sample, send the global model with the
federation's preprocessing, receive with a timeout, sort replies into failed, declined
(privacy budget), rejected (bad arrays) and valid, aggregate the valid ones, evaluate,
update early stopping. The caller checkpoints after each round.

With ``validation = "federated"`` the clients validate the model they receive inside
their train reply, so round r's replies describe the model of round r - 1; the last
model is validated by one evaluate message at the end.
"""

from __future__ import annotations

import math
import random
import time
import tomllib
from collections.abc import Callable, Iterable
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log
from torch import nn

from core_training.config import TrainConfig
from core_training.models import ModelSpec, build_model, quantize_int8
from core_training.pipeline import fit_preprocessor
from core_training.preprocess import merge_stats
from core_training.sampling import class_weights
from core_training.schema import Schema
from core_training.trainer import evaluate
from fl_common import protocol as p
from fl_common.settings import RunSettings

from .aggregation import Update, aggregate, make_strategy, split_valid, strategy_state
from .modelfile import state_from_arrays
from .state import Arrays, RunState

VAL_KEYS = ("val_loss", "val_accuracy", "val_balanced_accuracy", "val_macro_f1")


class RunStopped(Exception):
    """The federation cannot go on; ``reason`` says why (recorded in the summary)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class _OnlyNodes:
    """A view of the Grid that shows only the nodes we sampled, so a strategy's own
    sampling (which waits forever for its minimum) picks exactly these, at once."""

    def __init__(self, grid: Grid, node_ids: list[int]) -> None:
        self._grid, self._ids = grid, list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self._ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


class RoundLoop:
    """Rounds of one federation. ``on_best(state)`` is called when a model improves."""

    def __init__(
        self,
        grid: Grid,
        settings: RunSettings,
        config: TrainConfig,
        *,
        on_best: Callable[[RunState], None],
    ) -> None:
        self.grid = grid
        self.settings = settings
        self.config = config
        self.strategy = make_strategy(settings)
        self.on_best = on_best
        self.validation: tuple[np.ndarray, np.ndarray] | None = None  # server-side (X, y)
        self.model_spec: ModelSpec | None = None
        self.declined_nodes: set[int] = set()
        self.known_nodes: set[int] = set()
        self.other_schema_nodes: set[int] = set()  # never sampled: their arrays cannot fit

    # -- nodes -------------------------------------------------------------------------

    def wait_for_nodes(self) -> list[int]:
        """Connected node ids, waiting at most node-wait-timeout for min-nodes."""
        deadline = time.monotonic() + self.settings.node_wait_timeout
        announced = False
        while True:
            ids = sorted(self.grid.get_node_ids())
            self.known_nodes.update(ids)
            if len(ids) >= self.settings.min_nodes:
                return ids
            if time.monotonic() >= deadline:
                raise RunStopped(
                    "too-few-nodes",
                    f"only {len(ids)} node(s) connected within "
                    f"{self.settings.node_wait_timeout:g}s; min-nodes is {self.settings.min_nodes}",
                )
            if not announced:
                log(INFO, "Waiting for %d node(s); %d connected", self.settings.min_nodes, len(ids))
                announced = True
            time.sleep(0.5)

    def sample(self, server_round: int) -> list[int]:
        """Nodes for a round: seeded by (seed, round), so a resumed run samples as the
        uninterrupted run would have, given the same connected nodes. Stops the run
        here, before the round, when too many nodes have exhausted their budget: the
        round that saw them decline is complete and checkpointed by then."""
        self._check_exhaustion()
        ids = [
            n
            for n in self.wait_for_nodes()
            if n not in self.declined_nodes and n not in self.other_schema_nodes
        ]
        if len(ids) < self.settings.min_nodes:
            raise RunStopped(
                "privacy-budget-exhausted" if self.declined_nodes else "schema-mismatch",
                f"{len(self.declined_nodes)} node(s) have exhausted their privacy budget and "
                f"{len(self.other_schema_nodes)} use another schema; {len(ids)} remain, "
                f"fewer than min-nodes ({self.settings.min_nodes})",
            )
        # rounded first, so that 0.07 of 100 nodes is 7, not 8 from 7.000000000000001
        size = max(
            self.settings.min_nodes, math.ceil(round(self.settings.fraction_train * len(ids), 9))
        )
        rng = random.Random(self.config.seed * 1_000_003 + server_round)
        return sorted(rng.sample(ids, min(size, len(ids))))

    def exchange(self, messages: list[Message]) -> list[Message]:
        """Send ``messages``; the replies that arrive within round-timeout. Flower's
        ``Grid.send_and_receive`` pulls every 3 s from a deployed SuperLink, so a round
        would end up to 3 s after its last reply: this pulls soon after sending and
        backs off to once a second."""
        pending = set(self.grid.push_messages(messages))
        deadline = time.monotonic() + self.settings.round_timeout
        replies: list[Message] = []
        pause = 0.05
        while pending:
            got = list(self.grid.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            left = deadline - time.monotonic()
            if not pending or left <= 0:
                break
            time.sleep(min(pause, left))
            pause = min(pause * 1.5, 1.0)
        return replies

    # -- federated statistics ----------------------------------------------------------

    def federated_statistics(self, schema: Schema | None) -> tuple[Schema, Arrays]:
        """Ask every connected node for its counts and sums and merge them into the
        global preprocessor and class weights. Only aggregates travel. A node whose
        schema differs from the federation's is left out (and logged)."""
        nodes = self.wait_for_nodes()
        query = RecordDict({p.CONFIG: ConfigRecord({"action": "stats"})})
        messages = [
            Message(content=query, dst_node_id=n, message_type=MessageType.QUERY) for n in nodes
        ]
        replies = self.exchange(messages)
        answers: dict[int, tuple[str, str, Any]] = {}
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                log(WARNING, "Node %d could not compute statistics: %s", node, reply.error.reason)
                continue
            info = reply.content[p.INFO]
            try:
                stats = p.record_to_stats(reply.content[p.STATS])
            except ValueError as exc:  # a malformed reply costs the node, not the run
                log(WARNING, "Node %d sent unusable statistics: %s", node, exc)
                continue
            answers[node] = (str(info["schema_digest"]), str(info["schema"]), stats)
        if not answers:
            raise RunStopped("too-few-nodes", "no node answered the statistics query")
        digests = [d for d, _, _ in answers.values()]
        expected = (
            p.schema_digest(schema.to_toml()) if schema else max(set(digests), key=digests.count)
        )
        agreed = {n: a for n, a in answers.items() if a[0] == expected}
        self.other_schema_nodes = set(answers) - set(agreed)
        for node in sorted(self.other_schema_nodes):
            log(WARNING, "Node %d uses a different schema; left out of the federation", node)
        if not agreed:
            raise RunStopped("schema-mismatch", "no node uses the federation's schema")
        if schema is None:
            node, (_, text, _) = next(iter(agreed.items()))
            schema = Schema.from_dict(tomllib.loads(text), source=f"node {node}")
        merged = merge_stats([s for _, _, s in agreed.values()])
        pre = fit_preprocessor(merged, schema, self.config)
        weights = (
            class_weights(merged.class_counts, self.config.class_weighting)
            if self.config.class_weighting != "none"
            else None
        )
        log(INFO, "Federated statistics from %d node(s), %d rows", len(agreed), merged.num_rows)
        return schema, p.record_to_numpy(p.prep_to_record(pre, weights))

    # -- one round ---------------------------------------------------------------------

    def train_round(self, state: RunState, server_round: int) -> dict[str, Any]:
        """Run one round on ``state``; returns its history entry."""
        started = time.perf_counter()
        nodes = self.sample(server_round)
        sent = state.current
        messages = list(
            self.strategy.configure_train(
                server_round,
                p.numpy_to_record(sent),
                ConfigRecord({"server-round": server_round}),
                _OnlyNodes(self.grid, nodes),
            )
        )
        prep = p.numpy_to_record(state.prep)
        for msg in messages:
            msg.content[p.PREP] = prep
        replies = self.exchange(messages)
        # An error reply the SuperLink makes for a node it lost comes from the SuperLink
        # itself; the message it answers names the node.
        sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
        outcome = self._sort_replies(server_round, nodes, replies, state, sent_to)
        valid, rejected = split_valid(outcome.pop("updates"), sent)
        for name, problems in rejected.items():
            log(
                WARNING,
                "Round %d: rejected the update of %s: %s",
                server_round,
                name,
                "; ".join(problems),
            )
        entry = state.entry(server_round)
        entry.update(
            num_sampled=len(nodes),
            num_clients=len(valid),
            num_rejected=len(rejected),
            num_failed=len(outcome["failed"]),
            num_declined=len(outcome["declined"]),
            clients=[u.name for u in valid],
            rejected=rejected,
            **outcome,
            train_loss=_weighted(valid, "train_loss", p.NUM_EXAMPLES),
            train_seconds=sum(u.metrics.get("train_seconds", 0.0) for u in valid),
            skipped=len(valid) < self.settings.min_nodes,
        )
        if entry["skipped"]:
            log(
                WARNING,
                "Round %d skipped: %d healthy update(s), min-nodes is %d",
                server_round,
                len(valid),
                self.settings.min_nodes,
            )
        else:
            state.current = p.record_to_numpy(aggregate(self.strategy, server_round, valid))
            state.strategy_state = strategy_state(self.strategy)
        if self.settings.validation == "federated":
            if valid:
                fed = {k: _weighted(valid, k, "val_examples") for k in VAL_KEYS}
                self.evaluated(state, server_round - 1, sent, fed)
        else:
            self.evaluated(state, server_round, state.current, self.server_metrics(state.current))
        entry["seconds"] = round(time.perf_counter() - started, 3)
        return entry

    def _sort_replies(
        self,
        server_round: int,
        nodes: list[int],
        replies: Iterable[Message],
        state: RunState,
        sent_to: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        failed: dict[str, str] = {}
        declined: dict[str, str] = {}
        updates: list[Update] = []
        epsilons: list[float] = []
        answered = set()
        for reply in replies:
            node = (sent_to or {}).get(reply.metadata.reply_to_message_id)
            node = reply.metadata.src_node_id if node is None else node
            answered.add(node)
            name = f"node {node}"
            if reply.has_error():
                failed[name] = reply.error.reason
                log(WARNING, "Round %d: %s failed: %s", server_round, name, reply.error.reason)
                continue
            content = reply.content
            metrics = dict(content[p.METRICS]) if p.METRICS in content.metric_records else {}
            info = dict(content[p.INFO]) if p.INFO in content.config_records else {}
            if float(metrics.get("epsilon", -1.0)) >= 0:
                epsilons.append(float(metrics["epsilon"]))
            if info.get("status") == p.STATUS_DECLINED:
                declined[name] = str(info.get("reason", ""))
                self.declined_nodes.add(node)
                silo = str(info.get("silo", name))
                if silo not in state.declined_silos:
                    state.declined_silos.append(silo)
                log(WARNING, "Round %d: %s declined: %s", server_round, name, declined[name])
                continue
            if p.ARRAYS not in content.array_records:
                failed[name] = "reply without model arrays"
                continue
            updates.append(
                Update(
                    name=name,
                    arrays=p.record_to_numpy(content[p.ARRAYS]),
                    num_examples=metrics.get(p.NUM_EXAMPLES, 0),
                    metrics={k: float(v) for k, v in metrics.items() if not isinstance(v, list)},
                )
            )
        missing = sorted(set(nodes) - answered)
        for node in missing:
            failed[f"node {node}"] = f"no reply within {self.settings.round_timeout:g}s"
        if missing:
            log(WARNING, "Round %d: no reply from node(s) %s", server_round, missing)
        return {
            "failed": failed,
            "declined": declined,
            "updates": updates,
            "epsilon_max": max(epsilons) if epsilons else None,
        }

    def _check_exhaustion(self) -> None:
        known = max(len(self.known_nodes), 1)
        if self.declined_nodes and len(self.declined_nodes) / known >= (
            self.settings.max_exhausted_fraction
        ):
            raise RunStopped(
                "privacy-budget-exhausted",
                f"{len(self.declined_nodes)} of {known} node(s) have exhausted their privacy "
                f"budget (max-exhausted-fraction {self.settings.max_exhausted_fraction:g})",
            )

    # -- evaluation and early stopping -------------------------------------------------

    def server_metrics(self, arrays: Arrays, *, int8: bool = False) -> dict[str, float]:
        """Validation metrics of a model on the server's held-out split."""
        assert self.validation is not None
        assert self.model_spec is not None
        model = load_arrays(self.model_spec, arrays, int8=int8)
        m = evaluate(model, *self.validation)
        return {k: float(m[k.removeprefix("val_")]) for k in VAL_KEYS}

    def federated_metrics(
        self, arrays: Arrays, prep: Arrays, *, int8: bool = False
    ) -> dict[str, Any]:
        """Validation metrics of a model on the clients' validation splits (one
        evaluate message to every connected node)."""
        nodes = self.wait_for_nodes()
        content = RecordDict(
            {
                p.ARRAYS: p.numpy_to_record(arrays),
                p.PREP: p.numpy_to_record(prep),
                p.CONFIG: ConfigRecord({"int8": int8}),
            }
        )
        messages = [
            Message(content=content, dst_node_id=n, message_type=MessageType.EVALUATE)
            for n in nodes
        ]
        replies = self.exchange(messages)
        results = [
            Update(f"node {r.metadata.src_node_id}", {}, 0, dict(r.content[p.METRICS]))
            for r in replies
            if not r.has_error()
        ]
        return {k: _weighted(results, k, p.NUM_EXAMPLES) for k in VAL_KEYS}

    def evaluated(
        self, state: RunState, model_round: int, arrays: Arrays, metrics: dict[str, Any]
    ) -> None:
        """Record the validation metrics of the model of ``model_round`` and keep it as
        the best when it improves the early-stopping metric."""
        entry = state.entry(model_round)
        entry.update(metrics)
        value = metrics.get(self.settings.early_stopping_metric)
        if value is None:
            return
        entry["improved"] = state.early_stopping.update(model_round, float(value))
        if entry["improved"]:
            state.best = {k: v.copy() for k, v in arrays.items()}
            self.on_best(state)


def load_arrays(spec: ModelSpec, arrays: Arrays, *, int8: bool = False) -> nn.Module:
    """A model of ``spec`` holding ``arrays`` (quantized to int8 when asked)."""
    model = build_model(spec)
    model.load_state_dict(state_from_arrays(arrays))
    return quantize_int8(model) if int8 else model


def _weighted(updates: list[Update], key: str, weight_key: str) -> float | None:
    pairs = [
        (u.metrics[key], u.metrics.get(weight_key, 0.0))
        for u in updates
        if u.metrics.get(key) is not None
    ]
    total = sum(w for _, w in pairs)
    if not pairs or total <= 0:
        return None
    return float(sum(v * w for v, w in pairs) / total)
