"""What orchestration costs: the ImageNet DAG's dry run, a no-op snakemake and a no-op dvc repro on the finished
demo, per-job start-up, job-seconds per rule, and all of it as a share of the demo's wall time.

    make demo && python benchmarks/pipeline_overhead.py            # in the repository (the finished demo)
    python benchmarks/pipeline_overhead.py --grouping 2            # per_file vs per_run sampling/scoring jobs

The demo's wall time and job count come from its Snakemake log (.snakemake/log, the newest run that did work);
job-seconds from Snakemake's records (.snakemake/metadata: a job runs from its start to its last output).
The no-op dvc repro runs in a git + DVC copy of the finished demo in a temporary folder (the first repro there
records the outputs; the second is the no-op that is timed), so the repository itself is not touched.

``--grouping ROUNDS`` compares pipeline.job_grouping per_file and per_run on the default study with
``--train-steps`` training steps (sampling and scoring are the study's): the study is trained once (with its FID
reference and floor) in a temporary folder, then each round samples, scores and reports a copy of it once per
grouping, the order alternating between rounds, and checks that both groupings wrote the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$")


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def demo_run(folder: Path) -> tuple[float, int]:
    """(wall seconds, jobs) of the newest Snakemake log in ``folder`` that ran jobs."""
    for log in sorted((folder / ".snakemake" / "log").glob("*.snakemake.log"), reverse=True):
        text = log.read_text()
        matches = [m for m in map(_STAMP.match, text.splitlines()) if m]
        stamps = [datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y") for m in matches]
        jobs = len(re.findall(r"^Finished jobid", text, re.M))
        if jobs > 1 and stamps:
            return (stamps[-1] - stamps[0]).total_seconds(), jobs
    raise SystemExit(f"no finished Snakemake run in {folder}/.snakemake/log: run `make demo` first")


def job_seconds(folder: Path, since: float = 0.0) -> dict[str, tuple[int, float]]:
    """{rule: (jobs, job-seconds)} of the jobs recorded in ``folder``/.snakemake/metadata that started at or after
    ``since`` (epoch seconds). A record per output holds its job's start and the output's time; a job spans from its
    start to its last output."""
    spans: dict[tuple, tuple[float, float]] = {}
    for path in (folder / ".snakemake" / "metadata").rglob("*"):
        try:
            record = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            continue
        rule, start, end = record.get("rule"), record.get("starttime"), record.get("endtime")
        if rule is None or start is None or end is None or start < since:
            continue
        key = (rule, record.get("job_hash"))
        first, last = spans.get(key, (start, end))
        spans[key] = (min(first, start), max(last, end))
    per_rule: dict[str, tuple[int, float]] = {}
    for (rule, _), (start, end) in spans.items():
        jobs, seconds = per_rule.get(rule, (0, 0.0))
        per_rule[rule] = (jobs + 1, seconds + end - start)
    return dict(sorted(per_rule.items()))


def step_of(rule: str) -> str:
    """sample_run* (per-run rules) and merge_samples count as sampling, evaluate_run* as scoring."""
    for step in ("sample", "evaluate"):
        if rule == step or rule.startswith(f"{step}_"):
            return step
    return "merge_samples" if rule == "merge_samples" else rule


def per_budget_digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for pattern in ("results/*/samples/*", "results/*/metrics/*")
        for path in sorted(folder.glob(pattern))
    }


def compare_grouping(rounds: int, train_steps: int) -> None:
    """Sampling and scoring of the default study with per_file and per_run jobs, interleaved; prints a table."""
    snakemake = [str(BIN / "snakemake"), "--profile", "profiles/local"]
    study = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    study["train"]["steps"] = train_steps
    rows: dict[str, list[dict[str, float]]] = {"per_file": [], "per_run": []}
    digests: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        trained = Path(tmp) / "trained"
        trained.mkdir()
        for name in ("Snakefile", "workflow", "profiles", "config"):
            source = REPO / name
            if source.is_dir():
                shutil.copytree(source, trained / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, trained / name)
        (trained / "config" / "config.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
        seconds = timed([*snakemake, "trained", "results/fid_reference/reference.json", "results/floor.json"], trained)
        runs = ", ".join(study["pipeline"]["runs"])
        print(f"trained {runs} ({train_steps} steps), the FID reference and the floor: {seconds:.0f} s")
        for round_ in range(rounds):
            order = ["per_file", "per_run"] if round_ % 2 == 0 else ["per_run", "per_file"]
            for grouping in order:
                copy = Path(tmp) / f"{grouping}-{round_}"
                shutil.copytree(trained, copy, symlinks=True)
                variant = study | {"pipeline": study["pipeline"] | {"job_grouping": grouping}}
                (copy / "config" / "config.yaml").write_text(yaml.safe_dump(variant, sort_keys=False))
                start = time.time()
                wall = timed(snakemake, copy)
                steps: dict[str, float] = {}
                for rule, (jobs, job_s) in job_seconds(copy, since=start - 1).items():
                    step = step_of(rule)
                    steps[step] = steps.get(step, 0.0) + job_s
                    steps[f"{step} jobs"] = steps.get(f"{step} jobs", 0) + jobs
                rows[grouping].append({"wall": wall, **steps})
                digests.setdefault(grouping, per_budget_digests(copy))
                print(f"round {round_ + 1} {grouping}: {wall:.1f} s wall, {steps}", flush=True)
                shutil.rmtree(copy)
    same = digests["per_file"] == digests["per_run"]
    print(
        f"per-budget files ({len(digests['per_file'])}): {'byte-identical' if same else 'DIFFERENT'} across groupings"
    )

    def mean(grouping: str, key: str) -> float:
        return sum(row.get(key, 0.0) for row in rows[grouping]) / len(rows[grouping])

    print(f"\n| mean of {rounds} round(s) | per_file | per_run | per_run / per_file |")
    print("|---|---:|---:|---:|")
    measures = [
        ("sampling jobs", "sample jobs", "{:.0f}"),
        ("sampling job-seconds", "sample", "{:.0f}"),
        ("scoring jobs", "evaluate jobs", "{:.0f}"),
        ("scoring job-seconds", "evaluate", "{:.0f}"),
        ("wall time of sampling, scoring and report (s)", "wall", "{:.0f}"),
    ]
    for label, key, fmt in measures:
        a, b = mean("per_file", key), mean("per_run", key)
        print(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {b / a:.2f} |")
    a = mean("per_file", "sample") + mean("per_file", "evaluate")
    b = mean("per_run", "sample") + mean("per_run", "evaluate")
    print(f"| sampling + scoring job-seconds | {a:.0f} | {b:.0f} | {b / a:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-dir", type=Path, default=REPO, help="folder of the finished demo (default: repo)")
    parser.add_argument(
        "--grouping", type=int, metavar="ROUNDS", help="compare job_grouping per_file and per_run, ROUNDS rounds"
    )
    parser.add_argument("--train-steps", type=int, default=200, help="with --grouping: train.steps (default 200)")
    args = parser.parse_args()
    if args.grouping:
        compare_grouping(args.grouping, args.train_steps)
        return
    demo = args.demo_dir.resolve()
    wall, jobs = demo_run(demo)

    with tempfile.TemporaryDirectory() as tmp:
        # The DAG checks its Inception weights before any job: a sparse stand-in of the network's size passes.
        weights = Path(tmp) / "inception.pth"
        with weights.open("wb") as f:
            f.truncate(96 * 2**20)
        imagenet = ["-n", "-c1", "--quiet", "--configfile", "config/imagenet256.yaml"]
        stand_in = ["--config", f"evaluate={{inception_weights: '{weights}'}}"]
        dry_imagenet = timed([str(BIN / "snakemake"), *imagenet, *stand_in], demo)
    noop_snakemake = timed([str(BIN / "snakemake"), "--profile", "profiles/local"], demo)
    startup = min(timed([sys.executable, "-c", "import ism.study, ism.sample, ism.launch"], demo) for _ in range(3))

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "demo"
        shutil.copytree(demo, copy, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", ".dvc"))
        for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "repro", "-q"]):
            timed(command, copy)
        noop_dvc = timed(["dvc", "repro", "-q"], copy)

    print(f"demo: {wall:.0f} s wall, {jobs} jobs ({demo})")
    print("| what | seconds | share of the demo's wall time |")
    print("|---|---:|---:|")
    rows = [
        ("dry run of the ImageNet DAG (263 jobs)", dry_imagenet),
        ("no-op `snakemake` on the finished demo", noop_snakemake),
        ("no-op `dvc repro` on the finished demo", noop_dvc),
        ("one job's start-up (python + ism imports)", startup),
        (f"all {jobs} jobs' start-ups, 2 at a time", startup * jobs / 2),
    ]
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} | {seconds / wall:.1%} |")
    print("\n| rule | jobs | job-seconds |")
    print("|---|---:|---:|")
    for rule, (count, seconds) in job_seconds(demo).items():
        print(f"| {rule} | {count} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
