"""What orchestration costs: the ImageNet DAG's dry run, a no-op snakemake and a no-op dvc repro on the finished
demo, per-job start-up, and all of it as a share of the demo's wall time.

    make demo && python benchmarks/pipeline_overhead.py            # in the repository (the finished demo)

The demo's wall time and job count come from its Snakemake log (.snakemake/log, the newest run that did work).
The no-op dvc repro runs in a git + DVC copy of the finished demo in a temporary folder (the first repro there
records the outputs; the second is the no-op that is timed), so the repository itself is not touched.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-dir", type=Path, default=REPO, help="folder of the finished demo (default: repo)")
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
