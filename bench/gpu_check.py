"""Does the local trainer use the GPU, and what do CUDA and AMP buy? One short script.

    python bench/gpu_check.py > gpu.json # prints one JSON object; exits 1 if a check fails
    python bench/run.py --gpu-result gpu.json   # into bench/results.json and BENCHMARKS.md

Trains the same MLP (large enough for the GPU to matter) for one epoch on the CPU, on
CUDA with AMP off, and on CUDA with AMP on, through ``core_training.trainer.fit`` with
``device="auto"``, and checks that the trainer picked CUDA and used AMP when asked.
Made to run as one short call on a GPU machine; on a machine without CUDA it reports that
and exits 0 after the CPU arm.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core_training.config import TrainConfig  # noqa: E402
from core_training.models import ModelSpec, build_model  # noqa: E402
from core_training.trainer import evaluate, fit  # noqa: E402

ROWS, FEATURES, CLASSES = 200_000, 256, 10
HIDDEN = "2048,2048,1024"


def _arm(X: np.ndarray, y: np.ndarray, *, device: str, amp: bool) -> dict[str, object]:
    config = TrainConfig.from_dict(
        {
            "local-epochs": 1,
            "batch-size": 1024,
            "hidden-sizes": HIDDEN,
            "device": device,
            "amp": amp,
            "learning-rate": 1e-3,
            "class-weighting": "none",
        }
    )
    spec = ModelSpec("mlp", FEATURES, CLASSES, hidden_sizes=config.hidden, dropout=0.1)
    torch.manual_seed(0)
    model = build_model(spec)
    fit(model, X[:8192], y[:8192], config)  # warm-up: kernels, allocator, autotuning
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = fit(model, X, y, config)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    metrics = evaluate(model, X[:20_000], y[:20_000])
    return {
        "device": result.metrics["device"],
        "amp": bool(result.metrics["amp"]),
        "epoch_seconds": round(seconds, 3),
        "train_accuracy_sample": round(float(metrics["accuracy"]), 4),
    }


def main() -> int:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    w = rng.normal(size=(FEATURES, CLASSES)).astype(np.float32)
    y = (X @ w).argmax(1).astype(np.int64)
    out: dict[str, object] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), Python "
        f"{platform.python_version()}",
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "rows": ROWS,
        "hidden": HIDDEN,
    }
    cpu_rows = 20_000  # the CPU arm on a slice, scaled: a full CPU epoch would take minutes
    cpu = _arm(X[:cpu_rows], y[:cpu_rows], device="cpu", amp=False)
    cpu["epoch_seconds_scaled_to_all_rows"] = round(cpu["epoch_seconds"] * ROWS / cpu_rows, 3)
    out["cpu"] = cpu
    ok = True
    if torch.cuda.is_available():
        out["gpu_name"] = torch.cuda.get_device_name(0)
        fp32 = _arm(X, y, device="auto", amp=False)
        mixed = _arm(X, y, device="auto", amp=True)
        out["cuda_fp32"], out["cuda_amp"] = fp32, mixed
        out["cpu_over_cuda_fp32"] = round(
            cpu["epoch_seconds_scaled_to_all_rows"] / fp32["epoch_seconds"], 1
        )
        out["fp32_over_amp"] = round(fp32["epoch_seconds"] / mixed["epoch_seconds"], 2)
        ok = fp32["device"].startswith("cuda") and mixed["amp"] and not fp32["amp"]
    out["ok"] = ok
    print(json.dumps(out, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
