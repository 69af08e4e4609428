"""The Snakemake report and the workflow catalog's conventions.

The small test study (.test/config/config.yaml) runs as the catalog runs it (``snakemake --cores 2 --directory
.test``, slow tier), then ``snakemake --report`` builds its report: the FID plot and table, one sample grid per run
and budget, the training curves and the study file, each where its category, subcategory and labels put it.
"""

import base64
import json
import re
import shutil
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from ism.config import pipeline_runs, resolve_run, validate_study
from ism.curves import LOSS_LOG
from ism.naming import sample_names

from .helpers import REPO, job_counts, snakemake, workflow_copy

TEST_STUDY = REPO / ".test" / "config" / "config.yaml"
RULE_FILES = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
# What the report shows, by category: the FID results, each run's grids, the training curves, the study file.
CATEGORIES = {"FID", "Samples", "Training", "Study"}
FID_FILES = {"fid_vs_steps.png", "report.md", "fid_vs_steps.csv"}
CURVES = "train_loss.png"


def study_copy(folder: Path) -> Path:
    """A copy of the workflow with the test study in folder/.test (where its outputs go too)."""
    workflow_copy(folder)
    shutil.copytree(TEST_STUDY.parent, folder / ".test" / "config")
    return folder


def expected_grids(study: dict) -> dict[str, list[str]]:
    """{run: [grid file name, ...]}: one preview grid per run and samples file (budget, and w where guided)."""
    runs = pipeline_runs(validate_study(study))
    return {run: [f"{name}.png" for name in sample_names(resolve_run(study, run))] for run in runs}


def report_data(html: str) -> dict:
    """The report's own data (the JSON its page script is built from): results, categories, description."""
    decoder = json.JSONDecoder()

    def value(name: str):
        start = html.rindex(f"var {name} = ") + len(f"var {name} = ")
        return decoder.raw_decode(html, start)[0]

    return {name: value(name) for name in ("results", "categories", "workflow_desc")}


# ------------------------------------------------------------------------------------------------ default tier


def test_catalog_settings():
    settings = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert settings["report"] is True
    assert settings["mandatory-flags"]["flags"] and settings["mandatory-flags"]["desc"]
    assert set(settings["software-stack-deployment"]) == {"conda", "apptainer", "apptainer+conda"}


def test_every_caption_exists_and_is_used():
    """Captions of report() items and the report: description, each relative to the file that names it; every
    file of workflow/report is one of them."""
    named = set()
    for path in RULE_FILES:
        text = path.read_text()
        patterns = (r'caption="([^"]+)"', r'"caption": "([^"]+)"', r'^report: "([^"]+)"')
        for caption in (c for pattern in patterns for c in re.findall(pattern, text, re.M)):
            assert (path.parent / caption).is_file(), f"{path.name}: {caption}"
            named.add((path.parent / caption).resolve())
    assert named == set((REPO / "workflow" / "report").iterdir())


def test_test_study_dag(tmp_path):
    """The catalog's test command builds the test study's whole DAG: each run trained, sampled at each budget,
    evaluated, reported."""
    folder = study_copy(tmp_path / "wf")
    grids = expected_grids(yaml.safe_load(TEST_STUDY.read_text()))
    counts = job_counts(folder, "-F", "--directory", ".test")
    assert counts["train"] == len(grids) == 2
    # One sampling and one scoring job per run (pipeline.job_grouping: per_run), for 2 runs x 2 budgets (ism at one w).
    assert sum(map(len, grids.values())) == 4
    assert {rule: n for rule, n in counts.items() if rule.startswith(("sample", "evaluate"))} == {
        "sample_run": 1,
        "sample_run_w0.5": 1,
        "evaluate_run": 1,
        "evaluate_run_w0.5": 1,
    }
    assert counts["report"] == counts["all"] == 1


# ------------------------------------------------------------------------------------------------ slow tier


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """The test study run as the catalog runs it, then its report as a .zip and as self-contained HTML."""
    folder = study_copy(tmp_path_factory.mktemp("report"))
    start = time.monotonic()
    snakemake(folder, "--cores", "2", "--directory", ".test")
    ran = time.monotonic()
    for name in ("report.zip", "report.html"):
        snakemake(folder, "--directory", ".test", "--report", f"results/{name}")
    print(f"test study: run {ran - start:.0f} s, both reports {time.monotonic() - ran:.0f} s")
    return folder / ".test"


@pytest.mark.slow
def test_report_holds_every_result(reported):
    study = yaml.safe_load((reported / "config" / "config.yaml").read_text())
    grids = expected_grids(study)
    with zipfile.ZipFile(reported / "results" / "report.zip") as archive:
        files = {Path(name).name: archive.read(name) for name in archive.namelist()}
    data = report_data(files.pop("report.html").decode())
    # Every result is stored once in the archive, next to the page: the FID table, plot and CSV, the training
    # curves (from the log of every run), the study file, one grid per run and samples file.
    expected = [*FID_FILES, CURVES, "tiny.yaml", *(grid for run in grids.values() for grid in run)]
    assert sorted(files) == sorted(expected)
    table = files["report.md"].decode()
    assert "| fm |" in table and "| ism (w=0.5) |" in table and "(floor)" in table
    assert all((reported / "models" / run / LOSS_LOG).is_file() for run in grids)
    assert files["tiny.yaml"] == (reported / "work" / "config" / "tiny.yaml").read_bytes()
    # Where the report puts them: a category each; the grids one subcategory per run, labelled by steps and w.
    categories = data["categories"]
    assert set(categories) == CATEGORIES
    assert {Path(p).name for p in categories["FID"]["Other"]} == FID_FILES
    assert [Path(p).name for p in categories["Training"]["Other"]] == [CURVES]
    assert categories["Study"]["Other"] == ["work/config/tiny.yaml"]
    assert set(categories["Samples"]) == set(grids) == {"fm", "ism"}
    for run, names in grids.items():
        assert sorted(Path(p).name for p in categories["Samples"][run]) == sorted(names)
    results = data["results"]
    assert results["results/fm/samples/steps4.png"]["labels"] == {"steps": "4"}
    assert results["results/ism/samples/steps1-w0.5.png"]["labels"] == {"steps": "1", "guidance w": "0.5"}
    caption = " ".join(results["results/ism/samples/steps1-w0.5.png"]["caption"].split())
    # The test study samples per run: one job writes every budget, so budget and w are the grid's labels.
    assert "Run <strong>ism</strong> sampled at every budget of the study by one job" in caption
    # The FID plot's caption carries every point as a table; the description names this study, without errors.
    caption = results["results/fid_vs_steps.png"]["caption"]
    assert "<table" in caption and "fm" in caption and "ism (w=0.5)" in caption
    assert "Study <strong>tiny</strong>" in data["workflow_desc"]
    assert "System Message" not in data["workflow_desc"]
    assert all("System Message" not in result["caption"] for result in results.values())


@pytest.mark.slow
def test_html_report_is_self_contained(reported):
    """The README's command: one HTML file holding every result as data, the study file as written by the run."""
    data = report_data((reported / "results" / "report.html").read_text())
    results = data["results"]
    assert all(result["data_uri"].startswith("data:") for result in results.values())
    study = results["work/config/tiny.yaml"]["data_uri"]
    encoded = study.split("base64,", 1)[1]
    assert base64.b64decode(encoded).decode() == (reported / "work" / "config" / "tiny.yaml").read_text()
    assert results[f"results/{CURVES}"]["mime_type"] == "image/png"
