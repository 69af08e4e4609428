"""One image folder, two readers: what ``ism train`` reads directly and what ``ism encode``, the FID reference and
the floor read file by file must be the same uint8 pixels, in the same order, with the same shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ism import study
from ism.config import DataConfig
from ism.data import model_to_uint8
from ism.data.encode import load_latents
from ism.data.real import FolderImages, load_data, real_images

from ..conftest import DEFAULT_CONFIG

IMAGE_SIZE = 16
# (width, height) per class: landscape, portrait, square, extreme, and large enough to be box-halved first.
SIZES = {
    "cat": [(40, 30), (30, 41), (64, 64), (100, 37)],
    "dog": [(17, 23), (75, 33), (33, 75), (50, 50)],
    "owl": [(120, 90), (21, 21), (48, 20), (20, 48)],
}


def make_folder(root: Path, gray_files: str = "some") -> Path:
    """Three classes of four images each of different sizes and aspect ratios, all larger than IMAGE_SIZE.

    ``gray_files``: "none" (all RGB), "some" (one grayscale file per class in a colour folder) or "all".
    """
    rng = np.random.default_rng(7)
    for name, sizes in SIZES.items():
        (root / name).mkdir(parents=True)
        for i, (width, height) in enumerate(sizes):
            gray = gray_files == "all" or (gray_files == "some" and i == 1)
            shape = (height, width) if gray else (height, width, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def data_config(root: Path) -> DataConfig:
    return DataConfig(dataset="imagefolder", root=str(root), image_size=IMAGE_SIZE, test_fraction=0.25, split_seed=3)


def direct(data: DataConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
    """What ``ism train`` trains on without an encoding (Trainer -> load_data), back in uint8."""
    side = getattr(load_data(data), split)
    return model_to_uint8(side.images).numpy(), side.labels.numpy()


@pytest.mark.parametrize(("gray_files", "channels"), [("none", 3), ("some", 3), ("all", 1)])
@pytest.mark.parametrize("split", ["train", "test"])
def test_direct_and_file_by_file_readers_give_byte_identical_images(tmp_path, gray_files, channels, split):
    data = data_config(make_folder(tmp_path / "images", gray_files))
    pixels, labels = direct(data, split)
    lazy = real_images(data, split)
    assert isinstance(lazy.images, FolderImages)
    read = lazy.images[:].numpy()
    assert read.dtype == pixels.dtype == np.uint8
    assert read.shape == pixels.shape == (len(labels), channels, IMAGE_SIZE, IMAGE_SIZE)
    assert lazy.images.shape == read.shape
    assert read.tobytes() == pixels.tobytes()
    assert np.array_equal(lazy.labels, labels)
    assert lazy.class_names == ("cat", "dog", "owl") and lazy.num_classes == 3
    # torch-fidelity reads one image at a time: the same bytes again.
    assert all(torch.equal(lazy.images[i], torch.from_numpy(pixels[i])) for i in range(len(labels)))


def test_ism_encode_and_the_fid_reference_read_what_ism_train_reads(tmp_path):
    """The workflow end to end: the study's encoded train split (identity encoder) and its FID reference are the
    direct path's train split (the floor reads the test split through the same real_images, compared above)."""
    root = make_folder(tmp_path / "images")
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["data"] = data_config(root).model_dump(exclude_unset=True)
    raw["evaluate"] = {"extractor": "inception-v3-compat"}  # the digits classifier knows no image folder
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "latents"
    study.encode(config, out, shard=0, num_shards=1, progress=False)
    study.merge_encoded(config, out, num_shards=1)
    latents, labels, meta = load_latents(out)

    train = load_data(data_config(root)).train
    assert torch.equal(torch.from_numpy(np.array(latents)), train.images)  # identity: the same floats
    assert np.array_equal(labels, train.labels.numpy()) and meta["shape"] == [3, IMAGE_SIZE, IMAGE_SIZE]

    study_config, raw = study.load_study(config)
    cfg = study.base_run(raw, study_config)
    reference = study._reference(cfg, study_config)
    assert reference[:].numpy().tobytes() == model_to_uint8(train.images).numpy().tobytes()
