"""Shared fixtures: tiny configurations that train in seconds on 2 CPU cores."""

from pathlib import Path

import pytest
import torch

from ism.config import RunConfig, load_run

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "config" / "config.yaml"

TINY_OVERRIDES = [
    "model.hidden_size=32",
    "model.depth=2",
    "model.num_heads=2",
    "train.batch_size=28",  # B_sc = 7: one self-consistency row per level
    "train.checkpoint_every=2",
    "train.log_every=1",
    "train.device=cpu",
    "sample.num_images=20",
    "sample.batch_size=10",
]


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(2)


def tiny_run(run: str = "sm", *extra: str) -> RunConfig:
    """The default digits study shrunk to a tiny DiT (a few ms per step)."""
    return load_run(DEFAULT_CONFIG, run, [*TINY_OVERRIDES, *extra])


def train(cfg: RunConfig, *, until_step: int | None = None, **trainer_args):
    """Train ``cfg`` in one call, ``Trainer(cfg, **trainer_args).run(until_step)``; returns its TrainResult."""
    from ism.train import Trainer  # imported here: most tests never train

    return Trainer(cfg, **trainer_args).run(until_step=until_step)
