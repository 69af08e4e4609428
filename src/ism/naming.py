"""Names shared by the library and the workflow: samples files, shards, seeded runs and training workdirs.

A samples file is named ``steps<N>``, or ``steps<N>-w<w>`` for a run trained with intrinsic guidance: the file
contract between sampling, evaluation and the report (``results/<run>/samples/<name>.npz``,
``results/<run>/metrics/<name>.json``); the workflow builds its targets from :func:`sample_names`. This module
imports nothing heavy, so the Snakefile and the report import it cheaply.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ism.config import RunConfig

# The guidance part reads what `{w:g}` writes for the scales a study samples (0, 0.5, 1, 1.5, ...).
_NAME = re.compile(r"steps(?P<steps>\d+)(?:-w(?P<w>\d+(?:\.\d+)?))?")


def sample_name(steps: int, w: float | None = None) -> str:
    """``steps<N>``, or ``steps<N>-w<w>`` with guidance scale w (e.g. steps4-w1.5)."""
    return f"steps{steps}" if w is None else f"steps{steps}-w{w:g}"


def parse_sample_name(name: str) -> tuple[int, float | None]:
    """(steps, w) of a name written by :func:`sample_name` (w None without guidance); ValueError otherwise."""
    match = _NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"'{name}' is not a samples file name (steps<N> or steps<N>-w<w>)")
    return int(match["steps"]), None if match["w"] is None else float(match["w"])


def guidance_scales(cfg: RunConfig) -> list[float | None]:
    """The w of a run's files per budget: each sample.guidance scale with intrinsic guidance, else one without."""
    return list(cfg.sample.guidance) if cfg.method.guidance.intrinsic else [None]


def sample_names(cfg: RunConfig) -> list[str]:
    """The names of every samples file of a run: per budget, one per guidance scale."""
    return [sample_name(steps, w) for steps in cfg.sample.budgets for w in guidance_scales(cfg)]


def shard_label(shard: int, num_shards: int) -> str:
    """``shard-<i>-of-<S>``, five digits each (e.g. shard-00003-of-00016): shard i of S of a file."""
    return f"shard-{shard:05d}-of-{num_shards:05d}"


def shard_name(name: str, shard: int, num_shards: int) -> str:
    """Shard i of S of a samples file (``ism sample --shard i --num-shards S``), merged by ``ism merge-samples``."""
    return f"{name}.{shard_label(shard, num_shards)}"


# A run trained once per study seed (pipeline.seeds) is named <run>-seed<s>: a run of its own in every path.
_SEEDED = re.compile(r"(?P<run>.+)-seed(?P<seed>\d+)")


def seeded_run(run: str, seed: int) -> str:
    """``<run>-seed<s>``: run ``run`` trained with train.seed ``seed`` (e.g. ism-seed2)."""
    return f"{run}-seed{seed}"


def split_seeded_run(name: str) -> tuple[str, int | None]:
    """(run, seed) of a name written by :func:`seeded_run`; (name, None) for any other name."""
    match = _SEEDED.fullmatch(name)
    return (name, None) if match is None else (match["run"], int(match["seed"]))


def digest(payload: Any) -> str:
    """A short stable hash of a JSON-able value (16 hex digits of its sorted-keys JSON's SHA-256)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def training_workdir(cfg: RunConfig, root: str | Path = "work") -> Path:
    """``<root>/<run>/<digest of the training identity>``: the resumable state of exactly this configuration.

    More steps (a resumable key) keep the folder and resume; any other training change gets a fresh folder
    instead of checkpoints the trainer must refuse, and switching back finds the old ones again. ``ism train``
    defaults to it and the workflow trains there, so both resume each other's runs. A seeded run
    ``<run>-seed<s>`` trains under ``<run>`` (its seed is in the digest), so ``ism-seed0`` finds the checkpoints
    of ``ism`` trained with seed 0."""
    from ism.config import training_identity

    return Path(root) / split_seeded_run(cfg.name)[0] / digest(training_identity(cfg))
