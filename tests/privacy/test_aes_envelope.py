"""The AES-256-GCM envelope: round trips, fresh nonces, and one error for every failure."""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privacy import crypto
from privacy.crypto import DecryptionError, decrypt, encrypt

SMALL_CHUNK = 64
FAST = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
FIXED_KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


@pytest.fixture(autouse=True, params=crypto.available_backends())
def aes_backend(request: pytest.FixtureRequest):
    """Every envelope test runs with each AES-GCM implementation available."""
    with crypto.using_backend(request.param):
        yield request.param


@pytest.mark.parametrize(
    "size", [0, 1, SMALL_CHUNK - 1, SMALL_CHUNK, SMALL_CHUNK + 1, 5 * SMALL_CHUNK]
)
def test_bytes_round_trip_at_every_chunk_boundary(size: int, key: bytes) -> None:
    data = bytes(i % 251 for i in range(size))
    blob = encrypt(data, key=key, kind="model", chunk_size=SMALL_CHUNK)
    assert decrypt(blob, key=key, kind="model") == data


def test_streamed_writes_of_any_size_decrypt_to_the_same_bytes(key: bytes) -> None:
    data = bytes(range(256)) * 20
    out = io.BytesIO()
    with crypto.EncryptingWriter(out, key=key, kind="update", chunk_size=SMALL_CHUNK) as writer:
        for piece in (data[:3], data[3:200], data[200:201], data[201:]):
            writer.write(piece)
    assert decrypt(out.getvalue(), key=key, kind="update") == data


def test_two_encryptions_of_the_same_data_differ(key: bytes) -> None:
    data = b"same weights" * 10
    first = encrypt(data, key=key, kind="model")
    second = encrypt(data, key=key, kind="model")
    assert first != second
    assert decrypt(first, key=key, kind="model") == decrypt(second, key=key, kind="model")


def test_ciphertext_does_not_contain_the_plaintext(key: bytes) -> None:
    data = b"patient-record-0042 " * 50
    assert b"patient-record" not in encrypt(data, key=key, kind="json")


@pytest.mark.skipif(len(crypto.available_backends()) < 2, reason="only one AES backend here")
def test_openssl_and_pycryptodome_read_each_other(key: bytes) -> None:
    data = bytes(range(256)) * 9
    with crypto.using_backend("openssl"):
        by_openssl = encrypt(data, key=key, kind="model", chunk_size=SMALL_CHUNK)
    with crypto.using_backend("pycryptodome"):
        by_pycryptodome = encrypt(data, key=key, kind="model", chunk_size=SMALL_CHUNK)
        assert decrypt(by_openssl, key=key, kind="model") == data
    with crypto.using_backend("openssl"):
        assert decrypt(by_pycryptodome, key=key, kind="model") == data


@FAST
@given(
    data=st.binary(min_size=0, max_size=300),
    where=st.floats(min_value=0, max_value=1, exclude_max=True),
    bit=st.integers(min_value=0, max_value=7),
)
def test_any_flipped_bit_is_refused(data: bytes, where: float, bit: int) -> None:
    blob = bytearray(encrypt(data, key=FIXED_KEY, kind="model", chunk_size=SMALL_CHUNK))
    blob[int(where * len(blob))] ^= 1 << bit
    with pytest.raises(DecryptionError):
        decrypt(bytes(blob), key=FIXED_KEY, kind="model")


@FAST
@given(
    data=st.binary(min_size=0, max_size=300),
    keep=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_any_truncation_is_refused(data: bytes, keep: float) -> None:
    blob = encrypt(data, key=FIXED_KEY, kind="model", chunk_size=SMALL_CHUNK)
    with pytest.raises(DecryptionError):
        decrypt(blob[: int(keep * len(blob))], key=FIXED_KEY, kind="model")


@FAST
@given(data=st.binary(min_size=1, max_size=200), extra=st.binary(min_size=1, max_size=40))
def test_appended_bytes_are_refused(data: bytes, extra: bytes) -> None:
    blob = encrypt(data, key=FIXED_KEY, kind="model", chunk_size=SMALL_CHUNK)
    with pytest.raises(DecryptionError):
        decrypt(blob + extra, key=FIXED_KEY, kind="model")


def _split(blob: bytes) -> tuple[bytes, list[bytes]]:
    header_len = len(crypto.MAGIC) + 2 + len(b"model") + 4 + crypto.SALT_SIZE + crypto.PREFIX_SIZE
    sealed = SMALL_CHUNK + crypto.TAG_SIZE
    body = blob[header_len:]
    return blob[:header_len], [body[i : i + sealed] for i in range(0, len(body), sealed)]


def test_reordered_chunks_are_refused(key: bytes) -> None:
    header, chunks = _split(
        encrypt(bytes(4 * SMALL_CHUNK + 10), key=key, kind="model", chunk_size=SMALL_CHUNK)
    )
    chunks[0], chunks[1] = chunks[1], chunks[0]
    with pytest.raises(DecryptionError):
        decrypt(header + b"".join(chunks), key=key, kind="model")


def test_a_dropped_middle_chunk_is_refused(key: bytes) -> None:
    header, chunks = _split(
        encrypt(bytes(4 * SMALL_CHUNK + 10), key=key, kind="model", chunk_size=SMALL_CHUNK)
    )
    del chunks[1]
    with pytest.raises(DecryptionError):
        decrypt(header + b"".join(chunks), key=key, kind="model")


def test_dropping_whole_final_chunks_is_refused(key: bytes) -> None:
    header, chunks = _split(
        encrypt(bytes(4 * SMALL_CHUNK + 10), key=key, kind="model", chunk_size=SMALL_CHUNK)
    )
    with pytest.raises(DecryptionError):
        decrypt(header + b"".join(chunks[:-1]), key=key, kind="model")


def test_wrong_key_is_refused(key: bytes) -> None:
    blob = encrypt(b"weights", key=key, kind="model")
    with pytest.raises(DecryptionError):
        decrypt(blob, key=OTHER_KEY, kind="model")


def test_wrong_artifact_kind_is_refused(key: bytes) -> None:
    blob = encrypt(b"weights", key=key, kind="checkpoint")
    with pytest.raises(DecryptionError):
        decrypt(blob, key=key, kind="ledger")


def test_relabelled_kind_in_header_is_refused(key: bytes) -> None:
    # Same length kinds, so only the label changes: the header is bound as associated data.
    blob = encrypt(b"weights", key=key, kind="model")
    forged = blob.replace(b"model", b"MODEL", 1)
    with pytest.raises(DecryptionError):
        decrypt(forged, key=key, kind="MODEL")


@pytest.mark.parametrize("blob", [b"", b"FEDSILO", b"PK\x03\x04 a zip file", bytes(200)])
def test_data_not_in_our_format_is_refused(blob: bytes, key: bytes) -> None:
    with pytest.raises(DecryptionError):
        decrypt(blob, key=key, kind="model")


def test_every_failure_gives_the_same_message_naming_the_file(key: bytes) -> None:
    blob = encrypt(b"weights" * 30, key=key, kind="model", chunk_size=SMALL_CHUNK)
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    messages = set()
    for data, k in [(blob, OTHER_KEY), (bytes(tampered), key), (blob[:-5], key), (b"junk", key)]:
        with pytest.raises(DecryptionError) as caught:
            decrypt(data, key=k, kind="model", source="/silo/model.enc")
        messages.add(str(caught.value))
    assert len(messages) == 1
    (message,) = messages
    assert "/silo/model.enc" in message and "key" in message


@pytest.mark.parametrize(
    ("bad_key", "error"),
    [("00" * 32, TypeError), (b"short", ValueError), (bytes(33), ValueError), (12345, TypeError)],
)
def test_key_type_and_length_are_checked_at_construction(bad_key: object, error: type) -> None:
    with pytest.raises(error):
        crypto.EncryptingWriter(io.BytesIO(), key=bad_key, kind="model")  # type: ignore[arg-type]
    with pytest.raises(error):
        encrypt(b"x", key=bad_key, kind="model")  # type: ignore[arg-type]


def test_reader_seeks_anywhere_and_reads_the_right_bytes(key: bytes) -> None:
    data = bytes(i % 253 for i in range(1000))
    blob = encrypt(data, key=key, kind="model", chunk_size=SMALL_CHUNK)
    reader = crypto.DecryptingReader(io.BytesIO(blob), key=key, kind="model")
    assert reader.size == len(data)
    for start, length in [(0, 10), (60, 10), (999, 5), (130, 300), (500, 0)]:
        reader.seek(start)
        assert reader.read(length) == data[start : start + length]
    reader.verify_all()
