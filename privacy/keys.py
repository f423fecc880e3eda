"""Where the AES key comes from: a 0600 key file, ``FEDSILO_KEY``, or a passphrase.

Every caller gets its key from :func:`resolve_key`, which tries, in order:

1. the key file it is given (``--key-file``), and nothing else if that file is missing;
2. ``FEDSILO_KEY``: 64 hex characters;
3. ``FEDSILO_PASSPHRASE``: scrypt over the passphrase and a salt file at
   ``$FEDSILO_HOME/salt`` (made on first use; losing it loses the key);
4. the default key file ``$FEDSILO_HOME/key`` (``FEDSILO_HOME`` defaults to ``~/.fedsilo``).

Keys live apart from what they protect: this module remembers which folders hold the key
files in use, and the store refuses to write an artifact there (:func:`check_location`).
Key material is never logged, printed or put in an error message; :func:`key_id` gives a
one-way fingerprint to tell keys apart.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF, scrypt

from . import crypto
from ._fsio import ArtifactNotFoundError, atomic_write, fsync_dir

KEY_ENV = "FEDSILO_KEY"
PASSPHRASE_ENV = "FEDSILO_PASSPHRASE"
HOME_ENV = "FEDSILO_HOME"
KEY_FILE_NAME = "key"
SALT_FILE_NAME = "salt"
# scrypt cost: N=2**17, r=8 is the current OWASP floor (~0.4 s and 128 MiB here). The
# parameters are stored in the salt file, so raising them later keeps old salts working.
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
MIN_PASSPHRASE_CHARS = 8
_HOW_TO_MAKE = (
    "Make one with `fl-server keygen --out PATH` and pass it with --key-file PATH "
    f"(or put it at $FEDSILO_HOME/{KEY_FILE_NAME}), or set {KEY_ENV} to 64 hex characters, "
    f"or set {PASSPHRASE_ENV}."
)

_key_folders_in_use: set[Path] = set()


class KeyNotFoundError(KeyError):
    """No key could be found; the message says how to make one."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


class InsecureKeyFileError(PermissionError):
    """A key file that group or others can read or write."""


class KeyFileError(ValueError):
    """A key file, salt file or key variable that does not hold what it should."""


class KeyFileExistsError(FileExistsError):
    """Refusal to overwrite an existing key file."""


class UnsafeLocationError(ValueError):
    """Refusal to write an artifact into a folder that holds a key file in use."""


def fedsilo_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".fedsilo").expanduser()


def default_key_path() -> Path:
    return fedsilo_home() / KEY_FILE_NAME


def default_salt_path() -> Path:
    return fedsilo_home() / SALT_FILE_NAME


def key_id(key: bytes) -> str:
    """A short one-way fingerprint of ``key``, safe to log, to check two sides agree."""
    digest = HKDF(crypto.check_key(key), 8, b"", SHA256, context=b"fedsilo/key-id/v1")
    return digest.hex()  # type: ignore[union-attr]


def generate_key_file(path: str | Path | None = None) -> Path:
    """Write a new random 256-bit key (hex) to ``path`` (default ``$FEDSILO_HOME/key``).

    The file is created 0600 and never overwritten. Its folder must not already hold
    encrypted artifacts: a key next to what it protects protects nothing.
    """
    path = Path(path).expanduser() if path is not None else default_key_path()
    if path.exists():
        raise KeyFileExistsError(
            f"refusing to overwrite the existing key file {path}: files encrypted with it "
            f"would become unreadable. Pick another path, or rotate keys with "
            f"privacy.keys.rekey_file (see docs/privacy.md)."
        )
    folder = path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if _holds_artifacts(folder):
        raise UnsafeLocationError(
            f"{folder} holds encrypted fedsilo artifacts; keep the key elsewhere "
            f"(e.g. $FEDSILO_HOME/{KEY_FILE_NAME}) so that a copy of the artifacts "
            f"folder does not carry its key."
        )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileExistsError(f"refusing to overwrite the existing key file {path}") from None
    try:
        os.fchmod(fd, 0o600)  # the mode given to open() is filtered by the umask
        os.write(fd, (secrets.token_bytes(crypto.KEY_SIZE).hex() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(folder)
    _remember(path)
    return path


def load_key_file(path: str | Path) -> bytes:
    """Read a key file, refusing one that group or others can access."""
    path = Path(path).expanduser()
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyNotFoundError(f"key file {path} does not exist. {_HOW_TO_MAKE}") from None
    if not path.is_file():
        raise KeyFileError(f"key file {path} is not a regular file")
    if os.name == "posix" and st.st_mode & 0o077:
        raise InsecureKeyFileError(
            f"key file {path} can be accessed by group or others "
            f"(mode {st.st_mode & 0o777:o}); restrict it with: chmod 600 {path}"
        )
    key = _parse_hex(path.read_text(encoding="ascii", errors="replace").strip(), f"key file {path}")
    _remember(path)
    return key


def derive_key(
    passphrase: str, salt: bytes, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
) -> bytes:
    """scrypt(passphrase, salt) -> 32-byte key; the same inputs always give the same key."""
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise KeyFileError(f"a passphrase needs at least {MIN_PASSPHRASE_CHARS} characters")
    if len(salt) < 16:
        raise KeyFileError("a scrypt salt needs at least 16 bytes")
    key = scrypt(passphrase.encode("utf-8"), salt, crypto.KEY_SIZE, N=n, r=r, p=p)
    return key  # type: ignore[return-value]


def load_or_create_salt(path: str | Path | None = None) -> tuple[bytes, dict[str, int]]:
    """The passphrase salt and scrypt parameters, creating the salt file on first use."""
    path = Path(path).expanduser() if path is not None else default_salt_path()
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        record = {
            "format": "fedsilo-scrypt-salt",
            "version": 1,
            "salt": secrets.token_bytes(16).hex(),
            "n": SCRYPT_N,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
        }
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: use theirs
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(record, handle)
                handle.flush()
                os.fsync(handle.fileno())
            fsync_dir(path.parent)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        salt = bytes.fromhex(record["salt"])
        params = {name: int(record[name]) for name in ("n", "r", "p")}
    except (ValueError, KeyError, TypeError):
        raise KeyFileError(
            f"salt file {path} is damaged; without it the passphrase cannot give back the key"
        ) from None
    return salt, params


def key_source(key_file: str | Path | None = None) -> str:
    """Which source :func:`resolve_key` would use, in words (no key material)."""
    if key_file is not None:
        return f"key file {Path(key_file).expanduser()}"
    if os.environ.get(KEY_ENV):
        return f"environment variable {KEY_ENV}"
    if os.environ.get(PASSPHRASE_ENV):
        return f"passphrase in {PASSPHRASE_ENV} with salt file {default_salt_path()}"
    return f"default key file {default_key_path()}"


def resolve_key(key_file: str | Path | None = None) -> bytes:
    """The key every command uses: explicit key file > FEDSILO_KEY > FEDSILO_PASSPHRASE >
    default key file. Raises :class:`KeyNotFoundError` saying how to make one."""
    if key_file is not None:
        return load_key_file(key_file)
    hex_key = os.environ.get(KEY_ENV)
    if hex_key:
        return _parse_hex(hex_key.strip(), f"environment variable {KEY_ENV}")
    passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase:
        salt, params = load_or_create_salt()
        return derive_key(passphrase, salt, **params)
    default = default_key_path()
    if default.exists():
        return load_key_file(default)
    raise KeyNotFoundError(
        f"no key found (looked at {KEY_ENV}, {PASSPHRASE_ENV}, {default}). {_HOW_TO_MAKE}"
    )


def key_folders_in_use() -> frozenset[Path]:
    """Folders holding a key file this process generated or loaded, plus the default one."""
    folders = set(_key_folders_in_use)
    if default_key_path().exists():
        folders.add(default_key_path().parent.resolve())
    return frozenset(folders)


def check_location(path: str | Path) -> None:
    """Refuse to write an artifact into a folder that holds a key file in use."""
    folder = Path(path).expanduser().absolute().parent.resolve()
    if folder in key_folders_in_use():
        raise UnsafeLocationError(
            f"refusing to write {path}: its folder {folder} holds the key file in use, and a "
            f"key stored next to what it protects protects nothing. Write artifacts elsewhere."
        )


def rekey_file(path: str | Path, old_key: bytes, new_key: bytes) -> None:
    """Re-encrypt ``path`` under ``new_key``, atomically, keeping its kind and content.

    The old file stays in place until the new one is complete and synced; if the old key
    does not open it, :class:`~privacy.crypto.DecryptionError` and nothing changes.
    """
    path = Path(path)
    old_key, new_key = crypto.check_key(old_key), crypto.check_key(new_key)
    try:
        src = path.open("rb")
    except FileNotFoundError:
        raise ArtifactNotFoundError(f"no such encrypted file: {path}") from None
    with src:
        reader = crypto.DecryptingReader(src, key=old_key, kind=None, source=str(path))
        with atomic_write(path) as dst:
            writer = crypto.EncryptingWriter(
                dst, key=new_key, kind=reader.kind, chunk_size=reader.chunk_size
            )
            try:
                buffer = bytearray(reader.chunk_size)
                while n := reader.readinto(buffer):
                    writer.write(memoryview(buffer)[:n])
                reader.verify_all()
            except BaseException:
                writer.abort()
                raise
            writer.close()


def is_encrypted_file(path: str | Path) -> bool:
    """Whether ``path`` starts like a fedsilo encrypted file (no key needed, nothing checked)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(crypto.MAGIC)) == crypto.MAGIC
    except OSError:
        return False


def rekey_tree(folder: str | Path, old_key: bytes, new_key: bytes) -> list[Path]:
    """Rotate every fedsilo encrypted file under ``folder`` to ``new_key``.

    Every file is first checked to open with ``old_key``; if one does not, a
    :class:`~privacy.crypto.DecryptionError` names it and no file is changed.
    """
    old_key, new_key = crypto.check_key(old_key), crypto.check_key(new_key)
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and is_encrypted_file(p))
    for path in files:
        with path.open("rb") as src:
            crypto.DecryptingReader(src, key=old_key, kind=None, source=str(path)).verify_all()
    for path in files:
        rekey_file(path, old_key, new_key)
    return files


def _parse_hex(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != crypto.KEY_SIZE:
        # Never echo the value: it may be a real key with a typo.
        raise KeyFileError(f"{where} must hold exactly {2 * crypto.KEY_SIZE} hex characters")
    return key


def _remember(path: Path) -> None:
    _key_folders_in_use.add(path.absolute().parent.resolve())


def _holds_artifacts(folder: Path, limit: int = 2000) -> bool:
    try:
        entries = list(os.scandir(folder))[:limit]
    except OSError:
        return False
    return any(
        entry.is_file(follow_symlinks=False) and is_encrypted_file(entry.path) for entry in entries
    )
