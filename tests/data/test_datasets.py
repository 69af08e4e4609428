"""Datasets: sizes, value ranges, deterministic stratified splits, image folders and their error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from ism.data import (
    DATASETS,
    DataError,
    Dataset,
    load_dataset,
    model_to_uint8,
    nchw_to_nhwc_uint8,
    uint8_to_model,
)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    return load_dataset("mnist5k")


def row_keys(images: torch.Tensor) -> set[bytes]:
    return {row.tobytes() for row in model_to_uint8(images).flatten(1).numpy()}


def write_png(path: Path, pixels: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)


# ------------------------------------------------------------------------------------------- pixel convention


def test_every_uint8_value_round_trips_through_model_space():
    values = torch.arange(256, dtype=torch.int64).to(torch.uint8)
    model = uint8_to_model(values)
    assert model.dtype == torch.float32
    assert model[0] == -1 and model[255] == 1
    assert torch.equal(model_to_uint8(model), values)


def test_model_to_uint8_clips_out_of_range_values():
    assert model_to_uint8(torch.tensor([-3.0, 3.0])).tolist() == [0, 255]


def test_uint8_to_model_rejects_float_input():
    with pytest.raises(TypeError, match="uint8"):
        uint8_to_model(torch.zeros(3))


def test_nchw_to_nhwc_uint8_moves_channels_last():
    pixels = torch.randint(0, 256, (2, 3, 4, 5), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    array = nchw_to_nhwc_uint8(uint8_to_model(pixels))
    assert array.dtype == np.uint8 and array.shape == (2, 4, 5, 3)
    assert np.array_equal(array, pixels.permute(0, 2, 3, 1).numpy())
    with pytest.raises(ValueError, match="C = 1 or 3"):
        nchw_to_nhwc_uint8(torch.zeros(2, 2, 4, 4))


# ---------------------------------------------------------------------------------------------------- digits


def test_digits_sizes_shapes_and_range(digits: Dataset):
    assert len(digits.train.labels) + len(digits.test.labels) == 1797
    assert len(digits.test.labels) == 450  # ceil(0.25 * 1797)
    assert digits.train.images.shape[1:] == digits.test.images.shape[1:] == (1, 8, 8)
    assert digits.sample_shape == (1, 8, 8)
    assert digits.num_classes == 10 and digits.class_names == tuple(str(c) for c in range(10))
    assert digits.train.images.dtype == torch.float32 and digits.train.labels.dtype == torch.int64
    both = torch.cat([digits.train.images, digits.test.images])
    assert both.min().item() == -1.0 and both.max().item() == 1.0


def test_digits_pixels_are_scaled_from_0_16_to_uint8(digits: Dataset):
    expected = np.rint(load_digits().images * 255 / 16).astype(np.uint8).reshape(1797, -1)
    loaded = row_keys(torch.cat([digits.train.images, digits.test.images]))
    assert loaded == {row.tobytes() for row in expected}


def test_digits_split_is_stratified(digits: Dataset):
    totals = torch.bincount(torch.cat([digits.train.labels, digits.test.labels]), minlength=10)
    in_test = torch.bincount(digits.test.labels, minlength=10)
    assert torch.all((in_test - totals * 0.25).abs() <= 1)


def test_digits_train_and_test_are_disjoint(digits: Dataset):
    train, test = row_keys(digits.train.images), row_keys(digits.test.images)
    assert not train & test
    assert len(train | test) == 1797


def test_split_is_deterministic_and_follows_split_seed(digits: Dataset):
    again = load_dataset("digits")
    assert torch.equal(again.train.images, digits.train.images)
    assert torch.equal(again.test.labels, digits.test.labels)
    reseeded = load_dataset("digits", split_seed=1)
    assert row_keys(reseeded.test.images) != row_keys(digits.test.images)


def test_test_fraction_sets_the_split_size():
    assert len(load_dataset("digits", test_fraction=0.5).test.labels) == 899  # ceil(0.5 * 1797)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_test_fraction_outside_zero_one_is_rejected(fraction: float):
    with pytest.raises(DataError, match=r"data\.test_fraction"):
        load_dataset("digits", test_fraction=fraction)


def test_negative_split_seed_is_rejected():
    with pytest.raises(DataError, match=r"data\.split_seed"):
        load_dataset("digits", split_seed=-1)


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(DataError) as caught:
        load_dataset("cifar10")
    assert "cifar10" in str(caught.value)
    assert all(name in str(caught.value) for name in DATASETS)


# --------------------------------------------------------------------------------------------------- mnist5k


def test_mnist5k_sizes_and_classes(mnist: Dataset):
    labels = torch.cat([mnist.train.labels, mnist.test.labels])
    assert len(labels) == 5000
    assert mnist.sample_shape == (1, 28, 28) and mnist.train.images.shape[1:] == (1, 28, 28)
    assert torch.bincount(labels).tolist() == [500] * 10
    both = torch.cat([mnist.train.images, mnist.test.images])
    assert both.min().item() == -1.0 and both.max().item() == 1.0


def test_mnist5k_test_split_holds_every_class_although_the_file_is_sorted(mnist: Dataset):
    assert torch.bincount(mnist.test.labels, minlength=10).tolist() == [125] * 10
    # Shuffled, not class blocks: neighbours in the split rarely share a label.
    assert (mnist.train.labels[1:] != mnist.train.labels[:-1]).float().mean() > 0.8


# ------------------------------------------------------------------------------------------------- toy sets


def test_pad_to_centres_the_images_on_background(mnist: Dataset):
    padded = load_dataset("mnist5k", pad_to=32)
    assert padded.sample_shape == (1, 32, 32)
    pixels, native = model_to_uint8(padded.train.images), model_to_uint8(mnist.train.images)
    assert torch.equal(pixels[:, :, 2:30, 2:30], native) and torch.equal(padded.train.labels, mnist.train.labels)
    border = pixels.clone()
    border[:, :, 2:30, 2:30] = 0
    assert int(border.max()) == 0
    odd = model_to_uint8(load_dataset("digits", pad_to=11).train.images)  # margins 1 before, 2 after
    assert odd.shape[-2:] == (11, 11) and torch.equal(
        odd[:, :, 1:9, 1:9], model_to_uint8(load_dataset("digits").train.images)
    )
    with pytest.raises(DataError, match=r"data\.pad_to: 16 is smaller than the 28x28 images"):
        load_dataset("mnist5k", pad_to=16)


@pytest.mark.parametrize("name", ["checkerboard", "eight_gaussians"])
def test_toy_datasets_are_one_class_vectors(name: str):
    data = load_dataset(name, num_points=1000, split_seed=3)
    assert data.train.images.shape == (750, 2) and data.test.images.shape == (250, 2)
    assert data.sample_shape == (2,) and data.num_classes == 1 and data.class_names == ("all",)
    assert data.train.labels.dtype == torch.int64 and not data.train.labels.any()
    again = load_dataset(name, num_points=1000, split_seed=3)
    assert torch.equal(again.train.images, data.train.images)
    assert not torch.equal(load_dataset(name, num_points=1000, split_seed=4).train.images, data.train.images)


def test_toy_dataset_rejects_too_few_points():
    with pytest.raises(DataError, match=r"data\.num_points"):
        load_dataset("checkerboard", num_points=1)


# --------------------------------------------------------------------------------------------- image folder


def make_gray_folder(root: Path) -> dict[str, list[np.ndarray]]:
    """Three classes (created out of order) of distinct random 4x6 grayscale images."""
    rng = np.random.default_rng(0)
    written: dict[str, list[np.ndarray]] = {}
    for name, count in [("zebra", 3), ("apple", 4), ("mango", 2)]:
        written[name] = [rng.integers(0, 256, (4, 6), dtype=np.uint8) for _ in range(count)]
        for i, pixels in enumerate(written[name]):
            write_png(root / name / f"{i}.png", pixels)
    return written


def all_uint8_images_by_label(data: Dataset) -> list[tuple[int, bytes]]:
    images = model_to_uint8(torch.cat([data.train.images, data.test.images]))
    labels = torch.cat([data.train.labels, data.test.labels]).tolist()
    return sorted((label, image.numpy().tobytes()) for label, image in zip(labels, images, strict=True))


def test_imagefolder_labels_follow_sorted_folder_names_and_pixels_round_trip(tmp_path: Path):
    written = make_gray_folder(tmp_path)
    data = load_dataset("imagefolder", root=str(tmp_path), test_fraction=0.4)
    assert data.class_names == ("apple", "mango", "zebra") and data.num_classes == 3
    assert data.sample_shape == (1, 4, 6)
    expected = sorted(
        (label, pixels.tobytes()) for label, name in enumerate(data.class_names) for pixels in written[name]
    )
    assert all_uint8_images_by_label(data) == expected
    assert set(data.test.labels.tolist()) == {0, 1, 2}


def test_imagefolder_ignores_hidden_and_non_image_files_and_accepts_upper_case(tmp_path: Path):
    make_gray_folder(tmp_path)
    write_png(tmp_path / "apple" / "extra.PNG", np.zeros((4, 6), np.uint8))
    write_png(tmp_path / "apple" / ".hidden.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "apple" / "notes.txt").write_text("not an image")
    write_png(tmp_path / ".cache" / "0.png", np.zeros((4, 6), np.uint8))
    data = load_dataset("imagefolder", root=str(tmp_path), test_fraction=0.4)
    assert data.class_names == ("apple", "mango", "zebra")
    assert len(data.train.labels) + len(data.test.labels) == 10


def test_imagefolder_with_any_colour_image_is_rgb(tmp_path: Path):
    gray = np.arange(24, dtype=np.uint8).reshape(4, 6)
    colour = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    for i in range(2):
        write_png(tmp_path / "a" / f"{i}.png", gray + i)
        write_png(tmp_path / "b" / f"{i}.png", colour + i)
    data = load_dataset("imagefolder", root=str(tmp_path), test_fraction=0.5)
    assert data.sample_shape == (3, 4, 6)
    expected = sorted(
        [(0, np.repeat((gray + i)[None], 3, axis=0).tobytes()) for i in range(2)]
        + [(1, (colour + i).transpose(2, 0, 1).tobytes()) for i in range(2)]
    )
    assert all_uint8_images_by_label(data) == expected


def test_imagefolder_reads_jpeg_files(tmp_path: Path):
    colour = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    for name, suffixes in [("a", (".jpg", ".JPEG")), ("b", (".jpeg", ".JPG"))]:
        for i, suffix in enumerate(suffixes):
            write_png(tmp_path / name / f"{i}{suffix}", colour)  # PIL picks the format from the suffix
    data = load_dataset("imagefolder", root=str(tmp_path), test_fraction=0.5)
    assert data.sample_shape == (3, 8, 8)
    assert len(data.train.labels) + len(data.test.labels) == 4


def test_imagefolder_reads_16_bit_grayscale_as_8_bit(tmp_path: Path):
    wide = np.array([[0, 65535], [257 * 100, 257 * 7]], dtype=np.uint16)
    for name in ("a", "b"):
        for i in range(2):
            write_png(tmp_path / name / f"{i}.png", wide)
    data = load_dataset("imagefolder", root=str(tmp_path), test_fraction=0.5)
    assert data.sample_shape == (1, 2, 2)
    assert model_to_uint8(data.train.images[0, 0]).tolist() == [[0, 255], [100, 7]]


def test_imagefolder_image_size_centre_crops_then_resizes(tmp_path: Path):
    wide = np.zeros((4, 12), dtype=np.uint8)
    wide[:, 4:8] = 255  # only the centre square is white
    big = np.full((20, 30), 77, dtype=np.uint8)
    for i in range(2):
        write_png(tmp_path / "a" / f"{i}.png", wide)
        write_png(tmp_path / "b" / f"{i}.png", big)
    data = load_dataset("imagefolder", root=str(tmp_path), test_fraction=0.5, image_size=4)
    assert data.sample_shape == (1, 4, 4) and data.train.images.shape[1:] == (1, 4, 4)
    for split in (data.train, data.test):
        pixels = model_to_uint8(split.images)
        assert torch.all(pixels[split.labels == 0] == 255)
        assert torch.all(pixels[split.labels == 1] == 77)  # a constant image stays constant when resized
    upsized = load_dataset("imagefolder", root=str(tmp_path), test_fraction=0.5, image_size=16)
    assert upsized.sample_shape == (1, 16, 16)


def test_imagefolder_requires_root():
    with pytest.raises(DataError, match=r"data\.root is required for dataset 'imagefolder'"):
        load_dataset("imagefolder")


def test_imagefolder_missing_root_names_the_path(tmp_path: Path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as caught:
        load_dataset("imagefolder", root=str(missing))
    assert str(missing) in str(caught.value)


def test_imagefolder_root_that_is_a_file_names_the_path(tmp_path: Path):
    file = tmp_path / "file.png"
    file.write_bytes(b"")
    with pytest.raises(DataError, match="is not a folder") as caught:
        load_dataset("imagefolder", root=str(file))
    assert str(file) in str(caught.value)


def test_imagefolder_empty_root_names_the_path(tmp_path: Path):
    with pytest.raises(DataError, match="no class sub-folders") as caught:
        load_dataset("imagefolder", root=str(tmp_path))
    assert str(tmp_path) in str(caught.value)


def test_imagefolder_class_without_enough_images_names_the_folder(tmp_path: Path):
    make_gray_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds 0") as caught:
        load_dataset("imagefolder", root=str(tmp_path))
    assert str(tmp_path / "empty") in str(caught.value)
    (tmp_path / "empty").rmdir()
    write_png(tmp_path / "single" / "0.png", np.zeros((4, 6), np.uint8))
    with pytest.raises(DataError, match="holds 1") as caught:
        load_dataset("imagefolder", root=str(tmp_path))
    assert str(tmp_path / "single") in str(caught.value)


def test_imagefolder_corrupt_image_names_the_file(tmp_path: Path):
    make_gray_folder(tmp_path)
    corrupt = tmp_path / "mango" / "broken.png"
    corrupt.write_bytes(b"this is not a png" * 10)
    with pytest.raises(DataError, match="remove or replace") as caught:
        load_dataset("imagefolder", root=str(tmp_path))
    assert str(corrupt) in str(caught.value) and "\n" not in str(caught.value)


def test_imagefolder_truncated_image_names_the_file(tmp_path: Path):
    make_gray_folder(tmp_path)
    truncated = tmp_path / "apple" / "0.png"
    truncated.write_bytes(truncated.read_bytes()[:-30])
    with pytest.raises(DataError) as caught:
        load_dataset("imagefolder", root=str(tmp_path))
    assert str(truncated) in str(caught.value)


def test_imagefolder_mixed_sizes_name_both_files_and_the_fix(tmp_path: Path):
    make_gray_folder(tmp_path)
    odd = tmp_path / "zebra" / "odd.png"
    write_png(odd, np.zeros((5, 7), np.uint8))
    with pytest.raises(DataError, match=r"data\.image_size") as caught:
        load_dataset("imagefolder", root=str(tmp_path))
    message = str(caught.value)
    assert str(tmp_path / "apple" / "0.png") in message and str(odd) in message
    assert "6x4" in message and "7x5" in message


def test_imagefolder_too_small_test_fraction_is_a_data_error(tmp_path: Path):
    make_gray_folder(tmp_path)
    with pytest.raises(DataError, match=r"data\.test_fraction"):
        load_dataset("imagefolder", root=str(tmp_path), test_fraction=0.1)


# ------------------------------------------------------------------------------- checking before encoding


def test_read_image_names_a_text_file_renamed_png(tmp_path: Path):
    from ism.data.imagefiles import read_image

    fake = tmp_path / "fake.png"
    fake.write_text("hello\n")
    with pytest.raises(DataError) as caught:
        read_image(fake)
    assert str(caught.value) == f"cannot read image '{fake}' (not a PNG or JPEG image): remove or replace the file"


def test_an_unlistable_folder_is_one_data_error(tmp_path: Path, monkeypatch):
    make_gray_folder(tmp_path)

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(
        DataError, match=r"cannot list the image folder '.*' \(.*Permission denied.*\): make it readable"
    ):
        load_dataset("imagefolder", root=str(tmp_path))


def test_check_imagefolder_decodes_the_test_split_too(tmp_path: Path):
    from ism.data.datasets import check_imagefolder, split_imagefolder

    make_gray_folder(tmp_path)
    assert check_imagefolder(str(tmp_path), 0.4, 0, 4) == 9  # one shard answers for every image of both splits
    _, test, _ = split_imagefolder(str(tmp_path), 0.4, 0)
    held_out = test.paths[-1]
    held_out.write_bytes(held_out.read_bytes()[:-30])
    with pytest.raises(DataError, match="remove or replace the file") as caught:
        check_imagefolder(str(tmp_path), 0.4, 0, 4)
    assert f"'{held_out}'" in str(caught.value)
    # With shards, shard i checks block i of each split: together they check everything, each only its share.
    results = []
    for shard in range(2):
        try:
            results.append(check_imagefolder(str(tmp_path), 0.4, 0, 4, shard=shard, num_shards=2))
        except DataError as err:
            results.append(str(err))
    assert sum(isinstance(r, str) and str(held_out) in r for r in results) == 1


def test_check_imagefolder_without_image_size_names_mixed_sizes_or_the_key(tmp_path: Path):
    from ism.data.datasets import check_imagefolder

    make_gray_folder(tmp_path)
    with pytest.raises(DataError, match=r"data\.image_size is null .*\(these images are 6x4 \(width x height\)\)"):
        check_imagefolder(str(tmp_path), 0.4, 0, None)
    write_png(tmp_path / "apple" / "odd.png", np.zeros((5, 7), np.uint8))
    with pytest.raises(DataError, match=r"images differ in size: .* is 7x5 .*set data\.image_size"):
        check_imagefolder(str(tmp_path), 0.4, 0, None)
