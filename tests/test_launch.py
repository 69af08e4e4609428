"""Training through submitit: in-process (debug) and as a subprocess (local), the step-boundary signal guard,
the checkpoint-and-requeue callable, and DDP on two CPU processes (gloo)."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from ism.launch import LaunchError, StepBoundarySignal, TrainingJob, launch, make_executor

from .conftest import REPO, tiny_run


def _cfg(tmp_path, *extra):
    return tiny_run("sm", "train.steps=6", "launch.cpus_per_task=1", f"launch.folder={tmp_path / 'jobs'}", *extra)


def _signal_inside_guard(deliver) -> list[str]:
    """What happens to a USR2 that ``deliver`` sends while a guarded step runs: the handler's calls, in order."""
    seen: list[str] = []
    previous = signal.signal(signal.SIGUSR2, lambda *_: seen.append("handled"))
    boundary = StepBoundarySignal()
    boundary.install()
    try:
        with boundary.guard():
            deliver()
            deadline = time.monotonic() + 10
            while not boundary.pending and time.monotonic() < deadline:  # CPython runs handlers between bytecodes
                time.sleep(0.001)
            seen.append("noted" if boundary.pending else "not noted")
        seen.append("block done")
        boundary.uninstall()
        assert signal.getsignal(signal.SIGUSR2) is not boundary._handle, "uninstall restores the replaced handler"
        return seen
    finally:
        boundary.uninstall()
        signal.signal(signal.SIGUSR2, previous)


def test_checkpoint_signal_to_the_main_thread_is_handled_after_the_step():
    seen = _signal_inside_guard(lambda: signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR2))
    assert seen == ["noted", "handled", "block done"]


def test_checkpoint_signal_landing_on_a_helper_thread_is_handled_after_the_step():
    """A process-directed signal may reach any thread that does not block it (torch starts some on import);
    CPython still runs the handler in the main thread, at once: it must wait for the step's end all the same."""
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        seen = _signal_inside_guard(lambda: signal.pthread_kill(helper.ident, signal.SIGUSR2))
    finally:
        stop.set()
        helper.join()
    assert seen == ["noted", "handled", "block done"]


def test_debug_launch_trains_and_matches_direct_training(tmp_path):
    from ism.train import Trainer

    cfg = _cfg(tmp_path, "launch.cluster=debug")
    result = launch(TrainingJob(cfg, workdir=tmp_path / "w", output=tmp_path / "m.pt"))
    assert result["finished"] and result["step"] == 6 and result["world_size"] == 1
    Trainer(cfg, workdir=tmp_path / "w2", output=tmp_path / "m2.pt", progress=False).run()
    a = torch.load(tmp_path / "m.pt", weights_only=True)["weights"]["online"]
    b = torch.load(tmp_path / "m2.pt", weights_only=True)["weights"]["online"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_saves_the_finished_step_and_resubmits_a_fresh_job(tmp_path):
    from ism.train import Trainer

    cfg = _cfg(tmp_path)
    job = TrainingJob(cfg, workdir=tmp_path / "w", output=tmp_path / "m.pt")
    job._trainer = Trainer(cfg, workdir=tmp_path / "w", progress=False)
    job._trainer.run(until_step=3)
    delayed = job.checkpoint()
    assert (tmp_path / "w" / "ckpt" / "ckpt-00000003.pt").is_file()
    fresh = delayed.function
    assert isinstance(fresh, TrainingJob) and fresh is not job and fresh._trainer is None
    assert fresh.workdir == job.workdir and fresh.config == cfg


def test_local_launch_streams_the_log_and_reports_failure(tmp_path, capsys):
    cfg = _cfg(tmp_path, "launch.cluster=local")
    result = launch(TrainingJob(cfg, workdir=tmp_path / "w", output=tmp_path / "m.pt"), poll_s=0.5)
    assert result["finished"] and (tmp_path / "m.pt").is_file()
    out = capsys.readouterr().out
    assert "as local job" in out and "training ended at step 6" in out
    # A job that fails (its data cannot be read) raises one error naming the job and its log.
    bad = TrainingJob(cfg, workdir=tmp_path / "w3", output=tmp_path / "m3.pt", latents=tmp_path / "missing")
    with pytest.raises(LaunchError, match=r"training job .* failed .*log: .*_log\.out"):
        launch(bad, poll_s=0.5)


def test_executor_gets_the_cluster_resources(tmp_path):
    cfg = _cfg(
        tmp_path,
        "launch.cluster=local",
        "launch.gpus_per_node=2",
        "launch.timeout_min=7",
        "launch.partition=gpu",
    )
    executor = make_executor(cfg.launch, cfg.name)
    params = executor._executor.parameters
    assert params["tasks_per_node"] == 2 and params["gpus_per_node"] == 2 and params["timeout_min"] == 7


def test_launch_refuses_to_nest_inside_a_slurm_job(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    cfg = _cfg(tmp_path, "launch.cluster=slurm")
    with pytest.raises(LaunchError, match="inside SLURM job 123"):
        launch(TrainingJob(cfg, workdir=tmp_path / "w", output=tmp_path / "m.pt"))


def test_ddp_on_two_cpu_processes_keeps_the_replicas_identical(tmp_path):
    import submitit

    cfg = _cfg(tmp_path, "launch.cluster=local", "launch.tasks=2")
    executor = make_executor(cfg.launch, cfg.name)
    job = executor.submit(TrainingJob(cfg, workdir=tmp_path / "w", output=tmp_path / "m.pt"))
    results = job.results()
    assert isinstance(job, submitit.Job) and len(results) == 2
    assert {r["rank"] for r in results} == {0, 1} and all(r["world_size"] == 2 for r in results)
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"], "gradients were averaged across ranks"
    assert (tmp_path / "m.pt").is_file() and all(r["finished"] for r in results)


def test_interrupted_launch_cancels_its_local_job(tmp_path):
    """SIGTERM to `ism launch` (what Snakemake sends its jobs on Ctrl-C) leaves no training process behind."""
    import subprocess
    import sys
    import time

    from ism.launch import _descendants

    command = [sys.executable, "-m", "ism.cli", "launch", "--config", str(REPO / "config" / "config.yaml")]
    command += ["--run", "fm", "--set", "train.steps=1000000", "--set", "launch.cpus_per_task=1"]
    with subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert "submitted run 'fm' as local job" in proc.stdout.readline()
        deadline = time.monotonic() + 60
        while len(_descendants(proc.pid)) < 2 and time.monotonic() < deadline:  # controller + training task
            time.sleep(0.2)
        tree = _descendants(proc.pid)
        assert len(tree) >= 2
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        out = proc.stdout.read()
    assert "cancelling job" in out
    time.sleep(1)
    assert not [pid for pid in tree if os.path.exists(f"/proc/{pid}") and _alive(pid)]


def _fm_workdir() -> Path:
    """Where `ism launch`/`ism train --run fm` train by default (relative): train.steps and launch.* do not move it."""
    from ism.config import load_run
    from ism.naming import training_workdir

    return training_workdir(load_run(REPO / "config" / "config.yaml", "fm"))


def _start_launch(tmp_path, *extra: str):
    """`ism launch` of a long local fm run in ``tmp_path``; returns once its training task holds the workdir."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "ism.cli", "launch", "--config", str(REPO / "config" / "config.yaml")]
    command += ["--run", "fm", "--set", "train.steps=1000000", "--set", "launch.cpus_per_task=1", *extra]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lock = tmp_path / _fm_workdir() / ".lock"
    deadline = time.monotonic() + 90
    while not (lock.is_file() and lock.read_text().startswith("pid")) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not (lock.is_file() and lock.read_text().startswith("pid")):
        proc.kill()  # never leave a million-step trainer behind a failed test
        proc.wait()
        raise AssertionError(f"the training task did not take the workdir lock {lock}:\n{proc.stdout.read()[-2000:]}")
    return proc


def _workdir_freed(workdir, timeout_s: float = 30.0) -> bool:
    from ism.errors import WorkdirBusyError
    from ism.workdir_lock import exclusive_workdir

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with exclusive_workdir(workdir):
                return True
        except WorkdirBusyError:
            time.sleep(0.5)
    return False


def test_a_second_trainer_on_the_same_workdir_stops_in_one_line(tmp_path):
    """DESIGN D10: the first trainer holds work/<run>/<digest>/.lock; a second one (a rerun beside an orphan) stops
    at once."""
    import subprocess
    import sys

    first = _start_launch(tmp_path)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "ism.cli", "train", "--config", str(REPO / "config" / "config.yaml"), "--run", "fm"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert second.returncode == 2 and "Traceback" not in second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{_fm_workdir()}' is in use by another trainer (pid" in lines[0], second.stderr
        assert not (tmp_path / "models").exists(), "the second trainer wrote nothing"
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
        first.stdout.close()
    assert _workdir_freed(tmp_path / _fm_workdir())


def test_a_killed_workflow_leaves_no_training_behind(tmp_path):
    """kill -9 of the process `ism launch --watch-pid` watches (Snakemake in the workflow): the job is cancelled."""
    import subprocess

    snakemake = subprocess.Popen(["sleep", "600"])
    proc = _start_launch(tmp_path, "--watch-pid", str(snakemake.pid))
    snakemake.kill()
    snakemake.wait()
    assert proc.wait(timeout=60) != 0
    assert "the workflow) ended" in proc.stdout.read()
    proc.stdout.close()
    assert _workdir_freed(tmp_path / _fm_workdir())
    assert not (tmp_path / "work" / "submitit" / "fm" / "%j").exists(), "no literal %j folder is left"


def test_a_local_job_ends_when_its_launcher_is_killed(tmp_path):
    """kill -9 of `ism launch` itself: the local job's watchdog sees its launcher gone and stops training."""
    proc = _start_launch(tmp_path)
    proc.kill()
    proc.wait()
    proc.stdout.close()
    assert _workdir_freed(tmp_path / _fm_workdir(), timeout_s=30)


def _alive(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"
