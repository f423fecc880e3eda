"""Atomic file replacement: a crash at any point leaves either the old file or the new one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"


class ArtifactNotFoundError(FileNotFoundError):
    """An artifact (checkpoint, ledger, ...) that should exist does not; names the path."""


@contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """Yield a file to write ``path``'s new content into.

    The content goes to a temporary file in the same folder (so the rename cannot cross
    file systems), which is flushed and fsynced, renamed over ``path``, and then the folder
    is fsynced so the rename itself survives a power cut. If the block raises, the
    temporary file is removed and ``path`` is untouched. The file is created 0600.
    """
    path = Path(path)
    folder = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    # Not every platform lets a directory be opened (Windows); there the rename is all we get.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
