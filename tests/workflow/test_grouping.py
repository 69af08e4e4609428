"""pipeline.job_grouping: per_run makes one `ism sample` job per run (per run and guidance scale w for a run with
intrinsic guidance) and one `ism evaluate` job per run instead of one of each per samples file. The files are the
per-file jobs' files byte for byte, and a change reruns the per-run jobs it touches, never training and never another
run's jobs."""

import json
import re

import pytest

from .helpers import job_counts, snakemake, tiny_study, workflow_copy, write_study

PER_RUN = {"pipeline": {"job_grouping": "per_run"}}


def test_per_run_dag_has_one_sampling_job_per_run_and_w_and_one_scoring_job_per_run(tmp_path):
    study = tiny_study(**PER_RUN)
    study["runs"]["ism"]["sample"]["guidance"] = [0.5, 1.0]
    copy = workflow_copy(tmp_path / "wf", study)
    counts = job_counts(copy, "-F")
    assert counts == {
        "encode_shard": 1,
        "encode": 1,
        "fid_reference": 1,
        "floor": 1,
        "train": 2,
        "sample_run": 1,
        "sample_run_w0.5": 1,
        "sample_run_w1": 1,
        "evaluate_run": 1,
        "evaluate_run_w0.5_1": 1,
        "report": 1,
        "all": 1,
    }
    printed = snakemake(copy, "-n", "-F", "-p", "-c1").stdout
    # ism: budgets 1 and 4 in one process per w; its scoring (one process) pairs each samples file with its metrics.
    for w in ("0.5", "1"):
        assert re.search(rf"sample .*--run ism --steps 1 4 --guidance {w} --out-dir results/ism/samples ", printed)
    assert re.search(r"sample .*--run fm --steps 1 4 +--out-dir results/fm/samples ", printed)
    names = ["steps1-w0.5", "steps1-w1", "steps4-w0.5", "steps4-w1"]
    samples = " ".join(f"results/ism/samples/{n}.npz" for n in names)
    metrics = " ".join(f"results/ism/metrics/{n}.json" for n in names)
    assert re.search(rf"evaluate --samples {samples} .* --out {metrics} ", printed)


def test_per_run_rules_are_named_by_file_layout_not_by_run(tmp_path):
    """Runs with the same files share a rule (one job each); a run sampling other budgets gets its own rule, whose
    name says which."""
    study = tiny_study(**PER_RUN)
    study["runs"]["fm-coarse"] = {"inherit": "fm", "sample": {"budgets": [2]}}
    study["runs"]["ism-again"] = {"inherit": "ism", "train": {"lr": 0.002}}
    study["pipeline"]["runs"] = ["fm", "ism", "fm-coarse", "ism-again"]
    copy = workflow_copy(tmp_path / "wf", study)
    counts = job_counts(copy, "-F")
    assert {rule: n for rule, n in counts.items() if rule.startswith(("sample", "evaluate"))} == {
        "sample_run_steps1-4": 1,
        "sample_run_steps2": 1,
        "sample_run_w0.5": 2,
        "evaluate_run_steps1-4": 1,
        "evaluate_run_steps2": 1,
        "evaluate_run_w0.5": 2,
    }
    printed = snakemake(copy, "-n", "-F", "-p", "-c1").stdout
    assert re.search(r"sample .*--run fm-coarse --steps 2 +--out-dir results/fm-coarse/samples ", printed)
    again = r"sample .*--run ism-again --steps 1 4 --guidance 0.5 --out-dir results/ism-again/samples "
    assert re.search(again, printed)


def test_per_run_with_sample_shards_stops_naming_both_keys(tmp_path):
    copy = workflow_copy(tmp_path / "wf", tiny_study(pipeline={"job_grouping": "per_run", "sample_shards": 2}))
    result = snakemake(copy, "-n", "-c1", check=False)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "config key" in line]
    assert result.returncode != 0 and errors, result.stderr[-2000:]
    assert "'pipeline.job_grouping'" in errors[0] and "pipeline.sample_shards" in errors[0]


# --- the real tiny study, per file then per run (slow tier) ----------------------------------------------------------


def per_budget_files(folder):
    """{path: bytes} of every samples file, grid and metrics file."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for pattern in ("results/*/samples/*", "results/*/metrics/*")
        for path in sorted(folder.glob(pattern))
    }


@pytest.fixture(scope="module")
def switched(tmp_path_factory):
    """The tiny study run with per-file jobs, then switched to per-run jobs and run again in the same folder."""
    study = tiny_study(pipeline={"job_grouping": "per_file"})
    folder = workflow_copy(tmp_path_factory.mktemp("grouping"), study)
    snakemake(folder, "--profile", "profiles/local", "--cores", "2")
    per_file = per_budget_files(folder)
    study = tiny_study(**PER_RUN)
    write_study(folder, study)
    # The rules that write the files changed, so sampling and scoring run again; training does not.
    counts = job_counts(folder)
    snakemake(folder, "--profile", "profiles/local", "--cores", "2")
    return folder, study, per_file, counts


# Every run's one sampling and one scoring job (ism at its one w), then the report: the jobs of a full resample.
EVERY_RUN_RESAMPLED = {
    "sample_run": 1,
    "sample_run_w0.5": 1,
    "evaluate_run": 1,
    "evaluate_run_w0.5": 1,
    "report": 1,
    "all": 1,
}


@pytest.mark.slow
def test_per_run_jobs_write_the_per_file_jobs_bytes(switched):
    folder, _, per_file, counts = switched
    assert counts == EVERY_RUN_RESAMPLED
    per_run = per_budget_files(folder)
    assert sorted(per_run) == sorted(per_file) and len(per_run) == 2 * 2 * 3  # 2 runs x 2 budgets x (npz, png, json)
    assert [path for path in per_file if per_run[path] != per_file[path]] == []
    assert json.loads((folder / "results" / "metrics.json").read_text())["fid"]["ism_w0.5"].keys() == {
        "steps1",
        "steps4",
    }


def _counts_with(switched, change) -> dict[str, int]:
    """The dry-run job counts after ``change(study)`` (the study file is restored afterwards)."""
    folder, study, *_ = switched
    changed = json.loads(json.dumps(study))
    change(changed)
    write_study(folder, changed)
    try:
        return job_counts(folder)
    finally:
        write_study(folder, study)


@pytest.mark.slow
def test_per_run_second_run_does_nothing(switched):
    assert job_counts(switched[0]) == {}


@pytest.mark.slow
def test_per_run_new_budget_resamples_each_run_without_retraining(switched):
    counts = _counts_with(switched, lambda s: s["sample"].update(budgets=[1, 2, 4]))
    assert counts == EVERY_RUN_RESAMPLED


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sample", "jobs"),
    [
        ({"guidance": [0.5], "seed": 3}, {"sample_run_w0.5": 1, "evaluate_run_w0.5": 1}),  # other content
        ({"guidance": [0.5, 1.0]}, {"sample_run_w1": 1, "evaluate_run_w0.5_1": 1}),  # a new scale: its files only
    ],
    ids=["seed", "guidance"],
)
def test_per_run_sampling_key_of_one_run_reruns_that_run_only(switched, sample, jobs):
    counts = _counts_with(switched, lambda s: s["runs"]["ism"]["sample"].update(sample))
    assert counts == {**jobs, "report": 1, "all": 1}


@pytest.mark.slow
def test_per_run_evaluate_key_rescores_without_resampling(switched):
    counts = _counts_with(switched, lambda s: s["evaluate"].update(reference_images=150))
    assert counts == {
        "fid_reference": 1,
        "floor": 1,
        "evaluate_run": 1,
        "evaluate_run_w0.5": 1,
        "report": 1,
        "all": 1,
    }
