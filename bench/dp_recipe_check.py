"""Which local-training recipe keeps accuracy under DP-SGD: one silo, synthetic rows.

``python bench/dp_recipe_check.py [--rows N] [--epochs E] [--epsilon EPS]`` trains the
MLP (128, 64) on ``make_classification`` rows (20 features, 2 classes; 25% held out,
standardized) with each recipe, without DP and with DP-SGD whose noise makes all epochs
compose to ``--epsilon`` at delta 1e-5 (clipping norm 1.0), and prints held-out accuracy
as JSON. A quick check of the DP defaults in ``core_training.config.RECIPES``, not the
federated benchmark (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from core_training.config import TrainConfig  # noqa: E402
from core_training.models import ModelSpec, build_model  # noqa: E402
from core_training.trainer import evaluate, fit  # noqa: E402
from privacy.dp import DPSession, noise_for_run  # noqa: E402

RECIPES = {
    "adam lr 0.001 batch 32": {"optimizer": "adam", "learning-rate": 1e-3, "batch-size": 32},
    "sgd lr 0.5 momentum 0.9 batch 256": {
        "optimizer": "sgd",
        "learning-rate": 0.5,
        "momentum": 0.9,
        "batch-size": 256,
    },
    "sgd lr 0.2 momentum 0.9 batch 256": {
        "optimizer": "sgd",
        "learning-rate": 0.2,
        "momentum": 0.9,
        "batch-size": 256,
    },
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--epsilon", type=float, default=8.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    X, y = make_classification(n_samples=args.rows, n_features=20, n_informative=10, random_state=0)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    scaler = StandardScaler().fit(X_tr)
    X_tr, X_te = (
        scaler.transform(X_tr).astype(np.float32),
        scaler.transform(X_te).astype(np.float32),
    )
    spec = ModelSpec(kind="mlp", in_features=20, num_classes=2, hidden_sizes=(128, 64), dropout=0.1)
    results = []
    for name, recipe in RECIPES.items():
        for dp in (False, True):
            config = TrainConfig.from_dict(
                {**recipe, "local-epochs": args.epochs, "amp": False, "device": "cpu"}
            )
            model = build_model(spec)
            session = None
            if dp:
                sigma = noise_for_run(
                    target_epsilon=args.epsilon,
                    delta=1e-5,
                    num_examples=len(y_tr),
                    batch_size=config.batch_size,
                    epochs=args.epochs,
                )
                session = DPSession(
                    max_grad_norm=1.0, delta=1e-5, epochs=args.epochs, noise_multiplier=sigma
                )
            started = time.perf_counter()
            fit(model, X_tr, y_tr, config, privatize=session)
            accuracy = float(evaluate(model, X_te, y_te)["accuracy"])
            results.append(
                {
                    "recipe": name,
                    "dp": dp,
                    "accuracy": round(accuracy, 4),
                    "epsilon": round(session.epsilon(), 3) if session else None,
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()
