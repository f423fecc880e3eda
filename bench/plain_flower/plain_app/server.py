"""The ServerApp of the plain Flower app: Flower's FedAvg and Strategy.start()."""

from __future__ import annotations

import time

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
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=nodes)
    started = time.perf_counter()
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=int(rc["num-server-rounds"]),
    )
    seconds = time.perf_counter() - started
    rounds = len(result.train_metrics_clientapp)
    print(f"PLAIN-FLOWER-RESULT rounds={rounds} rounds_seconds={seconds:.3f}", flush=True)
