"""Training seeds as part of the study: the ablation study file, shrunk, through the real workflow (slow tier)."""

import json
import re

import numpy as np
import pytest
import yaml

from ism.config import deep_merge

from .helpers import REPO, TINY, job_counts, snakemake, workflow_copy, write_study

pytestmark = pytest.mark.slow

RUNS = ["fm", "sm", "ig", "ism"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """config/ablation.yaml with tiny training and sampling: 4 of its runs x 2 seeds, grouped per run."""
    study = yaml.safe_load((REPO / "config" / "ablation.yaml").read_text())
    study = deep_merge(study, {k: v for k, v in yaml.safe_load(TINY.read_text()).items() if k != "runs"})
    study = deep_merge(study, {"pipeline": {"runs": RUNS, "seeds": [0, 1], "job_grouping": "per_run"}})
    study["paper"]["fid"] = {run: fid for run, fid in study["paper"]["fid"].items() if run in RUNS}
    folder = workflow_copy(tmp_path_factory.mktemp("seeds"), study)
    snakemake(folder, "--profile", "profiles/local", "--cores", "2")
    return folder, study


def test_each_seed_is_a_run_of_its_own(finished):
    folder, _ = finished
    for run in RUNS:
        first, second = (folder / "models" / f"{run}-seed{seed}" / "model.pt" for seed in (0, 1))
        assert first.read_bytes() != second.read_bytes(), f"{run}: seeds 0 and 1 trained the same weights"
        files = sorted((folder / "results" / f"{run}-seed1" / "samples").glob("steps4*.npz"))
        assert len(files) == (1 if run in ("fm", "sm") else 2)  # intrinsic guidance: w = 0.5 and 1
        for samples in files:
            with np.load(samples) as f:
                assert f["arr_0"].shape[0] == 40
    # A seeded run trains where the run itself would: under work/<run>/, one folder per seed.
    assert len(list((folder / "work" / "ism").glob("*/ckpt"))) == 2


def test_report_pools_seeds_next_to_the_paper(finished):
    folder, _ = finished
    summary = json.loads((folder / "results" / "metrics.json").read_text())
    rows = {"fm", "sm", "ig_w0.5", "ig_w1", "ism_w0.5", "ism_w1"}
    assert set(summary["fid"]) == rows and summary["seeds"] == dict.fromkeys(rows, 2)
    for row in rows:
        for budget in ("steps1", "steps4"):
            run, _, w = row.partition("_")
            cells = [summary["fid_seed"][f"{run}-seed{s}{'_' + w if w else ''}"][budget] for s in (0, 1)]
            assert summary["fid"][row][budget] == pytest.approx(np.mean(cells))
            assert summary["fid_std"][row][budget] == pytest.approx(np.std(cells, ddof=1))
    report = (folder / "results" / "report.md").read_text()
    assert "## Mean ± standard deviation over training seeds" in report
    assert "| ism (w=0.5) | 2 |" in report and "| 6.56 | 2.16 |" in report
    assert "| ism-seed1 (w=0.5) |" in report  # each seed's own row


def test_a_new_seed_trains_only_that_seed(finished):
    folder, study = finished
    study = deep_merge(study, {"pipeline": {"seeds": [0, 1, 2]}})
    write_study(folder, study)
    counts = job_counts(folder)
    assert counts["train"] == len(RUNS) and counts["report"] == 1
    assert counts["evaluate_run"] == 2 and counts["evaluate_run_w0.5_1"] == 2  # fm, sm; ig, ism
    printed = snakemake(folder, "-n", "-p").stdout
    assert set(re.findall(r"evaluate --samples results/([^/ ]+)/samples/", printed)) == {f"{run}-seed2" for run in RUNS}
