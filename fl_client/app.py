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

import logging
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from core_training.config import TrainConfig
from core_training.models import build_model
from core_training.pipeline import local_stats, model_spec_for
from core_training.preprocess import Preprocessor
from core_training.trainer import evaluate
from fl_common import protocol as p
from fl_common.settings import RunSettings, from_run_config
from privacy.keys import resolve_key

from .attack import attacked
from .local_round import DPOptions, open_ledger, preparation, train_round, val_metrics
from .silo import Silo, silo_for

if TYPE_CHECKING:  # privacy.ledger loads Opacus (seconds per message): only under DP
    from privacy.ledger import PrivacyLedger

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
    pre, weights = _preparation(msg, silo, config)
    model = _received_model(msg, silo, config)
    result = train_round(
        model,
        silo,
        config,
        preprocessor=pre,
        class_weights=weights,
        server_round=int(msg.content[p.CONFIG].get("server-round", 0)),
        proximal_mu=float(msg.content[p.CONFIG].get("proximal-mu", 0.0)),
        dp=DPOptions.from_settings(settings) if settings.dp else None,
        ledger=_ledger(silo, settings, context) if settings.dp else None,
    )
    arrays = p.state_to_record(result.state) if result.state is not None else ArrayRecord()
    if context.node_config.get("attack") and result.state is not None:
        # Robustness testing only (docs/deployment.md): this node sends a bad update.
        received = p.record_to_numpy(msg.content[p.ARRAYS])
        attack = str(context.node_config["attack"])
        arrays = p.numpy_to_record(attacked(p.record_to_numpy(arrays), received, attack))
    content = RecordDict(
        {
            p.ARRAYS: arrays,
            p.METRICS: MetricRecord(result.metrics()),
            p.INFO: p.info_record(result.status, result.reason, silo=silo.silo_id),
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_global(msg: Message, context: Context) -> Message:
    settings, config = from_run_config(dict(context.run_config))
    silo = silo_for(dict(context.node_config), settings, config)
    pre, _ = _preparation(msg, silo, config)
    model = _received_model(msg, silo, config)
    val = evaluate(model, pre.transform(silo.val.X), silo.val.y)
    metrics = MetricRecord({p.NUM_EXAMPLES: int(val["num_examples"]), **val_metrics(val)})
    return Message(content=RecordDict({p.METRICS: metrics}), reply_to=msg)


def _received_model(msg: Message, silo: Silo, config: TrainConfig) -> nn.Module:
    """The global model the server sent, rebuilt for this silo's schema."""
    model = build_model(model_spec_for(silo.train, config))
    model.load_state_dict(p.record_to_state(msg.content[p.ARRAYS]), strict=True)
    return model


def _preparation(
    msg: Message, silo: Silo, config: TrainConfig
) -> tuple[Preprocessor, np.ndarray | None]:
    """The federation's preprocessor and class weights when the server sent them,
    else ones fitted on this silo's own rows."""
    shared = p.record_to_prep(msg.content[p.PREP]) if p.PREP in msg.content.array_records else None
    return preparation(silo.train, config, shared)


def _ledger(silo: Silo, settings: RunSettings, context: Context) -> PrivacyLedger:
    key_file = context.node_config.get("key-file") or settings.key_file or None
    return open_ledger(
        silo.ledger_path,
        key=resolve_key(key_file),
        dp=DPOptions.from_settings(settings),
        run=f"flwr-run-{context.run_id}",  # so a silo can tell which run spent what
    )
