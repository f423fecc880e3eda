"""A model as plain ONNX bytes, for serving with any ONNX runtime.

fp32 models and static int8 models (:mod:`core_training.quantize`) export with
PyTorch's TorchScript-based exporter, which needs the ``onnx`` package but no network
and no ``onnxscript``; the int8 model becomes QDQ ONNX (QuantizeLinear and
DequantizeLinear around the layers). Dynamic int8 (quantized on the fly) has no QDQ
form, so it is refused. The input is one float32 row per example of the *preprocessed*
features (the model file's preprocessing is not part of the graph); the batch size is
free.
"""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

INPUT, OUTPUT = "features", "logits"
OPSET = 17


class OnnxUnsupported(ValueError):
    """This model cannot be written as ONNX (the message says why, in one line)."""


def onnx_bytes(model: nn.Module, in_features: int, *, opset: int = OPSET) -> bytes:
    """``model`` (fp32 or static int8, on the CPU) as a serialized ONNX model."""
    try:
        import onnx  # noqa: F401  (the exporter imports it to write the model)
    except ImportError as missing:
        raise OnnxUnsupported(
            "ONNX export needs the onnx package: pip install 'fedsilo[onnx]'"
        ) from missing
    dynamic = [m for m in model.modules() if type(m).__module__.startswith(_DYNAMIC)]
    if dynamic:
        raise OnnxUnsupported(
            "the int8 model is dynamically quantized (activations quantized on the fly), "
            "which ONNX QDQ cannot express; only a static int8 model exports"
        )
    model = model.to("cpu").eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        # Tracing warns about Python branches on shapes (GroupNorm's batch check); the
        # batch axis is declared dynamic below, and a test runs other batch sizes.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            torch.onnx.export(
                model,
                (torch.zeros(2, in_features),),
                buffer,
                dynamo=False,  # the dynamo exporter needs onnxscript, not a dependency of ours
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                opset_version=opset,
            )
        except Exception as error:  # the exporter's unsupported-operator errors vary
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise OnnxUnsupported(f"ONNX cannot express this model: {first[:200]}") from error
    return buffer.getvalue()


_DYNAMIC = "torch.ao.nn.quantized.dynamic"
