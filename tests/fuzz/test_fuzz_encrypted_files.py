"""Fuzzing the readers of encrypted files: JSON, ledger, model, int8 export, checkpoint.

Every file fedsilo writes is an authenticated AES-GCM envelope, so any change to its
bytes (a flipped bit, a cut, an insertion, random bytes) must be refused with
``DecryptionError`` (``ArtifactFormatError`` is a subclass), naming the file, and never
with another exception, a crash in the unpickler, or silently altered content.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from core_training.models import ModelSpec, build_model, quantize_int8
from core_training.schema import Feature, Schema
from fl_common.modelfile import load_model, save_model
from fl_server.early_stopping import EarlyStopping
from fl_server.state import RunState, load_checkpoint, save_checkpoint
from privacy import crypto, keys, store
from privacy.crypto import DecryptionError
from privacy.ledger import PrivacyLedger

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SPEC = ModelSpec("mlp", 4, 2, hidden_sizes=(8,))
SCHEMA = Schema("y", (0, 1), tuple(Feature(f"x{i}") for i in range(4)))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, dict[str, bytes]]:
    """One valid file of every kind (as bytes) and the key that opens them."""
    base = tmp_path_factory.mktemp("fuzz-files")
    keys._key_folders_in_use.clear()
    key = keys.load_key_file(keys.generate_key_file(base / "keys" / "key"))
    out = base / "artifacts"
    out.mkdir()
    torch.manual_seed(0)
    model = build_model(SPEC)
    save_model(out / "model.bin", model.state_dict(), key=key, spec=SPEC, schema=SCHEMA)
    qstate = quantize_int8(model).state_dict()
    save_model(out / "export.bin", qstate, key=key, spec=SPEC, schema=SCHEMA, kind="export")
    arrays = {k: v.numpy() for k, v in model.state_dict().items()}
    state = RunState(
        spec=SPEC,
        schema=SCHEMA,
        current=arrays,
        best=arrays,
        early_stopping=EarlyStopping(patience=2),
        prep={"mean": np.zeros(4, dtype=np.float32)},
        round=3,
        history=[{"round": 0, "val_loss": 1.0}],
    )
    save_checkpoint(out, state, key=key, config={"num-server-rounds": 5})
    store.save_json(out / "history.bin", [{"round": 1}], key=key, kind="history")
    ledger = PrivacyLedger.open(out / "ledger.bin", key=key, budget_epsilon=5.0, delta=1e-5)
    ledger.reserve(noise_multiplier=1.0, sample_rate=0.1, steps=10, round=1).settle(10)
    names = {
        "model": "model.bin",
        "export": "export.bin",
        "checkpoint": "checkpoint.bin",
        "history": "history.bin",
        "ledger": "ledger.bin",
    }
    return key, {kind: (out / name).read_bytes() for kind, name in names.items()}


def _open(kind: str, path: Path, key: bytes) -> None:
    """The reader fedsilo uses for a file of ``kind``."""
    if kind in ("model", "export"):
        load_model(path, key=key)
    elif kind == "checkpoint":
        load_checkpoint(path, key=key)
    elif kind == "history":
        store.load_json(path, key=key, kind="history")
    else:
        PrivacyLedger.open(path, key=key, budget_epsilon=5.0, delta=1e-5)


KINDS = st.sampled_from(["model", "export", "checkpoint", "history", "ledger"])


def _refused(kind: str, blob: bytes, key: bytes, tmp_path: Path) -> None:
    path = tmp_path / f"{kind}.bin"
    path.write_bytes(blob)
    with pytest.raises(DecryptionError) as info:
        _open(kind, path, key)
    assert str(path) in str(info.value)
    with pytest.raises(DecryptionError):
        store.read_info(path, key=key)


def test_every_valid_file_opens(files, tmp_path):
    key, blobs = files
    for kind, blob in blobs.items():
        path = tmp_path / f"{kind}.bin"
        path.write_bytes(blob)
        _open(kind, path, key)


@FUZZ
@given(kind=KINDS, data=st.data())
def test_a_flipped_bit_anywhere_is_refused(files, tmp_path, kind, data):
    key, blobs = files
    blob = bytearray(blobs[kind])
    position = data.draw(st.integers(0, len(blob) - 1), label="byte")
    blob[position] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    _refused(kind, bytes(blob), key, tmp_path)


@FUZZ
@given(kind=KINDS, data=st.data())
def test_a_truncated_file_is_refused(files, tmp_path, kind, data):
    key, blobs = files
    blob = blobs[kind]
    _refused(kind, blob[: data.draw(st.integers(0, len(blob) - 1), label="length")], key, tmp_path)


@FUZZ
@given(kind=KINDS, data=st.data(), extra=st.binary(min_size=1, max_size=64))
def test_inserted_or_appended_bytes_are_refused(files, tmp_path, kind, data, extra):
    key, blobs = files
    blob = blobs[kind]
    at = data.draw(st.integers(0, len(blob)), label="at")
    _refused(kind, blob[:at] + extra + blob[at:], key, tmp_path)


@FUZZ
@given(kind=KINDS, data=st.data())
def test_a_removed_span_is_refused(files, tmp_path, kind, data):
    key, blobs = files
    blob = blobs[kind]
    start = data.draw(st.integers(0, len(blob) - 1), label="start")
    stop = data.draw(st.integers(start + 1, min(len(blob), start + 64)), label="stop")
    _refused(kind, blob[:start] + blob[stop:], key, tmp_path)


@FUZZ
@given(kind=KINDS, body=st.binary(max_size=2048), magic=st.booleans())
def test_random_bytes_are_refused(files, tmp_path, kind, body, magic):
    key, _ = files
    _refused(kind, (crypto.MAGIC + b"\x01" if magic else b"") + body, key, tmp_path)


@FUZZ
@given(kind=KINDS, data=st.data())
def test_a_header_copied_from_another_file_is_refused(files, tmp_path, kind, data):
    """A header (kind, salt, nonce prefix) spliced onto another file's chunks."""
    key, blobs = files
    other = data.draw(KINDS.filter(lambda k: k != kind), label="other")
    cut = data.draw(st.integers(1, 60), label="cut")
    spliced = blobs[other][:cut] + blobs[kind][cut:]
    assume(spliced != blobs[kind])  # the first bytes (magic, version) are the same
    _refused(kind, spliced, key, tmp_path)


def test_the_right_file_under_another_key_is_refused(files, tmp_path):
    _, blobs = files
    for kind, blob in blobs.items():
        _refused(kind, blob, bytes(32), tmp_path)


@FUZZ
@given(blob=st.binary(max_size=512), kind=st.none() | st.sampled_from(store.ARTIFACT_KINDS))
def test_decrypt_of_random_bytes_raises_only_decryption_error(blob, kind):
    with pytest.raises(DecryptionError):
        crypto.decrypt(blob, key=bytes(range(32)), kind=kind)
