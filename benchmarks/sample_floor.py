"""A study's sampling job-seconds against its floor: images × NFE × one bare forward per image.

    python benchmarks/sample_floor.py [--config config/config.yaml] [--rounds 1] [--baseline-src DIR]

Samples every run of ``pipeline.runs`` at every budget (and guidance scale w) as the workflow does: `ism -q sample`
processes with one thread (Snakemake sets OMP_NUM_THREADS to the job's threads), the study's ``sample`` section
(batch size, images, seed), from model files of the study's networks (random weights: speed does not depend on
training). Two ways of cutting the work into processes are timed, each process's whole wall time (python start-up,
imports, model load, sampling, the .npz and the PNG grid):

- per file: one process per samples file (what `workflow/rules/sample.smk` runs today, 32 for the default study);
- per run:  one process per run with all budgets and scales (`ism sample --steps 1 2 … 128 --guidance …`).

The floor of a file is num_images × NFE × (a bare forward of one ``sample.batch_size`` batch ÷ batch_size) at one
thread, under ``torch.inference_mode``, timed in this process between the jobs (so load drift hits both alike).
Also printed: the sampling loop alone (``generate`` in this process, no start-up, no files) against its floor,
and the fixed cost of one process (`ism sample` of a single image at one step).

``--baseline-src DIR`` (e.g. ``git archive <commit> src | tar -x -C /tmp/base``, then ``/tmp/base/src``) runs every
process a second time with that code first on PYTHONPATH, alternating with this tree's, and prints both.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ism.config import load_run, load_yaml, pipeline_runs, validate_study
from ism.naming import guidance_scales
from ism.sample import generate, guidance_allowed, load_trained
from ism.train import Trainer

REPO = Path(__file__).resolve().parents[1]
ISM = Path(sys.executable).parent / "ism"
ONE_THREAD = dict.fromkeys(
    (
        "OMP_NUM_THREADS",
        "GOTO_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    ),
    "1",
)


def make_model_file(config: str, run: str, path: Path, workdir: Path) -> None:
    """A model file of ``run``'s network with random (non-zero) weights in every copy."""
    trainer = Trainer(load_run(config, run, ["train.device=cpu"]), workdir=workdir, output=path, progress=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for model in [trainer.model, *(ema.model for ema in trainer.emas.values())]:
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    trainer.save_model()


def run_process(command: list[str], src: Path) -> float:
    env = os.environ | ONE_THREAD | {"PYTHONPATH": str(src)}
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "config/config.yaml"))
    parser.add_argument("--rounds", type=int, default=1, help="repetitions of the whole study (median taken)")
    parser.add_argument("--budgets", type=int, nargs="*", help="only these budgets (default: each run's)")
    parser.add_argument("--baseline-src", type=Path, help="src folder of the code to compare with")
    parser.add_argument("--loop", action="store_true", help="also time the sampling loop alone in this process")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = pipeline_runs(validate_study(load_yaml(args.config)))
    trees = {"this": REPO / "src"} | ({"baseline": args.baseline_src.resolve()} if args.baseline_src else {})

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        models, files, per_run, fixed = {}, [], {}, {}
        for run in runs:
            models[run] = tmp / run / "model.pt"
            make_model_file(args.config, run, models[run], tmp / run / "work")
            cfg = load_run(args.config, run)
            budgets = [n for n in cfg.sample.budgets if not args.budgets or n in args.budgets]
            scales = guidance_scales(cfg)
            base = [str(ISM), "-q", "sample", "--checkpoint", str(models[run]), "--config", args.config]
            base += ["--run", run, "--out-dir", str(tmp / "out" / run)]
            guidance = [] if scales == [None] else ["--guidance", *map(str, scales)]
            for n in budgets:
                for w in scales:
                    option = [] if w is None else ["--guidance", str(w)]
                    files.append((run, n, w, [*base, "--steps", str(n), *option]))
            per_run[run] = [*base, "--steps", *map(str, budgets), *guidance]
            fixed[run] = [*base, "--steps", "1", "--num-images", "1", "--batch-size", "1"]

        # The floor of a file: its images x NFE as bare forwards of one batch each (the study's batch size, one
        # thread, inference mode), timed in this process right before the file's process, so that load drift on a
        # shared machine hits both alike; per image it is the bare forward's time / batch size.
        trained = {run: load_trained(models[run]) for run in runs}
        sample = {run: load_run(args.config, run).sample for run in runs}

        def nfe(run: str, n: int) -> int:
            applies = sample[run].cfg_scale != 1.0 and guidance_allowed(trained[run].config, n)
            return n * (2 if applies else 1)

        def time_floor(run: str, n: int) -> float:
            t, s = trained[run], sample[run]
            g = torch.Generator().manual_seed(1)
            x = torch.randn((s.batch_size, *t.sample_shape), generator=g)
            y = torch.randint(0, t.num_classes, (s.batch_size,), generator=g)
            tt, k = torch.rand(s.batch_size, generator=g), torch.zeros(s.batch_size, dtype=torch.long)
            w = torch.full((s.batch_size,), 0.5) if t.config.method.guidance.intrinsic else None
            forwards = nfe(run, n) * s.num_images / s.batch_size
            with torch.inference_mode():
                t.network(x, tt, k, y, w)
                start = time.perf_counter()
                for _ in range(math.ceil(forwards)):
                    t.network(x, tt, k, y, w)
            return (time.perf_counter() - start) * forwards / math.ceil(forwards)

        seconds: dict[tuple, list[float]] = {}

        def record(key: tuple, value: float) -> None:
            seconds.setdefault(key, []).append(value)

        for _ in range(args.rounds):
            for tree, src in trees.items():
                for run in runs:
                    record((tree, "fixed", run), run_process(fixed[run], src))
            for run, n, w, command in files:
                record(("floor", run, n, w), time_floor(run, n))
                if args.loop:  # the sampling loop alone: no start-up, no files
                    s, t = sample[run], trained[run]
                    t.config = t.config.model_copy(update={"sample": s})
                    start = time.perf_counter()
                    generate(t, n, num_images=s.num_images, batch_size=s.batch_size, seed=s.seed, guidance=w)
                    record(("loop", run, n, w), time.perf_counter() - start)
                for tree, src in trees.items():
                    record((tree, "file", run, n, w), run_process(command, src))
            for run in runs:
                record(("floor", run), sum(time_floor(run, n) for r, n, _w, _c in files if r == run))
                for tree, src in trees.items():
                    record((tree, "run", run), run_process(per_run[run], src))

    med = {key: statistics.median(values) for key, values in seconds.items()}
    floor = {(run, n, w): med[("floor", run, n, w)] for run, n, w, _ in files}
    total_floor = sum(floor.values())
    run_floor = sum(med[("floor", run)] for run in runs)
    print(f"host: {host()}; torch {torch.__version__}; 1 thread per process; rounds {args.rounds}")
    for run in runs:
        s = sample[run]
        per_image = sum(floor[f] for f in floor if f[0] == run) / sum(
            s.num_images * nfe(run, n) for r, n, _w, _c in files if r == run
        )
        print(f"{run}: bare forward {per_image * 1e3:.4f} ms/image at batch {s.batch_size}; {s.num_images} images/file")
    print(f"{len(files)} files: floor (images x NFE x forward/image) {total_floor:.1f} s timed before the files,")
    print(f"          {run_floor:.1f} s timed before the per-run processes")
    if args.loop:
        loop = sum(med[("loop", run, n, w)] for run, n, w, _ in files)
        print(f"sampling loop alone (generate, no start-up or files): {loop:.1f} s = {loop / total_floor:.3f}")
    for tree in trees:
        fixed_s = statistics.mean(med[(tree, "fixed", run)] for run in runs)
        file_s = sum(med[(tree, "file", run, n, w)] for run, n, w, _ in files)
        run_s = sum(med[(tree, "run", run)] for run in runs)
        print(f"[{tree}] one process's fixed cost (1 image, 1 step): {fixed_s:.2f} s")
        print(f"[{tree}] per file: {len(files)} processes {file_s:.1f} s, ratio to floor {file_s / total_floor:.3f}")
        print(f"[{tree}] per run:  {len(runs)} processes {run_s:.1f} s, ratio to floor {run_s / run_floor:.3f}")
    print("file                 floor s  " + "  ".join(f"{tree:>8s}" for tree in trees))
    for run, n, w, _ in files:
        name = f"{run} N={n}" + ("" if w is None else f" w={w}")
        cells = "  ".join(f"{med[(tree, 'file', run, n, w)]:8.2f}" for tree in trees)
        print(f"{name:20s} {floor[(run, n, w)]:8.2f}  {cells}")


def host() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} × {os.cpu_count()}"
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
