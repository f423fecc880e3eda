"""Book-keeping clipping: DP-SGD's sum of clipped per-example gradients in one backward.

Bu et al. 2022 ("Differentially private optimization on large model at small cost"):
every trainable layer's input is kept during the forward pass, and one backward pass
computes the gradients of the per-example losses with respect to each layer's output,
not with respect to the weights. Per-example gradient norms follow from those two
tensors layer by layer: for a linear layer on one row per example the norm is
``||a_i|| * ||g_i||``; on sequences, the per-example gradient or the ghost norm's Gram
matrices, whichever is smaller; a convolution's per-example gradients come from one
grouped convolution (the examples as groups); normalization layers' are per-channel
sums. With every example's clip factor ``c_i = min(1, C / (||grad_i|| + 1e-6))``
(Opacus's formula) each weight gradient is then formed once, already clipped and
summed (``dW = G^T diag(c) A`` for a linear layer). No second backward pass.

What it leaves in ``p.grad`` is what Opacus's ghost clipping leaves there after its
second backward pass: the sum over the batch of each example's clipped gradient. The
privacy engine's optimizer adds the noise and counts the step, as for ghost clipping.

Layers with trainable parameters must be :data:`SUPPORTED` (exact types), each called
once per forward pass; :func:`unsupported_layers` names any other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED = (nn.Linear, nn.Conv2d, nn.GroupNorm, nn.LayerNorm)

# (per-example squared norm of the layer's gradients, a function of the clip factors
# that writes the clipped, summed gradients into the parameters' .grad)
_LayerResult = tuple[torch.Tensor, Callable[[torch.Tensor], None]]


class UnsupportedLayerError(ValueError):
    """A model has a trainable layer book-keeping clipping has no rule for."""


def unsupported_layers(model: nn.Module) -> list[str]:
    """``"name (Type)"`` of every trainable layer book-keeping clipping cannot clip."""
    found = []
    for name, module in model.named_modules():
        params = [n for n, p in module.named_parameters(recurse=False) if p.requires_grad]
        if not params:
            continue
        why = _why_unsupported(module, params)
        if why is not None:
            found.append(f"{name or '(model)'} ({type(module).__name__}{why})")
    return found


def _why_unsupported(module: nn.Module, params: list[str]) -> str | None:
    if type(module) not in SUPPORTED:  # exact types: a subclass may compute otherwise
        return ""
    if set(params) - {"weight", "bias"}:
        return ": parameters other than weight and bias"
    if isinstance(module, nn.Conv2d) and (
        module.padding_mode != "zeros" or isinstance(module.padding, str)
    ):
        return ": only zero padding given as numbers is supported"
    return None


class BookkeepingClipper:
    """Hooks on ``model`` that turn per-example losses into clipped, summed gradients.

    Call :meth:`backward` with the batch's per-example losses (shape ``(n,)``) instead of
    ``loss.backward()``; :meth:`criterion` wraps a loss so the trainer's own
    ``loss.backward()`` does that. :meth:`remove` detaches the hooks.
    """

    def __init__(self, model: nn.Module, *, max_grad_norm: float) -> None:
        unsupported = unsupported_layers(model)
        if unsupported:
            raise UnsupportedLayerError(
                "book-keeping clipping supports trainable "
                + ", ".join(t.__name__ for t in SUPPORTED)
                + " layers only; this model also has: "
                + "; ".join(unsupported)
                + ". Use grad_sample_mode='ghost' (Opacus) for it."
            )
        self.model = model
        self.max_grad_norm = float(max_grad_norm)
        self._records: dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._layers = [
            (name, m)
            for name, m in model.named_modules()
            if any(p.requires_grad for p in m.parameters(recurse=False))
        ]
        self._handles = [m.register_forward_hook(self._record) for _, m in self._layers]

    def _record(self, module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        if output.requires_grad:  # not under no_grad (evaluation)
            self._records.setdefault(module, []).append((inputs[0].detach(), output))

    def criterion(self, criterion: nn.Module) -> Callable[..., ClippedLoss]:
        """``criterion`` computing per-example losses (its own weights, smoothing etc.),
        whose result's ``backward()`` clips through this clipper."""

        def per_example(*args: Any, **kwargs: Any) -> ClippedLoss:
            reduction = criterion.reduction
            criterion.reduction = "none"
            try:
                losses = criterion(*args, **kwargs)
            finally:
                criterion.reduction = reduction
            return ClippedLoss(self, losses)

        return per_example

    def backward(self, losses: torch.Tensor) -> None:
        """Set every trainable parameter's ``.grad`` to the sum over the batch of the
        per-example gradients of ``losses``, each clipped to ``max_grad_norm`` in L2 norm
        over all parameters together."""
        records, self._records = self._records, {}
        if losses.dim() != 1:
            raise ValueError(f"need one loss per example, got shape {tuple(losses.shape)}")
        if len(losses) == 0:  # an empty Poisson batch: nothing to clip, the step adds noise
            for _, module in self._layers:
                _zero_grads(module)
            return
        pending = [(m, rec) for m, recs in records.items() for rec in recs]
        grads = torch.autograd.grad(
            losses.sum(), [out for _, (_, out) in pending], allow_unused=True
        )
        used: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
        for (module, (x, _)), g in zip(pending, grads, strict=True):
            if g is None:
                continue  # a forward pass this loss does not depend on
            if module in used:
                raise RuntimeError(
                    f"layer {module} was used more than once for this loss: book-keeping "
                    "clipping needs each trainable layer once per forward pass; use "
                    "grad_sample_mode='ghost'"
                )
            used[module] = (x, g.detach())
        n = len(losses)
        sq_norms = torch.zeros(n, dtype=losses.dtype, device=losses.device)
        writers = []
        for _, module in self._layers:
            if module not in used:  # untouched by this loss: its gradients are zero
                _zero_grads(module)
                continue
            sq, write = _layer(module, *used[module])
            sq_norms += sq
            writers.append(write)
        clip = (self.max_grad_norm / (sq_norms.sqrt() + 1e-6)).clamp(max=1.0)
        for write in writers:
            write(clip)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._records = {}


class ClippedLoss:
    """Per-example losses whose ``backward()`` clips (see :class:`BookkeepingClipper`);
    ``detach()`` and ``item()`` give their mean, as a loss with reduction "mean" would."""

    def __init__(self, clipper: BookkeepingClipper, losses: torch.Tensor) -> None:
        self.clipper = clipper
        self.losses = losses

    def backward(self) -> None:
        self.clipper.backward(self.losses)

    def detach(self) -> torch.Tensor:
        return self.losses.detach().mean()

    def item(self) -> float:
        return float(self.detach())


def _zero_grads(module: nn.Module) -> None:
    for p in module.parameters(recurse=False):
        if p.requires_grad:
            p.grad = torch.zeros_like(p)


def _layer(module: nn.Module, x: torch.Tensor, g: torch.Tensor) -> _LayerResult:
    n = len(g)
    weight, bias = module.weight, getattr(module, "bias", None)
    if isinstance(module, nn.Linear):
        if x.dim() == 2:
            return _rows(weight, bias, x, g)
        return _sequence(weight, bias, x.reshape(n, -1, x.shape[-1]), g.reshape(n, -1, g.shape[-1]))
    if isinstance(module, nn.Conv2d):
        # Every example's weight gradient at once: a convolution whose groups are the
        # examples (and the layer's own groups), computed by the same kernel as the
        # plain weight gradient.
        out_ch, in_per_group = weight.shape[:2]
        per_weight = torch.nn.grad.conv2d_weight(
            x.reshape(1, -1, *x.shape[2:]),
            (n * out_ch, in_per_group, *weight.shape[2:]),
            g.reshape(1, -1, *g.shape[2:]),
            module.stride,
            module.padding,
            module.dilation,
            n * module.groups,
        )
        return _per_example(weight, bias, per_weight.reshape(n, -1), g.flatten(2).sum(2))
    if isinstance(module, nn.GroupNorm):
        normed = F.group_norm(x, module.num_groups, eps=module.eps)
        per_weight = (g * normed).reshape(n, g.shape[1], -1).sum(2)
        return _per_example(weight, bias, per_weight, g.reshape(n, g.shape[1], -1).sum(2))
    assert isinstance(module, nn.LayerNorm)
    shape = module.normalized_shape
    normed = F.layer_norm(x, shape, eps=module.eps)
    width = math.prod(shape)
    return _per_example(
        weight,
        bias,
        (g * normed).reshape(n, -1, width).sum(1),
        g.reshape(n, -1, width).sum(1),
    )


def _trainable(p: torch.Tensor | None) -> bool:
    return p is not None and p.requires_grad


def _rows(weight, bias, a: torch.Tensor, g: torch.Tensor) -> _LayerResult:
    """Linear layer, one input row per example: grad_i = g_i a_i^T."""
    g_sq = g.pow(2).sum(1)
    sq = torch.zeros_like(g_sq)
    if _trainable(weight):
        sq = sq + a.pow(2).sum(1) * g_sq
    if _trainable(bias):
        sq = sq + g_sq

    def write(c: torch.Tensor) -> None:
        if _trainable(weight):
            weight.grad = (g * c[:, None]).T @ a
        if _trainable(bias):
            bias.grad = c @ g

    return sq, write


def _sequence(weight, bias, a: torch.Tensor, g: torch.Tensor) -> _LayerResult:
    """A weight shared over T positions per example (a: (n, T, d_in), g: (n, T, d_out)):
    grad_i = sum_t g_it a_it^T, its norm from whichever is smaller, the per-example
    gradient (d_out x d_in) or the ghost norm's Gram matrices (T x T)."""
    n, t, d_in = a.shape
    d_out = g.shape[2]
    sq = torch.zeros(n, dtype=g.dtype, device=g.device)
    per_example = None
    if _trainable(weight):
        if d_in * d_out <= 2 * t * t:  # Bu et al.'s rule: the smaller of the two
            per_example = g.transpose(1, 2) @ a  # (n, d_out, d_in)
            sq = sq + per_example.pow(2).sum((1, 2))
        else:
            sq = sq + ((a @ a.transpose(1, 2)) * (g @ g.transpose(1, 2))).sum((1, 2))
    g_sum = g.sum(1) if _trainable(bias) else None
    if g_sum is not None:
        sq = sq + g_sum.pow(2).sum(1)

    def write(c: torch.Tensor) -> None:
        if _trainable(weight):
            if per_example is not None:
                summed = torch.einsum("n,noi->oi", c, per_example)
            else:
                summed = (g * c[:, None, None]).reshape(-1, d_out).T @ a.reshape(-1, d_in)
            weight.grad = summed.reshape(weight.shape)
        if g_sum is not None:
            bias.grad = c @ g_sum

    return sq, write


def _per_example(weight, bias, w_grads: torch.Tensor, b_grads: torch.Tensor) -> _LayerResult:
    """Per-example gradients given outright, (n, width) each (normalization layers)."""
    pairs = [(p, pg) for p, pg in ((weight, w_grads), (bias, b_grads)) if _trainable(p)]
    sq = sum((pg.pow(2).sum(1) for _, pg in pairs), torch.zeros_like(w_grads[:, 0]))

    def write(c: torch.Tensor) -> None:
        for p, pg in pairs:
            p.grad = (c @ pg).reshape(p.shape)

    return sq, write
