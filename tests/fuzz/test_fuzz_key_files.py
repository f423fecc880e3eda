"""Fuzzing the key readers: key files, the passphrase salt file, FEDSILO_KEY, and the CA
files ``fl-server certs server`` reads.

Only the documented errors may escape: the ``KeyFileError`` family (``KeyFileError``,
``InsecureKeyFileError``, ``KeyNotFoundError``) for keys, ``CertificateError`` for
certificates; and no message may echo the bytes it was given (they may be a real key
with a typo).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fl_server.certs import CertificateError, Pair, make_ca, make_server_certificate
from privacy import keys
from privacy.keys import InsecureKeyFileError, KeyFileError

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
HEX = "0123456789abcdefABCDEF"
KEYISH = st.one_of(
    st.binary(max_size=100),
    st.text(alphabet=HEX, min_size=60, max_size=68).map(str.encode),
    st.text(alphabet=HEX + " \n\t-xg", max_size=80).map(str.encode),
)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(keys.HOME_ENV, str(tmp_path / "home"))
    monkeypatch.delenv(keys.KEY_ENV, raising=False)
    monkeypatch.delenv(keys.PASSPHRASE_ENV, raising=False)
    monkeypatch.setattr(keys, "_key_folders_in_use", set())


def _is_key(blob: bytes) -> bool:
    try:
        return len(bytes.fromhex(blob.decode("ascii").strip())) == 32
    except (UnicodeDecodeError, ValueError):
        return False


@FUZZ
@given(blob=KEYISH)
def test_a_key_file_holds_a_key_or_raises_key_file_error(tmp_path, blob):
    path = tmp_path / "key"
    path.write_bytes(blob)
    path.chmod(0o600)
    try:
        key = keys.load_key_file(path)
    except KeyFileError as exc:
        assert not _is_key(blob)
        text = blob.decode("ascii", errors="ignore").strip()
        assert len(text) < 8 or text not in str(exc)  # never echoed
    else:
        assert _is_key(blob) and len(key) == 32


@FUZZ
@given(mode=st.integers(0, 0o777))
def test_a_key_file_others_can_access_is_refused(tmp_path, mode):
    path = tmp_path / "key"
    path.write_text(os.urandom(32).hex())
    path.chmod(mode)
    try:
        keys.load_key_file(path)
    except InsecureKeyFileError:
        assert mode & 0o077
    except PermissionError:  # unreadable by its owner (not when running as root)
        assert not mode & 0o400
    else:
        assert not mode & 0o077


@FUZZ
@given(value=st.text(max_size=80).filter(lambda v: "\x00" not in v))
def test_fedsilo_key_variable_holds_a_key_or_raises_key_file_error(monkeypatch, value):
    monkeypatch.setenv(keys.KEY_ENV, value)
    if not value:
        monkeypatch.delenv(keys.KEY_ENV)
    try:
        key = keys.resolve_key(None)
    except (KeyFileError, keys.KeyNotFoundError):
        pass
    else:
        assert len(key) == 32


@FUZZ
@given(blob=st.binary(max_size=200) | st.text(max_size=120).map(str.encode))
def test_a_damaged_salt_file_loads_or_raises_key_file_error(tmp_path, blob):
    path = tmp_path / "salt"
    path.write_bytes(blob)
    try:
        salt, params = keys.load_or_create_salt(path)
    except KeyFileError as exc:
        assert str(path) in str(exc)
    else:
        assert isinstance(salt, bytes) and set(params) == {"n", "r", "p"}


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    return make_ca(tmp_path_factory.mktemp("ca"))


@FUZZ
@given(which=st.sampled_from(["cert", "key"]), blob=st.binary(max_size=400), data=st.data())
def test_a_damaged_ca_raises_certificate_error_unless_still_usable(tmp_path, ca, which, blob, data):
    good = (ca.public if which == "cert" else ca.private).read_bytes()
    if data.draw(st.booleans(), label="flip instead"):
        at = data.draw(st.integers(0, len(good) - 1), label="at")
        blob = good[:at] + bytes([good[at] ^ 0xFF]) + good[at + 1 :]
    folder = tmp_path / "bad"
    folder.mkdir(exist_ok=True)
    damaged = folder / which
    damaged.write_bytes(blob)
    pair = Pair(damaged, ca.private) if which == "cert" else Pair(ca.public, damaged)
    out = tmp_path / "out"
    for name in ("server.crt", "server.key"):
        (out / name).unlink(missing_ok=True)
    try:
        made = make_server_certificate(out, ca=pair)
    except CertificateError:
        return
    assert made.public.exists()  # a flip in the PEM armour's slack can leave it usable
