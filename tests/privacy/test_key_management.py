"""Key files, environment keys, passphrases, the resolver's order, and key rotation."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from privacy import keys, store
from privacy.crypto import DecryptionError
from privacy.keys import (
    InsecureKeyFileError,
    KeyFileError,
    KeyFileExistsError,
    KeyNotFoundError,
    UnsafeLocationError,
)

FAST_SCRYPT = {"n": 2**10, "r": 8, "p": 1}


def test_generated_key_file_is_0600_and_holds_32_random_bytes(tmp_path: Path) -> None:
    path = keys.generate_key_file(tmp_path / "k" / "silo.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = keys.load_key_file(path)
    assert len(key) == 32
    assert key != keys.load_key_file(keys.generate_key_file(tmp_path / "k" / "other.key"))


def test_generating_over_an_existing_key_file_is_refused(tmp_path: Path) -> None:
    path = keys.generate_key_file(tmp_path / "silo.key")
    before = path.read_bytes()
    with pytest.raises(KeyFileExistsError, match="refusing to overwrite"):
        keys.generate_key_file(path)
    assert path.read_bytes() == before


def test_a_key_file_readable_by_others_is_refused_with_chmod_advice(tmp_path: Path) -> None:
    path = keys.generate_key_file(tmp_path / "silo.key")
    path.chmod(0o644)
    with pytest.raises(InsecureKeyFileError, match=r"chmod 600"):
        keys.load_key_file(path)
    path.chmod(0o600)
    assert len(keys.load_key_file(path)) == 32


def test_a_key_file_with_bad_content_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "silo.key"
    path.write_text("deadbeef-not-a-key\n")
    path.chmod(0o600)
    with pytest.raises(KeyFileError) as caught:
        keys.load_key_file(path)
    assert "deadbeef" not in str(caught.value)


def test_keygen_refuses_a_folder_that_holds_artifacts(artifacts: Path, key: bytes) -> None:
    store.save_json(artifacts / "history.enc", {}, key=key)
    with pytest.raises(UnsafeLocationError):
        keys.generate_key_file(artifacts / "silo.key")
    assert not (artifacts / "silo.key").exists()


def test_resolver_prefers_an_explicit_key_file_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = keys.generate_key_file(tmp_path / "silo.key")
    monkeypatch.setenv(keys.KEY_ENV, "11" * 32)
    assert keys.resolve_key(path) == keys.load_key_file(path)
    assert keys.resolve_key() == bytes([0x11] * 32)


def test_resolver_prefers_the_env_key_over_a_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(keys.KEY_ENV, "ab" * 32)
    monkeypatch.setenv(keys.PASSPHRASE_ENV, "correct horse battery staple")
    assert keys.resolve_key() == bytes([0xAB] * 32)
    assert keys.key_source() == f"environment variable {keys.KEY_ENV}"


def test_a_malformed_env_key_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(keys.KEY_ENV, "c0ffee" * 5)
    with pytest.raises(KeyFileError, match="64 hex characters") as caught:
        keys.resolve_key()
    assert "c0ffee" not in str(caught.value)


def test_passphrase_derivation_is_deterministic_with_its_salt() -> None:
    salt = bytes(range(16))
    first = keys.derive_key("correct horse battery staple", salt, **FAST_SCRYPT)
    assert first == keys.derive_key("correct horse battery staple", salt, **FAST_SCRYPT)
    assert first != keys.derive_key("correct horse battery staple", bytes(16), **FAST_SCRYPT)
    assert first != keys.derive_key("correct horse battery stapler", salt, **FAST_SCRYPT)
    assert len(first) == 32


def test_passphrase_resolution_makes_the_salt_once_and_reuses_it(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keys, "SCRYPT_N", 2**10)  # the salt file records the cost it was made with
    monkeypatch.setenv(keys.PASSPHRASE_ENV, "correct horse battery staple")
    first = keys.resolve_key()
    salt_file = isolated_home / keys.SALT_FILE_NAME
    assert salt_file.exists()
    salt_before = salt_file.read_bytes()
    assert keys.resolve_key() == first
    assert salt_file.read_bytes() == salt_before


def test_a_short_passphrase_is_refused() -> None:
    with pytest.raises(KeyFileError, match="at least"):
        keys.derive_key("hunter2", bytes(16), **FAST_SCRYPT)


def test_default_key_file_lives_in_fedsilo_home(isolated_home: Path) -> None:
    path = keys.generate_key_file()
    assert path == isolated_home / "key"
    assert keys.resolve_key() == keys.load_key_file(path)


def test_no_key_anywhere_says_how_to_make_one() -> None:
    with pytest.raises(KeyNotFoundError) as caught:
        keys.resolve_key()
    message = str(caught.value)
    assert isinstance(caught.value, KeyError)
    assert "fl-server keygen --out" in message and keys.KEY_ENV in message


def test_a_missing_explicit_key_file_does_not_fall_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(keys.KEY_ENV, "11" * 32)
    with pytest.raises(KeyNotFoundError, match=r"nope\.key"):
        keys.resolve_key(tmp_path / "nope.key")


def test_rotation_keeps_kind_and_content_and_the_old_key_stops_working(artifacts: Path) -> None:
    old, new = os.urandom(32), os.urandom(32)
    path = store.save_json(
        artifacts / "ledger.enc", {"spent": [1, 2, 3]}, key=old, kind="ledger", metadata={"m": 1}
    )
    keys.rekey_file(path, old, new)
    assert store.load_json(path, key=new, kind="ledger") == ({"spent": [1, 2, 3]}, {"m": 1})
    with pytest.raises(DecryptionError):
        store.load_json(path, key=old, kind="ledger")
    assert sorted(p.name for p in artifacts.iterdir()) == ["ledger.enc"]


def test_rotation_of_a_multi_chunk_state_file_keeps_every_byte(artifacts: Path) -> None:
    import torch

    old, new = os.urandom(32), os.urandom(32)
    state = {"w": torch.randn(600_000)}  # 2.4 MB: several 1 MiB chunks
    path = store.save_state(artifacts / "m.enc", state, key=old, kind="model")
    keys.rekey_file(path, old, new)
    assert torch.equal(store.load_state(path, key=new, kind="model")[0]["w"], state["w"])


def test_rotation_with_the_wrong_old_key_changes_nothing(artifacts: Path) -> None:
    right, wrong, new = os.urandom(32), os.urandom(32), os.urandom(32)
    path = store.save_json(artifacts / "h.enc", {"a": 1}, key=right)
    before = path.read_bytes()
    with pytest.raises(DecryptionError):
        keys.rekey_file(path, wrong, new)
    assert path.read_bytes() == before
    assert sorted(p.name for p in artifacts.iterdir()) == ["h.enc"]


def test_rotating_a_folder_rekeys_every_encrypted_file_and_nothing_else(artifacts: Path) -> None:
    old, new = os.urandom(32), os.urandom(32)
    store.save_json(artifacts / "history.enc", {"a": 1}, key=old, kind="history")
    store.save_json(artifacts / "run" / "ledger", {"b": 2}, key=old, kind="ledger")
    (artifacts / "notes.txt").write_text("plain")
    rotated = keys.rekey_tree(artifacts, old, new)
    assert [p.name for p in rotated] == ["history.enc", "ledger"]
    assert store.load_json(artifacts / "run" / "ledger", key=new, kind="ledger")[0] == {"b": 2}
    assert (artifacts / "notes.txt").read_text() == "plain"


def test_rotating_a_folder_with_one_foreign_file_changes_nothing(artifacts: Path) -> None:
    old, other, new = os.urandom(32), os.urandom(32), os.urandom(32)
    mine = store.save_json(artifacts / "a.enc", {"a": 1}, key=old)
    store.save_json(artifacts / "b.enc", {"b": 2}, key=other)
    before = mine.read_bytes()
    with pytest.raises(DecryptionError, match=r"b\.enc"):
        keys.rekey_tree(artifacts, old, new)
    assert mine.read_bytes() == before


def test_key_id_is_stable_short_and_not_the_key(key: bytes) -> None:
    assert keys.key_id(key) == keys.key_id(key)
    assert keys.key_id(key) != keys.key_id(os.urandom(32))
    assert len(keys.key_id(key)) == 16
    assert keys.key_id(key) not in key.hex()
