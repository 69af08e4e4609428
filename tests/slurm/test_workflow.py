"""The study on a real SLURM cluster: `snakemake --profile slurm` end to end, training that survives its time
limit and a `scontrol requeue` bit for bit, and a failing job that stops the run cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ism.config import load_run
from ism.launch import TrainingJob, launch, make_executor
from ism.train import Trainer

from ..workflow.helpers import REPO, env, tiny_study, workflow_copy, write_study

pytestmark = pytest.mark.slurm


def _slurm_env(config_home: Path) -> dict[str, str]:
    return env() | {"XDG_CONFIG_HOME": str(config_home)}


# The cluster's settings, as a user passes them to `make slurm-profile` (tests/slurm/cluster.sh: partitions debug
# and gpu, no slurmdbd); nothing about job sizes, which the study's pipeline.resources give.
MAKE_SLURM_PROFILE = ["PARTITION=gpu", "CPU_PARTITION=debug", "STATUS_COMMAND=squeue", "INIT_SECONDS=2"]


def _make_slurm_profile_command() -> str:
    """The profile-installing command of `make slurm-profile` (from `make -n`: its `install` prerequisite would
    reinstall this very venv), run as typed by the Makefile."""
    printed = subprocess.run(
        ["make", "-n", "-s", "-C", str(REPO), "slurm-profile", f"VENV={sys.prefix}", *MAKE_SLURM_PROFILE],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.replace("\\\n", " ")  # fmt: skip
    (command,) = [line for line in printed.splitlines() if "profiles/install.py" in line]
    return command


@pytest.fixture(scope="module")
def cluster_study(slurm_cluster, tmp_path_factory):
    """A workflow copy plus the repo's slurm profile installed by `make slurm-profile` as the user profile `slurm`
    (XDG_CONFIG_HOME); the study asks for a GPU for sampling only, so the jobs show where each request goes."""
    root = tmp_path_factory.mktemp("slurm-study")
    config_home = root / "xdg"
    subprocess.run(
        ["bash", "-c", _make_slurm_profile_command()], cwd=REPO, env=_slurm_env(config_home), check=True,
        capture_output=True,
    )  # fmt: skip
    study = tiny_study(
        pipeline={"runs": ["sm"], "resources": {"sample": {"gpus": 1, "cpus": 1, "mem_mb": 1000, "runtime_min": 10}}},
        sample={"budgets": [1, 2]},
        launch={"gpus_per_node": 1, "partition": "gpu", "timeout_min": 10, "mem_gb": 2},
    )
    folder = workflow_copy(root / "wf", study)
    return folder, study, config_home


def _snakemake_slurm(folder: Path, config_home: Path, *args: str, check: bool = True):
    result = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "--profile", "slurm", *args],
        cwd=folder, env=_slurm_env(config_home), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(result.stdout[-4000:] + result.stderr[-6000:])
    return result


def test_profile_slurm_runs_the_study_end_to_end(cluster_study):
    folder, _, config_home = cluster_study
    result = _snakemake_slurm(folder, config_home)
    text = result.stdout + result.stderr
    slurm_ids = re.findall(r"SLURM (?:run ID|jobid) (\d+)|submitted with SLURM jobid (\d+)", text)
    assert slurm_ids, text[-3000:]
    assert "| sm |" in (folder / "results" / "report.md").read_text()
    # Training went to the same cluster through submitit, asking for a (fake) GPU.
    train_log = (folder / "logs" / "train" / "sm.log").read_text()
    assert "as slurm job" in train_log, train_log[-2000:]
    sbatch = next((folder / "work" / "submitit" / "sm").rglob("*_submission.sh")).read_text()
    assert "--gpus-per-node=1" in sbatch and "--partition=gpu" in sbatch and "--signal=USR2@" in sbatch
    # Each job asked SLURM for what the study's pipeline.resources say, in the partition that fits it: sampling
    # (1 GPU, 1000 MB) in gpu, evaluation (defaults: no GPU, 2000 MB) in debug. MinJobAge keeps finished jobs listed.
    jobs = _finished_jobs(folder)
    sample_jobs = [job for job in jobs if job["name"] == "sample"]
    evaluate_jobs = [job for job in jobs if job["name"] in ("evaluate", "floor")]
    assert sample_jobs and evaluate_jobs, jobs
    assert all(job["partition"] == "gpu" and job["gpus"] == 1 for job in sample_jobs), sample_jobs
    # (array jobs add the plugin's memory fudge for their payload on top of the request)
    assert all(1000 <= job["mem_mb"] < 2000 for job in sample_jobs), sample_jobs
    assert all(job["partition"] == "debug" and job["gpus"] == 0 for job in evaluate_jobs), evaluate_jobs
    assert all(2000 <= job["mem_mb"] < 3000 for job in evaluate_jobs), evaluate_jobs
    again = _snakemake_slurm(folder, config_home, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_failing_job_stops_the_run_and_names_rule_and_log(cluster_study):
    folder, _, config_home = cluster_study
    samples = folder / "results" / "sm" / "samples" / "steps2.npz"
    metrics = folder / "results" / "sm" / "metrics" / "steps2.json"
    assert metrics.is_file(), "needs the finished study of the previous test"
    metrics.unlink()
    samples.write_bytes(b"not an npz file")  # bad data injected into one input
    result = _snakemake_slurm(folder, config_home, "--retries", "1", check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Error in rule evaluate" in text and "logs/evaluate/sm/steps2.log" in text
    assert len(re.findall(r"rule evaluate:", text)) >= 2, "--retries 1: the job ran twice"
    assert not metrics.exists(), "no output of the failed job is left behind"


def _finished_jobs(folder: Path) -> list[dict]:
    """This study's jobs as `scontrol show job` records them: Snakemake's rule (from the job's comment),
    partition and requested TRES (cpu, mem, gres/gpu)."""
    ids = subprocess.run(
        ["squeue", "-h", "--states=all", "-o", "%i %Z"], capture_output=True, text=True, timeout=30
    ).stdout.split("\n")
    jobs = []
    for line in ids:
        if not line.split()[1:] or Path(line.split()[1]) != folder:
            continue
        record = subprocess.run(
            ["scontrol", "show", "job", "-o", line.split()[0]], capture_output=True, text=True, timeout=30
        ).stdout
        fields = dict(item.split("=", 1) for item in record.split() if "=" in item)
        rule = fields.get("Comment", "").removeprefix("rule_").split("_wildcards_")[0]  # the plugin's comment
        # Slurm versions name the request ReqTRES or TRES (cpu, mem) and TresPerJob/TresPerNode (gres:gpu:N).
        tres = ",".join(fields.get(key, "") for key in ("ReqTRES", "TRES", "TresPerJob", "TresPerNode"))
        mem = re.search(r"mem=(\d+)M", tres)
        gpus = re.search(r"gres[/:]gpu[:=](\d+)", tres)
        jobs.append(
            {"name": rule, "partition": fields.get("Partition", ""), "tres": tres,
             "mem_mb": int(mem.group(1)) if mem else 0, "gpus": int(gpus.group(1)) if gpus else 0}
        )  # fmt: skip
    return jobs


def _study_jobs(folder: Path) -> list[str]:
    """This study's SLURM jobs still queued or running (by their working directory), never anyone else's."""
    listing = subprocess.run(["squeue", "-h", "-o", "%i %Z"], capture_output=True, text=True, timeout=30).stdout
    return [line.split()[0] for line in listing.splitlines() if line.split()[1:] and Path(line.split()[1]) == folder]


def _incomplete_markers(folder: Path) -> list[Path]:
    return [p for p in (folder / ".snakemake" / "incomplete").rglob("*") if p.is_file()]


def _wait(condition, what: str, timeout_s: float = 180, every_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every_s)


def test_crashed_run_is_unlocked_and_rerun_incomplete_redoes_its_jobs(cluster_study, tmp_path):
    """The login node dies (snakemake SIGKILLed) with jobs in the queue, and they are lost with it: the working
    directory stays locked and the submitted jobs' outputs stay marked incomplete. `--unlock` frees it; then
    without `--rerun-incomplete` Snakemake refuses the half-written output, and with the slurm profile (which
    sets it) it reruns exactly that job and finishes the study.

    ism's own writes are atomic (temporary name, then rename), so a job killed mid-write leaves no file; the
    truncated file written here stands for what a non-atomic writer would leave."""
    folder, _, config_home = cluster_study
    samples = folder / "results" / "sm" / "samples"
    assert (samples / "steps1.npz").is_file(), "needs the finished study of the first test"
    targets = [f"results/sm/samples/steps{budget}.npz" for budget in (1, 2)]
    for target in targets:  # steps2.npz: the corrupt file the failure test left
        (folder / target).unlink()
        (folder / target).with_suffix(".png").unlink(missing_ok=True)
    # Hold the whole node so the submitted jobs stay pending: the crash then happens with them in the queue.
    blocker = subprocess.run(
        ["sbatch", "--parsable", "--partition=debug", f"--cpus-per-task={os.cpu_count()}", "--mem=500",
         f"--chdir={tmp_path}", "--job-name=ism-node-holder", "--wrap=sleep 600"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.strip()  # fmt: skip
    log_path = folder / "crashed-run.log"
    try:
        _wait(lambda: "RUNNING" in _job_state(blocker), "the node-holding job to start")
        with open(log_path, "w") as log:
            run = subprocess.Popen(
                # Missing intermediate files alone do not make a finished study rerun: ask for them as targets.
                [str(Path(sys.executable).parent / "snakemake"), "--profile", "slurm", *targets],
                cwd=folder, env=_slurm_env(config_home), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            try:
                _wait(lambda: len(_incomplete_markers(folder)) >= 2 or run.poll() is not None, "job submission")
                assert run.poll() is None, log_path.read_text()[-3000:]
                assert len(_study_jobs(folder)) >= 1, "the sampling jobs are in the queue"
            finally:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait(timeout=30)
        subprocess.run(["scancel", *_study_jobs(folder)], timeout=30, check=True)  # lost with the crash
        _wait(lambda: not _study_jobs(folder), "the lost jobs to leave the queue", every_s=1)
    finally:
        subprocess.run(["scancel", blocker], timeout=30, check=False)
    assert len(_incomplete_markers(folder)) >= 2
    (folder / targets[0]).write_bytes(b"PK\x03\x04 truncated")

    locked = _snakemake_slurm(folder, config_home, check=False)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    _snakemake_slurm(folder, config_home, "--unlock")
    plain = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "-n", "-c1"],
        cwd=folder, env=env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert plain.returncode != 0 and targets[0] in plain.stdout + plain.stderr, (plain.stdout + plain.stderr)[-3000:]
    assert "--rerun-incomplete" in plain.stdout + plain.stderr
    dry = _snakemake_slurm(folder, config_home, "-n")
    planned = dry.stdout + dry.stderr
    # The profile's rerun-incomplete forces exactly the jobs whose outputs were left incomplete.
    assert re.search(r"^sample\s+2$", planned, re.M) and re.search(r"forced:\s+sample\b", planned), planned[-3000:]
    _snakemake_slurm(folder, config_home)
    assert all((folder / target).stat().st_size > 100 for target in targets) and not _incomplete_markers(folder)
    again = _snakemake_slurm(folder, config_home, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def _job_state(job_id: str) -> str:
    """The job's state, finished ones included (MinJobAge keeps them listed for 10 minutes)."""
    command = ["squeue", "-h", "--states=all", "-j", job_id, "-o", "%T"]
    return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout


# Steps of the training runs that SLURM interrupts: at ~125 steps/s on an idle 2-core host they take ~50 s, so a
# run cannot finish inside one 1-minute slice whose USR2 comes 35 s before its end (or, since slurmctld checks the
# limits only every few seconds, earlier: with 3,000 steps a first signal before step 1 let the next slice finish
# the run without a checkpoint to resume from).
TRAIN_STEPS = 6000


def _train_config(tmp_path: Path, **launch):
    study = tiny_study(train={"steps": TRAIN_STEPS, "checkpoint_every": 250, "log_every": 500})
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "config").mkdir()
    write_study(folder, study)
    overrides = [
        "model.hidden_size=32",
        "model.depth=2",
        "model.num_heads=2",
        "train.device=cpu",
        "launch.cluster=slurm",
        "launch.cpus_per_task=1",
        f"launch.folder={tmp_path / 'submitit'}",
        *[f"launch.{k}={v}" for k, v in launch.items()],
    ]
    return load_run(folder / "config" / "config.yaml", "sm", overrides)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The final weights of the tests' training run without interruption (launch settings do not change them)."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    torch.set_num_threads(1)  # the job's thread count: the same reduction order, hence bitwise equal weights
    Trainer(_train_config(folder), workdir=folder / "work", output=folder / "model.pt", progress=False).run()
    return torch.load(folder / "model.pt", weights_only=True)["weights"]


def _job_log(tmp_path: Path) -> str:
    """The submitit log of the training job (every slice appends to it)."""
    return next((tmp_path / "submitit").rglob("*_log.out")).read_text()


def _checkpoint_steps(log: str) -> tuple[list[int], list[int]]:
    """(steps checkpointed on a signal, steps resumed from) in a training job's log."""
    saved = [int(s) for s in re.findall(r"checkpoint of step (\d+) written", log)]
    resumed = [int(s) for s in re.findall(r"resumed from .* \(step (\d+)\)", log)]
    return saved, resumed


def _assert_same_weights(a: dict, b: dict) -> None:
    for copy in a:
        for key in a[copy]:
            assert torch.equal(a[copy][key], b[copy][key]), (copy, key)


def test_time_limit_checkpoints_requeues_and_resumes_bitwise(slurm_cluster, tmp_path, uninterrupted):
    # A 1-minute limit with USR2 35 s before it: each slice trains ~20 s, the run needs several slices.
    cfg = _train_config(tmp_path, timeout_min=1, signal_delay_s=35, max_num_timeout=20)
    job = TrainingJob(cfg, workdir=tmp_path / "work", output=tmp_path / "model.pt")
    result = launch(job, stream=False)
    assert result["finished"] and result["step"] == TRAIN_STEPS and result["resumed_from"] > 0
    log = _job_log(tmp_path)
    print(log)  # the test's output shows the signal, the checkpoint step, the requeue and the resume step
    assert "Caught signal SIGUSR2" in log and "timed-out" in log
    saved, resumed = _checkpoint_steps(log)
    assert saved and resumed and resumed[0] == saved[0], (saved, resumed)
    assert "Requeued job" in log or "requeue" in log.lower()
    _assert_same_weights(torch.load(tmp_path / "model.pt", weights_only=True)["weights"], uninterrupted)


def _submit_until_first_checkpoint(cfg, tmp_path: Path):
    """Submit the training job through submitit and return it once it has written a periodic checkpoint."""
    job = make_executor(cfg.launch, cfg.name).submit(
        TrainingJob(cfg, workdir=tmp_path / "work", output=tmp_path / "model.pt")
    )
    ckpt = tmp_path / "work" / "ckpt"
    _wait(lambda: list(ckpt.glob("ckpt-*.pt")), "the training job's first checkpoint", timeout_s=240, every_s=1)
    return job


def test_scontrol_requeue_restarts_from_the_newest_checkpoint_bitwise(slurm_cluster, tmp_path, uninterrupted):
    cfg = _train_config(tmp_path, timeout_min=10)
    job = _submit_until_first_checkpoint(cfg, tmp_path)
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, timeout=30)
    result = job.result()
    assert result["finished"] and result["resumed_from"] > 0
    # A plain requeue sends SIGTERM (submitit ignores it), then SIGKILL: checkpoint() is never called, and the
    # job resumes from its newest periodic checkpoint (every 250 steps).
    log = _job_log(tmp_path)
    assert "signal received" not in log and result["resumed_from"] % 250 == 0, log[-3000:]
    _assert_same_weights(torch.load(tmp_path / "model.pt", weights_only=True)["weights"], uninterrupted)


def test_preemption_by_a_higher_priority_job_checkpoints_requeues_and_resumes_bitwise(
    slurm_cluster, tmp_path, uninterrupted
):
    """A job in the higher-priority partition `urgent` asks for every core: SLURM preempts the training job,
    which gets USR2 at once (preempt_send_user_signal), writes a checkpoint of its last finished step and is
    requeued by submitit; it resumes from that step once the urgent job is done."""
    # submitit calls a USR2 "timed-out" once 80% of the limit (or all but 10 minutes of it) is used: 30 minutes.
    cfg = _train_config(tmp_path, timeout_min=30, partition="debug")
    job = _submit_until_first_checkpoint(cfg, tmp_path)
    urgent = subprocess.run(
        ["sbatch", "--parsable", "--partition=urgent", f"--cpus-per-task={os.cpu_count()}", "--mem=500",
         f"--chdir={tmp_path}", "--job-name=ism-urgent", "--wrap=sleep 5"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.strip()  # fmt: skip
    result = job.result()
    assert result["finished"] and result["step"] == TRAIN_STEPS and result["resumed_from"] > 0
    log = _job_log(tmp_path)
    print(log)  # the signal, the checkpoint step, the requeue and the resume step
    assert "Caught signal SIGUSR2" in log and "this job is preempted" in log, log[-3000:]
    saved, resumed = _checkpoint_steps(log)
    assert saved and resumed == saved[:1], (saved, resumed)
    assert "COMPLETED" in _job_state(urgent), "the urgent job ran"
    _assert_same_weights(torch.load(tmp_path / "model.pt", weights_only=True)["weights"], uninterrupted)
