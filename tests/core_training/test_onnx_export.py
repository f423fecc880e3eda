"""ONNX export: onnxruntime, an independent implementation, gives PyTorch's outputs on
held-out rows, for the digits CNN and MLP in fp32 and in static int8 (QDQ)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from digits_models import train_digits
from torch import nn

from core_training.models import quantize_int8
from core_training.onnx_export import INPUT, OnnxUnsupported, onnx_bytes
from core_training.quantize import quantize_for_export

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module", params=["cnn", "mlp"])
def digits(request: pytest.FixtureRequest) -> tuple[nn.Module, np.ndarray, np.ndarray]:
    """A digits model trained briefly, its validation rows and held-out test rows."""
    model, X_val, X_test, _ = train_digits(request.param, 6)
    return model, X_val, X_test


def run_onnx(content: bytes, X: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(content, providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT: X})[0]


def run_torch(model: nn.Module, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(X)).numpy()


def test_fp32_onnx_gives_pytorchs_outputs_on_held_out_rows(digits) -> None:
    model, _, X_test = digits
    expected = run_torch(model, X_test)
    np.testing.assert_allclose(run_onnx(onnx_bytes(model, 64), X_test), expected, atol=1e-4)


def test_static_int8_onnx_is_qdq_and_agrees_with_the_pytorch_int8_model(digits) -> None:
    model, X_val, X_test = digits
    int8 = quantize_for_export(model, X_val)
    assert int8.method == "static"
    content = onnx_bytes(int8.model, 64)
    ops = {node.op_type for node in onnx.load_from_string(content).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    got, expected = run_onnx(content, X_test), run_torch(int8.model, X_test)
    # Two int8 implementations may round a value to neighbouring steps; the logits'
    # steps are about 1% of their range here.
    assert np.abs(got - expected).max() <= 0.05 * np.abs(expected).max()
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.98


def test_onnx_takes_any_batch_size(digits) -> None:
    model, _, X_test = digits
    content = onnx_bytes(model, 64)
    for rows in (1, 7, len(X_test)):
        assert run_onnx(content, X_test[:rows]).shape == (rows, 10)


def test_a_dynamic_int8_model_is_refused_with_the_reason(digits) -> None:
    model, _, _ = digits
    with pytest.raises(OnnxUnsupported, match="dynamically quantized"):
        onnx_bytes(quantize_int8(model), 64)
