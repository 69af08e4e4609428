"""The tiny study through the real workflow: snakemake end to end, rerun behaviour, and DVC on top of it."""

import json

import numpy as np
import pytest

from .helpers import job_counts, run, snakemake, tiny_study, workflow_copy, write_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny study (fm + ism, budgets 1 and 4), run once with the local profile."""
    study = tiny_study()
    folder = workflow_copy(tmp_path_factory.mktemp("e2e"), study)
    snakemake(folder, "--profile", "profiles/local", "--cores", "2")
    return folder, study


def test_report_table_and_files(finished):
    folder, _ = finished
    report = (folder / "results" / "report.md").read_text()
    assert "| fm |" in report and "| ism (w=0.5) |" in report and "floor" in report
    metrics = json.loads((folder / "results" / "metrics.json").read_text())
    assert set(metrics["runs"]) == {"fm", "ism (w=0.5)"}
    assert set(metrics["runs"]["fm"]) == {"1", "4"}
    assert all(np.isfinite(m["fid"]) and m["n"] == 40 for row in metrics["runs"].values() for m in row.values())
    assert (folder / "results" / "fid_vs_steps.png").stat().st_size > 1000
    assert (folder / "results" / "ism" / "samples" / "steps4-w0.5.png").is_file()
    with np.load(folder / "results" / "fm" / "samples" / "steps1.npz") as f:
        assert f["arr_0"].shape == (40, 8, 8, 1) and f["arr_0"].dtype == np.uint8
    # Training went through submitit (its log names the job) and left its curves and resumable state outside.
    assert "submitted run 'fm' as local job" in (folder / "logs" / "train" / "fm.log").read_text()
    assert (folder / "models" / "fm" / "train_log" / "metrics.json").is_file()
    assert list((folder / "work" / "fm" / "ckpt").glob("ckpt-*.pt"))
    # Intermediate shards are gone (temp), the encoded data is one memory-mappable file.
    assert sorted(p.name for p in (folder / "data" / "latents" / "digits").iterdir()) == [
        "labels.npy",
        "meta.json",
        "train.npy",
    ]


def test_second_run_does_nothing(finished):
    folder, _ = finished
    assert job_counts(folder) == {}


def _counts_after(finished, section: str, key: str, value) -> dict[str, int]:
    """The dry-run job counts after one config change (the study file is restored afterwards)."""
    folder, study = finished
    changed = json.loads(json.dumps(study))
    target = changed
    for part in section.split("."):
        target = target[part]
    target[key] = value
    write_study(folder, changed)
    try:
        return job_counts(folder)
    finally:
        write_study(folder, study)


def test_changed_sampling_setting_resamples_without_retraining(finished):
    counts = _counts_after(finished, "sample", "seed", 1)
    assert "train" not in counts and counts["sample"] == 4 and counts["evaluate"] == 4


def test_changed_training_setting_retrains(finished):
    counts = _counts_after(finished, "train", "lr", 0.001)
    assert counts["train"] == 2 and counts["sample"] == 4 and "encode" not in counts


def test_more_training_steps_retrain_by_resuming(finished):
    counts = _counts_after(finished, "train", "steps", 9)
    assert counts["train"] == 2


def test_changed_run_retrains_only_that_run(finished):
    counts = _counts_after(finished, "runs.ism.method.wavelet", "enabled", True)  # off in the study
    assert counts["train"] == 1 and counts["sample"] == 2 and counts["evaluate"] == 2


def test_new_budget_samples_only_that_budget(finished):
    folder, study = finished
    changed = json.loads(json.dumps(study))
    changed["sample"]["budgets"] = [1, 2, 4]
    write_study(folder, changed)
    try:
        assert job_counts(folder) == {"sample": 2, "evaluate": 2, "report": 1, "all": 1}
        snakemake(folder, "--profile", "profiles/local", "--cores", "2")
        metrics = json.loads((folder / "results" / "metrics.json").read_text())
        assert set(metrics["runs"]["fm"]) == {"1", "2", "4"}
    finally:
        write_study(folder, study)


def test_dvc_repro_is_cached_and_an_experiment_adds_a_metric(tmp_path):
    folder = workflow_copy(tmp_path / "repo", tiny_study())
    run(folder, "git", "init", "-q")
    run(folder, "dvc", "init", "-q")
    run(folder, "dvc", "remote", "add", "-d", "store", str(tmp_path / "store"))
    run(folder, "git", "add", "-A")
    run(folder, "git", "commit", "-qm", "tiny study")

    run(folder, "dvc", "repro")
    baseline = json.loads((folder / "results" / "metrics.json").read_text())
    # `dvc plots show` draws FID against steps, one line per run of this study (its own set of runs).
    plots = json.loads(run(folder, "dvc", "plots", "show", "--json").stdout)["data"]
    points = plots["FID against NFE"][0]["content"]["data"]["values"]
    assert {p["run"] for p in points} == set(baseline["runs"]) == {"fm", "ism (w=0.5)"}
    fm_curve = {int(p["steps"]): float(p["fid"]) for p in points if p["run"] == "fm"}
    assert fm_curve == pytest.approx({int(n): m["fid"] for n, m in baseline["runs"]["fm"].items()}, abs=1e-4)
    fm_nfe = {int(p["nfe"]) for p in points if p["run"] == "fm"}
    assert fm_nfe == {int(m["nfe"]) for m in baseline["runs"]["fm"].values()}
    run(folder, "git", "add", "-A")
    run(folder, "git", "commit", "-qm", "baseline results")
    second = run(folder, "dvc", "repro").stdout
    assert "Data and pipelines are up to date" in second, second
    run(folder, "dvc", "push")
    assert any((tmp_path / "store").rglob("*")), "the local remote received the outputs"

    run(folder, "dvc", "exp", "run", "-n", "seed1", "-S", "config/config.yaml:sample.seed=1")
    table = json.loads(run(folder, "dvc", "exp", "show", "--json").stdout)
    baseline_entry = next(entry for entry in table if entry.get("experiments"))
    experiment = baseline_entry["experiments"][0]["revs"][0]
    assert experiment["name"] == "seed1"

    def metrics_of(entry):
        return entry["data"]["metrics"]["results/metrics.json"]["data"]["runs"]["fm"]["1"]

    # The baseline's metric is untouched; the experiment's comes from samples drawn with the new seed.
    assert metrics_of(baseline_entry)["fid"] == baseline["runs"]["fm"]["1"]["fid"]
    assert metrics_of(baseline_entry)["sample_meta"]["seed"] == 0
    assert metrics_of(experiment)["sample_meta"]["seed"] == 1
    assert experiment["data"]["params"]["config/config.yaml"]["data"]["sample"]["seed"] == 1
