"""The `slurm` tier: sbatch, submitit and requeue/checkpoint against a real single-node cluster.

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


class CountSteps(submitit.helpers.Checkpointable):
    """Counts to `total`, one step every `step_s` seconds, logging progress to a file.

    submitit pickles the instance (with its current `step`) in `checkpoint`, so a requeued
    run resumes where the interrupted one stopped.
    """

    def __init__(self, progress_file: str, total: int, step_s: float, rerun_step_s: float | None = None) -> None:
        self.progress_file = progress_file
        self.total = total
        self.step_s = step_s
        self.rerun_step_s = step_s if rerun_step_s is None else rerun_step_s
        self.step = 0
        self.checkpoint_calls = 0

    def _log(self, line: str) -> None:
        with open(self.progress_file, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def __call__(self) -> dict:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        self._log(f"start step={self.step} restarts={restarts} checkpoints={self.checkpoint_calls}")
        step_s = self.rerun_step_s if restarts else self.step_s
        while self.step < self.total:
            time.sleep(step_s)
            self.step += 1
            self._log(f"step {self.step}")
        self._log("done")
        return {"step": self.step, "restarts": restarts, "checkpoint_calls": self.checkpoint_calls}

    def checkpoint(self, *args, **kwargs):
        self.checkpoint_calls += 1
        self._log(f"checkpoint step={self.step}")
        return super().checkpoint(*args, **kwargs)


# ---- helpers -------------------------------------------------------------------------------------


def _run(cmd: list[str], timeout_s: float = 20, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False, **kwargs)


def _show_job(job_id: str) -> str:
    return _run(["scontrol", "show", "job", job_id]).stdout


def _job_field(job_id: str, field: str) -> str:
    for token in _show_job(job_id).split():
        if token.startswith(field + "="):
            return token.split("=", 1)[1]
    return ""


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


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


def test_submitit_checkpoint_on_requeue_signal(slurm_cluster, job_env, tmp_path):
    """A Checkpointable interrupted by SLURM's warning signal is checkpointed, requeued and resumes.

    SLURM sends the job's `--signal` (submitit: USR2) before the time limit, or on preemption
    with `SlurmctldParameters=preempt_send_user_signal`; `scancel --signal=USR2` does the same
    here. submitit then calls `checkpoint()`, dumps the new state and runs `scontrol requeue`.
    """
    progress = tmp_path / "progress.txt"
    executor = _executor(tmp_path / "submitit", timeout_min=3, slurm_partition="debug", name="ism-ci-ckpt")
    job = executor.submit(CountSteps(str(progress), total=30, step_s=0.2))
    try:
        _wait_for(lambda: "step 5\n" in _read(progress), 60, "the job to make progress")
        assert _run(["scancel", "--signal=USR2", job.job_id]).returncode == 0
        out = _result(job, timeout_s=120)
    finally:
        job.cancel(check=False)  # no-op once it completed
    log = progress.read_text()
    assert out["checkpoint_calls"] == 1, log
    assert out["restarts"] == 1, log
    assert out["step"] == 30
    starts = [line for line in log.splitlines() if line.startswith("start ")]
    assert len(starts) == 2, log
    assert starts[0].startswith("start step=0 restarts=0")
    resumed_at = int(starts[1].split()[1].removeprefix("step="))
    assert resumed_at >= 5, log  # resumed from the checkpoint, not from scratch
    assert _job_field(job.job_id, "Restarts") == "1"


def test_plain_scontrol_requeue_restarts_from_scratch(slurm_cluster, job_env, tmp_path):
    """`scontrol requeue` from outside sends SIGTERM (which submitit ignores), then SIGKILL after
    KillWait: SLURM requeues and reruns the job, but `checkpoint()` is NOT called, so the callable
    restarts from its originally submitted state."""
    progress = tmp_path / "progress.txt"
    executor = _executor(tmp_path / "submitit", timeout_min=3, slurm_partition="debug", name="ism-ci-requeue")
    # The first run must outlive KillWait (10 s) after the requeue, so that SLURM kills it.
    job = executor.submit(CountSteps(str(progress), total=80, step_s=0.2, rerun_step_s=0.01))
    try:
        _wait_for(lambda: "step 5\n" in _read(progress), 60, "the job to make progress")
        proc = _run(["scontrol", "requeue", job.job_id])
        assert proc.returncode == 0, proc.stderr
        out = _result(job, timeout_s=120)
    finally:
        job.cancel(check=False)
    log = progress.read_text()
    assert out["checkpoint_calls"] == 0, log
    assert out["restarts"] == 1, log
    assert out["step"] == 80
    assert log.count("done\n") == 1, log  # the first run was killed before it finished
    starts = [line for line in log.splitlines() if line.startswith("start ")]
    assert starts == ["start step=0 restarts=0 checkpoints=0", "start step=0 restarts=1 checkpoints=0"], log
