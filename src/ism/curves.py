"""Training curves of a study: every run's training loss against its step, one line per run, in one figure.

Each run's training log is dvclive's (``ism launch --live-dir models/<run>/train_log``, every ``train.log_every``
steps): one TSV per metric with a ``step`` column, the total loss in ``plots/metrics/train/loss.tsv``. The figure
has whatever runs are asked for; a run without a log (not trained through the workflow) has no line. A run trained
once per seed (``<run>-seed<s>``, pipeline.seeds) is one line, the mean over its seeds, in a band from the lowest
to the highest seed, as the report pools its FIDs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ism.atomic import write_bytes
from ism.errors import DataError
from ism.figures import axes, png_bytes
from ism.naming import split_seeded_run

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


@dataclass(frozen=True)
class Curve:
    """A run's loss at each step: the mean over its ``seeds`` training seeds, between ``low`` and ``high`` (the
    lowest and highest seed; all three equal for one seed)."""

    steps: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    seeds: int


def pooled_curves(losses: dict[str, tuple[list[int], list[float]]]) -> dict[str, Curve]:
    """{run: Curve} in first-seen order: the seeded runs ``<run>-seed<s>`` of one run pooled under ``<run>`` at the
    steps every seed logged; any other run is a curve of its own."""
    groups: dict[str, list[tuple[list[int], list[float]]]] = {}
    for name, log in losses.items():
        run, seed = split_seeded_run(name)
        groups.setdefault(run if seed is not None else name, []).append(log)
    curves = {}
    for run, logs in groups.items():
        common = set.intersection(*(set(steps) for steps, _ in logs))
        steps = [step for step in logs[0][0] if step in common]
        values = np.array([[dict(zip(*log, strict=True))[step] for step in steps] for log in logs]).reshape(
            len(logs), len(steps)
        )
        curves[run] = Curve(
            steps, values.mean(0).tolist(), values.min(0).tolist(), values.max(0).tolist(), seeds=len(logs)
        )
    return curves


def plot_training_losses(losses: dict[str, tuple[list[int], list[float]]], path: str | Path) -> Path:
    """A PNG of the loss against the step, one line per run (seeds pooled: :func:`pooled_curves`), log-scaled when
    every value is positive."""
    curves = pooled_curves(losses)
    fig, ax = axes(figsize=(6, 4))
    for run, curve in curves.items():
        label = run if curve.seeds == 1 else f"{run} (mean of {curve.seeds} seeds, band: their range)"
        (line,) = ax.plot(curve.steps, curve.mean, marker="." if len(curve.steps) < 50 else None, label=label)
        if curve.seeds > 1:
            ax.fill_between(curve.steps, curve.low, curve.high, color=line.get_color(), alpha=0.2, linewidth=0)
    if curves and all(v > 0 for curve in curves.values() for v in curve.low):
        ax.set_yscale("log")
    if curves:
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
