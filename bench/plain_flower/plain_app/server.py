"""The ServerApp of the plain Flower app: Flower's FedAvg and Strategy.start()."""

from __future__ import annotations

import time
from typing import Any

import torch
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from core_training.models import build_model

from .task import model_spec

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    torch.manual_seed(int(rc["seed"]))
    model = build_model(model_spec(int(rc["features"])))
    nodes = len(list(grid.get_node_ids()))
    fraction = float(rc.get("fraction-train", 1.0))
    strategy = TimedFedAvg(
        fraction_train=fraction,
        fraction_evaluate=0.0,
        min_train_nodes=max(1, round(fraction * nodes)),
        min_available_nodes=nodes,
    )
    started = time.perf_counter()
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=int(rc["num-server-rounds"]),
    )
    seconds = time.perf_counter() - started
    rounds = len(result.train_metrics_clientapp)
    ends = [round(t - started, 3) for t in strategy.round_ends]
    print(
        f"PLAIN-FLOWER-RESULT rounds={rounds} rounds_seconds={seconds:.3f} round_ends={ends}",
        flush=True,
    )


class TimedFedAvg(FedAvg):
    """FedAvg that notes when each round's aggregation starts (the round's replies are
    all in): the gaps between rounds are the per-round times."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.round_ends: list[float] = []

    def aggregate_train(self, server_round, replies):  # type: ignore[no-untyped-def]
        self.round_ends.append(time.perf_counter())
        return super().aggregate_train(server_round, replies)
