"""int8 models for export: static quantization calibrated on held-out rows, dynamic as
the fallback, and a compact file layout for either.

Static post-training quantization (PyTorch's FX graph mode, x86 backend) quantizes
convolutions and linear layers, weights and activations; the activation ranges come
from running a few hundred calibration rows through the model. Where a model cannot be
traced or converted, or no rows are at hand, the linear layers are quantized
dynamically instead (:func:`core_training.models.quantize_int8`) and the reason is
kept.

Weights are per-tensor (one scale per layer, not per output channel): for the small
models fedsilo trains, per-channel scales and zero points cost more bytes than they
win in accuracy.

A quantized state dict saved as is holds dozens of small tensors (a scale and a zero
point per activation), and each costs a record in ``torch.save``'s archive: for a
model of a few thousand weights that overhead outweighs the weights. :func:`pack_int8`
stores the same values as three flat tensors (int8 values, fp32 values, fp64
quantization parameters); :func:`load_int8` rebuilds the quantized model from the
model's structure and unpacks them into it. Loading needs no calibration data.
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .models import quantize_int8

METHODS = ("static", "dynamic")
CALIBRATION_ROWS = 300
PACKING = "fedsilo-int8-v1"  # metadata value: the payload is pack_int8's layout


@dataclass
class Int8Model:
    """A quantized model, how it was quantized, and why not statically if it was not."""

    model: nn.Module
    method: str  # "static" | "dynamic"
    fallback_reason: str | None = None


@contextmanager
def _quiet() -> Iterator[None]:
    # torch.ao quantization is deprecated in favour of torchao (not a dependency of
    # ours) and warns about it, and about uncalibrated observers in load templates.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def _qconfig_mapping(per_channel: bool = False) -> Any:
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import (
        HistogramObserver,
        MinMaxObserver,
        PerChannelMinMaxObserver,
    )

    weight = (
        PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        if per_channel
        else MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    )
    # x86's default activation observer (reduce_range avoids the overflow of the
    # x86 int8 kernels' 16-bit accumulators).
    activation = HistogramObserver.with_args(reduce_range=True)
    return get_default_qconfig_mapping("x86").set_global(
        QConfig(activation=activation, weight=weight)
    )


def _static(model: nn.Module, rows: torch.Tensor | None, *, per_channel: bool) -> nn.Module:
    """FX prepare (fusing conv/linear + relu), calibrate on ``rows``, convert. With
    ``rows=None`` the observers keep their defaults: a template to load values into."""
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    model = copy.deepcopy(model).to("cpu").eval()
    in_features = _in_features(model) if rows is None else rows.shape[1]
    example = torch.zeros(2, in_features) if rows is None else rows[:2]
    with _quiet(), torch.no_grad():
        prepared = prepare_fx(model, _qconfig_mapping(per_channel), (example,))
        if rows is not None:
            prepared(rows)
        return convert_fx(prepared).eval()


def _in_features(model: nn.Module) -> int:
    image_shape = getattr(model, "image_shape", None)
    if image_shape is not None:
        return int(np.prod(image_shape))
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    return first.in_features


def quantize_for_export(
    model: nn.Module,
    calibration: np.ndarray | None,
    *,
    max_rows: int = CALIBRATION_ROWS,
    per_channel: bool = False,
) -> Int8Model:
    """Static int8 calibrated on (at most ``max_rows`` of) ``calibration``, the
    preprocessed held-out rows; dynamic int8 of the linear layers where static
    quantization is impossible, with the reason."""
    if calibration is None or len(calibration) == 0:
        return Int8Model(quantize_int8(model), "dynamic", "no validation rows to calibrate on")
    rows = torch.as_tensor(np.asarray(calibration[:max_rows]), dtype=torch.float32)
    try:
        quantized = _static(model, rows, per_channel=per_channel)
        with torch.no_grad():
            quantized(rows[:2])  # a model that converts but cannot run is no export
    except Exception as error:  # tracing and conversion fail in many ways
        reason = f"static quantization failed: {type(error).__name__}: {error}"
        return Int8Model(quantize_int8(model), "dynamic", reason.splitlines()[0][:300])
    return Int8Model(quantized, "static")


def int8_template(model: nn.Module, method: str, *, per_channel: bool = False) -> nn.Module:
    """``model`` quantized by ``method`` with placeholder values: the structure a packed
    int8 state is loaded into."""
    if method not in METHODS:
        raise ValueError(f"int8 method {method!r} is not one of {', '.join(METHODS)}")
    if method == "dynamic":
        return quantize_int8(model)
    return _static(model, None, per_channel=per_channel)


# -- the compact layout ----------------------------------------------------------------


def pack_int8(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A quantized state dict as three flat tensors, in the state dict's order:
    ``q`` the int8 values (as bytes), ``f32`` the fp32 tensors (biases, norms, float
    layers), ``f64`` quantization parameters and integer buffers."""
    q: list[torch.Tensor] = []
    f32: list[torch.Tensor] = []
    f64: list[torch.Tensor] = []
    for value in _leaves(state):
        if not isinstance(value, torch.Tensor):
            continue  # dtypes and qschemes: the template has them
        value = value.detach().cpu()
        if value.is_quantized:
            q.append(value.int_repr().reshape(-1).view(torch.uint8))
            f64.append(_qparams(value))
        elif value.dtype == torch.float32:
            f32.append(value.reshape(-1))
        else:
            f64.append(value.reshape(-1).to(torch.float64))
    return {
        "q": torch.cat(q) if q else torch.zeros(0, dtype=torch.uint8),
        "f32": torch.cat(f32) if f32 else torch.zeros(0),
        "f64": torch.cat(f64) if f64 else torch.zeros(0, dtype=torch.float64),
    }


def unpack_int8(packed: dict[str, torch.Tensor], template: dict[str, Any]) -> dict[str, Any]:
    """The state dict ``pack_int8`` packed, in the layout of ``template`` (the state
    dict of :func:`int8_template`). A payload of another layout is refused."""
    if set(packed) != {"q", "f32", "f64"}:
        raise ValueError("not a packed int8 state (keys q, f32, f64 expected)")
    streams = {
        "q": _Stream(packed["q"], torch.uint8),
        "f32": _Stream(packed["f32"], torch.float32),
        "f64": _Stream(packed["f64"], torch.float64),
    }
    state = OrderedDict((name, _rebuild(value, streams)) for name, value in template.items())
    # Quantized modules read their format version from it (linear layers' keys moved).
    state._metadata = getattr(template, "_metadata", None)  # type: ignore[attr-defined]
    left = {k: s.left() for k, s in streams.items() if s.left()}
    if left:
        raise ValueError(f"the packed int8 state does not fit the model: {left} values over")
    return state


def load_int8(model: nn.Module, payload: dict[str, Any], method: str, *, packed: bool) -> nn.Module:
    """``model`` (a fresh fp32 model of the right spec) as the int8 model ``payload``
    holds. ``packed=False`` reads the plain state dicts of older exports."""
    template = int8_template(model, method)
    state = unpack_int8(payload, template.state_dict()) if packed else payload
    template.load_state_dict(state)
    return template.eval()


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def _qparams(value: torch.Tensor) -> torch.Tensor:
    if value.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        return torch.tensor([value.q_scale(), value.q_zero_point()], dtype=torch.float64)
    if value.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        return torch.cat(
            [
                value.q_per_channel_scales().to(torch.float64),
                value.q_per_channel_zero_points().to(torch.float64),
            ]
        )
    raise ValueError(f"unsupported quantization scheme {value.qscheme()}")


class _Stream:
    def __init__(self, data: torch.Tensor, dtype: torch.dtype) -> None:
        if not isinstance(data, torch.Tensor) or data.dtype != dtype or data.dim() != 1:
            raise ValueError(f"a packed int8 stream must be a flat {dtype} tensor")
        self.data, self.at = data, 0

    def take(self, n: int) -> torch.Tensor:
        if self.at + n > len(self.data):
            raise ValueError("the packed int8 state does not fit the model: too few values")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def left(self) -> int:
        return len(self.data) - self.at


def _rebuild(like: Any, streams: dict[str, _Stream]) -> Any:
    if isinstance(like, tuple):
        return tuple(_rebuild(v, streams) for v in like)
    if isinstance(like, list):
        return [_rebuild(v, streams) for v in like]
    if not isinstance(like, torch.Tensor):
        return like
    n = like.numel()
    if like.is_quantized:
        raw = streams["q"].take(n).view(like.int_repr().dtype).reshape(like.shape)
        if like.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            scale, zero = streams["f64"].take(2).tolist()
            return torch._make_per_tensor_quantized_tensor(raw, scale, int(zero))
        channels = like.shape[like.q_per_channel_axis()]
        scales = streams["f64"].take(channels)
        zeros = streams["f64"].take(channels).to(torch.int64)
        axis = like.q_per_channel_axis()
        return torch._make_per_channel_quantized_tensor(raw, scales, zeros, axis)
    if like.dtype == torch.float32:
        return streams["f32"].take(n).reshape(like.shape).clone()
    return streams["f64"].take(n).to(like.dtype).reshape(like.shape)
