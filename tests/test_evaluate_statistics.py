"""FID against reference statistics in the ADM evaluator's layout (``evaluate.reference_statistics``).

Published ImageNet FIDs compare Inception pool features of the samples with the ``mu``/``sigma`` of ADM's reference
batch. The same path is tested here on a small synthetic statistics file in the digit classifier's 64-d space (no
Inception weights exist offline): statistics of the train split must give the train-split FID, and a missing or
malformed file fails in one line naming it, at config validation or before any compute.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from scipy import linalg

from ism import study
from ism.classifier import default_classifier_path, load_classifier
from ism.config import ConfigError, validate_study
from ism.data.real import real_images

from .conftest import DEFAULT_CONFIG
from .workflow.helpers import job_counts, snakemake, tiny_study, workflow_copy


def ism(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ism.cli", *map(str, args)], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def features():
    """Classifier features of the digits train split and of the floor's 60 held-out images (float64)."""
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg = study.base_run(raw, validate_study(raw))
    train = real_images(cfg.data, "train").images
    test = real_images(cfg.data, "test").images[:60]
    model, _ = load_classifier(default_classifier_path("digits"))
    with torch.inference_mode():
        return model.embed(train).double().numpy(), model.embed(test).double().numpy()


def adm_file(path, mu, sigma):
    """The ADM reference-batch layout: images in arr_0, pool statistics mu/sigma, spatial ones mu_s/sigma_s."""
    rng = np.random.default_rng(0)
    np.savez(
        path,
        arr_0=rng.integers(0, 256, (4, 8, 8, 1), dtype=np.uint8),
        mu=mu,
        sigma=sigma,
        mu_s=np.zeros(3),
        sigma_s=np.eye(3),
    )
    return path


def study_file(folder, statistics, **evaluate):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["evaluate"] |= {"floor_images": 60, "reference_statistics": str(statistics), **evaluate}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_fid_against_train_split_statistics_equals_the_train_split_fid(tmp_path, features):
    train, test = features
    stats = adm_file(tmp_path / "VIRTUAL_digits.npz", train.mean(0), np.cov(train, rowvar=False))
    out = tmp_path / "floor.json"
    result = ism("evaluate", "--floor", "--config", study_file(tmp_path, stats), "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(out.read_text())
    assert metrics["reference"] == f"adm-statistics:{stats}" and metrics["n"] == 60
    assert metrics["kid"] is None and metrics["precision"] is None and metrics["recall"] is None
    # The formula on the same features (scipy's sqrtm) …
    mu1, s1 = test.mean(0), np.cov(test, rowvar=False)
    mu2, s2 = train.mean(0), np.cov(train, rowvar=False)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert metrics["fid"] == pytest.approx(expected, rel=1e-3)
    # … and the train-split reference (features, not statistics) give the same FID.
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["evaluate"]["floor_images"] = 60
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(raw))
    plain = study.floor(tmp_path / "plain.yaml", tmp_path / "plain.json", None)
    assert metrics["fid"] == pytest.approx(plain["fid"], rel=1e-5) and plain["reference"] == "train-split"


def _malformed(folder, train):
    mu, sigma = train.mean(0), np.cov(train, rowvar=False)
    np.savez(folder / "no-sigma.npz", mu=mu)
    np.savez(folder / "flat-sigma.npz", mu=mu, sigma=sigma.ravel())
    np.savez(folder / "object-mu.npz", mu=np.array([object()] * 2, dtype=object), sigma=sigma)
    np.savez(folder / "int-mu.npz", mu=mu.astype(np.int64), sigma=sigma)
    (folder / "pickle.npz").write_bytes(pickle.dumps({"mu": mu, "sigma": sigma}))
    return {
        "missing.npz": "does not exist",
        "no-sigma.npz": "has no array 'sigma'",
        "flat-sigma.npz": "not (D,) and (D, D)",
        "object-mu.npz": "not floats",
        "int-mu.npz": "not floats",
        "pickle.npz": "not an .npz archive",
    }


def test_missing_or_malformed_statistics_fail_config_validation_in_one_line(tmp_path, features):
    train, _ = features
    for name, fragment in _malformed(tmp_path, train).items():
        raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
        raw["evaluate"]["reference_statistics"] = str(tmp_path / name)
        with pytest.raises(ConfigError) as err:
            validate_study(raw)
        message = str(err.value)
        assert message.startswith("config key 'evaluate.reference_statistics': "), message
        assert str(tmp_path / name) in message and fragment in message and "\n" not in message, message


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("missing.npz", "does not exist"),
        ("pickle.npz", "not an .npz archive"),
        ("nan.npz", "non-finite"),
        ("asymmetric.npz", "not symmetric"),
        ("32-d.npz", "holds 32-d statistics but extractor"),
    ],
)
def test_the_cli_refuses_bad_statistics_in_one_line_before_compute(tmp_path, features, name, fragment):
    train, _ = features
    _malformed(tmp_path, train)
    mu, sigma = train.mean(0), np.cov(train, rowvar=False)
    adm_file(tmp_path / "nan.npz", np.where(np.arange(64) == 3, np.nan, mu), sigma)
    adm_file(tmp_path / "asymmetric.npz", mu, sigma + np.triu(np.ones_like(sigma), 1))
    adm_file(tmp_path / "32-d.npz", mu[:32], sigma[:32, :32])
    out = tmp_path / "floor.json"
    result = ism("evaluate", "--floor", "--config", study_file(tmp_path, tmp_path / name), "--out", out)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "evaluate.reference_statistics" in lines[0] and str(tmp_path / name) in lines[0] and fragment in lines[0]
    assert not out.exists()


def test_the_workflow_scores_against_the_statistics_and_refuses_a_missing_file(tmp_path, features):
    train, _ = features
    stats = adm_file(tmp_path / "VIRTUAL_digits.npz", train.mean(0), np.cov(train, rowvar=False))
    flow = workflow_copy(tmp_path / "wf", tiny_study(evaluate={"reference_statistics": str(stats)}))
    counts = job_counts(flow, "-F")
    assert "fid_reference" not in counts and counts["evaluate"] == 4 and counts["floor"] == 1
    stats.unlink()
    result = snakemake(flow, "-n", "-c1", check=False)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "config key" in line]
    assert result.returncode != 0 and errors, result.stderr[-2000:]
    assert "'evaluate.reference_statistics'" in errors[0] and str(stats) in errors[0] and "does not exist" in errors[0]
