"""fedsilo's Flower ClientApp: a thin adapter from messages to the local trainer.

- ``query`` answers the server's request for federated statistics with the plain
  counts and sums of this silo's rows (never rows) and its schema.
- ``train`` evaluates the received global model on the local validation split, then
  trains it (under DP when asked, within the silo's privacy budget) and replies with
  the new weights, train metrics, those validation metrics and the epsilon spent.
  Evaluating inside the train reply saves a whole message round per federated round.
- ``evaluate`` validates a model without training (the server asks once at the end,
  for the final model, when validation is federated).
"""

from __future__ import annotations

import dataclasses
import logging
import zlib

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from core_training.config import TrainConfig
from core_training.models import build_model
from core_training.pipeline import fit_preprocessor, local_stats, model_spec_for
from core_training.preprocess import Preprocessor
from core_training.sampling import class_weights
from core_training.trainer import evaluate, fit
from fl_common import protocol as p
from fl_common.settings import RunSettings, from_run_config
from privacy.dp import (
    DPSession,
    noise_for_target,
    sample_rate_for,
    steps_for,
    unwrapped_state_dict,
)
from privacy.keys import resolve_key
from privacy.ledger import BudgetExhaustedError, PrivacyLedger

from .silo import Silo, silo_for

app = ClientApp()
logger = logging.getLogger("fedsilo.client")


@app.query()
def query(msg: Message, context: Context) -> Message:
    settings, config = from_run_config(dict(context.run_config))
    silo = silo_for(dict(context.node_config), settings, config)
    stats = local_stats(silo.train, config)
    schema_toml = silo.train.schema.to_toml()
    content = RecordDict(
        {
            p.STATS: p.stats_to_record(stats),
            p.METRICS: MetricRecord({p.NUM_EXAMPLES: len(silo.train)}),
            p.INFO: p.info_record(
                p.STATUS_OK,
                silo=silo.silo_id,
                schema=schema_toml,
                schema_digest=p.schema_digest(schema_toml),
            ),
        }
    )
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    settings, config = from_run_config(dict(context.run_config))
    silo = silo_for(dict(context.node_config), settings, config)
    server_round = int(msg.content[p.CONFIG].get("server-round", 0))
    pre, weights = _preparation(msg, silo, config)
    X_train, X_val = pre.transform(silo.train.X), pre.transform(silo.val.X)
    model = build_model(model_spec_for(silo.train, config))
    model.load_state_dict(p.record_to_state(msg.content[p.ARRAYS]), strict=True)
    val = evaluate(model, X_val, silo.val.y)

    # A different, reproducible shuffle and dropout pattern in every round and silo.
    round_seed = config.seed + 7919 * server_round + zlib.crc32(silo.silo_id.encode()) % 7907
    round_config = dataclasses.replace(config, seed=round_seed)
    mu = float(msg.content[p.CONFIG].get("proximal-mu", 0.0))

    epsilon, status, reason = -1.0, p.STATUS_OK, ""
    train_metrics = {"train_loss": 0.0, "train_accuracy": 0.0, "seconds": 0.0}
    arrays = ArrayRecord()
    if settings.dp:
        ledger = _ledger(silo, settings, context)
        session = DPSession(
            max_grad_norm=settings.dp_max_grad_norm,
            delta=settings.target_delta,
            epochs=config.local_epochs,
            noise_multiplier=_noise_multiplier(settings, config, len(X_train)),
        )
        plan = session.plan(num_examples=len(X_train), batch_size=config.batch_size)
        try:
            reservation = ledger.reserve_plan(plan, round=server_round, label=silo.silo_id)
        except BudgetExhaustedError as exc:
            status, reason = p.STATUS_DECLINED, f"privacy budget exhausted: {exc}"
            epsilon = ledger.spent_epsilon()
        else:
            result = fit(
                model,
                X_train,
                silo.train.y,
                round_config,
                class_weights=weights,
                privatize=session,
                proximal_mu=mu,
            )
            reservation.settle(session.steps_taken)
            epsilon = ledger.spent_epsilon()
            train_metrics = result.metrics
            arrays = p.state_to_record(unwrapped_state_dict(model))
    else:
        result = fit(
            model, X_train, silo.train.y, round_config, class_weights=weights, proximal_mu=mu
        )
        train_metrics = result.metrics
        arrays = p.state_to_record(model.state_dict())

    metrics = MetricRecord(
        {
            p.NUM_EXAMPLES: len(X_train) if status == p.STATUS_OK else 0,
            "train_loss": float(train_metrics["train_loss"]),
            "train_accuracy": float(train_metrics["train_accuracy"]),
            "val_examples": int(val["num_examples"]),
            "val_loss": float(val["loss"]),
            "val_accuracy": float(val["accuracy"]),
            "val_balanced_accuracy": float(val["balanced_accuracy"]),
            "val_macro_f1": float(val["macro_f1"]),
            "epsilon": float(epsilon),
            "budget_exhausted": int(status == p.STATUS_DECLINED),
            "train_seconds": float(train_metrics["seconds"]),
        }
    )
    content = RecordDict(
        {
            p.ARRAYS: arrays,
            p.METRICS: metrics,
            p.INFO: p.info_record(status, reason, silo=silo.silo_id),
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_global(msg: Message, context: Context) -> Message:
    settings, config = from_run_config(dict(context.run_config))
    silo = silo_for(dict(context.node_config), settings, config)
    pre, _ = _preparation(msg, silo, config)
    model = build_model(model_spec_for(silo.train, config))
    model.load_state_dict(p.record_to_state(msg.content[p.ARRAYS]), strict=True)
    val = evaluate(model, pre.transform(silo.val.X), silo.val.y)
    metrics = MetricRecord(
        {
            p.NUM_EXAMPLES: int(val["num_examples"]),
            "val_loss": float(val["loss"]),
            "val_accuracy": float(val["accuracy"]),
            "val_balanced_accuracy": float(val["balanced_accuracy"]),
            "val_macro_f1": float(val["macro_f1"]),
        }
    )
    return Message(content=RecordDict({p.METRICS: metrics}), reply_to=msg)


def _preparation(msg: Message, silo: Silo, config: TrainConfig) -> tuple[Preprocessor, object]:
    """The federation's preprocessor and class weights when the server sent them,
    else ones fitted on this silo's own rows."""
    if p.PREP in msg.content.array_records:
        pre, weights = p.record_to_prep(msg.content[p.PREP])
        if config.class_weighting == "none":
            weights = None
        return pre, weights
    stats = local_stats(silo.train, config)
    pre = fit_preprocessor(stats, silo.train, config)
    weights = (
        class_weights(stats.class_counts, config.class_weighting)
        if config.class_weighting != "none"
        else None
    )
    return pre, weights


def _noise_multiplier(settings: RunSettings, config: TrainConfig, num_examples: int) -> float:
    """The noise that makes all num-server-rounds rounds of local training, composed,
    reach target-epsilon: one noise level for the run, chosen for its total steps."""
    q = sample_rate_for(num_examples=num_examples, batch_size=config.batch_size)
    return noise_for_target(
        target_epsilon=settings.target_epsilon,
        target_delta=settings.target_delta,
        sample_rate=q,
        steps=steps_for(config.local_epochs * settings.num_server_rounds, q),
    )


def _ledger(silo: Silo, settings: RunSettings, context: Context) -> PrivacyLedger:
    key_file = context.node_config.get("key-file") or settings.key_file or None
    key = resolve_key(key_file)
    silo.ledger_path.parent.mkdir(parents=True, exist_ok=True)
    return PrivacyLedger.open(
        silo.ledger_path,
        key=key,
        budget_epsilon=settings.privacy_budget,
        delta=settings.target_delta,
    )
