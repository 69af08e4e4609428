"""DiT conditioned on (t, k, y[, w]) through adaLN, as in the shortcut-model release (METHOD.md §A6).

    tokens  = PatchEmbed(x) + pos2d                         (p × p patches, fixed 2-D sin-cos positions)
    c       = e_t(t) + e_k(k) + e_y(y) [+ e_w(w)]
    block:  (β₁, γ₁, α₁, β₂, γ₂, α₂) = Linear(SiLU(c))
            h ← h + α₁ · Attn(LN(h) · (1 + γ₁) + β₁)
            h ← h + α₂ · MLP(LN(h) · (1 + γ₂) + β₂)        (LN without affine parameters, eps 1e-6)
    output  = Linear(LN(h) · (1 + γ) + β), unpatchified to the input's shape (zero-initialised)

The release's two departures from DiT are switches: attention logits scaled by 1/head_dim (not 1/√head_dim),
and per-block modulation initialised xavier-uniform (not zero, "adaLN-Zero").
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ism.models.embeddings import Conditioning


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) -> (N, dim): sin ‖ cos of positions at frequencies 1/10000^(2i/dim)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double()[:, None] * omega[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d(grid_size: int, dim: int) -> torch.Tensor:
    """(grid², dim) fixed positions: half the channels encode the row, half the column."""
    coords = torch.arange(grid_size)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    table = torch.cat([sincos_1d(rows.flatten(), dim // 2), sincos_1d(cols.flatten(), dim // 2)], dim=1)
    return table.float()


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, scale: Literal["head_dim", "sqrt_head_dim"]):
        super().__init__()
        self.num_heads = num_heads
        head_dim = hidden_size // num_heads
        self.scale = 1.0 / head_dim if scale == "head_dim" else head_dim**-0.5
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DiTBlock(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, attention_scale: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, attention_scale)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        inner = int(hidden_size * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, inner), nn.GELU(approximate="tanh"), nn.Linear(inner, hidden_size)
        )
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=1)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """Diffusion transformer returning the average velocity s_θ(x_t, t, d = 2^-k, y[, w])."""

    def __init__(
        self,
        *,
        input_size: int,
        in_channels: int,
        num_classes: int,
        patch_size: int = 2,
        hidden_size: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        level_embedding: bool = True,
        guidance_embedding: bool = False,
        attention_scale: Literal["head_dim", "sqrt_head_dim"] = "head_dim",
        block_modulation_init: Literal["xavier", "zero"] = "xavier",
    ):
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not divisible by patch_size {patch_size}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        if hidden_size % 4:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by 4 (2-D sin-cos positions)")
        if attention_scale not in ("head_dim", "sqrt_head_dim"):
            raise ValueError(f"attention_scale '{attention_scale}' is not 'head_dim' or 'sqrt_head_dim'")
        if block_modulation_init not in ("xavier", "zero"):
            raise ValueError(f"block_modulation_init '{block_modulation_init}' is not 'xavier' or 'zero'")
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.grid = input_size // patch_size
        self.patch_embed = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.register_buffer("pos_embed", sincos_2d(self.grid, hidden_size)[None], persistent=False)
        self.conditioning = Conditioning(
            hidden_size, num_classes, level_embedding=level_embedding, guidance_embedding=guidance_embedding
        )
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, mlp_ratio, attention_scale) for _ in range(depth))
        self.final = FinalLayer(hidden_size, patch_size, in_channels)
        self._init_weights(block_modulation_init)

    def _init_weights(self, block_modulation_init: str) -> None:
        for block in self.blocks:
            for layer in (block.attn.qkv, block.attn.proj, block.mlp[0], block.mlp[2], block.modulation[1]):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
            if block_modulation_init == "zero":
                nn.init.zeros_(block.modulation[1].weight)
        weight = self.patch_embed.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        for layer in (self.final.modulation[1], self.final.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        b, p, g, c = tokens.shape[0], self.patch_size, self.grid, self.in_channels
        x = tokens.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, c, g * p, g * p)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        k: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        c = self.conditioning(t, k, y, w)
        for block in self.blocks:
            h = block(h, c)
        return self.unpatchify(self.final(h, c))
