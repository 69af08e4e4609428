"""Classifier-feature FID through torch-fidelity: the committed extractor, the floor, sensitivity, the formula."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from scipy import linalg

from ism.classifier import accuracy, default_classifier_path, file_hash, load_classifier, train_classifier
from ism.data import load_dataset, model_to_uint8
from ism.evaluate import image_metrics, register_classifier

from .conftest import DEFAULT_CONFIG

CLASSIFIER = default_classifier_path("digits")


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    return data, model_to_uint8(data.train.images), model_to_uint8(data.test.images)


def test_committed_classifier_is_accurate_and_named_by_its_hash(digits):
    data, _, test = digits
    model, meta = load_classifier(CLASSIFIER)
    assert meta["dataset"] == "digits" and meta["seed"] == 0
    assert accuracy(model, test, data.test.labels) > 0.97
    name = register_classifier(CLASSIFIER)
    assert name == f"ism-classifier-digits-{file_hash(CLASSIFIER)[:12]}"
    assert register_classifier(CLASSIFIER) == name, "registering twice is harmless"


def test_classifier_training_is_deterministic(digits):
    data, _, _ = digits
    a, _ = train_classifier(data, seed=3, steps=20)
    b, _ = train_classifier(data, seed=3, steps=20)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def _fid(samples, reference):
    return image_metrics(samples, reference, CLASSIFIER)["fid"]


def test_floor_is_low_and_fid_grows_with_corruption(digits):
    data, train, test = digits
    floor = image_metrics(test, train, CLASSIFIER)
    assert floor["fid"] < 10 and floor["n"] == len(test) and 0.5 < floor["precision"] <= 1
    g = torch.Generator().manual_seed(0)
    noisy = [
        model_to_uint8(data.test.images + s * torch.randn(data.test.images.shape, generator=g)) for s in (0.1, 0.5)
    ]
    fids = [_fid(x, train) for x in noisy]
    assert floor["fid"] < fids[0] < fids[1], (floor["fid"], fids)
    half_the_classes = test[data.test.labels < 5]
    assert _fid(half_the_classes, train) > 10 * floor["fid"]


def test_fid_matches_the_formula_on_the_extracted_features(digits):
    _, train, test = digits
    model, _ = load_classifier(CLASSIFIER)
    with torch.inference_mode():
        f1, f2 = model.embed(test).double().numpy(), model.embed(train).double().numpy()
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    fid = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert _fid(test, train) == pytest.approx(fid, rel=1e-3)


def test_cli_evaluate_floor_and_bad_input(tmp_path):
    def ism(*args):
        return subprocess.run([sys.executable, "-m", "ism.cli", *args], capture_output=True, text=True, timeout=300)

    out = tmp_path / "floor.json"
    study = yaml.safe_load(DEFAULT_CONFIG.read_text())
    study["evaluate"]["floor_images"] = 200
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study))
    result = ism("evaluate", "--floor", "--config", str(config), "--out", str(out))
    assert result.returncode == 0, result.stderr
    metrics = json.loads(out.read_text())
    assert metrics["n"] == 200 and metrics["extractor"].startswith("ism-classifier-digits-")
    missing = ism(
        "evaluate",
        "--samples",
        str(tmp_path / "none.npz"),
        "--config",
        str(DEFAULT_CONFIG),
        "--out",
        str(tmp_path / "m.json"),
    )
    assert missing.returncode == 2 and "none.npz" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


def test_missing_inception_weights_name_the_file_and_where_to_get_it(tmp_path):
    from ism.evaluate import INCEPTION_URL, resolve_extractor

    missing = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    with pytest.raises(FileNotFoundError) as err:
        resolve_extractor("inception-v3-compat", dataset="imagefolder", classifier=None, inception_weights=missing)
    assert str(missing) in str(err.value) and INCEPTION_URL in str(err.value)
    assert "evaluate.inception_weights" in str(err.value) and "\n" not in str(err.value)


def test_cached_reference_gives_the_same_metrics_without_loading_the_data(tmp_path, monkeypatch):
    from ism import study

    config = tmp_path / "study.yaml"
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["evaluate"]["floor_images"] = 200
    config.write_text(yaml.safe_dump(raw))
    reference = tmp_path / "reference"
    study.reference(config, reference)
    uncached = study.floor(config, tmp_path / "uncached.json", None)
    # Scoring against the cache must not need the real data (each evaluate job would pay ~1 s to load it) …
    held_out = study.real_images(study.base_run(raw, study.validate_study(raw)).data, "test").images[:200]

    def no_data(data, side):
        raise AssertionError(f"the {side} split was loaded although the reference is cached")

    monkeypatch.setattr(study, "real_images", no_data)

    def score(out):
        scorer = study._Scorer(config, reference)
        scorer.check(held_out.shape, "the floor's images")
        return scorer.score(held_out, {}, out)

    cached = score(tmp_path / "cached.json")
    for key in ("fid", "kid", "precision", "recall", "n_reference"):
        assert cached[key] == pytest.approx(uncached[key], rel=1e-9), key
    # … and a reference whose features file is gone is refused in one line naming it, before any compute.
    (reference / "reference.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"reference\.npz' does not exist: rerun 'ism fid-reference") as err:
        score(tmp_path / "again.json")
    assert "\n" not in str(err.value) and not (tmp_path / "again.json").exists()


def test_several_samples_files_in_one_call_give_each_file_its_own_metrics_bytes(tmp_path, digits, monkeypatch):
    """`ism evaluate --samples A B --out MA MB` (the workflow's per-run job) writes for each file exactly the bytes a
    call for that file alone writes; counts that do not pair up are one line."""
    from ism import study
    from ism.evaluate import read_samples

    _, train, test = digits
    config = tmp_path / "study.yaml"
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["evaluate"]["reference_images"] = 300
    config.write_text(yaml.safe_dump(raw))
    reference = tmp_path / "reference"
    study.reference(config, reference)
    samples = []
    for i, images in enumerate((test[:60], train[:50], test[100:180])):
        path = tmp_path / f"steps{2**i}.npz"
        meta = json.dumps({"run": "fm", "steps": 2**i})
        np.savez(path, arr_0=images.permute(0, 2, 3, 1).numpy(), labels=np.zeros(len(images)), meta=np.array(meta))
        samples.append(path)
    together = [tmp_path / f"together-{p.stem}.json" for p in samples]
    reads = []
    with monkeypatch.context() as patch:  # each file's images are read once (checked from its header before)
        patch.setattr(study, "read_samples", lambda path: reads.append(path) or read_samples(path))
        study.evaluate_files(config, samples, together, reference)
    assert reads == samples
    for path, out in zip(samples, together, strict=True):
        alone = study.evaluate(config, path, tmp_path / f"alone-{path.stem}.json", reference)
        assert out.read_bytes() == (tmp_path / f"alone-{path.stem}.json").read_bytes()
        assert alone["sample_meta"]["steps"] == int(path.stem.removeprefix("steps"))
    command = ["evaluate", "--config", str(config), "--reference", str(reference), "--samples", *map(str, samples)]
    result = subprocess.run(
        [sys.executable, "-m", "ism.cli", *command, "--out", str(tmp_path / "one.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "3 --samples files but 1 --out files" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "one.json").exists()
