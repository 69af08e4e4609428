"""Device selection, autocast and seeds derived from counters (no hidden RNG state to save)."""

from __future__ import annotations

import contextlib
import hashlib

import torch

from ism.config import device_name_problem
from ism.errors import ConfigError


def select_device(
    name: str = "auto", local_rank: int | None = None, *, source: str = "config key 'train.device'"
) -> torch.device:
    """'auto' picks a CUDA device when there is one (the process's own under DDP), else the CPU;
    'cuda…' without a GPU is an error naming ``source`` (the config key, or e.g. ``--device``)."""
    problem = device_name_problem(name)
    if problem:
        raise ConfigError(f"{source}: {problem}")
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", (local_rank or 0) % torch.cuda.device_count())
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{source}: '{name}' was requested but no CUDA device is visible (use auto or cpu)")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    """bf16 autocast for the forward passes when asked; a no-op context for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def derived_seed(*parts: int | str) -> int:
    """A 63-bit seed from parts, e.g. ("step", seed, step): collision-free in practice, unlike seed * C + step."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def step_generator(device: torch.device, seed: int, step: int) -> torch.Generator:
    """The generator of training step ``step``: every rank and the dry run (``ism layout``) draw the same layout."""
    return seeded_generator(device, "step", seed, step)


def seeded_generator(device: torch.device, *parts: int | str) -> torch.Generator:
    """A generator on ``device`` seeded from ``parts``: every draw of step s is a function of (seed, s) alone."""
    return torch.Generator(device=device).manual_seed(derived_seed(*parts))
