"""FID against training steps: does a study's training converge, and where does it plateau? (issue 11, item 1)

    python benchmarks/convergence.py --runs fm sm ism --steps 8000 --every 1000 --budgets 1 128 \
        [--config config/config.yaml] [--set train.lr=0.001 ...] [--weights online infer] [--out DIR]

Each run trains in its own folder (``DIR/work/<run>/<digest>``) and is exported every ``--every`` steps: training
to step k is ``train.steps = k`` resumed from the last checkpoint, which the trainer continues bit for bit, so the
curve is one continuous run (``train.steps`` is a resumable key at a constant rate; with ``train.lr_schedule=cosine``
each point is its own run, trained from step 0 to decay at that point, in its own folder). Each export is
sampled at every budget (and each guidance scale w of an intrinsic-guidance run) from each of ``--weights`` (default:
the run's ``sample.weights``), with the study's sampling seed unless ``--sample-seed``, and scored like the workflow
scores (the study's extractor and reference, embedded once into ``DIR/reference``). Also scored: the real-data
floor. ``DIR/convergence.csv`` holds ``run,step,weights,steps,w,fid``, ``DIR/convergence.png`` the curves with the
floor; the table is printed. One process, ``--threads`` threads: start two with different ``--runs`` (and ``--out``)
to use two cores. A finished point is not recomputed (delete DIR to start over).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch

from ism.atomic import write_bytes
from ism.config import load_run
from ism.figures import axes, png_bytes
from ism.naming import parse_sample_name, training_workdir
from ism.sample import SampleSettings, sample_to_files
from ism.study import evaluate_files, floor, reference
from ism.train import Trainer

FIELDS = ["run", "step", "weights", "steps", "w", "fid"]


def train_to(config: str, run: str, overrides: list[str], step: int, out: Path) -> Path:
    """The run trained to ``step`` (resuming its folder), exported as ``out/models/<run>/step<step>.pt``."""
    cfg = load_run(config, run, [*overrides, f"train.steps={step}", "train.device=cpu"])
    model = out / "models" / run / f"step{step:07d}.pt"
    if not model.is_file():
        Trainer(cfg, workdir=training_workdir(cfg, out / "work"), output=model, progress=False).run()
    return model


def score_point(config: str, model: Path, budgets: list[int], weights: str, seed: int | None, out: Path) -> list[dict]:
    """FID of one export at every budget (and w) from ``weights``: ``{steps, w, fid}`` per samples file."""
    folder = model.with_suffix("") / weights
    settings = SampleSettings(weights=weights, seed=seed)
    files = sample_to_files(model, folder, budgets, settings, device="cpu", progress=False)
    scores = evaluate_files(config, files, [f.with_suffix(".json") for f in files], out / "reference")
    rows = []
    for path, metrics in zip(files, scores, strict=True):
        steps, w = parse_sample_name(path.stem)
        rows.append({"steps": steps, "w": "" if w is None else f"{w:g}", "fid": f"{metrics['fid']:.4f}"})
    return rows


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict]) -> None:
    lines = [",".join(FIELDS)] + [",".join(str(row[k]) for k in FIELDS) for row in rows]
    write_bytes(path, ("\n".join(lines) + "\n").encode())


def plot(rows: list[dict], floor_fid: float, path: Path) -> None:
    fig, ax = axes(figsize=(7, 4.5))
    curves: dict[tuple, list[tuple[int, float]]] = {}
    for row in rows:
        w = f", w={row['w']}" if row["w"] else ""
        key = (row["run"], row["weights"], int(row["steps"]), w)
        curves.setdefault(key, []).append((int(row["step"]), float(row["fid"])))
    for (run, weights, steps, w), points in curves.items():
        points.sort()
        label = f"{run} [{weights}], {steps} step{'s' if steps > 1 else ''}{w}"
        ax.plot(*zip(*points, strict=True), marker="o", linestyle="-" if steps == 1 else "--", label=label)
    ax.axhline(floor_fid, color="gray", linestyle=":", label=f"real held-out images ({floor_fid:.2f})")
    ax.axhline(2 * floor_fid, color="gray", linestyle="-.", linewidth=0.8, label="2 × floor")
    ax.set_yscale("log")
    ax.set_xlabel("training steps")
    ax.set_ylabel("FID (lower is better)")
    ax.legend(fontsize=6, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    write_bytes(path, png_bytes(fig, dpi=120))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--runs", nargs="+", default=["fm", "sm", "ism"])
    parser.add_argument("--steps", type=int, default=8000, help="last training step")
    parser.add_argument("--every", type=int, default=1000, help="export and score every N steps")
    parser.add_argument("--budgets", type=int, nargs="+", default=[1, 128])
    parser.add_argument("--weights", nargs="+", help="weights to sample (default: each run's sample.weights)")
    parser.add_argument("--sample-seed", type=int, help="sampling seed (default: the study's sample.seed)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/convergence"))
    args = parser.parse_args()
    if args.steps % args.every:
        parser.error(f"--steps {args.steps} is not a multiple of --every {args.every}")
    torch.set_num_threads(args.threads)
    out = args.out
    for run in args.runs:  # every run resolves before any compute
        load_run(args.config, run, args.overrides)
    if not (out / "reference" / "reference.npz").is_file():
        reference(args.config, out / "reference")
    floor_fid = floor(args.config, out / "floor.json", out / "reference")["fid"]
    table = out / "convergence.csv"
    rows = read_rows(table)
    done = {(r["run"], int(r["step"]), r["weights"]) for r in rows}
    for step in range(args.every, args.steps + 1, args.every):
        for run in args.runs:
            cfg = load_run(args.config, run, args.overrides)
            for weights in args.weights or [cfg.sample.weights]:
                if (run, step, weights) in done:
                    continue
                model = train_to(args.config, run, args.overrides, step, out)
                for scored in score_point(args.config, model, args.budgets, weights, args.sample_seed, out):
                    rows.append({"run": run, "step": step, "weights": weights} | scored)
                write_rows(table, rows)
                print(json.dumps(rows[-1]), flush=True)
    plot(rows, floor_fid, out / "convergence.png")
    print(f"floor {floor_fid:.2f}; table {table}; plot {out / 'convergence.png'}")
    for row in rows:
        print(",".join(str(row[k]) for k in FIELDS))


if __name__ == "__main__":
    main()
