"""The federation's rounds on Flower's Grid.

Flower's ``Strategy.start()`` has no place for early stopping, checkpoints, reply
validation or a bounded wait for nodes, so the loop is ours; the strategies' own
``configure_train`` and ``aggregate_train`` do the federated arithmetic.

The parts: :mod:`.transport` finds, samples and messages nodes; :mod:`.replies` is the
only code that reads what a node sent and turns every reply into a checked value or a
problem; :mod:`.selection` decides which model is best and when to stop. This module
puts them in order:

- the statistics step asks every node for its counts and sums, records the rows each
  reported and which ones declined (their policy) or use another schema, and fits the
  federation's preprocessing;
- a round samples eligible nodes, sends the global model with that preprocessing,
  parses the replies, aggregates the valid updates, and has the new model validated.

With ``validation = "federated"`` the clients validate the model they receive inside
their train reply, so round r's replies describe the model round r sent; the last
model is validated by one evaluate message at the end. Their confusion matrices are
summed, so balanced accuracy and macro-F1 are the federation's, not averages of silos'.
"""

from __future__ import annotations

import time
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log
from torch import nn

from core_training.config import TrainConfig
from core_training.layers import LayerPlan
from core_training.metrics import scores_from_confusion
from core_training.models import ModelSpec, build_model, quantize_int8
from core_training.pipeline import fit_preprocessor, local_stats
from core_training.preprocess import merge_stats
from core_training.sampling import class_weights
from core_training.schema import Schema
from core_training.trainer import evaluate
from fl_common import protocol as p
from fl_common.modelfile import state_from_arrays
from fl_common.settings import VAL_METRICS, RunSettings
from privacy.policy import TARGET_UNREACHABLE

from .aggregation import aggregate, make_strategy, strategy_state
from .replies import (
    DECLINED,
    Evaluation,
    Problem,
    StatsReply,
    TrainReply,
    parse_eval,
    parse_stats,
    parse_train,
)
from .selection import ModelSelector, Verdict
from .state import Arrays, NodeBook, RunState
from .transport import OnlyNodes, RunStopped, Transport

__all__ = ["RoundLoop", "RunStopped", "load_arrays", "pool_evaluations"]


class RoundLoop:
    """Rounds of one federation."""

    def __init__(self, grid: Grid, settings: RunSettings, config: TrainConfig) -> None:
        self.settings = settings
        self.config = config
        self.transport = Transport(grid, settings, config.seed)
        self.strategy = make_strategy(settings)
        self.validation: tuple[np.ndarray, np.ndarray] | None = None  # server-side (X, y)
        self.model_spec: ModelSpec | None = None
        self.num_classes = 0
        # Weights the run keeps on the silos (freeze, local-layers, fedbn): they never
        # travel in rounds; ``kept_arrays`` holds their initial values, sent once in the
        # statistics query.
        self.plan = LayerPlan()
        self.kept_arrays: Arrays = {}

    # -- the statistics step -----------------------------------------------------------

    def federated_statistics(
        self, schema: Schema, book: NodeBook, server_table: Any = None
    ) -> Arrays:
        """Ask every connected node for its statistics, record in ``book`` what each
        said, and fit the federation's preprocessing and class weights from the nodes'
        statistics (the server's own validation rows when no node shares any)."""
        self.num_classes = schema.num_classes
        replies = self.census(schema, book)
        shared = [r.stats for r in replies if r.stats is not None]
        if not shared:
            if server_table is None:
                raise RunStopped(
                    "no-statistics",
                    "no node shares statistics (their policies say statistics.share = none) "
                    "and the server has no data to fit the preprocessing on",
                )
            log(WARNING, "No node shares statistics: preprocessing from the server's rows")
            shared = [local_stats(server_table, self.config)]
        merged = merge_stats(shared)
        pre = fit_preprocessor(merged, schema, self.config)
        weights = (
            class_weights(merged.class_counts, self.config.class_weighting)
            if self.config.class_weighting != "none"
            else None
        )
        log(INFO, "Federated statistics from %d node(s), %d rows", len(shared), merged.num_rows)
        return p.record_to_numpy(p.prep_to_record(pre, weights))

    def census(self, schema: Schema, book: NodeBook) -> list[StatsReply]:
        """The statistics query to every connected node: each node's reported rows, its
        policy's refusal or its other schema go into ``book``; the usable replies come
        back. Stops the run when fewer than min-nodes remain."""
        self.num_classes = schema.num_classes
        nodes = self.transport.wait_for_nodes()
        book.known.update(nodes)
        # this query is the authority on who takes part now (a resumed run asks again)
        book.no_statistics.clear()
        book.policy_declined.clear()
        book.other_schema.clear()
        query = RecordDict({p.CONFIG: ConfigRecord({"action": "stats"})})
        if self.kept_arrays:
            query[p.FIXED] = p.numpy_to_record(self.kept_arrays)
        messages = [
            Message(content=query, dst_node_id=n, message_type=MessageType.QUERY) for n in nodes
        ]
        digest = p.schema_digest(schema.to_toml())
        usable: list[StatsReply] = []
        unreachable: list[int] = []  # nodes no noise level can take to target-epsilon
        claims: dict[int, str] = {}  # the silo id each node says it has
        for node, reply in self.transport.ask(messages).items():
            parsed = (
                parse_stats(reply, node, schema)
                if reply is not None
                else Problem(node, "failed", f"no reply within {self.settings.round_timeout:g}s")
            )
            claims[node] = parsed.silo
            if isinstance(parsed, Problem):
                if parsed.kind == DECLINED:
                    book.policy_declined[node] = parsed.reason
                    if parsed.policy_key == TARGET_UNREACHABLE:
                        unreachable.append(node)
                else:
                    book.no_statistics[node] = f"{parsed.kind}: {parsed.reason}"
                log(WARNING, "Statistics: %s %s: %s", parsed.name, parsed.kind, parsed.reason)
                continue
            if parsed.schema_digest != digest:
                book.other_schema.add(node)
                log(WARNING, "Node %d uses a different schema; left out of the federation", node)
                continue
            book.rows[node] = parsed.rows
            usable.append(parsed)
        for name, nodes in book.name_nodes(claims):
            log(
                WARNING,
                "Nodes %s all say they are silo %r: each is named by its node id instead",
                ", ".join(map(str, nodes)),
                name,
            )
        if self.settings.dp:
            usable = self._dp_plan(usable, book, unreachable)
        if len(usable) < self.settings.min_nodes and unreachable:
            raise RunStopped(
                TARGET_UNREACHABLE,
                f"the DP plan cannot meet target-epsilon {self.settings.target_epsilon:g} "
                f"(delta {self.settings.target_delta:g}, {self.settings.num_server_rounds} "
                f"round(s) of {self.config.local_epochs} local epoch(s), batch size "
                f"{self.config.batch_size}) on {len(unreachable)} node(s); "
                f"{len(usable)} node(s) can take part, fewer than min-nodes "
                f"({self.settings.min_nodes}). {book.policy_declined[unreachable[0]]}",
            )
        if len(usable) < self.settings.min_nodes:
            raise RunStopped(
                "policy-declined" if book.policy_declined else "too-few-nodes",
                f"{len(usable)} node(s) can take part, fewer than min-nodes "
                f"({self.settings.min_nodes}); declined by their policy: "
                f"{len(book.policy_declined)}, another schema: {len(book.other_schema)}",
            )
        return usable

    def _dp_plan(
        self, usable: list[StatsReply], book: NodeBook, unreachable: list[int]
    ) -> list[StatsReply]:
        """The replies of nodes whose DP plan can meet the run's target: the noise for
        all rounds of local training on the rows each reported. A node no noise level
        takes there is left out (its training would be refused), named in ``book``."""
        from privacy.dp import TargetUnreachableError, noise_for_run

        reachable = []
        for reply in usable:
            try:
                noise_for_run(  # by the tightest accountant a silo may choose
                    target_epsilon=self.settings.target_epsilon,
                    delta=self.settings.target_delta,
                    num_examples=max(reply.rows, 1),
                    batch_size=self.config.batch_size,
                    epochs=self.config.local_epochs * self.settings.num_server_rounds,
                    accountant="prv",
                )
            except TargetUnreachableError as exc:
                book.policy_declined[reply.node] = f"{TARGET_UNREACHABLE}: {exc}"
                unreachable.append(reply.node)
                log(WARNING, "Node %d: %s", reply.node, exc)
                continue
            reachable.append(reply)
        return reachable

    # -- one round ---------------------------------------------------------------------

    def train_round(
        self, state: RunState, server_round: int, selector: ModelSelector
    ) -> tuple[dict[str, Any], Verdict]:
        """Run one round on ``state``; returns its history entry and the selector's
        verdict on the model it validated (no model: not improved, no stop)."""
        started = time.perf_counter()
        nodes = self._sample(state.nodes, server_round)
        sent, sent_round = state.current, state.model_round
        shared = self.plan.shared(sent)  # what travels: all but the weights silos keep
        config: dict[str, int] = {"server-round": server_round}
        if self.settings.silo_test_fraction > 0 and self.plan.personal:
            # silos keep snapshots of their local layers from the round that judged the
            # best model so far on (fl_client.personal); none judged yet: from this one
            best = state.early_stopping.best_round
            config[p.KEEP_LAYERS_SINCE] = state.judged_in.get(best, server_round)
        messages = list(
            self.strategy.configure_train(
                server_round,
                p.numpy_to_record(shared),
                ConfigRecord(config),
                OnlyNodes(self.transport.grid, nodes),
            )
        )
        prep = p.numpy_to_record(state.prep)
        for msg in messages:
            msg.content[p.PREP] = prep
        valid: list[TrainReply] = []
        problems: list[Problem] = []
        answers = self.transport.ask(messages)
        checks_started = time.perf_counter()
        for node, reply in answers.items():
            parsed = (
                parse_train(
                    reply,
                    node,
                    reference=shared,
                    rows=state.nodes.rows.get(node),
                    num_classes=self.num_classes,
                    val_fraction=self.settings.local_val_fraction,
                    kept=self.plan.kept,
                )
                if reply is not None
                else Problem(node, "failed", f"no reply within {self.settings.round_timeout:g}s")
            )
            (problems if isinstance(parsed, Problem) else valid).append(parsed)
        checks_seconds = time.perf_counter() - checks_started
        valid.sort(key=lambda r: r.node)  # the same order every time: the same sums
        entry = self._record(state, server_round, nodes, valid, problems)
        entry["checks_seconds"] = round(checks_seconds, 6)  # parsing and checking replies
        # bytes of the model arrays sent to the sampled nodes and received in valid replies
        entry["arrays_bytes_sent"] = _nbytes(shared) * len(messages)
        entry["arrays_bytes_received"] = sum(_nbytes(r.update.arrays) for r in valid)
        verdict = Verdict(improved=False, stop=state.early_stopping.should_stop)
        if not entry["skipped"]:
            updates = [r.update for r in valid]
            new = p.record_to_numpy(aggregate(self.strategy, server_round, updates))
            state.current = {**state.current, **new}  # kept weights stay the initial ones
            state.strategy_state = strategy_state(self.strategy)
            state.model_round = server_round
        if self.settings.validation == "federated":
            judged = state.entry(sent_round).get("val_loss") is not None
            found = [(r.node, r.evaluation) for r in valid if r.evaluation is not None]
            if found and not judged:  # each model is judged once
                metrics = validation_metrics(found, state.nodes)
                verdict = selector.observe(sent_round, sent, metrics)
                state.judged_in[sent_round] = server_round
        elif not entry["skipped"]:
            verdict = selector.observe(
                server_round, state.current, self.server_metrics(state.current)
            )
        entry["seconds"] = round(time.perf_counter() - started, 3)
        return entry, verdict

    def _record(
        self,
        state: RunState,
        server_round: int,
        nodes: list[int],
        valid: list[TrainReply],
        problems: list[Problem],
    ) -> dict[str, Any]:
        """The round's history entry; declines update the node book."""
        by_kind: dict[str, dict[str, str]] = {"failed": {}, "rejected": {}, "declined": {}}
        for problem in problems:
            by_kind[problem.kind][problem.name] = problem.reason
            if problem.kind == "rejected":
                what = f"rejected the update of {problem.name}"
            else:
                what = f"{problem.name} {problem.kind}"
            log(WARNING, "Round %d: %s: %s", server_round, what, problem.reason)
            if problem.kind != DECLINED:
                continue
            if problem.policy_key:
                state.nodes.policy_declined[problem.node] = problem.reason
            else:
                state.nodes.budget_exhausted.add(problem.node)
                if state.nodes.label(problem.node) not in state.declined_silos:
                    state.declined_silos.append(state.nodes.label(problem.node))
        epsilons = [r.epsilon for r in valid if r.epsilon is not None]
        updates = [r.update for r in valid]
        entry = state.entry(server_round)
        entry.update(
            num_sampled=len(nodes),
            num_clients=len(valid),
            num_rejected=len(by_kind["rejected"]),
            num_failed=len(by_kind["failed"]),
            num_declined=len(by_kind["declined"]),
            clients=[u.name for u in updates],
            rejected={k: [v] for k, v in by_kind["rejected"].items()},
            failed=by_kind["failed"],
            declined=by_kind["declined"],
            epsilon_max=max(epsilons) if epsilons else None,
            # by the name bound at the statistics step, never the name a reply claims
            epsilon_by_silo={state.nodes.label(r.node): r.epsilon for r in valid if r.epsilon},
            accountant_by_silo={
                state.nodes.label(r.node): r.accountant for r in valid if r.epsilon
            },
            train_loss=_weighted(updates, "train_loss"),
            train_seconds=sum(u.metrics.get("train_seconds", 0.0) for u in updates),
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
        return entry

    def _sample(self, book: NodeBook, server_round: int) -> list[int]:
        """Eligible nodes for a round. Stops the run here, before the round, when too
        many nodes have exhausted their budget or too few remain: the round that saw
        them decline is complete and checkpointed by then."""
        known = max(len(book.known), 1)
        exhausted = len(book.budget_exhausted)
        if exhausted and exhausted / known >= self.settings.max_exhausted_fraction:
            raise RunStopped(
                "privacy-budget-exhausted",
                f"{exhausted} of {known} node(s) have exhausted their privacy "
                f"budget (max-exhausted-fraction {self.settings.max_exhausted_fraction:g})",
            )
        connected = self.transport.wait_for_nodes()
        book.known.update(connected)
        # Only nodes that reported their rows can send an update the server accepts.
        eligible = [n for n in connected if n in book.rows and n not in book.excluded()]
        if len(eligible) < self.settings.min_nodes:
            reason = (
                "privacy-budget-exhausted"
                if book.budget_exhausted
                else "policy-declined"
                if book.policy_declined
                else "schema-mismatch"
            )
            raise RunStopped(
                reason,
                f"{exhausted} node(s) have exhausted their privacy budget, "
                f"{len(book.policy_declined)} declined by their policy and "
                f"{len(book.other_schema)} use another schema; {len(eligible)} remain, "
                f"fewer than min-nodes ({self.settings.min_nodes})",
            )
        return self.transport.sample(server_round, eligible)

    # -- evaluation --------------------------------------------------------------------

    def server_metrics(self, arrays: Arrays) -> dict[str, float]:
        """Validation metrics of a model's arrays on the server's held-out split."""
        assert self.model_spec is not None
        return self.model_metrics(load_arrays(self.model_spec, arrays))

    def model_metrics(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics of a model (fp32 or int8) on the server's held-out split."""
        assert self.validation is not None
        m = evaluate(model, *self.validation)
        return {k: float(m[k.removeprefix("val_")]) for k in VAL_METRICS}

    def federated_metrics(
        self, arrays: Arrays, prep: Arrays, book: NodeBook, *, int8: bool | None = None
    ) -> dict[str, Any]:
        """Validation metrics of a model on the nodes' validation splits, pooled (one
        evaluate message to every eligible node). With ``int8=None`` the fp32 and the
        int8 model are both sent in the same message round to the same nodes, and the
        int8 figures come back under ``int8_*`` keys."""
        nodes = [n for n in self.transport.wait_for_nodes() if n not in book.excluded()]
        variants = [False, True] if int8 is None else [int8]
        messages = [
            Message(
                content=RecordDict(
                    {
                        p.ARRAYS: p.numpy_to_record(self.plan.shared(arrays)),
                        p.PREP: p.numpy_to_record(prep),
                        p.CONFIG: ConfigRecord({"int8": flag}),
                    }
                ),
                dst_node_id=n,
                message_type=MessageType.EVALUATE,
            )
            for flag in variants
            for n in nodes
        ]
        results: dict[bool, list[tuple[int, Evaluation]]] = {flag: [] for flag in variants}
        replies = self.transport.exchange(messages)
        sent = {m.metadata.message_id: (m.metadata.dst_node_id, f) for m, f in _flags(messages)}
        for reply in replies:
            node, flag = sent.get(reply.metadata.reply_to_message_id, (None, False))
            if node is None:
                continue
            parsed = parse_eval(
                reply,
                node,
                rows=book.rows.get(node),
                num_classes=self.num_classes,
                val_fraction=self.settings.local_val_fraction,
            )
            if isinstance(parsed, Problem):
                log(WARNING, "Evaluation: %s %s: %s", parsed.name, parsed.kind, parsed.reason)
                continue
            results[flag].append((node, parsed))
        if not any(results.values()):
            raise RunStopped("no-validation", "no node returned a usable validation")
        out: dict[str, Any] = {}
        for flag, found in results.items():
            pooled = validation_metrics(found, book) if found else {}
            prefix = "int8_" if (flag and int8 is None) else ""
            out.update({prefix + k: v for k, v in pooled.items()})
        return out


def validation_metrics(found: list[tuple[int, Evaluation]], book: NodeBook) -> dict[str, Any]:
    """The pooled validation of ``(node, evaluation)`` pairs, and each silo's accuracy
    by its name (``val_accuracy_by_silo``). Where the silos keep local layers, the
    ``val_*`` figures describe their personalized models and the global model's come as
    ``global_val_*`` (``global_val_accuracy_by_silo`` too)."""
    metrics = pool_evaluations([e for _, e in found])
    metrics["val_accuracy_by_silo"] = {book.label(n): e.accuracy for n, e in found}
    both = [(n, e, e.global_model) for n, e in found if e.global_model is not None]
    if both:
        pooled = pool_evaluations([g for _, _, g in both])
        metrics.update({p.GLOBAL_PREFIX + k: v for k, v in pooled.items()})
        metrics[f"{p.GLOBAL_PREFIX}val_accuracy_by_silo"] = {
            book.label(n): g.accuracy for n, _, g in both
        }
    return metrics


def pool_evaluations(evaluations: list[Evaluation]) -> dict[str, Any]:
    """The federation's validation metrics from its silos': the loss weighted by
    examples, and the scores of the summed confusion matrix."""
    examples = sum(e.examples for e in evaluations)
    if examples == 0:
        return {}
    confusion = np.sum([e.confusion for e in evaluations], axis=0)
    scores = scores_from_confusion(confusion)
    return {
        "val_loss": float(sum(e.loss * e.examples for e in evaluations) / examples),
        "val_accuracy": scores["accuracy"],
        "val_balanced_accuracy": scores["balanced_accuracy"],
        "val_macro_f1": scores["macro_f1"],
        "val_examples": examples,
    }


def load_arrays(spec: ModelSpec, arrays: Arrays, *, int8: bool = False) -> nn.Module:
    """A model of ``spec`` holding ``arrays`` (quantized to int8 when asked)."""
    model = build_model(spec)
    model.load_state_dict(state_from_arrays(arrays))
    return quantize_int8(model) if int8 else model


def _nbytes(arrays: Arrays) -> int:
    return int(sum(np.asarray(a).nbytes for a in arrays.values()))


def _flags(messages: list[Message]) -> list[tuple[Message, bool]]:
    return [(m, bool(m.content[p.CONFIG]["int8"])) for m in messages]


def _weighted(updates: list[Any], key: str) -> float | None:
    pairs = [(u.metrics[key], u.num_examples) for u in updates if key in u.metrics]
    total = sum(w for _, w in pairs)
    if not pairs or total <= 0:
        return None
    return float(sum(v * w for v, w in pairs) / total)
