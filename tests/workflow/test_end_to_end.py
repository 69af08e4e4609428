"""The tiny study through the real workflow: snakemake end to end and its rerun behaviour (DVC on top of it:
test_dvc.py)."""

import json
import os
import time

import numpy as np
import pytest

from .helpers import job_counts, snakemake, tiny_study, workflow_copy, write_study

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
    fid = json.loads((folder / "results" / "metrics.json").read_text())["fid"]  # machine keys: run, run_w<w>
    assert set(fid) == {"fm", "ism_w0.5"} and set(fid["fm"]) == {"steps1", "steps4"}
    assert all(np.isfinite(value) for row in fid.values() for value in row.values())
    assert json.loads((folder / "results" / "fm" / "metrics" / "steps4.json").read_text())["n"] == 40
    assert (folder / "results" / "fid_vs_steps.png").stat().st_size > 1000
    assert (folder / "results" / "ism" / "samples" / "steps4-w0.5.png").is_file()
    with np.load(folder / "results" / "fm" / "samples" / "steps1.npz") as f:
        assert f["arr_0"].shape == (40, 8, 8, 1) and f["arr_0"].dtype == np.uint8
    # Training went through submitit (its log names the job) and left its curves and resumable state outside.
    assert "submitted run 'fm' as local job" in (folder / "logs" / "train" / "fm.log").read_text()
    assert (folder / "models" / "fm" / "train_log" / "metrics.json").is_file()
    assert list((folder / "work" / "fm").glob("*/ckpt/ckpt-*.pt"))
    # Intermediate shards are gone (temp), the encoded data is one memory-mappable file.
    assert sorted(p.name for p in (folder / "data" / "latents" / "digits").iterdir()) == [
        "labels.npy",
        "meta.json",
        "train.npy",
    ]


def test_second_run_does_nothing(finished):
    folder, _ = finished
    assert job_counts(folder) == {}


def test_files_restored_with_new_mtimes_do_not_rerun(finished):
    """As after `dvc checkout` or in a queued experiment's copy: models and the reference come back newer than the
    samples and metrics made from them; the profile's recorded input checksums (models are over Snakemake's 1 MB
    default) keep every job up to date."""
    folder, _ = finished
    inputs = [*folder.glob("models/*/model.pt"), *folder.glob("results/fid_reference/*")]
    before = {path: path.stat() for path in inputs}
    later = time.time() + 5
    try:
        for path in inputs:
            os.utime(path, (later, later))
        assert job_counts(folder, "--profile", "profiles/local") == {}
    finally:  # the other tests of this module dry-run without the profile
        for path, stat in before.items():
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


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
        assert set(metrics["fid"]["fm"]) == {"steps1", "steps2", "steps4"}
    finally:
        write_study(folder, study)
