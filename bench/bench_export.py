"""int8 export against fp32: file size, accuracy, CPU inference latency.

``run(quick)`` returns a dict; ``python bench/bench_export.py [--quick]`` prints it.
For each model the fp32 and int8 (dynamic quantization of the linear layers, exactly
the server's export) versions are compared side by side in this process: serialized
size, accuracy on the same held-out split, and the median latency of a forward pass at
batch 1 and batch 256 on the CPU (one torch thread, interleaved repeats).

Models: the digits MLP the federation trains (small: a file is mostly format overhead),
and an MLP (512, 256) on 100-feature synthetic data, where the weights dominate.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from core_training.config import TrainConfig  # noqa: E402
from core_training.data import load_table  # noqa: E402
from core_training.models import build_model, quantize_int8  # noqa: E402
from core_training.pipeline import model_spec_for, prepare_local, split  # noqa: E402
from core_training.trainer import evaluate, fit  # noqa: E402
from fl_common.modelfile import serialized_size  # noqa: E402


def _latency(model: torch.nn.Module, X: torch.Tensor, batch: int, repeats: int) -> float:
    xb = X[:batch]
    with torch.no_grad():
        for _ in range(3):
            model(xb)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(xb)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _compare(
    name: str, dataset: str, settings: dict[str, Any], params: dict[str, Any], repeats: int
) -> dict[str, Any]:
    config = TrainConfig.from_dict({"model": "mlp", **settings})
    table = load_table(dataset, **params)
    train, test = split(table, test_fraction=0.25, seed=0)
    prepared = prepare_local(train, config)
    torch.manual_seed(0)
    model = build_model(model_spec_for(table, config))
    fit(
        model,
        prepared.X,
        prepared.y,
        config,
        class_weights=prepared.class_weights,
        device=torch.device("cpu"),
    )
    model.eval()
    qmodel = quantize_int8(model)
    X_test = prepared.preprocessor.transform(test.X)
    fp32 = evaluate(model, X_test, test.y)["accuracy"]
    int8 = evaluate(qmodel, X_test, test.y)["accuracy"]
    X = torch.as_tensor(X_test, dtype=torch.float32).repeat(1 + 256 // len(X_test), 1)
    latency = {}
    for batch in (1, 256):
        pair = {"fp32": [], "int8": []}
        for _ in range(3):  # interleave the two arms
            pair["fp32"].append(_latency(model, X, batch, repeats))
            pair["int8"].append(_latency(qmodel, X, batch, repeats))
        latency[batch] = {k: statistics.median(v) for k, v in pair.items()}
    fp32_bytes, int8_bytes = (
        serialized_size(model.state_dict()),
        serialized_size(qmodel.state_dict()),
    )
    return {
        "model": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "fp32_bytes": fp32_bytes,
        "int8_bytes": int8_bytes,
        "size_ratio": round(int8_bytes / fp32_bytes, 3),
        "fp32_accuracy": round(fp32, 4),
        "int8_accuracy": round(int8, 4),
        "accuracy_change_points": round(100 * (int8 - fp32), 2),
        "latency_us": {
            str(b): {k: round(v * 1e6, 1) for k, v in d.items()} for b, d in latency.items()
        },
        "latency_ratio_batch1": round(latency[1]["int8"] / latency[1]["fp32"], 3),
        "latency_ratio_batch256": round(latency[256]["int8"] / latency[256]["fp32"], 3),
    }


def run(quick: bool = False) -> dict[str, Any]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    repeats = 50 if quick else 300
    try:
        models = [
            _compare(
                "digits MLP (128, 64)", "digits", {"local-epochs": 5 if quick else 30}, {}, repeats
            ),
            _compare(
                "synthetic MLP (512, 256)",
                "synthetic",
                {"local-epochs": 2 if quick else 10, "hidden-sizes": "512,256", "batch-size": 128},
                {"rows": 5000 if quick else 50000, "features": 100, "classes": 2},
                repeats,
            ),
        ]
    finally:
        torch.set_num_threads(previous)
    return {
        "quick": quick,
        "torch_threads": 1,
        "engine": torch.backends.quantized.engine,
        "models": models,
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
