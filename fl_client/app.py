"""fedsilo's Flower ClientApp: a thin adapter from messages to the local trainer.

- ``query`` answers the server's request for federated statistics with the plain
  counts and sums of this silo's rows (never rows) and its schema.
- ``train`` evaluates the received global model on the local validation split, then
  trains it (under DP when asked, within the silo's privacy budget) and replies with
  the new weights, train metrics, those validation metrics and the epsilon spent.
  Evaluating inside the train reply saves a whole message round per federated round.
- ``evaluate`` validates a model without training (the server asks once at the end,
  for the final model, when validation is federated), as fp32 or int8 as asked.

With ``freeze``, ``local-layers`` or ``fedbn`` the messages carry only the shared
weights: the statistics query brings the rest once, the silo keeps it encrypted in its
fedsilo home (:mod:`.personal`), completes every model it receives from it, and sends
back only the shared weights; with local layers it validates both its personalized
model and the global one.

Before any of these the silo checks the run against its own policy (``privacy.policy``):
a run that asks for less protection than the policy allows is declined with the policy
key it breaks, before anything is computed or sent. Every message checks again, so a
server that skips the statistics query gains nothing.
"""

from __future__ import annotations

import copy
import fcntl
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from torch import nn

from core_training.config import ConfigError, TrainConfig
from core_training.custom_model import ModelFactoryError
from core_training.layers import LayerPlan, freeze_, plan_layers
from core_training.models import build_model, quantize_int8
from core_training.pipeline import local_stats, model_spec_for
from core_training.preprocess import FeatureStats, Preprocessor
from core_training.trainer import evaluate
from fl_common import protocol as p
from fl_common.settings import RunSettings, fedsilo_home, from_run_config
from privacy.keys import resolve_key
from privacy.policy import Grant, PolicyDeclined
from privacy.stats_release import StatisticsBoundsError

from . import held_out, personal
from .local_round import (
    DPOptions,
    grant_for,
    open_ledger,
    preparation,
    train_round,
    val_metrics,
)
from .silo import Silo, silo_for

if TYPE_CHECKING:  # privacy.ledger loads Opacus (seconds per message): only under DP
    from privacy.ledger import PrivacyLedger

app = ClientApp()
logger = logging.getLogger("fedsilo.client")
# what makes a message's model unusable here: an error reply of one line
_MODEL_ERRORS = (ModelFactoryError, ConfigError, personal.LayersUnavailable)


@app.query()
def query(msg: Message, context: Context) -> Message:
    settings, config = from_run_config(dict(context.run_config))
    silo = silo_for(dict(context.node_config), settings, config)
    logger.info("silo %s: %s", silo.silo_id, silo.policy.describe())
    try:
        model = build_model(model_spec_for(silo.train, config))
        if p.FIXED in msg.content.array_records:
            personal.keep_fixed(
                personal.layers_path(silo.silo_id, settings, context.run_id),
                p.record_to_state(msg.content[p.FIXED]),
                _plan(model, settings),
                key=resolve_key(silo.key_file),
            )
    except _MODEL_ERRORS as exc:
        return _model_error(msg, silo, exc)
    try:
        grant = grant_for(silo, settings, config, num_parameters=_parameters(model))
    except PolicyDeclined as declined:
        return _declined(msg, silo, declined)
    # A target no noise level meets on this silo's rows is refused now, before any
    # statistic is computed or spent, rather than as an error inside every round.
    unreachable = _unreachable(grant, settings, silo, config)
    if unreachable is not None:
        return _declined(msg, silo, unreachable)
    schema_toml = silo.train.schema.to_toml()
    content = RecordDict(
        {
            p.METRICS: MetricRecord({p.NUM_EXAMPLES: len(silo.train)}),
            p.INFO: p.info_record(
                p.STATUS_OK,
                silo=silo.silo_id,
                schema=schema_toml,
                schema_digest=p.schema_digest(schema_toml),
                statistics=silo.policy.statistics.share,
            ),
        }
    )
    try:
        stats = _shared_stats(silo, config, grant, settings, context)
    except StatisticsBoundsError as exc:  # the policy asks for DP statistics it cannot have
        return _declined(msg, silo, PolicyDeclined("statistics.share", str(exc)))
    except PolicyDeclined as declined:  # the release does not fit the budget: none is made
        return _declined(msg, silo, declined)
    if stats is not None:
        content[p.STATS] = p.stats_to_record(stats)
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    settings, config = from_run_config(dict(context.run_config))
    silo = silo_for(dict(context.node_config), settings, config)
    try:
        received = _received_model(msg, silo, settings, config, context.run_id)
    except _MODEL_ERRORS as exc:
        return _model_error(msg, silo, exc)
    model = received.model
    try:
        grant = grant_for(silo, settings, config, num_parameters=_parameters(model))
    except PolicyDeclined as declined:
        return _declined(msg, silo, declined)
    unreachable = _unreachable(grant, settings, silo, config)
    if unreachable is not None:
        return _declined(msg, silo, unreachable)
    dp = _dp_options(grant, settings)
    pre, weights = _preparation(msg, silo, config)
    global_val = received.global_metrics(pre.transform(silo.val.X), silo.val.y)
    result = train_round(
        model,
        silo,
        config,
        preprocessor=pre,
        class_weights=weights,
        server_round=int(msg.content[p.CONFIG].get("server-round", 0)),
        proximal_mu=float(msg.content[p.CONFIG].get("proximal-mu", 0.0)),
        dp=dp,
        ledger=_ledger(silo, dp, context) if dp else None,
    )
    arrays = ArrayRecord()
    if result.state is not None:
        arrays = p.state_to_record(received.plan.shared(result.state))  # what travels
        if received.kept is not None:
            personal.keep_trained(received.path, received.kept, result.state, key=received.key)
            if settings.silo_test_fraction > 0 and received.plan.personal:
                config_record = msg.content[p.CONFIG]
                personal.keep_snapshot(
                    personal.snapshots_path(received.path),
                    received.kept,
                    int(config_record.get("server-round", 0)),
                    keep_since=int(config_record.get(p.KEEP_LAYERS_SINCE, 0)),
                    key=received.key,
                )
    content = RecordDict(
        {
            p.ARRAYS: arrays,
            p.METRICS: MetricRecord({**result.metrics(), **global_val}),
            p.INFO: p.info_record(
                result.status, result.reason, silo=silo.silo_id, accountant=result.accountant
            ),
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_global(msg: Message, context: Context) -> Message:
    settings, config = from_run_config(dict(context.run_config))
    silo = silo_for(dict(context.node_config), settings, config)
    try:
        received = _received_model(msg, silo, settings, config, context.run_id)
    except _MODEL_ERRORS as exc:
        return _model_error(msg, silo, exc)
    model = received.model
    config_record = msg.content.config_records.get(p.CONFIG)
    if config_record is not None and bool(config_record.get(p.TEST, False)):
        return _test(msg, silo, settings, config, received, config_record)
    try:
        grant_for(silo, settings, config, num_parameters=_parameters(model))
        _take_evaluation(silo, context.run_id)
    except PolicyDeclined as declined:
        return _declined(msg, silo, declined)
    pre, _ = _preparation(msg, silo, config)
    int8 = config_record is not None and bool(config_record.get("int8", False))
    X_val = pre.transform(silo.val.X)
    global_val = received.global_metrics(X_val, silo.val.y, int8=int8)
    val = evaluate(quantize_int8(model) if int8 else model, X_val, silo.val.y)
    metrics = MetricRecord(
        {
            p.NUM_EXAMPLES: int(val["num_examples"]),
            "val_held_out": int(silo.held_out),
            **val_metrics(val),
            **global_val,
        }
    )
    content = RecordDict(
        {p.METRICS: metrics, p.INFO: p.info_record(p.STATUS_OK, silo=silo.silo_id)}
    )
    return Message(content=content, reply_to=msg)


def _test(
    msg: Message,
    silo: Silo,
    settings: RunSettings,
    config: TrainConfig,
    received: Received,
    config_record: ConfigRecord,
) -> Message:
    """The run's one test evaluation (:mod:`.held_out`): the kept model on the test rows."""
    try:
        grant_for(silo, settings, config, num_parameters=_parameters(received.model))
        held_out.take_test(silo, received.path)
    except PolicyDeclined as declined:
        return _declined(msg, silo, declined)
    pre, _ = _preparation(msg, silo, config)
    try:
        metrics = held_out.held_out_metrics(
            received, silo, pre, judged_round=int(config_record.get(p.JUDGED_ROUND, 0))
        )
    except personal.LayersUnavailable as exc:
        return _model_error(msg, silo, exc)
    reason = "" if silo.test is not None else held_out.no_test_reason(silo)
    content = RecordDict(
        {
            p.METRICS: MetricRecord(metrics),
            p.INFO: p.info_record(p.STATUS_OK, reason, silo=silo.silo_id),
        }
    )
    return Message(content=content, reply_to=msg)


@dataclass
class Received:
    """The model a train or evaluate message asks about, as this silo uses it: the
    shared weights received, completed with the weights the silo keeps (``kept``, None
    when the run keeps none); frozen weights do not train."""

    model: nn.Module
    plan: LayerPlan
    kept: personal.KeptLayers | None
    path: Path
    key: bytes

    def global_metrics(
        self, X: np.ndarray, y: np.ndarray, *, int8: bool = False
    ) -> dict[str, float | list[int]]:
        """With local layers, the global model's validation metrics (``global_val_*``):
        the shared weights with the initial local layers. Empty otherwise."""
        if self.kept is None or not self.plan.personal:
            return {}
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.kept.initial(model.state_dict()))
        found = evaluate(quantize_int8(model) if int8 else model, X, y)
        return {p.GLOBAL_PREFIX + k: v for k, v in val_metrics(found).items()}


def _received_model(
    msg: Message, silo: Silo, settings: RunSettings, config: TrainConfig, run_id: int
) -> Received:
    """The model the server sent, rebuilt for this silo's schema; where the run keeps
    weights on the silos, completed with this silo's (a server that sends any of those
    is refused: they are the silo's, or the run's initial ones)."""
    model = build_model(model_spec_for(silo.train, config))
    plan = _plan(model, settings)
    state = p.record_to_state(msg.content[p.ARRAYS])
    path = personal.layers_path(silo.silo_id, settings, run_id)
    key, kept = b"", None
    if plan.kept:
        if set(state) & plan.kept:
            raise personal.LayersUnavailable(
                "the server sent weights this run keeps on the silos; refused"
            )
        key = resolve_key(silo.key_file)
        kept = personal.load_kept(path, key=key)
        state = kept.complete(state)
    model.load_state_dict(state, strict=True)
    freeze_(model, plan.frozen)
    return Received(model, plan, kept, path, key)


def _plan(model: nn.Module, settings: RunSettings) -> LayerPlan:
    return plan_layers(
        model,
        freeze=settings.freeze,
        local_layers=settings.local_layers,
        personalization=settings.personalization,
    )


def _model_error(msg: Message, silo: Silo, exc: Exception) -> Message:
    """The run's model cannot be built or completed here (a custom factory that does
    not import, raises, or does not fit the data; kept weights missing or refused): an
    error reply of one line, nothing trained."""
    logger.error("silo %s: %s", silo.silo_id, exc)
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=str(exc)), reply_to=msg)


def _preparation(
    msg: Message, silo: Silo, config: TrainConfig
) -> tuple[Preprocessor, np.ndarray | None]:
    """The federation's preprocessor and class weights when the server sent them,
    else ones fitted on this silo's own rows."""
    shared = p.record_to_prep(msg.content[p.PREP]) if p.PREP in msg.content.array_records else None
    return preparation(silo.train, config, shared)


def _ledger(silo: Silo, dp: DPOptions, context: Context) -> PrivacyLedger:
    # The key is the node's own (node-config, FEDSILO_KEY or the default key file): a
    # path in the run config is never opened, so a server cannot probe the silo's disk.
    return open_ledger(
        silo.ledger_path,
        key=resolve_key(silo.key_file),
        dp=dp,
        run=f"flwr-run-{context.run_id}",  # so a silo can tell which run spent what
    )


def _dp_options(grant: Grant, settings: RunSettings) -> DPOptions | None:
    if not grant.dp:
        return None
    return DPOptions.from_grant(
        grant, max_grad_norm=settings.dp_max_grad_norm, planned_rounds=settings.num_server_rounds
    )


def _unreachable(
    grant: Grant, settings: RunSettings, silo: Silo, config: TrainConfig
) -> PolicyDeclined | None:
    """The refusal when DP training of this run cannot meet its target on this silo."""
    dp = _dp_options(grant, settings)
    return dp.declined(len(silo.train), config) if dp is not None else None


def _shared_stats(
    silo: Silo, config: TrainConfig, grant: Grant, settings: RunSettings, context: Context
) -> FeatureStats | None:
    """The statistics this silo's policy lets the query learn: exact, with DP noise
    (spent from its ledger once per run: a repeated query gets the same release), or
    none."""
    share = silo.policy.statistics.share
    if share == "none":
        return None
    if share == "exact":
        return local_stats(silo.train, config)
    from privacy import store
    from privacy.ledger import BudgetExhaustedError
    from privacy.stats_release import release_stats

    key = resolve_key(silo.key_file)
    kept = fedsilo_home() / "releases" / f"{silo.silo_id}-run-{context.run_id}.stats"
    try:
        return FeatureStats.from_dict(store.load_json(kept, key=key, kind="json")[0])
    except store.ArtifactNotFoundError:
        pass
    dp = DPOptions.from_grant(
        grant, max_grad_norm=settings.dp_max_grad_norm, planned_rounds=settings.num_server_rounds
    )
    try:
        released = release_stats(
            silo.train,
            histograms=config.imputation == "median",
            epsilon=silo.policy.statistics.epsilon,
            ledger=_ledger(silo, dp, context),
        )
    except BudgetExhaustedError as exc:  # nothing was released, nothing spent
        raise PolicyDeclined("privacy.budget", str(exc)) from None
    kept.parent.mkdir(parents=True, exist_ok=True)
    store.save_json(kept, released.to_dict(), key=key, kind="json")
    return released


def _declined(msg: Message, silo: Silo, declined: PolicyDeclined) -> Message:
    logger.warning("silo %s declined the run: %s", silo.silo_id, declined)
    content = RecordDict(
        {
            p.METRICS: MetricRecord({p.NUM_EXAMPLES: 0}),
            p.INFO: p.info_record(
                p.STATUS_DECLINED, str(declined), silo=silo.silo_id, policy_key=declined.key
            ),
        }
    )
    return Message(content=content, reply_to=msg)


def _parameters(model: nn.Module) -> int:
    return sum(t.numel() for t in model.parameters())


def _take_evaluation(silo: Silo, run_id: int) -> None:
    """Count an evaluate message of this run; past the policy's limit, decline it (the
    count lives in the silo's fedsilo home, so it holds across ClientApp processes)."""
    limit = silo.policy.evaluation.max_evaluations_per_run
    folder = fedsilo_home() / "evaluations"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{silo.silo_id}-run-{run_id}", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        used = int(handle.read().strip() or 0)
        if used >= limit:
            raise PolicyDeclined(
                "evaluation.max-evaluations-per-run",
                f"this run already had {used} evaluation(s); the limit is {limit}",
            )
        handle.seek(0)
        handle.truncate()
        handle.write(str(used + 1))
