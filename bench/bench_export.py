"""int8 export against fp32: file size, accuracy, CPU inference latency.

``run(quick)`` returns a dict; ``python bench/bench_export.py [--quick]`` prints it.
For each model the fp32 and int8 versions (exactly the server's export: static int8
calibrated on validation rows, dynamic where that fails) are compared side by side in
this process: bytes as the model file stores them (fp32: the state dict; int8: the
packed payload, and for reference the plain quantized state dict), accuracy on the
same held-out test split (25%, never used for training or calibration), and the
median latency of a forward pass at batch 1 and batch 256 on the CPU (one torch
thread, interleaved repeats). Calibration uses a validation split (20%) of the
training rows, as the server uses its validation split.

Models: the digits CNN and MLP the federation trains (small: a file is much format
overhead), the CNN again with per-channel weight scales (the alternative the export
does not take), an MLP (512, 256) on 100-feature synthetic data, where the weights
dominate, and a residual CNN from ``examples/resnet_small.py`` when that file exists.
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
from core_training.models import build_model  # noqa: E402
from core_training.pipeline import model_spec_for, prepare_local, split  # noqa: E402
from core_training.quantize import pack_int8, quantize_for_export  # noqa: E402
from core_training.trainer import evaluate, fit  # noqa: E402
from fl_common.modelfile import serialized_size  # noqa: E402

RESIDUAL = ROOT / "examples" / "resnet_small.py"
TARGETS = {  # size ratio, accuracy change (points), latency ratio at batch 256
    "cnn": {"size_ratio": 0.50, "accuracy_points": 1.0},
    "mlp": {"size_ratio": 0.30, "accuracy_points": 1.0, "latency_ratio_batch256": 0.6},
    "residual": {"size_ratio": 0.30, "accuracy_points": 1.0, "latency_ratio_batch256": 0.6},
}


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
    name: str,
    dataset: str,
    settings: dict[str, Any],
    params: dict[str, Any],
    repeats: int,
    *,
    per_channel: bool = False,
) -> dict[str, Any]:
    config = TrainConfig.from_dict({"model": "mlp", **settings})
    table = load_table(dataset, **params)
    rest, test = split(table, test_fraction=0.25, seed=0)
    train, val = split(rest, test_fraction=0.2, seed=0)
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
    calibration = prepared.preprocessor.transform(val.X)
    int8 = quantize_for_export(model, calibration, per_channel=per_channel)
    qmodel = int8.model
    X_test = prepared.preprocessor.transform(test.X)
    fp32 = evaluate(model, X_test, test.y)["accuracy"]
    int8_acc = evaluate(qmodel, X_test, test.y)["accuracy"]
    X = torch.as_tensor(X_test, dtype=torch.float32).repeat(1 + 256 // len(X_test), 1)
    latency = {}
    for batch in (1, 256):
        pair = {"fp32": [], "int8": []}
        for _ in range(3):  # interleave the two arms
            pair["fp32"].append(_latency(model, X, batch, repeats))
            pair["int8"].append(_latency(qmodel, X, batch, repeats))
        latency[batch] = {k: statistics.median(v) for k, v in pair.items()}
    fp32_bytes = serialized_size(model.state_dict())
    int8_bytes = serialized_size(pack_int8(qmodel.state_dict()))
    return {
        "model": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "int8_method": int8.method,
        "int8_fallback_reason": int8.fallback_reason,
        "weight_scales": "per-channel" if per_channel else "per-tensor",
        "calibration_rows": min(len(calibration), 300),
        "fp32_bytes": fp32_bytes,
        "int8_bytes": int8_bytes,
        "int8_unpacked_bytes": serialized_size(qmodel.state_dict()),
        "size_ratio": round(int8_bytes / fp32_bytes, 3),
        "fp32_accuracy": round(fp32, 4),
        "int8_accuracy": round(int8_acc, 4),
        "accuracy_change_points": round(100 * (int8_acc - fp32), 2),
        "latency_us": {
            str(b): {k: round(v * 1e6, 1) for k, v in d.items()} for b, d in latency.items()
        },
        "latency_ratio_batch1": round(latency[1]["int8"] / latency[1]["fp32"], 3),
        "latency_ratio_batch256": round(latency[256]["int8"] / latency[256]["fp32"], 3),
    }


def _residual(quick: bool, repeats: int) -> dict[str, Any]:
    """The residual CNN of ``examples/resnet_small.py``, built as a run would build it
    (``model = "examples.resnet_small:build"``), with BatchNorm, which static
    quantization folds into the convolutions (no DP here, so BatchNorm is allowed)."""
    name = "residual CNN (examples/resnet_small.py)"
    if not RESIDUAL.exists():
        return {"model": name, "skipped": f"{RESIDUAL.relative_to(ROOT)} does not exist"}
    settings = {
        "model": "examples.resnet_small:build",
        "model-args": '{"norm": "batch"}',
        "local-epochs": 3 if quick else 20,
    }
    result = _compare(name, "digits", settings, {}, repeats)
    return {**result, "targets": TARGETS["residual"]}


def run(quick: bool = False) -> dict[str, Any]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    repeats = 50 if quick else 300
    digits_epochs = 5 if quick else 30
    cnn = {"model": "cnn", "local-epochs": digits_epochs}
    try:
        models = [
            {
                **_compare("digits CNN (16, 32)", "digits", cnn, {}, repeats),
                "targets": TARGETS["cnn"],
            },
            {
                **_compare(
                    "digits CNN (16, 32), per-channel weights",
                    "digits",
                    cnn,
                    {},
                    repeats,
                    per_channel=True,
                ),
                "targets": TARGETS["cnn"],
            },
            {
                **_compare(
                    "digits MLP (128, 64)", "digits", {"local-epochs": digits_epochs}, {}, repeats
                ),
                "targets": TARGETS["mlp"],
            },
            {
                **_compare(
                    "synthetic MLP (512, 256)",
                    "synthetic",
                    {
                        "local-epochs": 2 if quick else 10,
                        "hidden-sizes": "512,256",
                        "batch-size": 128,
                    },
                    {"rows": 5000 if quick else 50000, "features": 100, "classes": 2},
                    repeats,
                ),
                "targets": TARGETS["mlp"],
            },
            _residual(quick, repeats),
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
