"""Exponential moving averages of the weights.

After every optimizer step each EMA copy is updated as (METHOD.md §A5, §B5)

    θ⁻ ← β_n θ⁻ + (1 − β_n) θ,     β_n = β                      (no warm-up)
                                    β_n = min(β, (1 + n)/(10 + n)) (warm-up; n = updates so far)

and every copy starts equal to θ. β keeps β^n of the initial weights after n updates (0.999 keeps 13.5% after
2,000 steps; 0.9999 keeps 86% after 1,500), so short runs need the warm-up or a smaller β.
SM takes its bootstrap targets from one EMA (β = 0.999); iSM keeps two (targets 0.95, sampling 0.9999).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """One EMA copy of a model, updated in place with a fused lerp."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, n: int) -> float:
        """β_n for the update that follows n earlier updates."""
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        beta = self.decay_at(self.num_updates)
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        # θ⁻ + (1 − β)(θ − θ⁻) = β θ⁻ + (1 − β) θ
        torch._foreach_lerp_(ema_params, params, 1.0 - beta)
        for ema_buffer, buffer in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_buffer.copy_(buffer)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.model.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["weights"])
        self.num_updates = int(state["num_updates"])
