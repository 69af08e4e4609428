"""The pixel convention shared by training, sampling and evaluation.

Models see float32 pixels in [-1, 1]: ``x / 127.5 - 1`` for uint8 ``x``. The inverse rounds to the nearest
uint8, so ``model_to_uint8(uint8_to_model(x)) == x`` exactly for every uint8 value.
"""

from __future__ import annotations

import numpy as np
import torch


def uint8_to_model(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (any shape) -> float32 in [-1, 1]."""
    if x.dtype != torch.uint8:
        # A float input here would be scaled twice without any visible error downstream.
        raise TypeError(f"uint8_to_model expects a uint8 tensor, got {x.dtype}")
    return x.to(torch.float32) / 127.5 - 1.0


def model_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Model-space pixels -> uint8, rounding to nearest and clipping values outside [-1, 1]."""
    return ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def nchw_to_nhwc_uint8(x: torch.Tensor) -> np.ndarray:
    """A model-space (N, C, H, W) batch -> a uint8 (N, H, W, C) numpy array, the ADM ``.npz`` sample layout.

    C must be 1 or 3 and is kept as is: grayscale batches stay (N, H, W, 1).
    """
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected an (N, C, H, W) batch with C = 1 or 3, got shape {tuple(x.shape)}")
    return model_to_uint8(x.detach().cpu()).permute(0, 2, 3, 1).contiguous().numpy()
