"""Backbones with the common call ``model(x, t, k, y, w=None)`` -> average velocity, same shape as x."""

from __future__ import annotations

from typing import Any

from torch import nn

from ism.config import DIT_PRESETS, NETWORK_KEYS, RunConfig
from ism.models.dit import DiT
from ism.models.mlp import MLPBackbone

__all__ = ["DIT_PRESETS", "DiT", "MLPBackbone", "build_model", "build_network", "count_parameters"]

# Conditioning switches every backbone takes on top of its config keys.
_EMBEDDING_KEYS = ("level_embedding", "guidance_embedding")


def build_model(arch: str, *, sample_shape: tuple[int, ...], num_classes: int, **kwargs: Any) -> nn.Module:
    """A backbone for samples of ``sample_shape`` ((C, H, W) images for 'dit', (D,) vectors for 'mlp').

    ``kwargs`` are resolved sizes (``ModelConfig.network_kwargs``, where presets are applied), not a preset name.
    """
    if arch == "dit":
        if len(sample_shape) != 3 or sample_shape[1] != sample_shape[2]:
            raise ValueError(f"the DiT needs square (C, H, W) samples, got shape {sample_shape}")
        _check_keys(arch, kwargs)
        return DiT(input_size=sample_shape[1], in_channels=sample_shape[0], num_classes=num_classes, **kwargs)
    if arch == "mlp":
        if len(sample_shape) != 1:
            raise ValueError(f"the MLP backbone needs vector (D,) samples, got shape {sample_shape}")
        _check_keys(arch, kwargs)
        return MLPBackbone(dim=sample_shape[0], num_classes=num_classes, **kwargs)
    raise ValueError(f"unknown model arch '{arch}' (choose 'dit' or 'mlp')")


def _check_keys(arch: str, kwargs: dict[str, Any]) -> None:
    allowed = {*NETWORK_KEYS[arch], *_EMBEDDING_KEYS}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"{arch} does not take {unknown} (it takes {sorted(allowed)})")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_network(cfg: RunConfig, sample_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The backbone a run's config describes (what training builds and sampling rebuilds from a model file)."""
    return build_model(
        cfg.model.arch,
        sample_shape=tuple(sample_shape),
        num_classes=num_classes,
        **cfg.model.network_kwargs(level_embedding=cfg.method.uses_levels),
        guidance_embedding=cfg.method.guidance.intrinsic,
    )
