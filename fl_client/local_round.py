"""One local round on a silo, shared by the ClientApp and the offline ``fl-client train``.

Validate the received model on the silo's validation split, then train it on the
training split, under DP when asked: plan the round, reserve it in the silo's privacy
ledger (refused, with nothing spent, when the budget would be exceeded), train, settle
the ledger with the steps actually taken. The caller turns the result into a Flower
reply or an update file; both carry the same metrics (:meth:`RoundResult.metrics`).
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from core_training.augment import augment_problem
from core_training.config import TrainConfig
from core_training.data import Table
from core_training.pipeline import fit_preparation, local_stats
from core_training.preprocess import Preprocessor
from core_training.sampling import RESAMPLING_UNDER_DP
from core_training.trainer import evaluate, fit
from fl_common import protocol as p
from fl_common.settings import VAL_METRICS, RunSettings
from privacy.policy import TARGET_UNREACHABLE, Grant, PolicyDeclined, RunRequest, decide

from .silo import Silo

# privacy.dp and privacy.ledger load Opacus (seconds): imported where DP is used, so a
# round without DP (and the fl-client commands that need none) does not pay for it.
if TYPE_CHECKING:
    from privacy.ledger import PrivacyLedger


@dataclass(frozen=True)
class DPOptions:
    """A silo's DP-SGD terms: ``target_epsilon`` is what ``planned_rounds`` rounds of
    this size compose to (one noise level for all of them); ``budget`` is the ledger's,
    from the silo's policy. ``budget_cap`` and ``run_epsilon`` hold this run to what it
    asked for, whatever it later sends: the recorded total may not pass ``budget_cap``
    and this run's own trainings may not compose past ``run_epsilon``."""

    target_epsilon: float
    delta: float
    max_grad_norm: float
    budget: float
    planned_rounds: int = 1
    budget_cap: float = math.inf
    run_epsilon: float = math.inf
    min_noise_multiplier: float = 0.0
    accountant: str = "rdp"  # the silo policy's (privacy.accountant)

    @classmethod
    def from_grant(cls, grant: Grant, *, max_grad_norm: float, planned_rounds: int) -> DPOptions:
        return cls(
            target_epsilon=grant.target_epsilon,
            delta=grant.delta,
            max_grad_norm=max_grad_norm,
            budget=grant.budget,
            planned_rounds=planned_rounds,
            budget_cap=grant.budget_cap,
            run_epsilon=grant.run_epsilon,
            min_noise_multiplier=grant.min_noise_multiplier,
            accountant=grant.accountant,
        )

    def noise_multiplier(self, num_examples: int, config: TrainConfig) -> float:
        """The noise that makes all planned rounds of local training, composed, reach
        the target epsilon: one noise level for the run, chosen for its total steps,
        and never below the silo's ``min-noise-multiplier``. Raises
        ``privacy.dp.TargetUnreachableError`` when no noise level can (see
        :meth:`declined`)."""
        from privacy.dp import noise_for_run

        sigma = noise_for_run(
            target_epsilon=self.target_epsilon,
            delta=self.delta,
            num_examples=num_examples,
            batch_size=config.batch_size,
            epochs=config.local_epochs * self.planned_rounds,
            accountant=self.accountant,
        )
        return max(sigma, self.min_noise_multiplier)

    def declined(self, num_examples: int, config: TrainConfig) -> PolicyDeclined | None:
        """The refusal to send when this run's target cannot be met on ``num_examples``
        rows (checked before anything is computed or spent), else None."""
        from privacy.dp import TargetUnreachableError

        try:
            self.noise_multiplier(num_examples, config)
        except TargetUnreachableError as exc:
            return PolicyDeclined(TARGET_UNREACHABLE, str(exc))
        return None


def run_request(
    settings: RunSettings, config: TrainConfig, *, num_parameters: int | None = None
) -> RunRequest:
    """What a run's settings ask of a silo (the server's word, to be checked)."""
    return RunRequest(
        dp=settings.dp,
        target_epsilon=settings.target_epsilon,
        delta=settings.target_delta,
        budget=settings.privacy_budget,
        local_epochs=config.local_epochs,
        batch_size=config.batch_size,
        median_imputation=config.imputation == "median",
        num_parameters=num_parameters,
    )


def grant_for(
    silo: Silo, settings: RunSettings, config: TrainConfig, *, num_parameters: int | None = None
) -> Grant:
    """The silo's terms for this run, or ``PolicyDeclined`` naming the policy key."""
    return decide(silo.policy, run_request(settings, config, num_parameters=num_parameters))


def open_ledger(path: Path, *, key: bytes, dp: DPOptions, run: str | None = None) -> PrivacyLedger:
    """The silo's ledger at ``path`` (created on first use) with the policy's budget;
    ``run`` labels the entries this process adds (default: a fresh id). A budget the
    silo raised in its own policy is adopted and recorded in the ledger."""
    from privacy.ledger import PrivacyLedger

    path.parent.mkdir(parents=True, exist_ok=True)
    ledger = PrivacyLedger.open(
        path,
        key=key,
        budget_epsilon=dp.budget,
        delta=dp.delta,
        run=run,
        allow_budget_increase=True,
        accountant=dp.accountant,
    )
    ledger.restrict(
        total=dp.budget_cap if math.isfinite(dp.budget_cap) else None,
        run=dp.run_epsilon if math.isfinite(dp.run_epsilon) else None,
    )
    return ledger


@dataclass
class RoundResult:
    """What one local round produced. ``state`` is None when the round was declined."""

    status: str  # protocol STATUS_OK or STATUS_DECLINED
    reason: str
    state: dict[str, torch.Tensor] | None
    num_examples: int
    train: dict[str, Any]  # the trainer's metrics (zeros when declined)
    val: dict[str, Any]  # the received model on the validation split
    epsilon: float | None  # the ledger's spent epsilon after the round; None without DP
    held_out: bool = True  # the validation rows are not the training rows
    accountant: str = ""  # what produced ``epsilon`` ("prv" or "rdp"); "" without DP

    @property
    def ok(self) -> bool:
        return self.status == p.STATUS_OK

    def metrics(self) -> dict[str, float | int | list[int]]:
        """The train reply's metrics (``protocol.TRAIN_METRIC_KEYS``), -1 epsilon
        without DP."""
        return {
            p.NUM_EXAMPLES: self.num_examples if self.ok else 0,
            "train_loss": float(self.train["train_loss"]),
            "train_accuracy": float(self.train["train_accuracy"]),
            "val_examples": int(self.val["num_examples"]),
            "val_held_out": int(self.held_out),
            **val_metrics(self.val),
            "epsilon": float(self.epsilon) if self.epsilon is not None else -1.0,
            "budget_exhausted": int(self.status == p.STATUS_DECLINED),
            "train_seconds": float(self.train["seconds"]),
        }


def val_metrics(evaluation: dict[str, Any]) -> dict[str, float | list[int]]:
    """``trainer.evaluate``'s loss and scores under their ``val_`` names, and its
    confusion matrix flattened (the server pools the matrices of all silos)."""
    out: dict[str, float | list[int]] = {
        k: float(evaluation[k.removeprefix("val_")]) for k in VAL_METRICS
    }
    out["val_confusion"] = [int(v) for row in evaluation["confusion"] for v in row]
    return out


def preparation(
    table: Table,
    config: TrainConfig,
    shared: tuple[Preprocessor, np.ndarray | None] | None = None,
) -> tuple[Preprocessor, np.ndarray | None]:
    """The federation's preprocessor and class weights when given (``shared``), else
    ones fitted on this silo's own rows; no weights with ``class-weighting = none``."""
    if shared is not None:
        pre, weights = shared
        return pre, None if config.class_weighting == "none" else weights
    return fit_preparation(local_stats(table, config), table, config)


def train_round(
    model: nn.Module,
    silo: Silo,
    config: TrainConfig,
    *,
    preprocessor: Preprocessor,
    class_weights: np.ndarray | None,
    server_round: int,
    proximal_mu: float = 0.0,
    dp: DPOptions | None = None,
    ledger: PrivacyLedger | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> RoundResult:
    """Validate, then train ``model`` (holding the received global weights) in place."""
    image_shape = silo.train.schema.image_shape
    problem = augment_problem(config.augment, image_shape)
    if problem:  # before anything is computed, reserved or spent
        raise ValueError(problem)
    X_train, X_val = preprocessor.transform(silo.train.X), preprocessor.transform(silo.val.X)
    val = evaluate(model, X_val, silo.val.y)
    # A different, reproducible shuffle and dropout pattern in every round and silo.
    round_seed = config.seed + 7919 * server_round + zlib.crc32(silo.silo_id.encode()) % 7907
    round_config = dataclasses.replace(config, seed=round_seed)
    train_args = {
        "class_weights": class_weights,
        "proximal_mu": proximal_mu,
        "on_epoch": on_epoch,
        "image_shape": image_shape,
    }
    if dp is None:
        result = fit(model, X_train, silo.train.y, round_config, **train_args)
        return RoundResult(
            p.STATUS_OK,
            "",
            model.state_dict(),
            len(X_train),
            result.metrics,
            val,
            None,
            silo.held_out,
        )

    from privacy.dp import (
        DPSession,
        IncompatibleModelError,
        require_compatible,
        unwrapped_state_dict,
    )
    from privacy.ledger import BudgetExhaustedError

    if ledger is None:
        raise ValueError("a private round needs the silo's privacy ledger")
    if config.resampling != "none":  # refused before the ledger reserves anything
        raise ValueError(RESAMPLING_UNDER_DP)
    unreachable = dp.declined(len(X_train), config)
    if unreachable is not None:  # nothing trained, nothing recorded
        return _declined_round(str(unreachable), len(X_train), val, ledger, silo)
    try:  # before the ledger reserves anything: a model DP-SGD cannot train is declined
        require_compatible(model, what="the run's model")
    except IncompatibleModelError as exc:
        return _declined_round(str(exc), len(X_train), val, ledger, silo)
    session = DPSession(
        max_grad_norm=dp.max_grad_norm,
        delta=dp.delta,
        epochs=config.local_epochs,
        noise_multiplier=dp.noise_multiplier(len(X_train), config),
        accountant=dp.accountant,
    )
    plan = session.plan(num_examples=len(X_train), batch_size=config.batch_size)
    try:
        reservation = ledger.reserve_plan(plan, round=server_round, label=silo.silo_id)
    except BudgetExhaustedError as exc:
        return _declined_round(str(exc), len(X_train), val, ledger, silo)
    result = fit(model, X_train, silo.train.y, round_config, privatize=session, **train_args)
    reservation.settle(session.steps_taken)
    state = unwrapped_state_dict(model)
    spent, accountant = ledger.spent()
    return RoundResult(
        p.STATUS_OK,
        "",
        state,
        len(X_train),
        result.metrics,
        val,
        spent,
        silo.held_out,
        accountant,
    )


def _declined_round(
    reason: str, num_examples: int, val: dict[str, Any], ledger: PrivacyLedger, silo: Silo
) -> RoundResult:
    idle = {"train_loss": 0.0, "train_accuracy": 0.0, "seconds": 0.0}
    spent, accountant = ledger.spent()
    return RoundResult(
        p.STATUS_DECLINED,
        reason,
        None,
        num_examples,
        idle,
        val,
        spent,
        silo.held_out,
        accountant,
    )
