"""The study's report: one table of FID per run and step budget, a plot of FID against network evaluations, and
all metrics.

Inputs follow the file contract ``results/<run>/metrics/<name>.json`` (``<name>`` = ``steps<N>`` or, for
intrinsic-guidance runs, ``steps<N>-w<w>``) plus the real-data floor; each run × guidance scale is one row.
Every cell carries its cost and provenance: NFE (network evaluations per image: N, or 2N where CFG runs two
passes) and the weights sampled (``online`` or an EMA name), read from the samples' metadata.

Humans read rows by label (``ism (w=0.5)``, report.md and the plots); machines by key (``ism_w0.5``, metrics.json,
which ``dvc exp show`` turns into columns such as ``results/metrics.json:fid.ism_w0.5.steps1``).

A study with training seeds (pipeline.seeds) has one run per seed, ``<run>-seed<s>``: the report pools them per run
and w into mean ± sample standard deviation over seeds (the headline table, plot and ``fid`` keys), and keeps
each seed's cells (``fid_seed`` keys and a second table). Published numbers (the study's ``paper`` section) sit
next to the pooled rows.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ism.atomic import write_bytes, write_json
from ism.curves import training_losses
from ism.figures import axes, png_bytes
from ism.naming import parse_sample_name, sample_name, split_seeded_run

if TYPE_CHECKING:
    from ism.config import PaperConfig

# A row of the report: (run, guidance scale w), w None for a run without intrinsic guidance.
Row = tuple[str, float | None]
Rows = dict[Row, dict[int, dict[str, Any]]]
# Seeded rows pooled per (run, w): {steps: each seed's metrics, in the order of the runs given}.
Pooled = dict[Row, dict[int, list[dict[str, Any]]]]


def row_label(row: Row) -> str:
    """The row as people read it: ``fm``, or ``ism (w=0.5)`` for each guidance scale of an iSM run."""
    run, w = row
    return run if w is None else f"{run} (w={w:g})"


def row_key(row: Row) -> str:
    """The row as a machine key (metrics.json, ``dvc exp show`` columns): ``fm``, or ``ism_w0.5``."""
    run, w = row
    return run if w is None else f"{run}_w{w:g}"


def collect(results: str | Path, runs: list[str], only: list[str | Path] | None = None) -> Rows:
    """{(run, w): {steps: metrics}}, in run order then file order; w is None for a run without guidance."""
    rows: Rows = {}
    wanted = None if only is None else {Path(p).resolve() for p in only}
    for run in runs:
        folder = Path(results) / run / "metrics"
        if not folder.is_dir():
            raise FileNotFoundError(f"no metrics for run '{run}' in '{folder}' (run 'ism evaluate' first)")
        for path in sorted(folder.glob("*.json")):
            name = _sample_name_of(path)
            if name is None or (wanted is not None and path.resolve() not in wanted):
                continue
            steps, w = name
            rows.setdefault((run, w), {})[steps] = _with_provenance(json.loads(path.read_text()), steps)
    return rows


def _sample_name_of(path: Path) -> tuple[int, float | None] | None:
    """(steps, w) of a metrics file named after its samples file; None for any other file in the folder."""
    try:
        return parse_sample_name(path.stem)
    except ValueError:
        return None


def _with_provenance(metrics: dict[str, Any], steps: int) -> dict[str, Any]:
    """The cell's metrics plus ``nfe`` and ``weights`` from its samples' metadata (N and unknown if absent)."""
    meta = metrics.get("sample_meta") or {}
    return metrics | {"nfe": int(meta.get("nfe", steps)), "weights": meta.get("weights", "unknown")}


def _weights(metrics: dict[int, dict[str, Any]]) -> str:
    return ", ".join(sorted({m["weights"] for m in metrics.values()}))


def pool_seeds(rows: Rows) -> tuple[Pooled, Rows]:
    """(seeded rows pooled per run and w, the other rows): ``ism-seed0`` … ``ism-seed2`` at w become one row
    (ism, w) holding the three seeds' metrics of each budget."""
    pooled: Pooled = {}
    single: Rows = {}
    for (run, w), metrics in rows.items():
        base, seed = split_seeded_run(run)
        if seed is None:
            single[(run, w)] = metrics
            continue
        for n, cell in metrics.items():
            pooled.setdefault((base, w), {}).setdefault(n, []).append(cell)
    return pooled, single


def _fids(cells: list[dict[str, Any]]) -> list[float]:
    return [cell["fid"] for cell in cells]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; NaN for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def _mean_pm_std(cells: list[dict[str, Any]]) -> str:
    mean, std = mean_std(_fids(cells))
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def pooled_table(pooled: Pooled, paper: PaperConfig | None = None) -> str:
    """FID as mean ± std over training seeds per run (and w) and budget, with the published FIDs of the runs the
    study's ``paper`` section names, in its budgets."""
    budgets = sorted({n for cells in pooled.values() for n in cells})
    published = [] if paper is None or not paper.fid else paper.budgets
    header = "| run | seeds | " + " | ".join(f"{n} step{'s' if n > 1 else ''}" for n in budgets)
    header += "".join(f" | paper, {n} step{'s' if n > 1 else ''}" for n in published) + " |"
    lines = [header, "|---|---:|" + "---:|" * (len(budgets) + len(published))]
    for (run, w), cells in pooled.items():
        seeds = max(len(v) for v in cells.values())
        values = [_mean_pm_std(cells[n]) if n in cells else "–" for n in budgets]
        reported = paper.fid.get(run) if paper is not None else None
        values += [f"{v:g}" for v in reported] if reported else ["–"] * len(published)
        lines.append(f"| {row_label((run, w))} | {seeds} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def markdown_table(rows: Rows, floor: dict[str, Any] | None) -> str:
    budgets = sorted({n for metrics in rows.values() for n in metrics})
    header = "| run | weights | " + " | ".join(f"{n} step{'s' if n > 1 else ''}" for n in budgets) + " |"
    lines = [header, "|---|---|" + "---:|" * len(budgets)]
    for row, metrics in rows.items():
        cells = [f"{metrics[n]['fid']:.2f} ({metrics[n]['nfe']} NFE)" if n in metrics else "–" for n in budgets]
        lines.append(f"| {row_label(row)} | {_weights(metrics)} | " + " | ".join(cells) + " |")
    if floor is not None:  # the same in every column: it does not depend on steps
        cells = [f"{floor['fid']:.2f}"] * len(budgets)
        lines.append("| real held-out images (floor) | – | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def fid_csv(rows: Rows) -> str:
    """Long table ``steps,nfe,weights,run,fid``, one line per sampled (row, budget): what ``dvc plots show``
    draws against NFE, one line per run (workflow/plots/fid_by_run.json colours by ``run``), whichever runs a
    study has."""
    lines = ["steps,nfe,weights,run,fid"]
    for row, metrics in rows.items():  # run and EMA names hold no commas
        label = row_label(row)
        lines += [
            f"{n},{metrics[n]['nfe']},{metrics[n]['weights']},{label},{metrics[n]['fid']:.4f}" for n in sorted(metrics)
        ]
    return "\n".join(lines) + "\n"


def metrics_summary(rows: Rows, pooling: tuple[Pooled, Rows], floor: dict[str, Any] | None) -> dict[str, Any]:
    """metrics.json: ``fid.<row key>.steps<N>`` per sampled cell, ``floor.fid`` and the feature extractor; with
    seeded runs, ``fid.<run key>`` is the mean over seeds, ``fid_std`` the sample std, ``seeds`` their number and
    ``fid_seed.<run>-seed<s>…`` each seed's cells.

    Flat, scalar and machine-named, so ``dvc exp show`` gives one column per run and budget whatever runs a study
    has; the cells' NFE and weights are in fid_vs_steps.csv and report.md, everything else in the per-file
    metrics (results/<run>/metrics/<name>.json)."""
    extractors = {m["extractor"] for metrics in rows.values() for m in metrics.values()}
    pooled, single = pooling
    summary: dict[str, Any] = {
        "fid": {
            row_key(row): {sample_name(n): metrics[n]["fid"] for n in sorted(metrics)}
            for row, metrics in single.items()
        }
    }
    if pooled:  # seeds: fid.<run key> is the mean over seeds, fid_std its spread, fid_seed each seed's cells
        for row, cells in pooled.items():
            summary["fid"][row_key(row)] = {sample_name(n): mean_std(_fids(cells[n]))[0] for n in sorted(cells)}
        summary["fid_std"] = {
            row_key(row): {sample_name(n): mean_std(_fids(cells[n]))[1] for n in sorted(cells) if len(cells[n]) > 1}
            for row, cells in pooled.items()
        }
        summary["seeds"] = {row_key(row): max(len(v) for v in cells.values()) for row, cells in pooled.items()}
        summary["fid_seed"] = {
            row_key(row): {sample_name(n): metrics[n]["fid"] for n in sorted(metrics)}
            for row, metrics in rows.items()
            if row not in single
        }
    if floor is not None:
        summary["floor"] = {"fid": floor["fid"]}
    summary["extractor"] = ", ".join(sorted(extractors))
    return summary


def train_loss_csv(models: str | Path, runs: list[str]) -> str:
    """Long table ``step,run,loss`` of each run's training loss (its dvclive log under ``models/<run>``, read by
    :func:`ism.curves.training_losses`): what ``dvc plots show`` draws as one line per run
    (workflow/plots/loss_by_run.json), whatever runs a study has. A run without a log has no lines."""
    lines = ["step,run,loss"]
    for run, (steps, losses) in training_losses(models, runs).items():  # run names hold no commas
        lines += [f"{step},{run},{loss}" for step, loss in zip(steps, losses, strict=True)]
    return "\n".join(lines) + "\n"


def plot_fid(pooling: tuple[Pooled, Rows], floor: dict[str, Any] | None, path: str | Path) -> Path:
    """FID against NFE, one line per row; seeded runs (``pooling``: :func:`pool_seeds`) as one line per run (and
    w): the mean over seeds with ± one standard deviation as error bars."""
    fig, ax = axes(figsize=(6, 4))
    pooled, single = pooling
    for row, metrics in single.items():  # x = NFE: runs compare at equal compute, CFG's second pass counted
        budgets = sorted(metrics)
        nfe = [metrics[n]["nfe"] for n in budgets]
        label = f"{row_label(row)} [{_weights(metrics)}]"
        ax.plot(nfe, [metrics[n]["fid"] for n in budgets], marker="o", label=label)
    for row, cells in pooled.items():
        budgets = sorted(cells)
        nfe = [cells[n][0]["nfe"] for n in budgets]
        stats = [mean_std(_fids(cells[n])) for n in budgets]
        weights = ", ".join(sorted({cell["weights"] for n in budgets for cell in cells[n]}))
        label = f"{row_label(row)} [{weights}], {max(map(len, cells.values()))} seeds"
        errors = [0.0 if math.isnan(std) else std for _, std in stats]
        ax.errorbar(nfe, [mean for mean, _ in stats], yerr=errors, marker="o", capsize=3, label=label)
    if floor is not None:
        ax.axhline(floor["fid"], color="gray", linestyle="--", label="real held-out images")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations per image (NFE)")
    ax.set_ylabel("FID (lower is better)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return write_bytes(Path(path), png_bytes(fig, dpi=120))


def write_report(
    results: str | Path,
    runs: list[str],
    floor_path: str | Path | None,
    out_dir: str | Path,
    metrics: list[str | Path] | None = None,
    models: str | Path | None = None,
    paper: PaperConfig | None = None,
) -> str:
    """Write metrics.json, report.md, fid_vs_steps.{png,csv} and train_loss.csv into ``out_dir``; return the
    markdown table.

    ``metrics`` restricts the table to those files (the workflow passes exactly the files of the current config,
    so a stale file of a budget no longer in the config does not creep in). ``models`` holds each run's model
    folder with its training log (default: ``models`` next to ``results``, the workflow's layout). ``paper``:
    published FIDs printed next to the runs pooled over seeds. With seeded runs the returned table is the pooled
    one."""
    rows = collect(results, runs, only=metrics)
    floor = json.loads(Path(floor_path).read_text()) if floor_path else None
    out = Path(out_dir)
    pooling = pool_seeds(rows)
    pooled = pooling[0]
    summary = metrics_summary(rows, pooling, floor)
    write_json(out / "metrics.json", summary)
    table = markdown_table(rows, floor)  # every run, each seed its own row
    any_metrics = next(iter(next(iter(rows.values())).values()))
    text = (
        f"# FID by run and step budget\n\nFeature extractor: `{summary['extractor']}`; "
        f"{any_metrics['n']} generated images per cell against {any_metrics['n_reference']} reference images. "
        "Each cell gives its NFE (network evaluations per image: N steps, 2N where CFG runs two passes); "
        "compare runs at equal NFE. *weights*: the copy sampled (`online` or an EMA).\n\n"
    )
    if pooled:
        means = pooled_table(pooled, paper)
        source = f" Published: {paper.source}." if paper is not None and paper.fid and paper.source else ""
        floor_text = f" Real-data floor: {floor['fid']:.2f}." if floor is not None else ""
        text += (
            "## Mean ± standard deviation over training seeds\n\nEach run trained once per seed (`<run>-seed<s>`), "
            f"sampled with the same sampling seed; the spread is the sample standard deviation.{floor_text}{source}"
            f"\n\n{means}\n## Each training seed\n\n"
        )
    text += f"{table}\n![FID against NFE](fid_vs_steps.png)\n"
    write_bytes(out / "report.md", text.encode())
    write_bytes(out / "fid_vs_steps.csv", fid_csv(rows).encode())
    models = Path(results).parent / "models" if models is None else Path(models)
    write_bytes(out / "train_loss.csv", train_loss_csv(models, runs).encode())
    plot_fid(pooling, floor, out / "fid_vs_steps.png")
    return means if pooled else table
