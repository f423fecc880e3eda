"""The ClientApp of the plain Flower app: load the partition, train, reply."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from core_training.models import build_model
from core_training.trainer import fit

from .task import client_data, model_spec, train_config

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    rc = context.run_config
    X, y = client_data(
        int(context.node_config["partition-id"]),
        int(context.node_config["num-partitions"]),
        int(rc["rows-per-client"]),
        int(rc["features"]),
        int(rc["seed"]),
    )
    model = build_model(model_spec(int(rc["features"])))
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    config = train_config(int(rc["local-epochs"]), int(rc["batch-size"]), int(rc["seed"]))
    result = fit(model, X, y, config)
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord(
                {
                    "num-examples": len(y),
                    "train_loss": float(result.metrics["train_loss"]),
                    "train_seconds": float(result.metrics["seconds"]),
                }
            ),
        }
    )
    return Message(content=content, reply_to=msg)
