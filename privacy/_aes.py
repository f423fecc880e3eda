"""The two AES-256-GCM implementations the envelope can use, and the choice between them.

OpenSSL (through the ``cryptography`` package, which Flower already requires) is about ten
times faster here than pycryptodome; pycryptodome is the fallback that is always there.
Both compute standard AES-GCM, so either reads what the other wrote.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from Crypto.Cipher import AES

TAG_SIZE = 16


class _PyCryptodomeGCM:
    name = "pycryptodome"

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _cipher(self, nonce: bytes, aad: bytes) -> Any:
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_SIZE)
        cipher.update(aad)
        return cipher

    def seal(self, nonce: bytes, data: bytes | memoryview, aad: bytes) -> bytes:
        ct, tag = self._cipher(nonce, aad).encrypt_and_digest(data)
        return ct + tag

    def open(self, nonce: bytes, sealed: memoryview, aad: bytes) -> bytes:
        return self._cipher(nonce, aad).decrypt_and_verify(sealed[:-TAG_SIZE], sealed[-TAG_SIZE:])

    def open_into(self, nonce: bytes, sealed: memoryview, aad: bytes, out: memoryview) -> None:
        cipher = self._cipher(nonce, aad)
        cipher.decrypt(sealed[:-TAG_SIZE], output=out)
        cipher.verify(sealed[-TAG_SIZE:])  # on failure the caller discards ``out``


class _OpenSSLGCM:
    name = "openssl"

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)

    def seal(self, nonce: bytes, data: bytes | memoryview, aad: bytes) -> bytes:
        return self._aead.encrypt(nonce, data, aad)

    def open(self, nonce: bytes, sealed: memoryview, aad: bytes) -> bytes:
        return self._aead.decrypt(nonce, sealed, aad)

    def open_into(self, nonce: bytes, sealed: memoryview, aad: bytes, out: memoryview) -> None:
        if hasattr(self._aead, "decrypt_into"):  # cryptography >= 45: no intermediate copy
            self._aead.decrypt_into(nonce, sealed, aad, out)
        else:
            out[:] = self._aead.decrypt(nonce, sealed, aad)


def available_backends() -> tuple[str, ...]:
    try:
        import cryptography.hazmat.primitives.ciphers.aead  # noqa: F401
    except ImportError:
        return ("pycryptodome",)
    return ("openssl", "pycryptodome")


_BACKENDS = {"openssl": _OpenSSLGCM, "pycryptodome": _PyCryptodomeGCM}
_backend = available_backends()[0]


def backend_name() -> str:
    """Which library computes AES-GCM now: ``openssl`` or ``pycryptodome``."""
    return _backend


@contextmanager
def using_backend(name: str) -> Iterator[None]:
    """Use one AES-GCM implementation inside the block (tests and benchmarks)."""
    global _backend
    if name not in available_backends():
        raise ValueError(f"AES-GCM backend {name!r} is not available here")
    previous, _backend = _backend, name
    try:
        yield
    finally:
        _backend = previous


def gcm(file_key: bytes) -> _OpenSSLGCM | _PyCryptodomeGCM:
    return _BACKENDS[_backend](file_key)
