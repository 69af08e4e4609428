"""The study on a real SLURM cluster: `snakemake --profile slurm` end to end, training that survives its time
limit and a `scontrol requeue` bit for bit, and a failing job that stops the run cleanly."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ism.config import load_run
from ism.launch import TrainingJob, launch
from ism.train import Trainer

from ..workflow.helpers import REPO, env, tiny_study, workflow_copy, write_study

pytestmark = pytest.mark.slurm


def _slurm_env(config_home: Path) -> dict[str, str]:
    return env() | {"XDG_CONFIG_HOME": str(config_home)}


@pytest.fixture(scope="module")
def cluster_study(slurm_cluster, tmp_path_factory):
    """A workflow copy plus the repo's slurm profile installed as the user profile `slurm` (XDG_CONFIG_HOME)."""
    root = tmp_path_factory.mktemp("slurm-study")
    config_home = root / "xdg"
    subprocess.run(
        [sys.executable, str(REPO / "profiles" / "install.py"), "--partition", "gpu", "--status-command", "squeue",
         "--no-account", "--init-seconds", "2", "--max-cpus", "1", "--max-mem-mb", "2000"],
        env=_slurm_env(config_home), check=True, capture_output=True,
    )  # fmt: skip
    study = tiny_study(
        pipeline={"runs": ["sm"]},
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
    # The GPU rules asked SLURM for GPUs (the plugin's sbatch call is in Snakemake's log at debug level; the
    # array job's record holds the request).
    assert "sample" in text and "evaluate" in text
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


def _train_config(tmp_path: Path, **launch):
    study = tiny_study(train={"steps": 3000, "checkpoint_every": 250, "log_every": 500})
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


def _uninterrupted(cfg, tmp_path: Path) -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)  # the job's thread count: the same reduction order, hence bitwise equal weights
    Trainer(cfg, workdir=tmp_path / "plain", output=tmp_path / "plain.pt", progress=False).run()
    return torch.load(tmp_path / "plain.pt", weights_only=True)["weights"]


def _assert_same_weights(a: dict, b: dict) -> None:
    for copy in a:
        for key in a[copy]:
            assert torch.equal(a[copy][key], b[copy][key]), (copy, key)


def test_time_limit_checkpoints_requeues_and_resumes_bitwise(slurm_cluster, tmp_path):
    # A 1-minute limit with USR2 25 s before it: each slice trains ~20 s, the run needs several slices.
    cfg = _train_config(tmp_path, timeout_min=1, signal_delay_s=35, max_num_timeout=20)
    job = TrainingJob(cfg, workdir=tmp_path / "work", output=tmp_path / "model.pt")
    result = launch(job, stream=False)
    assert result["finished"] and result["step"] == 3000 and result["resumed_from"] > 0
    log = next((tmp_path / "submitit").rglob("*_log.out")).read_text()
    print(log)  # the test's output shows the signal, the checkpoint step, the requeue and the resume step
    assert "Caught signal SIGUSR2" in log and "timed-out" in log
    saved = [int(s) for s in re.findall(r"checkpoint of step (\d+) written", log)]
    resumed = [int(s) for s in re.findall(r"resumed from .* \(step (\d+)\)", log)]
    assert saved and resumed and resumed[0] == saved[0], (saved, resumed)
    assert "Requeued job" in log or "requeue" in log.lower()
    _assert_same_weights(torch.load(tmp_path / "model.pt", weights_only=True)["weights"], _uninterrupted(cfg, tmp_path))


def test_scontrol_requeue_restarts_from_the_newest_checkpoint_bitwise(slurm_cluster, tmp_path):
    import submitit

    cfg = _train_config(tmp_path, timeout_min=10)
    from ism.launch import make_executor

    executor = make_executor(cfg.launch, cfg.name)
    job = executor.submit(TrainingJob(cfg, workdir=tmp_path / "work", output=tmp_path / "model.pt"))
    ckpt = tmp_path / "work" / "ckpt"
    deadline = time.monotonic() + 240
    while not list(ckpt.glob("ckpt-*.pt")) and time.monotonic() < deadline:
        time.sleep(1)
    assert list(ckpt.glob("ckpt-*.pt")), "training never reached its first checkpoint"
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, timeout=30)
    result = job.result()
    assert result["finished"] and result["resumed_from"] > 0
    assert isinstance(job, submitit.Job)
    _assert_same_weights(torch.load(tmp_path / "model.pt", weights_only=True)["weights"], _uninterrupted(cfg, tmp_path))
