"""int8 for export: static quantization of the digits CNN (convolutions included), the
dynamic fallback and its reason, and the packed layout's exact round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from digits_models import train_digits
from torch import nn

from core_training.models import ModelSpec, build_model
from core_training.quantize import (
    int8_template,
    load_int8,
    pack_int8,
    quantize_for_export,
    unpack_int8,
)
from core_training.trainer import evaluate
from fl_common.modelfile import serialized_size

MLP_SPEC = ModelSpec("mlp", 64, 10, hidden_sizes=(32, 16))
CNN_SPEC = ModelSpec("cnn", 64, 10, image_shape=(1, 8, 8))


@pytest.fixture(scope="module")
def digits_cnn() -> tuple[nn.Module, np.ndarray, np.ndarray, np.ndarray]:
    """The default digits CNN trained briefly, its calibration (validation) rows and
    held-out test rows."""
    return train_digits("cnn", 8)


def outputs(model: nn.Module, X: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.as_tensor(X, dtype=torch.float32))


def test_static_int8_quantizes_the_convolutions_and_keeps_accuracy(digits_cnn) -> None:
    model, val, X_test, y_test = digits_cnn
    int8 = quantize_for_export(model, val)
    assert int8.method == "static" and int8.fallback_reason is None
    convs = [m for m in int8.model.modules() if isinstance(m, torch.ao.nn.quantized.Conv2d)]
    assert convs, "no convolution was quantized"
    fp32 = evaluate(model, X_test, y_test)["accuracy"]
    assert fp32 > 0.9  # the fixture learned something, so the comparison means something
    assert abs(evaluate(int8.model, X_test, y_test)["accuracy"] - fp32) <= 0.02


def test_packed_static_cnn_is_at_most_half_the_fp32_state(digits_cnn) -> None:
    model, val, _, _ = digits_cnn
    packed = pack_int8(quantize_for_export(model, val).model.state_dict())
    assert serialized_size(packed) <= 0.5 * serialized_size(model.state_dict())


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
@pytest.mark.parametrize("spec", [MLP_SPEC, CNN_SPEC], ids=["mlp", "cnn"])
@pytest.mark.parametrize("method", ["static", "dynamic"])
def test_packed_state_loads_back_into_a_fresh_model_with_identical_outputs(
    spec: ModelSpec, method: str, per_channel: bool
) -> None:
    torch.manual_seed(0)
    model = build_model(spec).eval()
    X = torch.randn(200, spec.in_features).numpy()
    int8 = quantize_for_export(model, X if method == "static" else None, per_channel=per_channel)
    assert int8.method == method
    template = int8_template(build_model(spec), method, per_channel=per_channel)
    template.load_state_dict(unpack_int8(pack_int8(int8.model.state_dict()), template.state_dict()))
    assert torch.equal(outputs(template, X), outputs(int8.model, X))


def test_load_int8_needs_no_calibration_rows(digits_cnn) -> None:
    model, val, X_test, _ = digits_cnn
    int8 = quantize_for_export(model, val)
    fresh = build_model(CNN_SPEC)  # random weights: everything must come from the payload
    loaded = load_int8(fresh, pack_int8(int8.model.state_dict()), "static", packed=True)
    assert torch.equal(outputs(loaded, X_test), outputs(int8.model, X_test))


def test_a_packed_state_of_another_model_is_refused() -> None:
    torch.manual_seed(0)
    small = quantize_for_export(build_model(MLP_SPEC), torch.randn(50, 64).numpy())
    wider = build_model(ModelSpec("mlp", 64, 10, hidden_sizes=(64, 16)))
    with pytest.raises(ValueError, match="does not fit the model"):
        load_int8(wider, pack_int8(small.model.state_dict()), "static", packed=True)
    with pytest.raises(ValueError, match="does not fit the model"):
        narrower = build_model(ModelSpec("mlp", 64, 10, hidden_sizes=(16, 16)))
        load_int8(narrower, pack_int8(small.model.state_dict()), "static", packed=True)


def test_without_rows_the_linear_layers_are_quantized_dynamically_and_it_says_why() -> None:
    int8 = quantize_for_export(build_model(CNN_SPEC), None)
    assert int8.method == "dynamic"
    assert int8.fallback_reason == "no validation rows to calibrate on"
    kinds = {type(m) for m in int8.model.modules()}
    assert torch.ao.nn.quantized.dynamic.Linear in kinds and nn.Conv2d in kinds


class DataDependent(nn.Module):
    """A branch on a value: FX cannot trace it, so static quantization is impossible."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) if x.sum() > 0 else self.b(x)


def test_a_model_that_cannot_be_traced_falls_back_to_dynamic_with_the_reason() -> None:
    torch.manual_seed(0)
    model = DataDependent().eval()
    X = torch.randn(40, 4).numpy()
    int8 = quantize_for_export(model, X)
    assert int8.method == "dynamic"
    assert int8.fallback_reason is not None
    assert int8.fallback_reason.startswith("static quantization failed: TraceError")
    assert "\n" not in int8.fallback_reason
    agree = (outputs(int8.model, X).argmax(1) == outputs(model, X).argmax(1)).float().mean()
    assert agree >= 0.9
