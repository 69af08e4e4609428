"""The learning rate at each optimizer step (train.lr_schedule, train.warmup_steps, train.final_lr_fraction).

With η = train.lr, W = train.warmup_steps, T = train.steps and η_min = final_lr_fraction · η, step t (0-based)
updates with

    η_t = η · (t + 1) / W                                           t < W          (linear warm-up)
    η_t = η                                                          t ≥ W, constant (the SM release)
    η_t = η_min + ½ (η − η_min) (1 + cos(π (t − W) / (T − W)))       t ≥ W, cosine

A constant rate without warm-up leaves the optimizer's rate untouched (bit for bit the trainer before this
module). Cosine decay ends at step T, so it makes ``train.steps`` part of the training identity: a run of more
steps is another schedule from its first step and cannot resume a shorter one (ism.config.training_identity).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ism.config import TrainConfig


def is_scheduled(train: TrainConfig) -> bool:
    """Whether the rate ever differs from train.lr (else the optimizer keeps its own)."""
    return train.lr_schedule != "constant" or train.warmup_steps > 0


def learning_rate(train: TrainConfig, step: int) -> float:
    """η_t of step ``step`` (0-based), by the equations of the module docstring."""
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    if train.lr_schedule == "constant":
        return train.lr
    low = train.final_lr_fraction * train.lr
    progress = (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps)
    return low + 0.5 * (train.lr - low) * (1 + math.cos(math.pi * min(1.0, progress)))


def set_learning_rate(optimizer: torch.optim.Optimizer, train: TrainConfig, step: int) -> None:
    """Give every parameter group η_t before step ``step``'s update (nothing when the rate is constant)."""
    if is_scheduled(train):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(train, step)
