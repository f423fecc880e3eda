"""Which of a model's weights a federation trains, shares and keeps, by name.

Three run settings name weights by their state-dict names (``net.0.weight``,
``head.2.bias``, ``stem.1.running_mean``), with fnmatch patterns separated by commas:

- ``freeze``: matching weights are not trained anywhere (``requires_grad`` off, not
  given to the optimizer) and never travel: every silo keeps the run's initial values.
- ``local-layers`` (FedPer): matching weights are trained by each silo for itself and
  never leave it; the rest is shared and averaged.
- ``personalization = "fedbn"`` (FedBN): every normalization layer (BatchNorm,
  GroupNorm, LayerNorm, InstanceNorm, RMSNorm: weights and running statistics) is local.

A pattern that matches no parameter, a freeze of every parameter, and local layers that
leave nothing to share are refused here, with the model's names, before a run starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, TypeVar

from .config import ConfigError

if TYPE_CHECKING:  # the settings check patterns without importing torch
    from torch import nn

PERSONALIZATION = ("none", "fedbn")


def _norm_layers() -> tuple[type[nn.Module], ...]:
    from torch import nn

    return (
        nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm* (and SyncBatchNorm)
        nn.GroupNorm,
        nn.LayerNorm,
        *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
    )


T = TypeVar("T")


@dataclass(frozen=True)
class LayerPlan:
    """State-dict names that are ``frozen`` (never trained) or ``local`` (trained by
    each silo for itself). Neither kind travels; every other name is shared."""

    frozen: frozenset[str] = frozenset()
    local: frozenset[str] = frozenset()

    @property
    def kept(self) -> frozenset[str]:
        """The names that never travel in a train message or reply."""
        return self.frozen | self.local

    @property
    def personal(self) -> bool:
        """Each silo keeps a model of its own (FedPer or FedBN)."""
        return bool(self.local)

    def shared(self, weights: Mapping[str, T]) -> dict[str, T]:
        """The part of ``weights`` that travels."""
        return {k: v for k, v in weights.items() if k not in self.kept}

    def fixed(self, weights: Mapping[str, T]) -> dict[str, T]:
        """The part of ``weights`` that does not travel (frozen and local)."""
        return {k: v for k, v in weights.items() if k in self.kept}


def parse_patterns(text: str, key: str) -> tuple[str, ...]:
    """``"net.0.*, head.*"`` as ``("net.0.*", "head.*")``; empty text: no pattern."""
    if not text.strip():
        return ()
    patterns = tuple(p.strip() for p in text.split(","))
    if any(not p for p in patterns):
        raise ConfigError(
            f"setting {key!r} = {text!r} has an empty pattern; separate patterns with "
            'single commas, e.g. "net.0.*, net.2.*"'
        )
    return patterns


def plan_layers(
    model: nn.Module, *, freeze: str = "", local_layers: str = "", personalization: str = "none"
) -> LayerPlan:
    """The run's :class:`LayerPlan` for ``model``, or :class:`ConfigError` naming the
    setting and the model's parameters when a setting cannot mean what it says."""
    if personalization not in PERSONALIZATION:
        raise ConfigError(
            f"setting 'personalization' must be one of {', '.join(PERSONALIZATION)}, "
            f"got {personalization!r}"
        )
    names = list(model.state_dict())
    params = [n for n, _ in model.named_parameters()]
    frozen = _matching(parse_patterns(freeze, "freeze"), names, params, "freeze")
    if params and set(params) <= frozen:
        raise ConfigError(
            f"setting 'freeze' = {freeze!r} freezes every parameter of the model: nothing "
            "would be trained; freeze fewer layers"
        )
    local = _matching(parse_patterns(local_layers, "local-layers"), names, params, "local-layers")
    if personalization == "fedbn":
        norm = normalization_names(model)
        if not norm:
            raise ConfigError(
                "setting 'personalization' = \"fedbn\" keeps normalization layers local, but "
                "this model has none (BatchNorm, GroupNorm, LayerNorm, InstanceNorm); the "
                "built-in cnn has GroupNorm, the mlp has none: use local-layers instead"
            )
        local |= norm
    local -= frozen  # a frozen weight never changes: nothing of it is a silo's own
    if params and set(params) <= frozen | local:
        raise ConfigError(
            "local-layers/personalization with freeze leave no parameter to share: the "
            "federation would average nothing; keep fewer layers local"
        )
    return LayerPlan(frozenset(frozen), frozenset(local))


def normalization_names(model: nn.Module) -> set[str]:
    """The state-dict names of every normalization layer's weights and statistics."""
    out: set[str] = set()
    norm = _norm_layers()
    for prefix, module in model.named_modules():
        if isinstance(module, norm):
            out |= {f"{prefix}.{n}" if prefix else n for n in module.state_dict()}
    return out


def freeze_(model: nn.Module, frozen: frozenset[str]) -> nn.Module:
    """Turn training off for the parameters named in ``frozen`` (in place)."""
    for name, param in model.named_parameters():
        param.requires_grad_(name not in frozen)
    return model


def _matching(patterns: tuple[str, ...], names: list[str], params: list[str], key: str) -> set[str]:
    out: set[str] = set()
    for pattern in patterns:
        found = {n for n in names if fnmatchcase(n, pattern)}
        if not found & set(params):
            shown = ", ".join(params[:12]) + (", ..." if len(params) > 12 else "")
            raise ConfigError(
                f"setting {key!r}: pattern {pattern!r} matches no parameter of the model "
                f"(its parameters: {shown})"
            )
        out |= found
    return out
