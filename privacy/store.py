"""Encrypted, atomic save and load of state dicts and JSON-able objects.

Inside the encrypted envelope (see :mod:`privacy.crypto`) a file holds::

    info length  4 bytes, big-endian
    info         JSON: kind, format_version, created (UTC ISO), payload ("torch"|"json"),
                 metadata (the caller's: model spec, round, metrics, ...)
    payload      torch.save bytes, or UTF-8 JSON

The info comes first so :func:`read_info` can describe a file (for ``inspect``) without
deserializing the payload: it never unpickles anything and never returns weights.

Writes stream through the encryptor into a temporary file that is fsynced and renamed
over the target, so a crash leaves the previous file intact and memory never holds the
serialized model twice. Loads decrypt only the chunks ``torch.load`` asks for, then check
every other chunk before returning anything.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from . import crypto, keys
from ._fsio import ArtifactNotFoundError, atomic_write
from .crypto import DecryptionError

__all__ = [
    "ARTIFACT_KINDS",
    "ArtifactFormatError",
    "ArtifactNotFoundError",
    "DecryptionError",
    "atomic_write",
    "load_json",
    "load_state",
    "read_info",
    "save_json",
    "save_state",
]

ARTIFACT_KINDS = (
    "checkpoint",
    "model",
    "update",
    "export",
    "ledger",
    "json",
    "history",
    "layers",  # a silo's own weights in a run (fl_client.personal)
)
STORE_VERSION = 1
_LEN = struct.Struct(">I")
_MAX_INFO_BYTES = 1 << 24


class ArtifactFormatError(DecryptionError):
    """The file decrypted and is authentic, but holds another payload than asked for
    (e.g. JSON where a state dict was expected). A :class:`DecryptionError`, so callers
    that catch "cannot use this file" catch it too."""


def save_state(
    path: str | Path,
    state: Any,
    *,
    key: bytes,
    kind: str,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Encrypt ``torch.save(state)`` to ``path`` atomically; returns the path.

    ``state`` is anything ``torch.load(weights_only=True)`` accepts back: a state dict,
    a quantized model's state dict, or a nested dict of those with plain values.
    """
    import torch  # here, not at the top: key, ledger and JSON files need no torch

    return _write(path, key, kind, "torch", metadata, lambda out: torch.save(state, out))


def load_state(path: str | Path, *, key: bytes, kind: str) -> tuple[Any, dict[str, Any]]:
    """Decrypt and load what :func:`save_state` wrote: ``(state, metadata)``, where
    ``metadata`` is the caller's dict given at save time (:func:`read_info` has the rest).
    Tensors land on the CPU."""
    import torch

    with _opened(path, key, kind) as (reader, info, offset):
        _expect_payload(info, "torch", path)
        try:
            # weights_only=True works for quantized int8 state dicts in torch >= 2.4, so no
            # pickle code runs even though the bytes are already authenticated by our key.
            state = torch.load(_Window(reader, offset), map_location="cpu", weights_only=True)
        except Exception as exc:
            if reader.failed or isinstance(exc, DecryptionError):
                raise crypto.decryption_error(str(path), kind) from None
            raise ArtifactFormatError(
                f"{path} decrypted but torch.load(weights_only=True) refused its content "
                f"({type(exc).__name__}: {exc}); it holds objects other than tensors and "
                f"plain containers"
            ) from exc
        reader.verify_all()
    return state, info["metadata"]


def save_json(
    path: str | Path,
    obj: Any,
    *,
    key: bytes,
    kind: str = "json",
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Encrypt a JSON-able object to ``path`` atomically; returns the path."""
    payload = _to_json(obj, "the object").encode("utf-8")
    return _write(path, key, kind, "json", metadata, lambda out: out.write(payload))


def load_json(path: str | Path, *, key: bytes, kind: str = "json") -> tuple[Any, dict[str, Any]]:
    """Decrypt what :func:`save_json` wrote: ``(object, metadata)``."""
    with _opened(path, key, kind) as (reader, info, offset):
        _expect_payload(info, "json", path)
        reader.seek(offset)
        raw = reader.read()
        reader.verify_all()
    try:
        return json.loads(raw.decode("utf-8")), info["metadata"]
    except ValueError as exc:
        raise ArtifactFormatError(f"{path} decrypted but does not hold valid JSON") from exc


def read_info(path: str | Path, *, key: bytes) -> dict[str, Any]:
    """Describe an encrypted file without deserializing its payload.

    Returns ``path``, ``kind``, ``format_version``, ``created``, ``payload``, ``metadata``
    and ``size_bytes``. Every chunk is still authenticated (and discarded), so a file this
    accepts is a file :func:`load_state` / :func:`load_json` will open.
    """
    with _opened(path, key, None) as (reader, info, _):
        reader.verify_all()
    return {
        "path": str(path),
        "kind": info["kind"],
        "format_version": info["format_version"],
        "created": info["created"],
        "payload": info["payload"],
        "metadata": info["metadata"],
        "size_bytes": Path(path).stat().st_size,
    }


# --- internals ------------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in ARTIFACT_KINDS:
        raise ValueError(f"artifact kind {kind!r} is not one of {', '.join(ARTIFACT_KINDS)}")


def _to_json(obj: Any, what: str) -> str:
    try:
        # Keep the caller's key order: it can carry meaning (a schema's features are
        # its column order), and sorting would silently reorder them on load.
        return json.dumps(obj)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-able: {exc}") from None


def _write(
    path: str | Path,
    key: bytes,
    kind: str,
    payload: str,
    metadata: dict[str, Any] | None,
    write_payload: Callable[[BinaryIO], object],
) -> Path:
    key = crypto.check_key(key)
    _check_kind(kind)
    path = Path(path)
    keys.check_location(path)
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    info = {
        "kind": kind,
        "format_version": crypto.FORMAT_VERSION,
        "store_version": STORE_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "payload": payload,
        "metadata": metadata or {},
    }
    info_bytes = _to_json(info, "metadata").encode("utf-8")
    if len(info_bytes) > _MAX_INFO_BYTES:
        raise ValueError(f"metadata for {path} is too large ({len(info_bytes)} bytes)")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with atomic_write(path) as raw:
        writer = crypto.EncryptingWriter(raw, key=key, kind=kind)
        try:
            writer.write(_LEN.pack(len(info_bytes)) + info_bytes)
            write_payload(writer)  # type: ignore[arg-type]
        except BaseException:
            writer.abort()
            raise
        writer.close()
    return path


@contextmanager
def _opened(
    path: str | Path, key: bytes, kind: str | None
) -> Iterator[tuple[crypto.DecryptingReader, dict[str, Any], int]]:
    key = crypto.check_key(key)
    if kind is not None:
        _check_kind(kind)
    path = Path(path)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        what = f"{kind} file" if kind else "encrypted file"
        raise ArtifactNotFoundError(f"no {what} at {path}") from None
    with handle:
        reader = crypto.DecryptingReader(handle, key=key, kind=kind, source=str(path))
        head = reader.read(_LEN.size)
        (length,) = _LEN.unpack(head) if len(head) == _LEN.size else (_MAX_INFO_BYTES + 1,)
        try:
            if length > _MAX_INFO_BYTES:
                raise ValueError("info too large")
            info = json.loads(reader.read(length).decode("utf-8"))
            if not isinstance(info, dict) or info.get("kind") != reader.kind:
                raise ValueError("info does not match the envelope")
        except DecryptionError:
            raise
        except ValueError:
            raise ArtifactFormatError(f"{path} decrypted but is not a fedsilo store file") from None
        yield reader, info, _LEN.size + length


def _expect_payload(info: dict[str, Any], payload: str, path: str | Path) -> None:
    if info.get("payload") != payload:
        other = {"torch": "load_state", "json": "load_json"}.get(info.get("payload", ""), "?")
        raise ArtifactFormatError(
            f"{path} holds a {info.get('payload')!r} payload, not {payload!r}; open it with {other}"
        )


class _Window(io.RawIOBase):
    """The decrypted stream seen from ``offset`` on, so torch.load sees only the payload."""

    def __init__(self, reader: crypto.DecryptingReader, offset: int) -> None:
        super().__init__()
        self._reader = reader
        self._offset = offset
        reader.seek(offset)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._reader.tell() - self._offset

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            return self._reader.seek(self._offset + offset) - self._offset
        return self._reader.seek(offset, whence) - self._offset

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        return self._reader.readinto(buffer)
