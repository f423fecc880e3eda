"""Which local-training recipe keeps accuracy under DP-SGD in a federation.

    python bench/dp_recipe_check.py                      # the candidates below, epsilon 8 and 3
    python bench/dp_recipe_check.py --epsilon 8 --rounds 10 --recipes "dp (fedsilo)"

A fast, in-process stand-in for the synthetic federation of bench_dp_accuracy.py: the
same 100,000 ``make_classification`` rows, a quarter set aside as test rows and never
scored here, the server's 20% validation split of the rest, the remainder IID over 10
silos that keep 80% of their share for training. Each round every silo trains the MLP
(128, 64) from the global model with fedsilo's trainer and DP-SGD (``DPSession``: noise
for all rounds composed to ``--epsilon`` at delta 1e-5 by PRV), and the global model is
the rows-weighted average (FedAvg). It prints, per recipe, the best validation accuracy
over the rounds and the round it came in, as JSON lines. Recipes are chosen on those
validation figures only; the benchmark scores the chosen default once on its test rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core_training.config import RECIPES, TrainConfig  # noqa: E402
from core_training.data import load_table  # noqa: E402
from core_training.models import ModelSpec, build_model  # noqa: E402
from core_training.pipeline import split  # noqa: E402
from core_training.trainer import evaluate, fit  # noqa: E402
from privacy.dp import DPSession, noise_for_run, unwrapped_state_dict  # noqa: E402


def _recipe(r: dict[str, Any]) -> dict[str, Any]:
    return {k.replace("_", "-"): v for k, v in r.items()}


CANDIDATES: dict[str, dict[str, Any]] = {
    "no DP (fedsilo's plain recipe)": {**_recipe(RECIPES["plain"]), "dp": False},
    "dp (fedsilo)": _recipe(RECIPES["dp"]),
    "sgd lr 0.5 batch 256 1 epoch": {
        "optimizer": "sgd",
        "learning-rate": 0.5,
        "batch-size": 256,
        "local-epochs": 1,
    },
    "sgd lr 0.5 batch 256 3 epochs": {
        "optimizer": "sgd",
        "learning-rate": 0.5,
        "batch-size": 256,
        "local-epochs": 3,
    },
    "sgd lr 1.0 batch 256 3 epochs clipping 0.5": {
        "optimizer": "sgd",
        "learning-rate": 1.0,
        "batch-size": 256,
        "local-epochs": 3,
        "clip": 0.5,
    },
}


def silos(num: int = 10) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray]:
    table = load_table("synthetic", rows=100_000, features=20)
    rest, _test = split(table, test_fraction=0.25, seed=1)  # never scored here
    pool, val = split(rest, test_fraction=0.2, seed=0)
    mean, std = pool.X.mean(0), pool.X.std(0)

    def standardize(x: np.ndarray) -> np.ndarray:
        return ((x - mean) / std).astype(np.float32)

    order = np.random.default_rng(0).permutation(len(pool.y))
    out = []
    for part in np.array_split(order, num):
        keep = part[: int(0.8 * len(part))]
        out.append((standardize(pool.X[keep]), pool.y[keep]))
    return out, standardize(val.X), val.y


def federate(name: str, recipe: dict[str, Any], epsilon: float, rounds: int, data) -> dict:
    parts, X_val, y_val = data
    recipe = dict(recipe)
    private, clip = recipe.pop("dp", True), float(recipe.pop("clip", 1.0))
    config = TrainConfig.from_dict({**recipe, "momentum": 0.9, "amp": False, "device": "cpu"})
    spec = ModelSpec(kind="mlp", in_features=20, num_classes=2, hidden_sizes=(128, 64))
    torch.manual_seed(0)
    shared = build_model(spec).state_dict()
    best = (0.0, 0)
    for r in range(1, rounds + 1):
        states, sizes = [], []
        for X, y in parts:
            model = build_model(spec)
            model.load_state_dict(shared)
            session = None
            if private:
                sigma = noise_for_run(
                    target_epsilon=epsilon,
                    delta=1e-5,
                    num_examples=len(y),
                    batch_size=config.batch_size,
                    epochs=config.local_epochs * rounds,
                    accountant="prv",
                )
                session = DPSession(
                    max_grad_norm=clip,
                    delta=1e-5,
                    epochs=config.local_epochs,
                    noise_multiplier=sigma,
                    accountant="prv",
                )
            fit(model, X, y, config, privatize=session)
            states.append(unwrapped_state_dict(session.release() if session else model))
            sizes.append(len(y))
        weights = np.asarray(sizes, dtype=np.float64) / sum(sizes)
        shared = {
            k: sum(float(w) * s[k].float() for w, s in zip(weights, states, strict=True)).to(
                states[0][k].dtype
            )
            for k in states[0]
        }
        model = build_model(spec)
        model.load_state_dict(shared)
        accuracy = float(evaluate(model, X_val, y_val)["accuracy"])
        if accuracy > best[0]:
            best = (accuracy, r)
    return {
        "recipe": name,
        "epsilon": epsilon if private else None,
        "best_val_accuracy": round(best[0], 4),
        "round": best[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epsilon", type=float, action="append")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--recipes", default=",".join(CANDIDATES), help="comma-separated names")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = silos()
    for name in (n.strip() for n in args.recipes.split(",")):
        recipe = CANDIDATES[name]
        for epsilon in [0.0] if recipe.get("dp") is False else args.epsilon or [8.0, 3.0]:
            print(json.dumps(federate(name, recipe, epsilon, args.rounds, data)), flush=True)


if __name__ == "__main__":
    main()
