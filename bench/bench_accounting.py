"""The two accountants a silo may choose, against an independent one.

``run(quick)`` returns a dict; ``python bench/bench_accounting.py [--quick]`` prints it.

For histories of DP-SGD steps like the ones fedsilo's runs make (the DP recipe on a silo
of the synthetic federation and on a digits silo, and mixed histories), epsilon at
delta 1e-5 by Opacus's RDP accountant, by its PRV accountant (what fedsilo uses by
default) and by Google's dp_accounting PLD accountant (an independent computation of
the same privacy loss distribution); the seconds one evaluation takes; and the noise
each accountant needs to reach a target epsilon over a run (less noise, more accuracy).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from privacy import dp  # noqa: E402

DELTA = 1e-5
ROUNDS = 10  # fedsilo's default num-server-rounds
# A silo of the synthetic federation of bench_dp_accuracy.py: 100,000 rows, a quarter
# held out for testing, the server's 20% of the rest, 10 silos, each keeping 20% of its
# share for local validation: 4,800 training rows, in Poisson batches of 256 (the recipe).
SYNTHETIC_SILO_ROWS, DIGITS_SILO_ROWS, BATCH = 4_800, 86, 256


def _recipe_history(rows: int, target: float) -> tuple[list[tuple[float, float, int]], float]:
    """One run of the DP recipe (1 local epoch per round) calibrated by PRV to ``target``:
    its history and the noise multiplier."""
    q = dp.sample_rate_for(num_examples=rows, batch_size=BATCH)
    steps = ROUNDS * dp.steps_for(1, q)
    sigma = dp.noise_for_target(
        target_epsilon=target, target_delta=DELTA, sample_rate=q, steps=steps, accountant="prv"
    )
    return [(sigma, q, steps)], sigma


def pld_epsilon(history: list[tuple[float, float, int]]) -> float:
    """dp_accounting's PLD accountant (pessimistic estimate), Poisson-sampled Gaussian."""
    from dp_accounting import dp_event
    from dp_accounting.pld import pld_privacy_accountant

    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    for sigma, q, steps in history:
        accountant.compose(
            dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps
        )
    return float(accountant.get_epsilon(DELTA))


def _timed(fn: Any, repeats: int) -> tuple[Any, float]:
    times, value = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - started)
    return value, statistics.median(times)


def _compare(history: list[tuple[float, float, int]], repeats: int) -> dict[str, Any]:
    # uncached: the library caches each history's epsilon, which would time a lookup
    events = tuple(sorted(history))
    rdp, rdp_s = _timed(lambda: dp._epsilon.__wrapped__(events, DELTA, "rdp"), repeats)
    prv, prv_s = _timed(lambda: dp._epsilon.__wrapped__(events, DELTA, "prv"), repeats)
    pld, pld_s = _timed(lambda: pld_epsilon(history), repeats)
    return {
        "history": [list(e) for e in history],
        "epsilon": {"rdp": rdp, "prv": prv, "pld": pld},
        "seconds": {"rdp": rdp_s, "prv": prv_s, "pld": pld_s},
        "prv_over_pld": prv / pld,
        "rdp_over_pld": rdp / pld,
    }


def _noise_for(rows: int, target: float) -> dict[str, Any]:
    q = dp.sample_rate_for(num_examples=rows, batch_size=BATCH)
    steps = ROUNDS * dp.steps_for(1, q)
    sigma = {
        name: dp.noise_for_target(
            target_epsilon=target, target_delta=DELTA, sample_rate=q, steps=steps, accountant=name
        )
        for name in dp.ACCOUNTANTS
    }
    return {
        "sample_rate": q,
        "steps": steps,
        "sigma": sigma,
        "prv_over_rdp": sigma["prv"] / sigma["rdp"],
    }


def run(quick: bool = False) -> dict[str, Any]:
    targets = (3.0,) if quick else (8.0, 3.0, 1.0)
    repeats = 1 if quick else 3
    histories: dict[str, list[tuple[float, float, int]]] = {}
    for target in targets:
        histories[f"synthetic silo, epsilon {target:g}"] = _recipe_history(
            SYNTHETIC_SILO_ROWS, target
        )[0]
    if not quick:
        histories[f"digits silo, epsilon {targets[1]:g}"] = _recipe_history(
            DIGITS_SILO_ROWS, targets[1]
        )[0]
        first, _ = _recipe_history(SYNTHETIC_SILO_ROWS, 3.0)
        second, _ = _recipe_history(SYNTHETIC_SILO_ROWS, 1.0)
        histories["two runs of one silo (epsilon 3, then 1)"] = first + second
    results: dict[str, Any] = {
        "quick": quick,
        "delta": DELTA,
        "rounds": ROUNDS,
        "batch_size": BATCH,
        "prv_eps_error": dp.PRV_EPS_ERROR,
        "histories": {name: _compare(h, repeats) for name, h in histories.items()},
        "noise": {
            f"synthetic silo, epsilon {t:g}": _noise_for(SYNTHETIC_SILO_ROWS, t) for t in targets
        },
    }
    for name, h in results["histories"].items():
        for key, value in h["epsilon"].items():
            if not math.isfinite(value):
                raise RuntimeError(f"{name}: {key} epsilon is {value}")
    return results


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
