"""The feature classifier of FID for any labelled image set of a study (`ism classifier --config`), and where a
study's classifier comes from: deterministic bytes, a hash in the extractor's name, the committed checkpoint intact,
and every missing or unfit file refused in one line naming its key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from ism import study
from ism.checkpoint import safe_load
from ism.classifier import (
    ARCHITECTURES,
    DigitClassifier,
    default_classifier_path,
    file_hash,
    generic_architecture,
    load_classifier,
    save_classifier,
)
from ism.cli import main
from ism.config import (
    INCEPTION_MIN_BYTES,
    ConfigError,
    check_extractor_files,
    classifier_source,
    validate_study,
)
from ism.data.real import real_images
from ism.evaluate import EvaluateError, FeatureSpace, register_classifier, resolve_extractor

from .workflow.test_imagefolder_study import CLASSES, make_image_folder

COMMITTED = default_classifier_path("digits")


@pytest.fixture(scope="module")
def folder_study(tmp_path_factory) -> Path:
    """A study file on an image folder (3 classes of 16×16 gray PNGs), its classifier trained for 40 steps."""
    base = tmp_path_factory.mktemp("folder")
    raw = {
        "study": "folder",
        "data": {"dataset": "imagefolder", "root": str(make_image_folder(base / "images")), "image_size": 16},
        "evaluate": {"classifier_steps": 40, "classifier_seed": 1},
        "runs": {"fm": {"method": {"name": "fm"}}},
    }
    path = base / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def trained(folder_study, tmp_path_factory) -> tuple[Path, Path]:
    """The same command twice, to two different files."""
    out = tmp_path_factory.mktemp("out")
    first, second = out / "a.pt", out / "deeper" / "b.pt"
    for path in (first, second):
        assert main(["-q", "classifier", "--config", str(folder_study), "--out", str(path)]) == 0
    return first, second


def test_study_classifier_is_deterministic_and_named_by_its_hash(trained, folder_study):
    first, second = trained
    assert first.read_bytes() == second.read_bytes(), "same study, same bytes, wherever the file is written"
    model, meta = load_classifier(first)
    assert meta["dataset"] == "imagefolder" and meta["image_shape"] == [1, 16, 16]
    assert meta["num_classes"] == CLASSES and meta["class_names"] == ["digit0", "digit1", "digit2"]
    assert (meta["seed"], meta["steps"]) == (1, 40) and 0 <= meta["test_accuracy"] <= 1
    assert meta["architecture"] == generic_architecture(16).to_meta()
    name = register_classifier(first)
    assert name == f"ism-classifier-imagefolder-{file_hash(first)[:12]}"
    # The study's extractor embeds the study's own images through torch-fidelity.
    validated, raw = study.load_study(folder_study)
    cfg = study.base_run(raw, validated)
    images = real_images(cfg.data, "test").images[0:6]
    extractor = resolve_extractor("classifier", dataset="imagefolder", classifier=first, inception_weights="-")
    features = FeatureSpace(extractor)(images)
    assert features.shape == (6, 64) and torch.allclose(features, model.embed(images), atol=1e-5)


def test_a_seed_changes_the_classifier_and_its_name(trained, folder_study, tmp_path):
    other = tmp_path / "other.pt"
    assert main(["-q", "classifier", "--config", str(folder_study), "--out", str(other), "--seed", "2"]) == 0
    assert load_classifier(other)[1]["seed"] == 2
    assert register_classifier(other) != register_classifier(trained[0])


def test_the_committed_checkpoint_loads_by_its_dataset_and_keeps_its_bytes(tmp_path):
    model, meta = load_classifier(COMMITTED)
    assert "architecture" not in meta, "the committed file records no architecture: the digits design applies"
    a = ARCHITECTURES["digits"]
    reference = DigitClassifier(1, 10, a.channels, a.kernel, a.features)
    assert model.state_dict().keys() == reference.state_dict().keys()
    # save_classifier writes what 'ism classifier --dataset digits' wrote: the same weights and meta give the
    # committed bytes, so the extractor name ism-classifier-digits-<sha12> is reproducible.
    copy = save_classifier(model, tmp_path / "elsewhere.pt", safe_load(COMMITTED)["meta"])
    assert file_hash(copy) == file_hash(COMMITTED)


def test_generic_architecture_pools_to_a_small_side():
    assert [generic_architecture(side).pools for side in (8, 16, 32, 64, 256)] == [2, 2, 3, 3, 3]
    model = DigitClassifier(3, 4, **generic_architecture(32).to_meta())
    assert model.embed(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 64)


# --- where a study's classifier comes from, and the up-front checks -----------------------------------------------


def _study(**sections):
    raw = {"study": "s", "runs": {"fm": {"method": {"name": "fm"}}}}
    return validate_study(raw | sections)


def test_the_classifier_extractor_is_accepted_for_an_image_folder(tmp_path):
    s = _study(data={"dataset": "imagefolder", "root": str(tmp_path)})
    assert s.evaluate.extractor == "classifier"
    assert classifier_source(s) == (Path("models/classifier-s.pt"), "built")
    assert classifier_source(_study()) == (COMMITTED, "committed")
    given = _study(evaluate={"classifier": "mine.pt"})
    assert classifier_source(given) == (Path("mine.pt"), "given")
    assert classifier_source(_study(evaluate={"extractor": "inception-v3-compat"})) is None


def test_the_classifier_extractor_is_refused_for_2d_points_in_one_line():
    with pytest.raises(ConfigError) as err:
        _study(data={"dataset": "checkerboard"}, model={"arch": "mlp"})
    assert "'evaluate.extractor'" in str(err.value) and "checkerboard" in str(err.value)
    assert "\n" not in str(err.value)


def test_up_front_checks_name_the_key_the_file_and_the_fix(tmp_path):
    weights = tmp_path / "weights.pth"
    inception = _study(evaluate={"extractor": "inception-v3-compat", "inception_weights": str(weights)})
    for content, expected in ((None, "does not exist"), (b"404", "holds 3 bytes")):
        if content is not None:
            weights.write_bytes(content)
        with pytest.raises(ConfigError) as err:
            check_extractor_files(inception)
        message = str(err.value)
        assert "'evaluate.inception_weights'" in message and str(weights) in message and expected in message
        assert "https://github.com/toshas/torch-fidelity/releases" in message and "\n" not in message
    with weights.open("wb") as f:
        f.truncate(INCEPTION_MIN_BYTES)
    check_extractor_files(inception)  # plausible: the hash is checked when it is loaded
    missing = tmp_path / "mine.pt"
    with pytest.raises(ConfigError) as err:
        check_extractor_files(_study(evaluate={"classifier": str(missing)}), "work/config/s.yaml")
    assert "'evaluate.classifier'" in str(err.value) and str(missing) in str(err.value)
    assert f"ism classifier --config work/config/s.yaml --out {missing}" in str(err.value)
    check_extractor_files(_study())  # the committed digits classifier
    check_extractor_files(_study(data={"dataset": "imagefolder", "root": str(tmp_path)}))  # built by the workflow


def test_a_study_without_its_built_classifier_says_how_to_make_it(folder_study, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # models/classifier-folder.pt does not exist here
    with pytest.raises(FileNotFoundError) as err:
        study.reference(folder_study, tmp_path / "ref")
    message = str(err.value)
    assert message.startswith("evaluate.classifier: no feature classifier at 'models/classifier-folder.pt'")
    assert f"ism classifier --config {folder_study}" in message and "\n" not in message


def test_a_classifier_of_other_images_is_refused_before_embedding(trained, folder_study, tmp_path):
    raw = yaml.safe_load(folder_study.read_text())
    raw["data"]["image_size"] = 8
    raw["evaluate"]["classifier"] = str(trained[0])  # trained on 16×16 images
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(EvaluateError) as err:
        study.reference(config, tmp_path / "ref")
    message = str(err.value)
    assert "evaluate.classifier" in message and "16x16x1" in message and "8x8x1" in message and "\n" not in message
    assert not (tmp_path / "ref").exists()


def test_cli_refuses_a_classifier_for_points_in_one_line(tmp_path, capsys):
    raw = {
        "data": {"dataset": "checkerboard"},
        "model": {"arch": "mlp"},
        "evaluate": {"extractor": "inception-v3-compat"},
        "runs": {"fm": {"method": {"name": "fm"}}},
    }
    config = tmp_path / "points.yaml"
    config.write_text(json.dumps(raw))
    assert main(["classifier", "--config", str(config), "--out", str(tmp_path / "c.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'data.dataset'" in err and "checkerboard" in err
    assert not (tmp_path / "c.pt").exists()
