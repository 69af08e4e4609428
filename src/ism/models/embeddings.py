"""Embedders of the conditioning inputs: time t, step level k, guidance scale w (scalars) and the class y.

Scalars go through sinusoidal features of their RAW value (t ∈ [0, 1] is not scaled by 1000; k is the integer
level 0 … log2 M), then a 2-layer MLP (METHOD.md §A6):

    φ(v)_i = cos(v · ω_i) ‖ sin(v · ω_i),   ω_i = exp(−ln(P) · i / (D/2)),  i = 0 … D/2 − 1,  P = 10000
    e(v)   = W₂ SiLU(W₁ φ(v) + b₁) + b₂,    W ~ N(0, 0.02²)
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_features(values: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) -> (B, dim) sinusoidal features, always computed in float32 (also under autocast)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=values.device, dtype=torch.float32) / half)
    angles = values.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class ScalarEmbedder(nn.Module):
    """Sinusoidal features of a scalar, then Linear → SiLU → Linear (N(0, 0.02) weights, zero biases)."""

    def __init__(self, hidden_size: int, frequency_dim: int = 256, zero_init_last: bool = False):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        if zero_init_last:  # a new conditioning input that starts as a no-op
            nn.init.zeros_(self.mlp[2].weight)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        features = sinusoidal_features(values, self.frequency_dim)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """A table of num_classes + 1 rows; the last row is the null (CFG-dropped) class ∅.

    Dropout is not done here: the objective decides which rows get y = num_classes.
    """

    def __init__(self, num_classes: int, hidden_size: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, hidden_size)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.table(labels)


class Conditioning(nn.Module):
    """c = e_t(t) + e_k(k) + e_y(y) [+ e_w(w)]; the level and guidance embedders are optional."""

    def __init__(
        self,
        hidden_size: int,
        num_classes: int,
        *,
        level_embedding: bool,
        guidance_embedding: bool,
        frequency_dim: int = 256,
    ):
        super().__init__()
        self.time = ScalarEmbedder(hidden_size, frequency_dim)
        self.level = ScalarEmbedder(hidden_size, frequency_dim) if level_embedding else None
        self.label = LabelEmbedder(num_classes, hidden_size)
        self.guidance = ScalarEmbedder(hidden_size, frequency_dim, zero_init_last=True) if guidance_embedding else None

    def forward(self, t: torch.Tensor, k: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        c = self.time(t) + self.label(y)
        if self.level is not None:
            c = c + self.level(k)
        if self.guidance is not None:
            c = c + self.guidance(w if w is not None else torch.zeros_like(t))
        elif w is not None:
            raise ValueError("this model was built without a guidance input (guidance_embedding=False) but got w")
        return c
