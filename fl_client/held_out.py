"""The test evaluation on a silo: the kept model scored once on the silo's test rows.

With ``silo-test-fraction`` each silo takes its test rows out before its train/validation
split (``fl_client.silo``), so no training, statistic, validation or model choice sees
them. At the end of the run the server sends one evaluate message marked ``test`` with
the model of the round it kept; the silo answers with what a validation reply holds,
under ``test_`` names: the loss, the scores and the confusion counts of its test rows,
no more. With local layers (FedPer, FedBN) the ``test_*`` figures are the silo's
personalized model *of the kept round* (its local layers as they were when that model
was validated, from :func:`fl_client.personal.layers_before`) and ``global_test_*`` the
global model's, on the same rows.

The silo answers one test message per run (a second is declined, so the test rows
cannot be used to choose a model), counted apart from the policy's
``max-evaluations-per-run``, which limits evaluations of the validation rows.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core_training.trainer import evaluate
from fl_common import protocol as p
from fl_common.settings import fedsilo_home
from privacy.policy import PolicyDeclined

from . import personal
from .silo import Silo

if TYPE_CHECKING:
    from core_training.preprocess import Preprocessor

    from .app import Received

ONCE_KEY = "evaluation.test-once"


def take_test(silo: Silo, kept_path: Path) -> None:
    """Mark this run's test evaluation as done on this silo; a second is declined."""
    folder = fedsilo_home() / "evaluations"
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"{kept_path.stem}.test"
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        raise PolicyDeclined(
            ONCE_KEY,
            f"silo {silo.silo_id} already scored a model on its test rows in this run; "
            "the test split is scored once",
        ) from None


def held_out_metrics(
    received: Received, silo: Silo, pre: Preprocessor, *, judged_round: int
) -> dict[str, Any]:
    """The test reply's metrics: ``test_held_out`` 0 (and nothing else) for a silo
    without a test split, else the kept model's scores on the test rows."""
    if silo.test is None:
        return {p.NUM_EXAMPLES: 0, "test_held_out": 0}
    X, y = pre.transform(silo.test.X), silo.test.y
    model = received.model
    out: dict[str, Any] = {
        p.NUM_EXAMPLES: len(y),
        "test_held_out": 1,
        "test_examples": len(y),
    }
    if received.kept is not None and received.plan.personal:
        snapshots = personal.snapshots_path(received.path)
        local, layers_round = personal.layers_before(
            snapshots, received.kept, judged_round, key=received.key
        )
        personalized = copy.deepcopy(model)
        personalized.load_state_dict({**model.state_dict(), **local})
        out.update(_scores(evaluate(personalized, X, y), "test_"))
        glob = copy.deepcopy(model)
        glob.load_state_dict(received.kept.initial(model.state_dict()))
        out.update(_scores(evaluate(glob, X, y), p.GLOBAL_PREFIX + "test_"))
        out["test_layers_round"] = layers_round
        personal.drop_snapshots(snapshots)  # read once; the run has ended
    else:
        out.update(_scores(evaluate(model, X, y), "test_"))
    return out


def no_test_reason(silo: Silo) -> str:
    return silo.test_note or (
        f"silo {silo.silo_id} holds no test split (it was split without silo-test-fraction)"
    )


def _scores(found: dict[str, Any], prefix: str) -> dict[str, float | list[int]]:
    out: dict[str, float | list[int]] = {
        prefix + k: float(found[k]) for k in ("loss", "accuracy", "balanced_accuracy", "macro_f1")
    }
    out[prefix + "confusion"] = [int(v) for v in np.asarray(found["confusion"]).ravel()]
    return out
