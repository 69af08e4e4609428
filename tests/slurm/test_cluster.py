"""The `slurm` tier's platform checks: sbatch on the fake GPUs and submitit's SLURM executor on a real cluster.

Requeue, time limits and preemption are tested on the real training job in test_workflow.py.

Run with `pytest -m slurm tests/slurm` (as root; see tests/slurm/README.md).

The job callables below are module-level so that submitit pickles them by reference: the job's
python imports them as `tests.slurm.test_cluster`, with the repository root on PYTHONPATH (the
`job_env` fixture). Note that torch-fidelity installs its own top-level `tests` package into
site-packages, so the repository root must come first on the job's path.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

submitit = pytest.importorskip("submitit")

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(150, func_only=True)]


# ---- callables run inside SLURM jobs -------------------------------------------------------------


def add_in_job(a: int, b: int) -> dict:
    """Return a + b together with where it ran."""
    return {
        "sum": a + b,
        "module_file": __file__,
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
        "executor": os.environ.get("SUBMITIT_EXECUTOR"),
    }


# ---- helpers -------------------------------------------------------------------------------------


def _run(cmd: list[str], timeout_s: float = 20, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False, **kwargs)


def _show_job(job_id: str) -> str:
    return _run(["scontrol", "show", "job", job_id]).stdout


def _result(job, timeout_s: float):
    """job.result(), bounded: cancel the job and fail with its logs on timeout."""
    deadline = time.monotonic() + timeout_s
    while not job.done():
        if time.monotonic() > deadline:
            info = _show_job(job.job_id)
            job.cancel(check=False)
            logs = "\n".join(
                f"--- {p}\n{p.read_text()[-2000:]}" for p in (job.paths.stdout, job.paths.stderr) if p.exists()
            )
            pytest.fail(f"submitit job {job.job_id} not done after {timeout_s:.0f} s\n{info}\n{logs}")
        time.sleep(0.5)
    return job.result()


@pytest.fixture
def job_env(monkeypatch):
    """Make the repository importable in jobs (sbatch exports the submitting environment)."""
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))


def _executor(folder: Path, **params):
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    executor.update_parameters(**params)
    return executor


# ---- tests ---------------------------------------------------------------------------------------


def test_sbatch_gpu_partition(slurm_cluster, tmp_path):
    """`sbatch --wait -p gpu --gpus=1` is scheduled on the fake GPUs, runs a step and finishes."""
    out = tmp_path / "job.out"
    name = f"ism-ci-{uuid.uuid4().hex[:8]}"
    script = (
        'echo "job=$SLURM_JOB_ID partition=$SLURM_JOB_PARTITION"; srun echo step-ok; '
        'scontrol show job -d "$SLURM_JOB_ID" | grep -o "GRES=[^ ]*"'
    )
    cmd = ["sbatch", "--wait", "--parsable", "-p", "gpu", "--gpus=1", "--time=2", f"--job-name={name}"]
    try:
        proc = _run([*cmd, f"--output={out}", "--wrap", script], timeout_s=90, cwd=tmp_path)
    finally:
        _run(["scancel", f"--name={name}"])  # no-op when it finished
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = proc.stdout.strip().split(";")[0]
    text = out.read_text()
    assert f"job={job_id} partition=gpu" in text
    assert "step-ok" in text
    assert "GRES=gpu:1(IDX:" in text, text  # one of the two fake GPUs was allocated
    job = _show_job(job_id)
    assert "JobState=COMPLETED" in job
    assert "TresPerJob=gres:gpu:1" in job, job


def test_submitit_autoexecutor(slurm_cluster, job_env, tmp_path):
    """submitit's SLURM executor runs a function from an importable module and returns its result."""
    executor = _executor(tmp_path / "submitit", timeout_min=2, slurm_partition="debug", name="ism-ci-submitit")
    job = executor.submit(add_in_job, 20, 22)
    out = _result(job, timeout_s=90)
    assert out["sum"] == 42
    assert out["job_id"] == job.job_id
    assert out["partition"] == "debug"
    assert out["executor"] == "slurm"
    assert Path(out["module_file"]).resolve() == Path(__file__).resolve()
