"""An ImageFolder study reaches FID offline: the workflow builds the study's feature classifier as a job before the
FID reference, a given classifier is used as it is, and a missing Inception weights file stops the DAG up front.

The images are made here: three classes of sklearn digits, upscaled to 16×16 PNGs (nothing downloads).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from ism.config import INCEPTION_MIN_BYTES

from .helpers import job_counts, snakemake, tiny_study, workflow_copy

CLASSES = 3
PER_CLASS = 40  # 30 train and 10 test images per class


def make_image_folder(root: Path, *, classes: int = CLASSES, per_class: int = PER_CLASS, side: int = 16) -> Path:
    """``root/<class>/<index>.png``: the first ``per_class`` sklearn digits of each of ``classes`` classes, gray."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in range(classes):
        folder = root / f"digit{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(digits.target == label)[:per_class]:
            pixels = np.rint(digits.images[i] * (255 / 16)).astype(np.uint8)
            Image.fromarray(pixels).resize((side, side), Image.NEAREST).save(folder / f"{i:04d}.png")
    return root


def folder_study(root: Path, **evaluate) -> dict:
    """The tiny study on an image folder at 16×16, FID in the features of the classifier the workflow builds."""
    return tiny_study(
        study="folder",
        data={"dataset": "imagefolder", "root": str(root), "image_size": 16},
        evaluate={"extractor": "classifier", "classifier_steps": 60, **evaluate},
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"))


def _dag_edges(folder: Path, *args: str) -> set[tuple[str, str]]:
    """(upstream rule, downstream rule) pairs of ``snakemake --dag``."""
    dot = snakemake(folder, "--dag", "-F", *args).stdout
    labels = dict(re.findall(r'^\s*(\d+)\[label = "([a-z_]+)', dot, re.M))
    return {(labels[a], labels[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.M)}


def test_the_workflow_builds_the_classifier_before_the_fid_reference(tmp_path, images):
    copy = workflow_copy(tmp_path / "wf", folder_study(images))
    counts = job_counts(copy, "-F")
    assert counts["classifier"] == 1 and counts["fid_reference"] == 1 and counts["evaluate"] == 4
    edges = _dag_edges(copy)
    assert {("classifier", "fid_reference"), ("classifier", "floor"), ("classifier", "evaluate")} <= edges
    assert ("fid_reference", "evaluate") in edges
    printed = snakemake(copy, "-n", "-F", "-p", "-c1", "classifier").stdout
    assert "models/classifier-folder.pt" in printed and "ism -q classifier --config" in printed


def test_a_committed_or_given_classifier_is_no_job(tmp_path, images):
    # digits: the committed checkpoint (part of the code, no job, no input).
    digits = workflow_copy(tmp_path / "digits", tiny_study())
    assert "classifier" not in job_counts(digits, "-F")
    # A classifier the user names is used as it is: an input of the FID reference, never rebuilt.
    given = tmp_path / "mine.pt"
    given.write_bytes(b"made by the user")
    copy = workflow_copy(tmp_path / "given", folder_study(images, classifier=str(given)))
    counts = job_counts(copy, "-F")
    assert "classifier" not in counts and counts["fid_reference"] == 1
    assert str(given) in snakemake(copy, "-n", "-F", "-c1", "fid_reference").stdout


def _one_error_line(result) -> str:
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "config key" in line]
    assert len(lines) == 1, result.stdout + result.stderr
    return lines[0]


def test_a_missing_given_classifier_stops_the_dag_in_one_line(tmp_path, images):
    missing = tmp_path / "nowhere.pt"
    copy = workflow_copy(tmp_path / "wf", folder_study(images, classifier=str(missing)))
    line = _one_error_line(snakemake(copy, "-n", "-c1", check=False))
    assert "'evaluate.classifier'" in line and str(missing) in line and "ism classifier --config" in line
    assert not (copy / "results").exists() and not (copy / "data").exists()


def test_missing_or_truncated_inception_weights_stop_the_dag_before_any_job(tmp_path, images):
    weights = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    study = tiny_study(
        study="folder",
        data={"dataset": "imagefolder", "root": str(images), "image_size": 16},
        evaluate={"extractor": "inception-v3-compat", "inception_weights": str(weights)},
    )
    copy = workflow_copy(tmp_path / "wf", study)
    line = _one_error_line(snakemake(copy, "-n", "-c1", check=False))
    assert "'evaluate.inception_weights'" in line and str(weights) in line and "releases/download" in line
    weights.write_bytes(b"<html>not found</html>")  # what a failed download leaves
    line = _one_error_line(snakemake(copy, "-n", "-c1", check=False))
    assert "'evaluate.inception_weights'" in line and "22 bytes" in line
    assert not (copy / "results").exists() and not (copy / "data").exists()
    # A file of the network's size passes the cheap check (its hash is checked when it is loaded).
    with weights.open("wb") as f:
        f.truncate(INCEPTION_MIN_BYTES)
    assert job_counts(copy, "-F")["fid_reference"] == 1


@pytest.mark.slow
def test_an_imagefolder_study_reaches_its_fid_table_offline(tmp_path, images):
    copy = workflow_copy(tmp_path / "wf", folder_study(images))
    snakemake(copy, "--profile", "profiles/local", "--cores", "2", timeout=600)
    # The FID table: two budgets for each row, and the floor.
    table = (copy / "results" / "report.md").read_text()
    for row in ("fm", "ism (w=0.5)"):
        line = next(line for line in table.splitlines() if line.startswith(f"| {row} |"))
        fids = [float(fid) for fid in re.findall(r"(\d+\.\d+) \(\d+ NFE\)", line)]
        assert len(fids) == 2 and all(np.isfinite(fids)), line
    assert "| real held-out images (floor) |" in table
    cells = [json.loads(p.read_text()) for p in sorted((copy / "results").glob("*/metrics/steps*.json"))]
    assert len(cells) == 4 and all(np.isfinite(m["fid"]) and m["n"] == 40 for m in cells)
    # Scored in the features of the classifier the workflow built, named by its hash.
    from ism.classifier import file_hash, load_classifier

    built = copy / "models" / "classifier-folder.pt"
    _, meta = load_classifier(built)
    assert meta["dataset"] == "imagefolder" and meta["image_shape"] == [1, 16, 16] and meta["num_classes"] == CLASSES
    name = f"ism-classifier-imagefolder-{file_hash(built)[:12]}"
    floor = json.loads((copy / "results" / "floor.json").read_text())
    assert floor["extractor"] == name and np.isfinite(floor["fid"]) and floor["n"] == CLASSES * PER_CLASS // 4
    assert all(m["extractor"] == name and m["n_reference"] == CLASSES * PER_CLASS * 3 // 4 for m in cells)
    assert job_counts(copy) == {}, "a second run does nothing"
