"""Atomic file writes: a temporary name in the same folder, then ``os.replace`` (never a half-written file)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    return write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())
