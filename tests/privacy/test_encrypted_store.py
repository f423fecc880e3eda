"""The encrypted store: round trips, atomic writes, refusals, and metadata without weights."""

from __future__ import annotations

import json
import os
import stat
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core_training.models import ModelSpec, build_model
from privacy import keys, store
from privacy.crypto import DecryptionError
from privacy.store import ArtifactFormatError, ArtifactNotFoundError

SPEC = ModelSpec(kind="mlp", in_features=12, num_classes=3, hidden_sizes=(16, 8))
FIXED_KEY = bytes(range(32))


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model(SPEC).state_dict()


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_state_dict_round_trip_with_metadata(artifacts: Path, key: bytes) -> None:
    state = _state()
    meta = {"model_spec": SPEC.to_dict(), "round": 4, "metrics": {"val_loss": 0.31}}
    path = store.save_state(artifacts / "model.enc", state, key=key, kind="model", metadata=meta)
    loaded, loaded_meta = store.load_state(path, key=key, kind="model")
    _assert_same(loaded, state)
    assert loaded_meta == {
        **meta,
        # as JSON holds it: tuples come back as lists
        "model_spec": json.loads(json.dumps(SPEC.to_dict())),
    }
    assert ModelSpec.from_dict(loaded_meta["model_spec"]) == SPEC


def test_nested_checkpoint_with_optimizer_state_round_trips(artifacts: Path, key: bytes) -> None:
    model = build_model(SPEC)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 12)).sum().backward()
    optimizer.step()
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "round": 7}
    store.save_state(artifacts / "ckpt.enc", checkpoint, key=key, kind="checkpoint")
    loaded, _ = store.load_state(artifacts / "ckpt.enc", key=key, kind="checkpoint")
    _assert_same(loaded["model"], checkpoint["model"])
    fresh = torch.optim.Adam(build_model(SPEC).parameters(), lr=1e-3)
    fresh.load_state_dict(loaded["optimizer"])
    assert loaded["round"] == 7


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_quantized_int8_state_dict_round_trips(artifacts: Path, key: bytes) -> None:
    def quantize(model: torch.nn.Module) -> torch.nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(
                model.eval(), {torch.nn.Linear}, dtype=torch.qint8
            )

    torch.manual_seed(1)
    quantized = quantize(build_model(SPEC))
    store.save_state(artifacts / "export.enc", quantized.state_dict(), key=key, kind="export")
    loaded, _ = store.load_state(artifacts / "export.enc", key=key, kind="export")
    torch.manual_seed(2)
    fresh = quantize(build_model(SPEC))
    fresh.load_state_dict(loaded, strict=True)
    x = torch.randn(5, 12)
    assert torch.equal(fresh(x), quantized(x))


def test_json_round_trip(artifacts: Path, key: bytes) -> None:
    history = {"rounds": [{"round": 1, "loss": 0.5}, {"round": 2, "loss": 0.4}], "best": 2}
    store.save_json(
        artifacts / "history.enc", history, key=key, kind="history", metadata={"run": "r1"}
    )
    assert store.load_json(artifacts / "history.enc", key=key, kind="history") == (
        history,
        {"run": "r1"},
    )


def test_saving_twice_gives_different_files(artifacts: Path, key: bytes) -> None:
    state = _state()
    store.save_state(artifacts / "a.enc", state, key=key, kind="model")
    store.save_state(artifacts / "b.enc", state, key=key, kind="model")
    assert (artifacts / "a.enc").read_bytes() != (artifacts / "b.enc").read_bytes()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(where=st.floats(min_value=0, max_value=1, exclude_max=True), bit=st.integers(0, 7))
def test_any_flipped_bit_in_a_saved_state_is_refused(
    tmp_path: Path, where: float, bit: int
) -> None:
    path = tmp_path / "model.enc"
    if not path.exists():
        store.save_state(path, {"w": torch.arange(64.0)}, key=FIXED_KEY, kind="model")
    blob = bytearray(path.read_bytes())
    blob[int(where * len(blob))] ^= 1 << bit
    tampered = tmp_path / "tampered.enc"
    tampered.write_bytes(bytes(blob))
    with pytest.raises(DecryptionError):
        store.load_state(tampered, key=FIXED_KEY, kind="model")


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(keep=st.floats(min_value=0, max_value=1, exclude_max=True))
def test_any_truncated_state_file_is_refused(tmp_path: Path, keep: float) -> None:
    path = tmp_path / "model.enc"
    if not path.exists():
        store.save_state(path, {"w": torch.arange(64.0)}, key=FIXED_KEY, kind="model")
    blob = path.read_bytes()
    cut = tmp_path / "cut.enc"
    cut.write_bytes(blob[: int(keep * len(blob))])
    with pytest.raises(DecryptionError):
        store.load_state(cut, key=FIXED_KEY, kind="model")


def test_wrong_key_is_refused_on_load(artifacts: Path, key: bytes) -> None:
    store.save_state(artifacts / "m.enc", _state(), key=key, kind="model")
    with pytest.raises(DecryptionError, match=r"m\.enc"):
        store.load_state(artifacts / "m.enc", key=os.urandom(32), kind="model")


def test_a_checkpoint_cannot_be_loaded_as_a_ledger(artifacts: Path, key: bytes) -> None:
    store.save_state(artifacts / "ckpt.enc", _state(), key=key, kind="checkpoint")
    with pytest.raises(DecryptionError):
        store.load_state(artifacts / "ckpt.enc", key=key, kind="ledger")
    with pytest.raises(DecryptionError):
        store.load_json(artifacts / "ckpt.enc", key=key, kind="ledger")


def test_json_payload_loaded_as_state_names_the_right_loader(artifacts: Path, key: bytes) -> None:
    store.save_json(artifacts / "x.enc", [1, 2], key=key, kind="update")
    with pytest.raises(ArtifactFormatError, match="load_json"):
        store.load_state(artifacts / "x.enc", key=key, kind="update")


def test_missing_file_error_names_the_path(artifacts: Path, key: bytes) -> None:
    with pytest.raises(ArtifactNotFoundError, match=r"nowhere\.enc") as caught:
        store.load_state(artifacts / "nowhere.enc", key=key, kind="model")
    assert isinstance(caught.value, FileNotFoundError)


def test_read_info_describes_the_file_without_weights(artifacts: Path, key: bytes) -> None:
    path = store.save_state(
        artifacts / "m.enc", _state(), key=key, kind="checkpoint", metadata={"round": 3}
    )
    info = store.read_info(path, key=key)
    assert info["kind"] == "checkpoint"
    assert info["format_version"] == 1
    assert info["metadata"] == {"round": 3}
    assert info["size_bytes"] == path.stat().st_size
    assert info["created"].endswith("+00:00")
    assert not any(isinstance(v, torch.Tensor) for v in info.values())


def test_read_info_refuses_a_damaged_file(artifacts: Path, key: bytes) -> None:
    path = store.save_state(artifacts / "m.enc", {"w": torch.zeros(10_000)}, key=key, kind="model")
    blob = bytearray(path.read_bytes())
    blob[-100] ^= 0x01  # far from the metadata at the start
    path.write_bytes(bytes(blob))
    with pytest.raises(DecryptionError):
        store.read_info(path, key=key)


def test_crash_during_serialization_keeps_the_old_file_and_leaves_no_temp(
    artifacts: Path, key: bytes
) -> None:
    path = store.save_state(artifacts / "m.enc", _state(), key=key, kind="model", metadata={"v": 1})
    before = path.read_bytes()
    unpicklable = {"w": torch.zeros(1000), "oops": lambda: None}
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises, the old file survives
        store.save_state(path, unpicklable, key=key, kind="model", metadata={"v": 2})
    assert path.read_bytes() == before
    assert store.load_state(path, key=key, kind="model")[1] == {"v": 1}
    assert sorted(p.name for p in artifacts.iterdir()) == ["m.enc"]


def test_crash_at_rename_keeps_the_old_file_and_leaves_no_temp(
    artifacts: Path, key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = store.save_json(artifacts / "h.enc", {"v": 1}, key=key)

    def power_cut(src: object, dst: object) -> None:
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(OSError, match="simulated"):
        store.save_json(path, {"v": 2}, key=key)
    monkeypatch.undo()
    assert store.load_json(path, key=key)[0] == {"v": 1}
    assert sorted(p.name for p in artifacts.iterdir()) == ["h.enc"]


def test_saved_files_are_private_to_the_owner(artifacts: Path, key: bytes) -> None:
    path = store.save_json(artifacts / "h.enc", {}, key=key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_store_refuses_to_write_beside_the_key_file_in_use(tmp_path: Path) -> None:
    key_path = keys.generate_key_file(tmp_path / "keys" / "silo.key")
    key = keys.resolve_key(key_path)
    with pytest.raises(keys.UnsafeLocationError, match="key"):
        store.save_state(key_path.parent / "model.enc", _state(), key=key, kind="model")
    assert sorted(p.name for p in key_path.parent.iterdir()) == ["silo.key"]


def test_store_refuses_the_default_key_folder(isolated_home: Path) -> None:
    keys.generate_key_file()
    with pytest.raises(keys.UnsafeLocationError):
        store.save_json(isolated_home / "history.enc", {}, key=keys.resolve_key())


def test_unknown_kind_is_refused_before_writing(artifacts: Path, key: bytes) -> None:
    with pytest.raises(ValueError, match="kind"):
        store.save_state(artifacts / "m.enc", _state(), key=key, kind="weights")
    assert not any(artifacts.iterdir())


def test_metadata_that_is_not_json_is_refused_before_writing(artifacts: Path, key: bytes) -> None:
    with pytest.raises(TypeError, match="JSON"):
        store.save_state(
            artifacts / "m.enc", _state(), key=key, kind="model", metadata={"t": torch.ones(1)}
        )
    assert not any(artifacts.iterdir())


def test_json_keeps_the_callers_key_order(artifacts: Path, key: bytes) -> None:
    columns = {"zeta": 1, "alpha": 2, "mid": 3}  # e.g. a schema's column order
    store.save_json(artifacts / "schema.enc", columns, key=key, metadata={"b": 1, "a": 2})
    loaded, meta = store.load_json(artifacts / "schema.enc", key=key)
    assert list(loaded) == ["zeta", "alpha", "mid"]
    assert list(meta) == ["b", "a"]
