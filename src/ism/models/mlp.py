"""An MLP backbone for vector data (the 2-D toy sets), conditioned on (t, k, y[, w]) in every block.

c = e_t(t) + e_k(k) + e_y(y) [+ e_w(w)]
h ← W_in x
block: (β, γ) = Linear(SiLU(c));   h ← h + W₂ SiLU(W₁ (LN(h) · (1 + γ) + β))
out  = W_out SiLU(LN(h))                  (W_out zero-initialised: an untrained model outputs 0)
"""

from __future__ import annotations

import torch
from torch import nn

from ism.models.embeddings import Conditioning


class ResidualBlock(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.body = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(c).chunk(2, dim=1)
        return h + self.body(self.norm(h) * (1 + scale) + shift)


class MLPBackbone(nn.Module):
    def __init__(
        self,
        *,
        dim: int,
        num_classes: int,
        hidden_size: int = 256,
        depth: int = 4,
        embed_dim: int = 64,
        level_embedding: bool = True,
        guidance_embedding: bool = False,
    ):
        super().__init__()
        self.conditioning = Conditioning(
            hidden_size,
            num_classes,
            level_embedding=level_embedding,
            guidance_embedding=guidance_embedding,
            frequency_dim=embed_dim,
        )
        self.input = nn.Linear(dim, hidden_size)
        self.blocks = nn.ModuleList(ResidualBlock(hidden_size) for _ in range(depth))
        self.out_norm = nn.LayerNorm(hidden_size, elementwise_affine=False)
        self.output = nn.Linear(hidden_size, dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        k: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor | None = None,
    ) -> torch.Tensor:
        c = self.conditioning(t, k, y, w)
        h = self.input(x)
        for block in self.blocks:
            h = block(h, c)
        return self.output(torch.nn.functional.silu(self.out_norm(h)))
