"""Model files: fp32 and int8 exports (static and dynamic) load back as working models;
other files, wrong keys and changed bytes do not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from core_training.models import ModelSpec, build_model, quantize_int8
from core_training.quantize import Int8Model, quantize_for_export
from core_training.schema import Feature, Schema
from fl_common.modelfile import (
    arrays_from_state,
    load_model,
    save_int8,
    save_model,
    serialized_size,
)
from fl_server.early_stopping import EarlyStopping
from fl_server.state import RunState, load_checkpoint, save_checkpoint
from privacy import store
from privacy.crypto import DecryptionError

SPEC = ModelSpec("mlp", 10, 2, hidden_sizes=(32, 16), dropout=0.0)
SCHEMA = Schema("y", (0, 1), tuple(Feature(f"f{9 - i}") for i in range(10)))


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(600, 10, generator=gen)
    y = (X[:, 0] + 0.5 * X[:, 1] - 0.3 * X[:, 2] > 0).long()
    return X, y


@pytest.fixture(scope="module")
def trained(data: tuple[torch.Tensor, torch.Tensor]) -> nn.Module:
    """A small MLP trained to ~95% on a separable problem (so predictions mean something)."""
    X, y = data
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only contend on a busy machine
    try:
        torch.manual_seed(0)
        model = build_model(SPEC)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(150):
            opt.zero_grad()
            nn.functional.cross_entropy(model(X), y).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def predict(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(X).argmax(1)


def test_trained_fixture_is_accurate(
    trained: nn.Module, data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    X, y = data
    assert (predict(trained, X) == y).float().mean() > 0.9


def test_fp32_model_round_trip_gives_the_same_predictions(
    trained: nn.Module, data: tuple[torch.Tensor, torch.Tensor], artifacts: Path, key: bytes
) -> None:
    X, _ = data
    path = save_model(
        artifacts / "m.bin", trained.state_dict(), key=key, spec=SPEC, schema=SCHEMA, round=7
    )
    loaded = load_model(path, key=key)
    assert not loaded.quantized
    assert loaded.spec == SPEC
    assert loaded.schema == SCHEMA
    assert loaded.schema is not None and loaded.schema.feature_names[0] == "f9"
    assert loaded.metadata["round"] == 7
    assert not loaded.model.training
    with torch.no_grad():
        assert torch.equal(loaded.model(X), trained(X))


def test_model_without_schema_loads_with_none(
    trained: nn.Module, artifacts: Path, key: bytes
) -> None:
    path = save_model(artifacts / "m.bin", trained.state_dict(), key=key, spec=SPEC, schema=None)
    assert load_model(path, key=key).schema is None


def test_int8_export_loads_as_a_quantized_model_that_agrees_with_fp32(
    trained: nn.Module, data: tuple[torch.Tensor, torch.Tensor], artifacts: Path, key: bytes
) -> None:
    X, y = data
    model = build_model(SPEC)
    model.load_state_dict(trained.state_dict())
    path = save_model(
        artifacts / "model-int8.bin",
        quantize_int8(model).state_dict(),
        key=key,
        spec=SPEC,
        schema=SCHEMA,
        kind="export",
    )
    loaded = load_model(path, key=key)
    assert loaded.quantized
    kinds = {type(m).__module__ for m in loaded.model.modules()}
    assert any("quantized" in k for k in kinds)
    agree = (predict(loaded.model, X) == predict(trained, X)).float().mean().item()
    assert agree >= 0.95
    assert (predict(loaded.model, X) == y).float().mean() > 0.85


def test_int8_state_is_smaller_than_fp32(trained: nn.Module) -> None:
    model = build_model(SPEC)
    model.load_state_dict(trained.state_dict())
    fp32 = serialized_size(model.state_dict())
    int8 = serialized_size(quantize_int8(model).state_dict())
    assert int8 < fp32


def test_checkpoint_loads_as_its_best_model(
    trained: nn.Module, data: tuple[torch.Tensor, torch.Tensor], artifacts: Path, key: bytes
) -> None:
    best = arrays_from_state(trained.state_dict())
    torch.manual_seed(1)
    current = arrays_from_state(build_model(SPEC).state_dict())
    state = RunState(SPEC, SCHEMA, current, best, EarlyStopping(patience=2), round=2)
    path = save_checkpoint(artifacts / "run", state, key=key, config={})
    assert load_checkpoint(path, key=key)[0].round == 2
    loaded = load_model(path, key=key)
    X, _ = data
    with torch.no_grad():
        assert torch.equal(loaded.model(X), trained(X))


@pytest.mark.parametrize("kind", ["ledger", "json"])
def test_load_model_refuses_a_file_that_is_not_a_model(
    kind: str, artifacts: Path, key: bytes
) -> None:
    path = store.save_json(artifacts / f"{kind}.bin", {"spent": 1.5}, key=key, kind=kind)
    with pytest.raises(ValueError, match=f"holds a {kind}, not a model"):
        load_model(path, key=key)


def test_load_model_with_the_wrong_key_raises_decryption_error(
    trained: nn.Module, artifacts: Path, key: bytes
) -> None:
    path = save_model(artifacts / "m.bin", trained.state_dict(), key=key, spec=SPEC, schema=None)
    with pytest.raises(DecryptionError):
        load_model(path, key=os.urandom(32))


@pytest.fixture
def static_export(
    trained: nn.Module, data: tuple[torch.Tensor, torch.Tensor], artifacts: Path, key: bytes
) -> tuple[Path, Int8Model]:
    X, _ = data
    int8 = quantize_for_export(trained, X[:300].numpy())
    path, _ = save_int8(artifacts / "model-int8.bin", int8, key=key, spec=SPEC, schema=SCHEMA)
    return path, int8


def test_static_int8_export_loads_with_the_outputs_it_was_saved_with(
    static_export: tuple[Path, Int8Model], data: tuple[torch.Tensor, torch.Tensor], key: bytes
) -> None:
    path, int8 = static_export
    X, _ = data
    loaded = load_model(path, key=key)
    assert loaded.quantized and int8.method == "static"
    assert loaded.metadata["int8_method"] == "static"
    assert loaded.metadata["int8_fallback_reason"] is None
    with torch.no_grad():
        assert torch.equal(loaded.model(X), int8.model(X))


def test_a_dynamic_export_records_why_it_is_not_static(
    trained: nn.Module, data: tuple[torch.Tensor, torch.Tensor], artifacts: Path, key: bytes
) -> None:
    X, _ = data
    int8 = quantize_for_export(trained, None)
    path, _ = save_int8(artifacts / "d.bin", int8, key=key, spec=SPEC, schema=None)
    loaded = load_model(path, key=key)
    assert loaded.metadata["int8_method"] == "dynamic"
    assert loaded.metadata["int8_fallback_reason"] == "no validation rows to calibrate on"
    with torch.no_grad():
        assert torch.equal(loaded.model(X), int8.model(X))


def test_a_static_export_with_the_wrong_key_or_one_changed_byte_is_refused(
    static_export: tuple[Path, Int8Model], key: bytes
) -> None:
    path, _ = static_export
    with pytest.raises(DecryptionError):
        load_model(path, key=os.urandom(32))
    blob = bytearray(path.read_bytes())
    blob[-40] ^= 0x01  # inside the payload's last chunk
    path.write_bytes(bytes(blob))
    with pytest.raises(DecryptionError):
        load_model(path, key=key)
