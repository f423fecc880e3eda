"""DP-SGD with Opacus: make a model, optimizer and loader private, and count epsilon.

A :class:`DPSession` is the ``privatize`` hook that ``core_training.trainer.fit`` accepts::

    session = DPSession(max_grad_norm=1.0, delta=1e-5, noise_multiplier=1.1, epochs=2)
    plan = session.plan(num_examples=len(X), batch_size=64)   # check the ledger with this
    result = fit(model, X, y, config, privatize=session)
    weights = unwrapped_state_dict(model_or_wrapper)          # keys as without DP
    session.steps_taken, session.epsilon()

Every privacy parameter is keyword-only, so sigma (noise multiplier) and q (sample rate)
cannot be swapped by position. Epsilon is counted with Opacus's RDP accountant, or its
PRV accountant (``accountant="prv"``: tighter, slower; see :func:`account`).

The loader handed back samples each example independently with probability
q = 1/len(loader) (Poisson sampling, as the accountant assumes), so batch sizes vary and a
batch can be empty: its tensors then have zero rows. Such a batch must still go through
forward, backward and ``optimizer.step()``: the step adds pure noise and is counted by
the accountant. Skipping it would make the released model depend on whether the batch
was empty, which the accounting does not cover. Leave empty batches out of loss averages.
"""

from __future__ import annotations

import functools
import math
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from opacus import GradSampleModule, PrivacyEngine
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import MAX_SIGMA as _MAX_SIGMA
from opacus.accountants.utils import get_noise_multiplier
from opacus.data_loader import DPDataLoader
from opacus.grad_sample.gsm_base import AbstractGradSampleModule
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader

from . import noise_cache
from .bookkeeping import BookkeepingClipper, unsupported_layers

# Accountants that compose the ledger's history of subsampled Gaussian mechanisms:
# "prv" (Gopi et al. 2021: the privacy loss distributions convolved numerically; a
# near-exact upper bound, within PRV_EPS_ERROR) and "rdp" (Renyi DP, Mironov 2017: a
# looser closed-form bound, fast for any history). Library functions default to "rdp",
# as before; a silo's policy chooses (privacy.accountant, default "prv").
ACCOUNTANTS = ("prv", "rdp")
ACCOUNTANT = "rdp"
# PRV's epsilon is the upper end of its estimate: at most this far above the exact one.
PRV_EPS_ERROR = 0.01
# PRV convolves one discretized distribution per distinct (sigma, q); past this many its
# time grows into seconds per call, and the history is accounted with RDP (and says so).
PRV_MAX_MECHANISMS = 6


class IncompatibleModelError(ValueError):
    """A model DP-SGD cannot train as is; the message lists each problem."""


class TargetUnreachableError(ValueError):
    """No noise level keeps the planned steps within the target epsilon.

    The accountant cannot prove an epsilon that small for this many steps at this
    sample rate and delta, however much noise is added (for the RDP accountant the
    conversion to (epsilon, delta) alone costs about ``log(1/delta) / max_order``).
    Fewer rounds or epochs, larger batches (a larger sample rate needs fewer steps per
    epoch), a larger delta or a larger target make it reachable."""

    def __init__(
        self, *, target_epsilon: float, delta: float, sample_rate: float, steps: int
    ) -> None:
        super().__init__(
            f"no noise level keeps {steps} DP-SGD steps at sample rate {sample_rate:.4g} "
            f"within target-epsilon {target_epsilon:g} at delta {delta:g}: the target is too "
            "small for this data size; use fewer rounds or local epochs, a larger batch "
            "size or a larger target-epsilon"
        )
        self.target_epsilon = target_epsilon
        self.delta = delta
        self.sample_rate = sample_rate
        self.steps = steps


@dataclass(frozen=True)
class DPPlan:
    """What one local training will spend, known before it starts."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    delta: float
    accountant: str = ACCOUNTANT

    def epsilon(self) -> float:
        return epsilon_for(
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            steps=self.steps,
            delta=self.delta,
            accountant=self.accountant,
        )


def sample_rate_for(*, num_examples: int, batch_size: int) -> float:
    """q as Opacus sets it for a ``DataLoader(batch_size=...)``: 1 / number of batches."""
    if num_examples < 1 or batch_size < 1:
        raise ValueError("num_examples and batch_size must be positive")
    return 1.0 / math.ceil(num_examples / batch_size)


def steps_for(epochs: int, sample_rate: float) -> int:
    """Optimizer steps in ``epochs`` epochs of a Poisson loader with rate ``sample_rate``.

    Opacus's sampler runs ``int(1 / sample_rate)`` batches per epoch; floating point makes
    that one less than the original number of batches for some sizes (93 batches -> 92),
    so this mirrors it exactly rather than computing ``epochs / sample_rate``.
    """
    _check_rate(sample_rate)
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    return int(epochs) * int(1 / sample_rate)


def epsilon_for(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = ACCOUNTANT,
) -> float:
    """Epsilon of ``steps`` DP-SGD steps at (sigma, q) by ``accountant``."""
    return epsilon_of_history(
        [(noise_multiplier, sample_rate, steps)], delta=delta, accountant=accountant
    )


def epsilon_of_history(
    history: Iterable[tuple[float, float, int]], *, delta: float, accountant: str = ACCOUNTANT
) -> float:
    """Epsilon of the composition of several (noise multiplier, sample rate, steps) runs.

    Both accountants compose the whole history at once (RDP adds Renyi divergences order
    by order, PRV convolves the privacy loss distributions), which is tighter than adding
    the epsilons of each run. See :func:`account` for which accountant answered.
    """
    return account(history, delta=delta, accountant=accountant)[0]


def account(
    history: Iterable[tuple[float, float, int]], *, delta: float, accountant: str = ACCOUNTANT
) -> tuple[float, str]:
    """(epsilon, the accountant that produced it) for a history of (sigma, q, steps).

    Entries with the same sigma and q are merged (composition does not depend on
    order), so a run's rounds cost PRV one mechanism. "prv" answers with "rdp" when the
    history holds more than ``PRV_MAX_MECHANISMS`` distinct mechanisms."""
    _check_delta(delta)
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {accountant!r}")
    merged: dict[tuple[float, float], int] = {}
    for sigma, q, steps in history:
        _check_rate(q)
        if steps < 0 or sigma < 0:
            raise ValueError("steps and noise multiplier must be >= 0")
        if steps > 0:
            key = (float(sigma), float(q))
            merged[key] = merged.get(key, 0) + int(steps)
    if not merged:
        return 0.0, accountant
    if any(sigma == 0 for sigma, _ in merged):
        return math.inf, accountant
    events = tuple(sorted((sigma, q, steps) for (sigma, q), steps in merged.items()))
    if accountant == "prv" and len(events) > PRV_MAX_MECHANISMS:
        accountant = "rdp"
    return _epsilon(events, float(delta), accountant), accountant


@functools.lru_cache(maxsize=512)
def _epsilon(events: tuple[tuple[float, float, int], ...], delta: float, accountant: str) -> float:
    # Cached: a round asks for the same history's epsilon several times (check, reserve,
    # settle, report), and a PRV evaluation takes a good fraction of a second.
    if accountant == "rdp":
        rdp = RDPAccountant()
        rdp.history = list(events)
        return float(rdp.get_epsilon(delta=delta))
    prv = PRVAccountant()
    prv.history = list(events)
    return float(prv.get_epsilon(delta=delta, eps_error=PRV_EPS_ERROR))


def noise_for_target(
    *,
    target_epsilon: float,
    target_delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = ACCOUNTANT,
) -> float:
    """The smallest noise multiplier (within 0.01 of the target's epsilon, Opacus's
    tolerance) that keeps ``steps`` steps at rate ``sample_rate`` at or below
    ``target_epsilon`` by ``accountant``, or :class:`TargetUnreachableError` when no
    noise level does."""
    _check_rate(sample_rate)
    _check_delta(target_delta)
    if target_epsilon <= 0 or steps < 1:
        raise ValueError("target_epsilon must be > 0 and steps >= 1")
    sigma = _noise_search(
        float(target_epsilon), float(target_delta), float(sample_rate), int(steps), accountant
    )
    if sigma is None:
        raise TargetUnreachableError(
            target_epsilon=target_epsilon, delta=target_delta, sample_rate=sample_rate, steps=steps
        )
    return sigma


@functools.lru_cache(maxsize=256)
def _noise_search(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str
) -> float | None:
    """:func:`noise_for_target`'s search; None when the target is unreachable.

    Cached: a search evaluates the accountant dozens of times (seconds of CPU), and a
    silo asks for the same run's noise several times (the plan check, the decline
    check, the training), as does a simulated silo in every round. Across processes
    (a deployed silo's every message) :mod:`privacy.noise_cache` remembers it: a level
    found there is used only after one accountant evaluation shows it keeps the target.
    """
    key = noise_cache.cache_key(target_epsilon, delta, sample_rate, steps, accountant)
    hint = noise_cache.remembered(key)
    if hint is not None:
        spent = epsilon_for(
            noise_multiplier=hint,
            sample_rate=sample_rate,
            steps=steps,
            delta=delta,
            accountant=accountant,
        )
        if spent <= target_epsilon:
            return hint
    sigma = _search(target_epsilon, delta, sample_rate, steps, accountant)
    if sigma is not None:
        noise_cache.remember(key, sigma)
    return sigma


def _search(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str
) -> float | None:
    if accountant == "rdp":
        try:
            sigma = get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant="rdp",
            )
        except ValueError:  # Opacus: "The privacy budget is too low."
            return None
        return float(sigma)

    def eps(sigma: float) -> float:
        return epsilon_for(
            noise_multiplier=sigma,
            sample_rate=sample_rate,
            steps=steps,
            delta=delta,
            accountant=accountant,
        )

    # RDP's noise always suffices (its bound is looser) and brackets PRV's from above,
    # which saves most of the search's PRV evaluations.
    high = _noise_search(target_epsilon, delta, sample_rate, steps, "rdp")
    if high is None:
        if eps(_MAX_SIGMA) > target_epsilon:  # no more noise than Opacus would ever add
            return None
        high = 20.0
    while eps(high) > target_epsilon:  # (PRV's stated error could exceed RDP's slack)
        high *= 2
        if high > _MAX_SIGMA:
            return None
    low = high / 2
    while eps(low) <= target_epsilon:  # PRV may need much less noise than RDP
        high, low = low, low / 2
        if low < 1e-3:
            return high
    eps_high = eps(high)
    while target_epsilon - eps_high > 0.01 and high - low > 1e-4 * high:
        middle = (low + high) / 2
        eps_middle = eps(middle)
        if eps_middle <= target_epsilon:
            high, eps_high = middle, eps_middle
        else:
            low = middle
    return float(high)


def noise_for_run(
    *,
    target_epsilon: float,
    delta: float,
    num_examples: int,
    batch_size: int,
    epochs: int,
    accountant: str = ACCOUNTANT,
) -> float:
    """One noise level for a whole run: ``epochs`` epochs in total (local epochs times
    rounds) of ``num_examples`` rows in batches of ``batch_size`` composed reach at most
    ``target_epsilon``; :class:`TargetUnreachableError` when no noise level can."""
    q = sample_rate_for(num_examples=num_examples, batch_size=batch_size)
    return noise_for_target(
        target_epsilon=target_epsilon,
        target_delta=delta,
        sample_rate=q,
        steps=steps_for(epochs, q),
        accountant=accountant,
    )


def check_compatible(model: nn.Module) -> list[str]:
    """What keeps DP-SGD from training ``model`` (empty when it can)."""
    problems = [
        str(e)
        for e in ModuleValidator.validate(model, strict=False)
        if "training mode" not in str(e)  # train() fixes this, and fit() calls it
    ]
    problems += [str(e) for e in GradSampleModule.validate(model, strict=False)]
    return problems


def incompatible_layers(model: nn.Module) -> list[str]:
    """Each layer (leaf module) that keeps DP-SGD from training ``model``, as
    ``"name (Type)"`` (empty when it can train)."""
    return [
        f"{name} ({type(layer).__name__})"
        for name, layer in model.named_modules()
        if name and not any(layer.children()) and check_compatible(layer)
    ]


def require_compatible(model: nn.Module, *, what: str) -> None:
    """An :class:`IncompatibleModelError` of one line naming the layers, when DP-SGD
    cannot train ``model``. fedsilo does not replace layers (``make_compatible``) on its
    own: the server and every silo must hold the same architecture, and the model's
    author should see the change."""
    layers = incompatible_layers(model)
    if not layers and check_compatible(model):  # a problem of the whole, not of a layer
        layers = [type(model).__name__]
    if layers:
        raise IncompatibleModelError(
            f"{what} cannot be trained with DP-SGD: {', '.join(layers)} "
            "(BatchNorm and other layers with running statistics mix the examples of a "
            "batch, and Opacus needs per-sample gradients of every trainable layer); "
            "use GroupNorm or LayerNorm instead"
        )


def make_compatible(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with the layers Opacus knows how to replace replaced
    (BatchNorm -> GroupNorm, LSTM -> DPLSTM, ...), or an :class:`IncompatibleModelError`
    listing what no fix exists for. Build the optimizer after this, on the returned model;
    its state dict differs from the original's, so every silo must use the same fix."""
    fixed = ModuleValidator.fix(model)
    problems = check_compatible(fixed)
    if problems:
        raise IncompatibleModelError(
            "DP-SGD cannot train this model, and Opacus has no automatic fix for: "
            + "; ".join(problems)
            + ". Replace these layers (no BatchNorm or other running statistics in "
            "trainable layers; every trainable layer needs per-sample gradients)."
        )
    return fixed


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside Opacus wrappers (hooks still attached; see
    :meth:`DPSession.release` to remove them)."""
    while isinstance(model, AbstractGradSampleModule):
        model = model._module
    return model


def unwrapped_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with the same keys as the non-private model (no ``_module.``)."""
    return unwrap(model).state_dict()


GRAD_SAMPLE_MODES = ("bookkeeping", "ghost", "hooks", "functorch", "ew")
LOSS_MODES = ("bookkeeping", "ghost")  # modes that need the loss to clip


class DPSession:
    """One private local training: call it as the trainer's ``privatize`` hook, once.

    Give either ``noise_multiplier`` or ``target_epsilon`` (then the noise is chosen so
    that ``epochs`` epochs land at or below it). It records the noise multiplier, the
    sample rate and the optimizer steps actually taken, and reports epsilon for them.
    ``secure_mode`` uses a cryptographically secure noise source (slower; for production).
    ``grad_sample_mode`` is how each example's gradient is clipped:

    - ``"bookkeeping"`` (the default, when the trainer passes its loss): book-keeping
      clipping (:mod:`privacy.bookkeeping`, Bu et al. 2022). One backward pass gives
      each trainable layer's output gradients; the per-example norms and the sum of the
      clipped gradients are computed from them and the layers' inputs, the result ghost
      clipping reaches with a second backward pass. Opacus's DP optimizer adds the noise
      and its accountant counts the step, exactly as for ghost clipping. A model with a
      trainable layer it has no rule for (anything but Linear, Conv2d, GroupNorm and
      LayerNorm) is clipped with ``"ghost"`` instead; :attr:`used_grad_sample_mode` says
      which ran.
    - ``"ghost"``: Opacus's ghost clipping (norms without per-sample gradients, then a
      second backward pass on the rescaled loss).
    - ``"hooks"``, ``"functorch"`` or ``"ew"`` (expanded weights): Opacus materializes
      per-sample gradients and its optimizer clips them.

    All clip to the same bound with the same formula; the noise and the accounting are
    Opacus's in every mode. Without the loss, ``"bookkeeping"`` and ``"ghost"`` use
    ``"hooks"``.
    """

    def __init__(
        self,
        *,
        max_grad_norm: float,
        delta: float,
        epochs: int,
        noise_multiplier: float | None = None,
        target_epsilon: float | None = None,
        secure_mode: bool = False,
        grad_sample_mode: str = "bookkeeping",
        accountant: str = ACCOUNTANT,
    ) -> None:
        if grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise ValueError(
                f"grad_sample_mode must be one of {', '.join(GRAD_SAMPLE_MODES)}, "
                f"got {grad_sample_mode!r}"
            )
        if (noise_multiplier is None) == (target_epsilon is None):
            raise ValueError("give exactly one of noise_multiplier and target_epsilon")
        if noise_multiplier is not None and noise_multiplier <= 0:
            raise ValueError(f"noise_multiplier must be > 0, got {noise_multiplier}")
        if target_epsilon is not None and target_epsilon <= 0:
            raise ValueError(f"target_epsilon must be > 0, got {target_epsilon}")
        if max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be > 0, got {max_grad_norm}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        _check_delta(delta)
        if accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {', '.join(ACCOUNTANTS)}")
        self.accountant = accountant
        self.max_grad_norm = float(max_grad_norm)
        self.delta = float(delta)
        self.epochs = int(epochs)
        self.target_epsilon = target_epsilon
        self.secure_mode = secure_mode
        self.grad_sample_mode = grad_sample_mode
        self._fixed_noise = noise_multiplier
        self._plan: DPPlan | None = None
        self._engine: PrivacyEngine | None = None
        self._release: Callable[[], nn.Module] | None = None
        self._mode: str | None = None

    def plan(self, *, num_examples: int, batch_size: int) -> DPPlan:
        """The noise, rate and steps this session will use for a loader of
        ``num_examples`` examples in batches of ``batch_size``; ask the ledger with it."""
        q = sample_rate_for(num_examples=num_examples, batch_size=batch_size)
        self._plan = self._plan_for(q)
        return self._plan

    def _plan_for(self, sample_rate: float) -> DPPlan:
        steps = steps_for(self.epochs, sample_rate)
        if self._fixed_noise is not None:
            sigma = self._fixed_noise
        else:
            assert self.target_epsilon is not None
            sigma = noise_for_target(
                target_epsilon=self.target_epsilon,
                target_delta=self.delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=self.accountant,
            )
        return DPPlan(sigma, sample_rate, steps, self.max_grad_norm, self.delta, self.accountant)

    def __call__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loader: DataLoader,
        criterion: nn.Module | None = None,
    ) -> tuple[Any, ...]:
        """The ``privatize`` hook: private (model, optimizer, Poisson loader[, criterion]).

        With a ``criterion`` (the trainer passes its loss), the returned criterion
        computes per-example losses (``reduction="none"``), so a class-weighted loss
        stays per-example under DP; its ``backward()`` clips (book-keeping or ghost
        clipping) and its value is their mean over the batch's examples. Without a
        criterion, the classic hooks mode fills ``p.grad_sample`` (what the clipping
        tests inspect). The returned model is the model itself under book-keeping
        clipping, Opacus's wrapper otherwise.
        """
        if self._engine is not None:
            raise RuntimeError("a DPSession makes one training private; make a new one per round")
        problems = check_compatible(model)
        if problems:
            raise IncompatibleModelError(
                "this model cannot be trained with DP-SGD: " + "; ".join(problems) + ". "
                "Call privacy.dp.make_compatible(model) before building the optimizer."
            )
        sample_rate = 1.0 / len(loader)
        if self._plan is None:
            self._plan = self._plan_for(sample_rate)
        elif self._plan.sample_rate != sample_rate:
            raise ValueError(
                f"the loader's sample rate {sample_rate:.6g} differs from the planned "
                f"{self._plan.sample_rate:.6g}: the ledger was checked for another plan"
            )
        plan = self._plan
        model.train()
        self._engine = PrivacyEngine(accountant=ACCOUNTANT, secure_mode=self.secure_mode)
        common: dict[str, Any] = {
            "module": model,
            "optimizer": optimizer,
            "data_loader": loader,
            "noise_multiplier": plan.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "poisson_sampling": True,
        }
        if not self.secure_mode:
            # The trainer seeds torch's global generator for repeatable training, and the
            # seed is no secret. DP needs noise and sampling nobody else can replay, so
            # both come from generators seeded by the operating system's randomness.
            device = next(model.parameters()).device
            common["noise_generator"] = _os_seeded(device)
            common["data_loader"] = DPDataLoader.from_data_loader(
                loader, generator=_os_seeded(torch.device("cpu"))
            )
            common["poisson_sampling"] = False  # the loader above already samples
        mode = self.grad_sample_mode
        if criterion is None and mode in LOSS_MODES:
            mode = "hooks"  # without the loss, per-sample gradients are needed
        if mode == "bookkeeping" and unsupported_layers(model):
            mode = "ghost"  # Opacus has a rule for more layer types
        self._mode = mode
        if mode == "bookkeeping":
            # Opacus builds the DP optimizer (noise, scaling, the accountant's hook) and
            # the loader as for ghost clipping; its norm hooks are removed, because the
            # clipper computes the clipped sum that ghost clipping's second pass would.
            hooks, private_optimizer, _, private_loader = self._engine.make_private(
                **common, criterion=criterion, grad_sample_mode="ghost", wrap_model=False
            )
            hooks.cleanup()
            private_optimizer.__class__ = _TakesClippedSum
            clipper = BookkeepingClipper(model, max_grad_norm=self.max_grad_norm)
            self._release = functools.partial(_removed, clipper, model)
            return model, private_optimizer, private_loader, clipper.criterion(criterion)
        if mode != "ghost":
            private_model, private_optimizer, private_loader = self._engine.make_private(
                **common, grad_sample_mode=mode
            )
            self._release = private_model.to_standard_module
            if criterion is None:
                return private_model, private_optimizer, private_loader
            return private_model, private_optimizer, private_loader, criterion
        private_model, private_optimizer, private_criterion, private_loader = (
            self._engine.make_private(**common, criterion=criterion, grad_sample_mode="ghost")
        )
        self._release = private_model.to_standard_module
        return private_model, private_optimizer, private_loader, private_criterion

    @property
    def used_plan(self) -> DPPlan | None:
        """The plan in force once :meth:`plan` or the hook has run (``None`` before)."""
        return self._plan

    @property
    def noise_multiplier(self) -> float | None:
        return self._plan.noise_multiplier if self._plan else self._fixed_noise

    @property
    def sample_rate(self) -> float | None:
        return self._plan.sample_rate if self._plan else None

    @property
    def steps_taken(self) -> int:
        """Noisy optimizer steps taken so far, as the accountant counted them."""
        if self._engine is None:
            return 0
        return sum(steps for _, _, steps in self._engine.accountant.history)

    def epsilon(self) -> float:
        """Epsilon spent by the steps taken in this session (the session's accountant)."""
        if self._plan is None:
            return 0.0
        return epsilon_for(
            noise_multiplier=self._plan.noise_multiplier,
            sample_rate=self._plan.sample_rate,
            steps=self.steps_taken,
            delta=self.delta,
            accountant=self.accountant,
        )

    def report(self) -> dict[str, float | int]:
        """Numbers for a metrics record."""
        return {
            "dp_epsilon": self.epsilon(),
            "dp_delta": self.delta,
            "dp_noise_multiplier": self.noise_multiplier or 0.0,
            "dp_sample_rate": self.sample_rate or 0.0,
            "dp_steps": self.steps_taken,
            "dp_max_grad_norm": self.max_grad_norm,
        }

    @property
    def used_grad_sample_mode(self) -> str | None:
        """How per-sample clipping was done once the hook has run (``None`` before):
        the mode asked for, or what stood in for it (see the class docstring)."""
        return self._mode

    def release(self) -> nn.Module:
        """Remove the clipping hooks and per-sample attributes; return the plain model."""
        if self._release is None:
            raise RuntimeError("nothing to release: the session has not been used")
        return self._release()


class _TakesClippedSum(DPOptimizerFastGradientClipping):
    """Opacus's optimizer for clipped sums in ``p.grad`` (noise, scaling and the
    accountant's hook unchanged) that takes each ``p.grad`` as the step's sum instead
    of deep-copying it: book-keeping clipping writes a fresh tensor every step, and
    the copies were a good part of a small model's step."""

    def accumulate(self) -> None:
        for p in self.params:
            if p.summed_grad is not None:
                p.summed_grad.add_(p.grad)
            else:
                p.summed_grad = p.grad


def _removed(clipper: BookkeepingClipper, model: nn.Module) -> nn.Module:
    clipper.remove()
    return model


def _os_seeded(device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(secrets.randbits(63))


def _check_rate(sample_rate: float) -> None:
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample rate must be in (0, 1], got {sample_rate}")


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
