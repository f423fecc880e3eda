"""AES-256-GCM at rest, in a small versioned envelope that is encrypted in chunks.

File layout (version 1), all integers big-endian::

    magic        8 bytes   b"FEDSILO\\x00"
    version      1 byte    1
    kind length  1 byte    n
    kind         n bytes   ASCII, e.g. b"checkpoint"
    chunk size   4 bytes   plaintext bytes per chunk
    salt        16 bytes   random, per file
    prefix       7 bytes   random nonce prefix, per file
    chunks       ...       each: AES-GCM(ciphertext || 16-byte tag)

Every chunk is sealed under a per-file key, HKDF-SHA256(master key, salt), with the nonce
``prefix || chunk index (4 bytes) || last-chunk flag (1 byte)`` and the whole header as
associated data. This is the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár):
reordering, dropping or duplicating a chunk changes its index, cutting the file makes the
new last chunk fail its flag, and changing the header (the kind in particular, so a
checkpoint cannot be passed off as a ledger) fails every chunk. The per-file key means
random nonces never collide across files written with the same master key. Nonces are
made here; callers never see them.

Chunking keeps memory flat: :class:`EncryptingWriter` seals a chunk as soon as it is full
and :class:`DecryptingReader` opens only the chunks that are read, so a large model is
never held twice (plaintext and ciphertext) in memory.

AES-GCM is computed by OpenSSL (through the ``cryptography`` package, which Flower already
requires) when it is installed, else by pycryptodome. Both compute the same standard
AES-256-GCM, so files are interchangeable; OpenSSL is about ten times faster here.
"""

from __future__ import annotations

import io
import os
import struct
from collections import OrderedDict
from typing import BinaryIO

from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

from . import _aes
from ._aes import TAG_SIZE, available_backends, backend_name, using_backend

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "FORMAT_VERSION",
    "KEY_SIZE",
    "MAGIC",
    "TAG_SIZE",
    "DecryptingReader",
    "DecryptionError",
    "EncryptingWriter",
    "available_backends",
    "backend_name",
    "check_key",
    "decrypt",
    "decryption_error",
    "encrypt",
    "using_backend",
]

MAGIC = b"FEDSILO\x00"
FORMAT_VERSION = 1
KEY_SIZE = 32
SALT_SIZE = 16
PREFIX_SIZE = 7
DEFAULT_CHUNK_SIZE = 1 << 20  # 1 MiB: large enough to amortise per-chunk cost
MAX_CHUNK_SIZE = 1 << 26  # refuse absurd headers before allocating anything
MAX_CHUNKS = 1 << 32  # the chunk index is 4 bytes
_HKDF_CONTEXT = b"fedsilo/aes-256-gcm-stream/v1"
_FIXED = struct.Struct(">8sBB")


class DecryptionError(Exception):
    """Any failure to open an encrypted file: wrong key, damaged, truncated, wrong kind,
    not our format. The message names the file and what to check, never which check
    failed (that would help someone probing the format)."""


def decryption_error(source: str, kind: str | None) -> DecryptionError:
    what = f"a fedsilo {kind!r} file" if kind else "a fedsilo encrypted file"
    return DecryptionError(
        f"cannot open {source} as {what}. Check that the key is the one this file was "
        f"written with (key file, FEDSILO_KEY or FEDSILO_PASSPHRASE; see docs/privacy.md), "
        f"that you picked the right file for this use, and that it was copied completely."
    )


def check_key(key: object) -> bytes:
    """Return ``key`` as bytes if it is exactly 32 bytes, else raise (never echoing it)."""
    if isinstance(key, str):
        raise TypeError(
            "the key must be 32 raw bytes, not a str; load it with privacy.keys.resolve_key()"
        )
    if not isinstance(key, bytes | bytearray | memoryview):
        raise TypeError(f"the key must be 32 bytes, not {type(key).__name__}")
    key = bytes(key)
    if len(key) != KEY_SIZE:
        raise ValueError(f"an AES-256 key is {KEY_SIZE} bytes; this one is {len(key)} bytes")
    return key


def check_kind(kind: object) -> str:
    if not isinstance(kind, str) or not kind or not kind.isascii() or len(kind) > 64:
        raise ValueError(f"an artifact kind is a short ASCII name, got {kind!r}")
    return kind


# --- header ---------------------------------------------------------------------------


def _build_header(kind: str, chunk_size: int, salt: bytes, prefix: bytes) -> bytes:
    raw = kind.encode("ascii")
    return (
        _FIXED.pack(MAGIC, FORMAT_VERSION, len(raw))
        + raw
        + struct.pack(">I", chunk_size)
        + salt
        + prefix
    )


def _file_key(key: bytes, salt: bytes) -> bytes:
    return HKDF(key, KEY_SIZE, salt, SHA256, context=_HKDF_CONTEXT)  # type: ignore[return-value]


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", index, 1 if last else 0)


class EncryptingWriter(io.RawIOBase):
    """A write-only file object: what is written to it lands sealed in ``raw``.

    ``close()`` seals the last chunk (possibly empty) with the last-chunk flag; until then
    the output is incomplete and will not decrypt. ``raw`` itself is not closed.
    """

    def __init__(
        self,
        raw: BinaryIO,
        *,
        key: bytes,
        kind: str,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        super().__init__()
        key = check_key(key)
        kind = check_kind(kind)
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size must be in [1, {MAX_CHUNK_SIZE}], got {chunk_size}")
        salt, prefix = os.urandom(SALT_SIZE), os.urandom(PREFIX_SIZE)
        self._raw = raw
        self._header = _build_header(kind, chunk_size, salt, prefix)
        self._gcm = _aes.gcm(_file_key(key, salt))
        self._prefix = prefix
        self._chunk_size = chunk_size
        self._buffer = bytearray()
        self._index = 0
        self._finished = False
        raw.write(self._header)

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self._finished:
            raise ValueError("write to a finished encrypted stream")
        view = memoryview(data).cast("B")
        n, start, size = len(view), 0, self._chunk_size
        # A chunk is sealed only once more data is known to follow it: the chunk that
        # turns out to be last must carry the last-chunk flag, so up to one full chunk
        # always waits in the buffer until close().
        if self._buffer:
            start = min(size - len(self._buffer), n)
            self._buffer += view[:start]
            if start == n:
                return n
            self._seal(self._buffer, last=False)
            self._buffer.clear()
        while n - start > size:  # whole chunks straight from the caller's memory
            self._seal(view[start : start + size], last=False)
            start += size
        self._buffer += view[start:]
        return n

    def _seal(self, data: bytes | memoryview, *, last: bool) -> None:
        if self._index >= MAX_CHUNKS:
            raise ValueError("payload too large for this chunk size")
        nonce = _nonce(self._prefix, self._index, last)
        self._raw.write(self._gcm.seal(nonce, data, self._header))
        self._index += 1

    def finish(self) -> None:
        """Seal the last chunk. Called by ``close()``; safe to call twice."""
        if not self._finished:
            self._seal(bytes(self._buffer), last=True)
            self._buffer.clear()
            self._finished = True

    def abort(self) -> None:
        """Give up: write nothing more (the output stays incomplete and undecryptable)."""
        self._finished = True
        self._buffer.clear()

    def close(self) -> None:
        if not self.closed:
            self.finish()
        super().close()


class DecryptingReader(io.RawIOBase):
    """A read-only, seekable view of the plaintext inside an encrypted file.

    Opening checks the header and authenticates the last chunk (so a truncated file fails
    at once). Every byte handed out comes from a chunk whose tag was verified first. Call
    :meth:`verify_all` before trusting that the file as a whole is intact: it checks the
    chunks nobody read.
    """

    _CACHE = 4

    def __init__(
        self,
        raw: BinaryIO,
        *,
        key: bytes,
        kind: str | None,
        source: str = "<stream>",
    ) -> None:
        super().__init__()
        key = check_key(key)
        if kind is not None:
            check_kind(kind)
        self._raw = raw
        self._source = source
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._verified: set[int] = set()
        self._pos = 0
        self._expected_kind = kind
        self.failed = False  # set once any check failed, even if a caller swallowed the error
        try:
            self._parse_header(raw, kind)
            self._gcm = _aes.gcm(_file_key(key, self._salt))
            self._chunk(self._n_chunks - 1)
        except DecryptionError:
            raise
        except Exception:
            raise self._error() from None

    def _error(self) -> DecryptionError:
        return decryption_error(self._source, self._expected_kind)

    def _parse_header(self, raw: BinaryIO, kind: str | None) -> None:
        fixed = raw.read(_FIXED.size)
        if len(fixed) != _FIXED.size:
            raise self._error()
        magic, version, kind_len = _FIXED.unpack(fixed)
        rest = raw.read(kind_len + 4 + SALT_SIZE + PREFIX_SIZE)
        if magic != MAGIC or version != FORMAT_VERSION or len(rest) != kind_len + 27:
            raise self._error()
        file_kind = rest[:kind_len].decode("ascii")
        if kind is not None and file_kind != kind:
            raise self._error()
        (chunk_size,) = struct.unpack(">I", rest[kind_len : kind_len + 4])
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise self._error()
        self.kind = file_kind
        self._header = fixed + rest
        self._salt = rest[kind_len + 4 : kind_len + 4 + SALT_SIZE]
        self._prefix = rest[kind_len + 4 + SALT_SIZE :]
        self._chunk_size = chunk_size
        body = raw.seek(0, io.SEEK_END) - len(self._header)
        sealed = chunk_size + TAG_SIZE
        n = max(1, -(-body // sealed))
        last_len = body - (n - 1) * sealed
        if body < TAG_SIZE or last_len < TAG_SIZE or n > MAX_CHUNKS:
            raise self._error()
        self._n_chunks = n
        self._last_plain = last_len - TAG_SIZE
        self._scratch = bytearray(chunk_size + TAG_SIZE)
        self.size = (n - 1) * chunk_size + self._last_plain

    def _chunk_len(self, index: int) -> int:
        return self._last_plain if index == self._n_chunks - 1 else self._chunk_size

    def _sealed(self, index: int) -> tuple[memoryview, bytes]:
        """The sealed bytes of chunk ``index`` (in a reused buffer) and its nonce."""
        size = self._chunk_len(index) + TAG_SIZE
        self._raw.seek(len(self._header) + index * (self._chunk_size + TAG_SIZE))
        view = memoryview(self._scratch)[:size]
        if self._raw.readinto(view) != size:
            self.failed = True
            raise self._error()
        return view, _nonce(self._prefix, index, index == self._n_chunks - 1)

    def _chunk(self, index: int) -> bytes:
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        sealed, nonce = self._sealed(index)
        try:
            plain = self._gcm.open(nonce, sealed, self._header)
        except Exception:
            self.failed = True
            raise self._error() from None
        self._verified.add(index)
        self._cache[index] = plain
        if len(self._cache) > self._CACHE:
            self._cache.popitem(last=False)
        return plain

    def _chunk_into(self, index: int, out: memoryview) -> None:
        """Decrypt a whole chunk straight into the caller's buffer (saves two copies)."""
        sealed, nonce = self._sealed(index)
        try:
            self._gcm.open_into(nonce, sealed, self._header, out)
        except Exception:
            self.failed = True
            raise self._error() from None
        self._verified.add(index)

    @property
    def chunk_size(self) -> int:
        return self._chunk_size

    def verify_all(self) -> None:
        """Authenticate every chunk not yet read; raise :class:`DecryptionError` if any fails."""
        for index in range(self._n_chunks):
            if index not in self._verified:
                self._chunk(index)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readall(self) -> bytes:
        out = bytearray(max(0, self.size - self._pos))
        n = self.readinto(out)
        del out[n:]
        return bytes(out)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        out = memoryview(buffer).cast("B")
        done = 0
        while done < len(out) and self._pos < self.size:
            index, offset = divmod(self._pos, self._chunk_size)
            length = self._chunk_len(index)
            if offset == 0 and len(out) - done >= length and index not in self._cache:
                self._chunk_into(index, out[done : done + length])
                n = length
            else:
                chunk = self._chunk(index)
                n = min(length - offset, len(out) - done)
                out[done : done + n] = memoryview(chunk)[offset : offset + n]
            done += n
            self._pos += n
        return done


def encrypt(
    data: bytes | bytearray | memoryview,
    *,
    key: bytes,
    kind: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> bytes:
    """Seal ``data`` as an artifact of ``kind``; a fresh salt and nonce every call."""
    out = io.BytesIO()
    with EncryptingWriter(out, key=key, kind=kind, chunk_size=chunk_size) as writer:
        writer.write(data)
    return out.getvalue()


def decrypt(
    blob: bytes | bytearray | memoryview,
    *,
    key: bytes,
    kind: str | None,
    source: str = "<bytes>",
) -> bytes:
    """Open what :func:`encrypt` sealed; ``kind=None`` accepts any kind (still authenticated)."""
    reader = DecryptingReader(io.BytesIO(bytes(blob)), key=key, kind=kind, source=source)
    plain = reader.read()
    reader.verify_all()
    return plain
