"""One writer per training workdir (DESIGN D10): an OS lock on ``<workdir>/.lock``, held for the trainer's life.

``flock`` locks belong to the open file: the kernel releases them when the process dies, however it dies, so a
killed trainer never leaves a stale lock, and a second trainer on the same ``work/<run>/<digest>/`` (a rerun while an
orphaned job still runs) stops at once with one line naming the holder instead of interleaving checkpoints.
On a cluster the workdir must be on a filesystem with working ``flock`` (NFSv4, Lustre with ``-o flock``, GPFS).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from ism.errors import WorkdirBusyError

LOCK_NAME = ".lock"


@contextlib.contextmanager
def exclusive_workdir(workdir: str | Path) -> Iterator[Path]:
    """Hold the workdir's lock for the block; raise WorkdirBusyError if another process holds it."""
    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise WorkdirBusyError(
                f"training workdir '{folder}' is in use by another trainer ({holder}); wait for it to end or stop "
                "it, then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield folder
    finally:
        os.close(fd)  # closing the descriptor releases the lock
