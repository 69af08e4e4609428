"""Matplotlib figures as PNG bytes, off-screen: the FID plot, the training curves and the 2-D sample scatter."""

from __future__ import annotations

import io
from typing import Any


def axes(figsize: tuple[float, float]) -> tuple[Any, Any]:
    """(figure, axes) on the non-interactive Agg backend (jobs have no display); matplotlib loads only here."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)


def png_bytes(fig: Any, *, dpi: int, tight: bool = True) -> bytes:
    """The figure as PNG bytes (laid out tightly unless ``tight`` is False); the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    if tight:
        fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()
