"""Nothing evaluation reads is unpickled (DESIGN D8), and what it refuses it refuses in one line, before compute.

Crafted files stand in for an attacker's: unpickling one creates a marker file (arbitrary code would run there).
Each test first shows that the payload is live, then that ``ism`` refuses the file without running it. Wrong
samples files (issue: "16×16 samples scored against the 8×8 reference returned FID 1566") are refused through the
real CLI with one line naming the file, exit status 2, no traceback and no metrics file.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch_fidelity
import yaml
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from ism import study
from ism.classifier import default_classifier_path
from ism.data import load_dataset, model_to_uint8
from ism.evaluate import (
    INCEPTION_SHA256_PREFIX,
    EvaluateError,
    SafeInceptionV3,
    _Images,
    image_metrics,
    load_inception_state,
    register_classifier,
)

from .conftest import DEFAULT_CONFIG

CLASSIFIER = default_classifier_path("digits")


class Crafted:
    """A pickle payload: unpickling it calls open(marker, 'w'), i.e. runs code of the file's choosing."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def ism(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ism.cli", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 2 and exactly one stderr line, ``ism: error: …``, holding every fragment; no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("ism: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    return model_to_uint8(data.train.images), model_to_uint8(data.test.images)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, digits):
    """A small digits study, its train-split reference (made by the library) and a good samples file."""
    folder = tmp_path_factory.mktemp("safety")
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["evaluate"] |= {"reference_images": 200, "floor_images": 60}
    config = folder / "study.yaml"
    config.write_text(yaml.safe_dump(raw))
    reference = folder / "reference"
    study.reference(config, reference)
    _, test = digits
    good = folder / "good.npz"
    np.savez(good, arr_0=test[:60].permute(0, 2, 3, 1).numpy(), meta=json.dumps({"run": "test", "steps": 1}))
    return {"folder": folder, "config": config, "reference": reference, "good": good, "test": test}


def test_the_crafted_payloads_are_live(tmp_path):
    """Sanity of the fixtures below: an unsafe load of each crafted file does run its code."""
    marker = tmp_path / "ran"
    torch.save(Crafted(marker), tmp_path / "crafted.pt")
    torch.load(tmp_path / "crafted.pt", weights_only=False)
    assert marker.exists()
    marker.unlink()
    np.savez(tmp_path / "crafted.npz", features=np.array([Crafted(marker)], dtype=object))
    with np.load(tmp_path / "crafted.npz", allow_pickle=True) as f:
        f["features"]
    assert marker.exists()


# --- metric values: the feature path equals torch-fidelity's calculate_metrics -----------------------------------


def test_metrics_equal_torch_fidelity_calculate_metrics(digits):
    train, test = digits
    samples, reference = test[:60], train[:200]
    ours = image_metrics(samples, reference, CLASSIFIER)
    theirs = torch_fidelity.calculate_metrics(
        input1=_Images(samples),
        input2=_Images(reference),
        fid=True,
        kid=True,
        prc=True,
        feature_extractor=register_classifier(CLASSIFIER),
        feature_extractor_weights_path=str(CLASSIFIER),
        cuda=False,
        save_cpu_ram=True,
        cache=False,
        verbose=False,
        kid_subset_size=60,
        batch_size=500,
    )
    pairs = {
        "fid": "frechet_inception_distance",
        "kid": "kernel_inception_distance_mean",
        "kid_std": "kernel_inception_distance_std",
        "precision": "precision",
        "recall": "recall",
    }
    for key, theirs_key in pairs.items():
        assert ours[key] == pytest.approx(theirs[theirs_key], rel=1e-9, abs=1e-12), key


# --- Inception weights: pinned hash, then weights_only=True ---------------------------------------------------------


def test_crafted_inception_weights_are_refused_in_one_line_by_the_cli(tmp_path, setup):
    marker = tmp_path / "ran"
    crafted = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(Crafted(marker), crafted)
    raw = yaml.safe_load(setup["config"].read_text())
    raw["evaluate"] |= {"extractor": "inception-v3-compat", "inception_weights": str(crafted)}
    config = tmp_path / "inception.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "m.json"
    for result in (
        ism("evaluate", "--floor", "--config", config, "--out", out),
        ism("evaluate", "--samples", setup["good"], "--config", config, "--out", out),
        ism("fid-reference", "--config", config, "--out-dir", tmp_path / "ref"),
    ):
        assert_refused(result, str(crafted), "evaluate.inception_weights", INCEPTION_SHA256_PREFIX)
    assert not marker.exists() and not out.exists() and not (tmp_path / "ref").exists()


def test_a_crafted_file_with_the_right_hash_is_still_not_unpickled(tmp_path):
    """Second line of defence: even a file that passes the hash check is read with weights_only=True."""
    marker = tmp_path / "ran"
    crafted = tmp_path / "crafted.pth"
    torch.save(Crafted(marker), crafted)
    digest = hashlib.sha256(crafted.read_bytes()).hexdigest()
    with pytest.raises(EvaluateError) as err:
        load_inception_state(crafted, sha256_prefix=digest)
    with pytest.raises(EvaluateError) as err_extractor:
        SafeInceptionV3("x", ["2048"], feature_extractor_weights_path=crafted, inception_sha256_prefix=digest)
    for e in (err, err_extractor):
        assert str(crafted) in str(e.value) and "evaluate.inception_weights" in str(e.value)
        assert "\n" not in str(e.value)
    assert not marker.exists()


class _RandomInception(FeatureExtractorInceptionV3):
    """torch-fidelity's Inception left at its random initialisation (no weights exist offline)."""

    def load_state_dict(self, state_dict, strict=True, assign=False):
        return None


def _random_inception() -> FeatureExtractorInceptionV3:
    empty = io.BytesIO()
    torch.save({}, empty)  # our own bytes, only to satisfy the constructor
    empty.seek(0)
    torch.manual_seed(0)
    return _RandomInception("random", ["2048"], feature_extractor_weights_path=empty)


def test_safe_inception_loads_a_real_state_dict_exactly(tmp_path):
    source = _random_inception()
    path = tmp_path / "random-inception.pth"
    torch.save(source.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    safe = SafeInceptionV3("safe", ["2048"], feature_extractor_weights_path=path, inception_sha256_prefix=digest[:8])
    theirs, ours = source.state_dict(), safe.state_dict()
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in theirs)
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(source(images)[0], safe(images)[0])
    # The same file under the pinned hash is refused: it is not torch-fidelity's release asset.
    with pytest.raises(EvaluateError, match="is not torch-fidelity's Inception weights") as err:
        SafeInceptionV3("safe", ["2048"], feature_extractor_weights_path=path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    # A plain tensor file that is not this network is refused in one line too.
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    wrong_digest = hashlib.sha256(wrong.read_bytes()).hexdigest()
    with pytest.raises(EvaluateError, match="does not fit torch-fidelity's Inception") as err:
        SafeInceptionV3("safe", ["2048"], feature_extractor_weights_path=wrong, inception_sha256_prefix=wrong_digest)
    assert "\n" not in str(err.value)


def test_safe_inception_embeds_a_gray_batch_as_its_rgb_repetition(tmp_path):
    """An all-gray image folder trains on 1 channel; Inception takes 3, so the gray value fills all three."""
    path = tmp_path / "random-inception.pth"
    torch.save(_random_inception().state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    safe = SafeInceptionV3("safe", ["2048"], feature_extractor_weights_path=path, inception_sha256_prefix=digest[:8])
    gray = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(safe(gray)[0], safe(gray.repeat(1, 3, 1, 1))[0])


# --- the FID reference: never a pickle ------------------------------------------------------------------------------


def _old_cache(folder, marker, name):
    """The previous layout: torch-fidelity's .pt cache (which it reads with weights_only=False)."""
    (folder / "reference.json").write_text(
        json.dumps({"cache_name": "study-reference", "extractor": name, "n": 200, "dataset": "digits"})
    )
    for suffix in ("features-features", "stat-fid-features"):
        torch.save(Crafted(marker), folder / f"study-reference-{name}-{suffix}.pt")
    return "reference.json"


def _object_array(folder, marker, name):
    np.savez(folder / "reference.npz", features=np.array([Crafted(marker)] * 2, dtype=object))
    return "reference.npz"


def _raw_pickle(folder, marker, name):
    (folder / "reference.npz").write_bytes(pickle.dumps(Crafted(marker)))
    return "reference.npz"


def _torch_file(folder, marker, name):
    torch.save(Crafted(marker), folder / "reference.npz")
    return "reference.npz"


@pytest.mark.parametrize("craft", [_old_cache, _object_array, _raw_pickle, _torch_file])
def test_crafted_reference_files_are_refused_in_one_line(tmp_path, setup, craft):
    import shutil

    folder = tmp_path / "reference"
    shutil.copytree(setup["reference"], folder)
    marker = tmp_path / "ran"
    name = json.loads((folder / "reference.json").read_text())["extractor"]
    if craft is _old_cache:
        (folder / "reference.npz").unlink()
    culprit = craft(folder, marker, name)
    out = tmp_path / "m.json"
    result = ism(
        "evaluate", "--samples", setup["good"], "--config", setup["config"], "--reference", folder, "--out", out
    )
    line = assert_refused(result, str(folder / culprit), "ism fid-reference")
    assert not marker.exists() and not out.exists(), line


# --- samples that do not fit the reference ---------------------------------------------------------------------------


def _samples_cases(good: np.ndarray, marker) -> dict[str, tuple[dict | bytes, str]]:
    """name -> (arrays for np.savez, or raw bytes; a fragment the error line must hold)."""
    return {
        "float32": ({"arr_0": good.astype(np.float32)}, "float32"),
        "channels first": ({"arr_0": good.transpose(0, 3, 1, 2).copy()}, "channels-first"),
        "3-D": ({"arr_0": good[..., 0]}, "3-D"),
        "object array": ({"arr_0": np.array([Crafted(marker)] * 2, dtype=object)}, "Python objects"),
        "no arr_0": ({"images": good}, "no array 'arr_0'"),
        "one image": ({"arr_0": good[:1]}, "holds 1 image(s)"),
        "no image": ({"arr_0": good[:0]}, "holds 0 image(s)"),
        "16x16": ({"arr_0": good.repeat(2, axis=1).repeat(2, axis=2)}, "16x16x1 images (H x W x C) but"),
        "rgb": ({"arr_0": good.repeat(3, axis=3)}, "8x8x3 images (H x W x C) but"),
        "pickle": (pickle.dumps(Crafted(marker)), "not an .npz archive"),
        "npy": (None, "single array"),
        "text": (b"not an archive\n", "not an .npz archive"),
    }


CASES = list(_samples_cases(np.zeros((4, 8, 8, 1), np.uint8), "unused"))


@pytest.mark.parametrize("case", CASES)
def test_samples_that_do_not_fit_are_refused_in_one_line(tmp_path, setup, case):
    good = np.load(setup["good"])["arr_0"]
    marker = tmp_path / "ran"
    content, fragment = _samples_cases(good, marker)[case]
    bad = tmp_path / "steps1.npz"
    if content is None:
        with bad.open("wb") as f:
            np.save(f, good)
    elif isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        np.savez(bad, **content)
    # After a good file, as in a per-run scoring job: every file is checked before the first is scored.
    outs = [tmp_path / "metrics" / "steps0.json", tmp_path / "metrics" / "steps1.json"]
    result = ism(
        "evaluate",
        *("--samples", setup["good"], bad),
        *("--config", setup["config"], "--reference", setup["reference"]),
        *("--out", *outs),
    )
    assert_refused(result, str(bad), fragment)
    assert not outs[0].parent.exists() and not marker.exists()


def test_fitting_samples_are_scored(tmp_path, setup):
    out = tmp_path / "m.json"
    result = ism(
        "evaluate",
        "--samples",
        setup["good"],
        "--config",
        setup["config"],
        "--reference",
        setup["reference"],
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(out.read_text())
    assert metrics["n"] == 60 and metrics["n_reference"] == 200 and metrics["reference"] == "train-split"
    assert metrics["sample_meta"] == {"run": "test", "steps": 1} and np.isfinite(metrics["fid"])
