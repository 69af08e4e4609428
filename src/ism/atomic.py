"""Atomic file writes: every writer of ism goes through :func:`atomic_path`, so no file is ever half-written.

The data goes to a hidden temporary name in the destination's folder (``.NAME.tmp-PID``: same file system, so the
rename is atomic, and hidden, so no reader globs it), is fsynced, and is renamed over the destination with
``os.replace``. A crash leaves the old file or the new one, never a mixture; an exception removes the temporary.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def temporary_name(path: str | Path) -> Path:
    """The hidden temporary file next to ``path`` that this process writes before renaming it into place."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on success it replaces ``path``.

    The body must create the temporary file. On leaving without an exception the file is fsynced, renamed over
    ``path`` and the folder fsynced (so the rename survives a power cut); on an exception the temporary file is
    removed and ``path`` keeps its old content. The destination's folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON with sorted keys (stable bytes for equal payloads), atomically."""
    return write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def _fsync_file(path: Path) -> None:
    with path.open("rb+") as f:
        os.fsync(f.fileno())


def _fsync_folder(folder: Path) -> None:
    """Persist the folder entry of a rename; best effort, as some file systems refuse to fsync a folder."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
