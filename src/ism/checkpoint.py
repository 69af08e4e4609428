"""Safe, atomic checkpoint files.

Writers go through :func:`ism.atomic.atomic_path` (a temporary name in the same folder, fsync, ``os.replace``), so a
reader never sees a half-written file; readers use ``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from ism.atomic import atomic_path
from ism.errors import CheckpointError

log = logging.getLogger(__name__)

# The final model file written by training and read by sampling (resumable ckpt-*.pt files are another format).
MODEL_FORMAT = "ism-model-v1"
_CKPT_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save to ``path`` atomically (:func:`ism.atomic.atomic_path`: a crash leaves the old file or the new)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; one clear error for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"checkpoint '{path}' is unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint '{path}' does not hold a dictionary")
    return state


def checkpoint_path(folder: str | Path, step: int) -> Path:
    return Path(folder) / f"ckpt-{step:08d}.pt"


def list_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the resumable checkpoints in ``folder``, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_NAME.match(p.name))]
    return sorted(found, reverse=True)


def newest_valid_checkpoint(folder: str | Path, map_location: str | torch.device = "cpu"):
    """The newest checkpoint in ``folder`` that loads, as (path, state); None when there is none.

    A corrupt newest file (e.g. a disk filled up mid-write outside our atomic writer) is skipped with a warning,
    and the next older one is used.
    """
    for _, path in list_checkpoints(folder):
        try:
            return path, safe_load(path, map_location)
        except CheckpointError as err:
            log.warning("skipping %s", err)
    return None


def prune_checkpoints(folder: str | Path, keep: int) -> None:
    for _, path in list_checkpoints(folder)[keep:]:
        path.unlink(missing_ok=True)
