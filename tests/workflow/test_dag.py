"""The DAG of every shipped study (dry runs), config validation before any job, lint, and the schema file."""

import json
import re
from pathlib import Path

import pytest
import yaml

from ism.config import INCEPTION_FILE, INCEPTION_MIN_BYTES, study_json_schema

from .helpers import REPO, job_counts, snakemake, tiny_study, workflow_copy, write_study


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    return workflow_copy(tmp_path_factory.mktemp("flow"))


def test_default_study_dag(flow):
    # fm and sm: 8 budgets each, one sampling job; ism: 8 budgets x 2 guidance scales (w = 0.5 and 1), one sampling
    # job per w; one scoring job per run (pipeline.job_grouping: per_run). Rules are per file layout, not per run.
    assert job_counts(flow, "-F") == {
        "encode_shard": 1,
        "encode": 1,
        "fid_reference": 1,
        "floor": 1,
        "train": 3,
        "sample_run": 2,
        "sample_run_w0.5": 1,
        "sample_run_w1": 1,
        "evaluate_run": 2,
        "evaluate_run_w0.5_1": 1,
        "report": 1,
        "all": 1,
    }
    # The same study with one job per samples file: 32 sampling and 32 scoring jobs.
    per_file = job_counts(flow, "-F", "--config", "pipeline={job_grouping: per_file, runs: [fm, sm, ism]}")
    assert per_file["sample"] == 32 and per_file["evaluate"] == 32 and per_file["train"] == 3


def test_mnist_study_dag(flow):
    counts = job_counts(flow, "-F", "--configfile", "config/mnist.yaml")
    # mnist: ism at one w, so one sampling and one scoring job per run.
    assert counts["train"] == 3 and counts["sample_run_w0.5"] == 1 and counts["evaluate_run_w0.5"] == 1
    assert sum(n for rule, n in counts.items() if rule.startswith(("sample", "evaluate"))) == 6


def test_ablation_study_trains_every_run_once_per_seed(flow):
    """config/ablation.yaml: 9 runs (the paper's chain, then two wavelet forms) x 3 training seeds are 27 runs of
    their own (train, sampling and scoring jobs), reported together; each seeded run trains with its seed in its
    own folder."""
    counts = job_counts(flow, "-F", "--configfile", "config/ablation.yaml")
    chain = ["fm", "sm", "ig", "ig-interval", "ig-interval-wavelet", "ig-interval-wavelet-sot", "ism"]
    runs = [*chain, "ig-interval-wavelet-fine", "ig-interval-wavelet-l1"]
    seeded = [f"{run}-seed{seed}" for run in runs for seed in (0, 1, 2)]
    assert counts["train"] == 27 and counts["report"] == 1
    # One scoring job per seeded run; fm and sm sample without guidance: one job each; the seven intrinsic-guidance
    # runs: one job per w (0.5 and 1). Seeds add jobs, not rules.
    assert counts["evaluate_run"] == 6 and counts["evaluate_run_w0.5_1"] == 21
    assert counts["sample_run"] == 6 and counts["sample_run_w0.5"] == counts["sample_run_w1"] == 21
    printed = snakemake(flow, "-n", "-p", "-F", "--configfile", "config/ablation.yaml").stdout
    trained = dict(re.findall(r"--run (\S+) .*?--workdir '?(work/[^' ]+)'?", printed))
    assert set(trained) == set(seeded)
    assert len({trained[f"ism-seed{s}"] for s in (0, 1, 2)}) == 3 and trained["ism-seed1"].startswith("work/ism/")
    order = " ".join(seeded)  # the report's rows: the paper's order, seeds side by side
    assert re.search(rf"ism -q report --runs {order} --config", printed)


def test_imagenet_study_dag_shards_encoding_and_sampling(flow):
    # Its Inception weights are checked before any job: a sparse stand-in of the network's size passes that check.
    weights = flow / "resources" / INCEPTION_FILE
    weights.parent.mkdir(exist_ok=True)
    with weights.open("wb") as f:
        f.truncate(INCEPTION_MIN_BYTES)
    counts = job_counts(flow, "-F", "--configfile", "config/imagenet256.yaml")
    # 2 runs (sm, ism) x 8 budgets = 16 sample files, each from 10 shards; 64 encoding shards.
    assert counts == {
        "encode_shard": 64,
        "encode": 1,
        "fid_reference": 1,
        "floor": 1,
        "train": 2,
        "sample_shard": 160,
        "merge_samples": 16,
        "evaluate": 16,
        "report": 1,
        "all": 1,
    }


def test_guidance_scales_multiply_the_sample_files(flow, tmp_path):
    study = tiny_study()
    study["runs"]["ism"]["sample"]["guidance"] = [0.0, 0.5, 1.0]
    copy = workflow_copy(tmp_path / "wf", study)
    counts = job_counts(copy, "-F")
    # fm: 2 budgets; ism: 2 budgets x 3 scales.
    assert counts["sample"] == 2 + 6 and counts["evaluate"] == 8 and counts["train"] == 2


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"sample": {"budgets": [1, 3]}}, "sample.budgets"),
        ({"train": {"lr": "fast"}}, "train.lr"),
        ({"train": {"stepz": 10}}, "train.stepz"),
        ({"pipeline": {"runs": ["fm", "nope"]}}, "pipeline.runs.1"),
        ({"runs": {"fm": {"data": {"dataset": "mnist5k"}}}}, "runs.fm.data"),
        ({"method": {"base_steps": 100}}, "method.base_steps"),
        ({"launch": {"cluster": "kubernetes"}}, "launch.cluster"),
    ],
)
def test_bad_config_stops_before_any_job_naming_the_key(tmp_path, patch, key):
    copy = workflow_copy(tmp_path / "wf", tiny_study(**patch))
    result = snakemake(copy, "-n", "-c1", check=False)
    assert result.returncode != 0
    error_lines = [line for line in (result.stdout + result.stderr).splitlines() if "config key" in line]
    assert error_lines and f"'{key}'" in error_lines[0], result.stderr[-2000:]
    assert not (copy / "results").exists() and not (copy / "data").exists()


def test_lint_is_clean(flow):
    result = snakemake(flow, "--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_file_is_the_exported_schema():
    on_disk = json.loads((REPO / "workflow" / "schemas" / "config.schema.json").read_text())
    assert on_disk == json.loads(json.dumps(study_json_schema())), "run: ism schema --out workflow/schemas/..."


def _install_profile(dest, *args):
    import subprocess
    import sys

    command = [sys.executable, str(REPO / "profiles" / "install.py"), *args, "--dest", str(dest)]
    subprocess.run(command, check=True, capture_output=True)
    return yaml.safe_load((dest / "config.yaml").read_text())


def test_shipped_profiles_hold_the_cluster_and_the_installer_fills_partitions(tmp_path):
    slurm = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert slurm["executor"] == "slurm" and "launch={cluster: slurm}" in slurm["config"]
    # Job sizes are the study's: the profile sets no threads or resources of any rule.
    assert not {"set-threads", "set-resources", "default-resources"} & set(slurm), sorted(slurm)
    installed = _install_profile(tmp_path / "two", "--partition", "gpu", "--cpu-partition", "cpu", "--account", "p")
    assert installed["default-resources"] == {"slurm_account": "p"}
    partitions = yaml.safe_load(Path(installed["slurm-partition-config"]).read_text())["partitions"]
    assert partitions["cpu"]["max_gpu"] == 0 and partitions["gpu"]["max_gpu"] > 0  # GPU jobs fit only "gpu"
    one = _install_profile(tmp_path / "one", "--partition", "gpu")
    assert one["default-resources"] == {"slurm_partition": "gpu"} and "slurm-partition-config" not in one


def test_job_resources_come_from_the_study(tmp_path):
    """Each step's jobs ask for the study's pipeline.resources (threads, gpu, mem_mb, runtime)."""
    study = tiny_study()
    study["pipeline"]["resources"] = {
        "sample": {"cpus": 2, "gpus": 1, "mem_mb": 1234, "runtime_min": 17},
        "evaluate": {"mem_mb": 4321},
    }
    copy = workflow_copy(tmp_path / "wf", study)
    printed = snakemake(copy, "-n", "-F", "-c2").stdout
    jobs = {}
    for block in printed.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0].strip()
        resources = re.search(r"resources: (.*)", block)
        threads = re.search(r"threads: (\d+)", block)
        if resources:
            jobs[rule] = (resources.group(1), int(threads.group(1)) if threads else 1)
    sample, sample_threads = jobs["sample"]
    assert "mem_mb=1234" in sample and "runtime=17" in sample and "gpu=1" in sample and sample_threads == 2
    assert "mem_mb=4321" in jobs["evaluate"][0] and "gpu=0" in jobs["evaluate"][0]
    assert "mem_mb=2000" in jobs["fid_reference"][0], "defaults where the study says nothing"


def test_study_file_written_for_jobs_holds_the_validated_config(tmp_path):
    study = tiny_study()
    copy = workflow_copy(tmp_path / "wf", study)
    job_counts(copy, "-F")
    written = yaml.safe_load((copy / "work" / "config" / "tiny.yaml").read_text())
    assert written == study
    study["sample"]["seed"] = 5
    write_study(copy, study)
    job_counts(copy, "-F")
    assert yaml.safe_load((copy / "work" / "config" / "tiny.yaml").read_text())["sample"]["seed"] == 5


def _train_workdirs(copy: Path) -> dict[str, str]:
    """Each run's --workdir in the train jobs' shell commands (`snakemake -n -p`)."""
    printed = snakemake(copy, "-n", "-p", "-F").stdout
    return dict(re.findall(r"--run (\S+) .*?--workdir '?(work/[^' ]+)'?", printed))


def test_training_workdir_follows_what_is_trained(tmp_path):
    """A changed training key trains in a new folder (never beside checkpoints the trainer must refuse); more
    steps keep the folder, so training resumes; a run-level key moves only that run."""
    study = tiny_study()
    copy = workflow_copy(tmp_path / "wf", study)
    before = _train_workdirs(copy)
    assert set(before) == set(study["pipeline"]["runs"]) and all(
        re.fullmatch(rf"work/{run}/[0-9a-f]{{16}}", folder) for run, folder in before.items()
    )
    study["train"]["steps"] += 5
    write_study(copy, study)
    assert _train_workdirs(copy) == before
    study["runs"].setdefault("ism", {}).setdefault("train", {})["lr"] = 0.0123
    write_study(copy, study)
    moved = _train_workdirs(copy)
    assert moved["ism"] != before["ism"] and {r: f for r, f in moved.items() if r != "ism"} == {
        r: f for r, f in before.items() if r != "ism"
    }
