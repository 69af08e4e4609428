"""Training curves of a study: every run's training loss against its step, one line per run, in one figure.

Each run's training log is dvclive's (``ism launch --live-dir models/<run>/train_log``, every ``train.log_every``
steps): one TSV per metric with a ``step`` column, the total loss in ``plots/metrics/train/loss.tsv``. The figure
has whatever runs are asked for; a run without a log (not trained through the workflow) has no line.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ism.atomic import write_bytes
from ism.errors import DataError
from ism.figures import axes, png_bytes

log = logging.getLogger(__name__)

# Where a run's total training loss is, under its model folder (models/<run>).
LOSS_LOG = Path("train_log", "plots", "metrics", "train", "loss.tsv")


def read_loss(path: str | Path) -> tuple[list[int], list[float]]:
    """(steps, losses) of a dvclive metric TSV (columns ``step`` and ``loss``, tab-separated)."""
    header, *records = Path(path).read_text().splitlines() or [""]
    columns = header.split("\t")
    if "step" not in columns or "loss" not in columns:
        raise DataError(f"training log {path}: needs the columns 'step' and 'loss' (found {columns})")
    step, loss = columns.index("step"), columns.index("loss")
    try:
        rows = [record.split("\t") for record in records if record]
        return [int(fields[step]) for fields in rows], [float(fields[loss]) for fields in rows]
    except (IndexError, ValueError) as err:
        raise DataError(f"training log {path}: a row is not a step and a loss ({err})") from None


def training_losses(models: str | Path, runs: list[str]) -> dict[str, tuple[list[int], list[float]]]:
    """{run: (steps, losses)} in ``runs`` order, for the runs with a training log under ``models/<run>``."""
    losses = {}
    for run in runs:
        path = Path(models) / run / LOSS_LOG
        if path.is_file():
            losses[run] = read_loss(path)
        else:
            log.warning("run '%s' has no training log (%s): no curve", run, path)
    return losses


def plot_training_losses(losses: dict[str, tuple[list[int], list[float]]], path: str | Path) -> Path:
    """A PNG of the loss against the step, one line per run (log-scaled loss when every value is positive)."""
    fig, ax = axes(figsize=(6, 4))
    for run, (steps, values) in losses.items():
        ax.plot(steps, values, marker="." if len(steps) < 50 else None, label=run)
    if losses and all(v > 0 for _, values in losses.values() for v in values):
        ax.set_yscale("log")
    if losses:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no training logs", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss")
    ax.grid(True, which="both", alpha=0.3)
    return write_bytes(Path(path), png_bytes(fig, dpi=120))


def write_curves(models: str | Path, runs: list[str], out: str | Path) -> Path:
    """The training-loss figure of ``runs`` (logs under ``models``) written to ``out``."""
    return plot_training_losses(training_losses(models, runs), out)
