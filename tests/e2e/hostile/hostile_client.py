"""fedsilo's ClientApp with a Flower mod that makes two simulated nodes hostile.

- partition 0 corrupts its statistics: NaN means and a count array one column short;
- partition 1 sends honest statistics, then corrupts every other reply: ``num-examples``
  inflated 1000-fold, out-of-range metrics, a list-valued epsilon (a legal MetricRecord
  value), and evaluate replies without their metrics record.

The other partitions run the real app unchanged. Used by tests/e2e/test_hostile_node.py.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord
from flwr.clientapp import ClientApp

from fl_client.app import evaluate_global, query, train

STATS_ATTACKER, REPLY_ATTACKER = 0, 1


def corrupt(msg: Message, context: Context, call_next) -> Message:  # type: ignore[no-untyped-def]
    reply = call_next(msg, context)
    who = int(context.node_config.get("partition-id", -1))
    if reply.has_error() or who not in (STATS_ATTACKER, REPLY_ATTACKER):
        return reply
    content = reply.content
    kind = msg.metadata.message_type
    if who == STATS_ATTACKER and kind.startswith("query") and "stats" in content.array_records:
        arrays = {k: v.numpy().copy() for k, v in content["stats"].items()}
        arrays["mean"] = np.full_like(arrays["mean"], np.nan)
        arrays["count"] = arrays["count"][:-1]
        content["stats"] = ArrayRecord(
            {k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()}
        )
    elif who == REPLY_ATTACKER and kind == "train":
        metrics = dict(content["metrics"])
        server_round = int(msg.content["config"].get("server-round", 1))
        if server_round % 3 == 1:
            metrics["num-examples"] = int(metrics["num-examples"]) * 1000
        elif server_round % 3 == 2:
            metrics["val_accuracy"] = 7.5
            metrics["train_loss"] = -1.0
        else:
            metrics["epsilon"] = [1.0, 2.0]
        content["metrics"] = MetricRecord(metrics)
    elif who == REPLY_ATTACKER and kind == "evaluate":
        del content["metrics"]
    return reply


app = ClientApp(mods=[corrupt])
app.query()(query)
app.train()(train)
app.evaluate()(evaluate_global)
