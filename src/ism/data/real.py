"""The real images of a study, in one home: what training, encoding and evaluation read from ``data.*``.

:func:`load_data` is the training set in model space as ``ism train`` reads it without an encoding (image folders
are read whole). :func:`real_images` is one side of the split as uint8 (N, C, H, W): the train split is what
``ism encode`` encodes and the FID reference, the test split gives the real-data floor. Embedded sets come back as
tensors, image folders as :class:`FolderImages` read file by file (ImageNet does not fit in RAM). Both paths read
an image folder through :func:`ism.data.imagefiles.read_pixels` and split it with the same seeded stratified split,
so a study trains on exactly the pixels it is scored against.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ism.config import DataConfig
from ism.data.datasets import Dataset, image_size_required, load_dataset, split_imagefolder
from ism.data.imagefiles import folder_channels, read_pixels
from ism.data.images import model_to_uint8
from ism.errors import DataError

SPLITS = ("train", "test")


class FolderImages(torch.utils.data.Dataset):
    """uint8 (N, C, S, S) images of an image folder, read from their files on access.

    An integer index gives one (C, S, S) tensor (what torch-fidelity reads), a slice a stacked (n, C, S, S) batch
    (what :func:`ism.data.encode.encode_shard` reads). ``channels`` is the whole folder's, so both sides of the
    split agree with each other and with :func:`load_data`.
    """

    dtype = torch.uint8

    def __init__(self, paths: list[Path], image_size: int, channels: int):
        self.paths, self.image_size, self.channels = paths, image_size, channels
        self.shape = (len(paths), channels, image_size, image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int | slice) -> torch.Tensor:
        if isinstance(index, slice):
            rows = range(*index.indices(len(self)))
            if not rows:
                return torch.empty((0, *self.shape[1:]), dtype=self.dtype)
            return torch.stack([self[i] for i in rows])
        return torch.from_numpy(read_pixels(self.paths[index], self.image_size, self.channels))

    def first(self, n: int) -> FolderImages:
        """The first ``n`` images, still unread."""
        return FolderImages(self.paths[:n], self.image_size, self.channels)


@dataclass(frozen=True)
class RealImages:
    """One side of a study's split: uint8 (N, C, H, W) images, int64 labels, and the dataset's classes."""

    images: torch.Tensor | FolderImages
    labels: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]

    def first(self, n: int) -> RealImages:
        """The first ``n`` images and labels (an image folder's stay unread)."""
        images = self.images.first(n) if isinstance(self.images, FolderImages) else self.images[:n]
        return replace(self, images=images, labels=self.labels[:n])


def load_data(data: DataConfig) -> Dataset:
    """The dataset of ``data`` in model space, split into train and test (what ``ism train`` reads directly)."""
    return load_dataset(
        data.dataset,
        root=data.root,
        test_fraction=data.test_fraction,
        split_seed=data.split_seed,
        image_size=data.image_size,
        num_points=data.num_points,
        pad_to=data.pad_to,
    )


def real_images(data: DataConfig, split: str) -> RealImages:
    """The ``train`` or ``test`` side of the split of ``data`` as uint8 images (an image folder's read lazily)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if data.dataset == "imagefolder":
        return _folder_images(data, split)
    dataset = load_data(data)
    if dataset.train.images.dim() != 4:
        raise DataError(
            f"data.dataset '{data.dataset}' is a set of 2-D points, not images: it has no encoding stage and no "
            "image FID (ism train reads it directly)"
        )
    side = dataset.train if split == "train" else dataset.test
    return RealImages(model_to_uint8(side.images), side.labels.numpy(), dataset.num_classes, dataset.class_names)


def _folder_images(data: DataConfig, split: str) -> RealImages:
    if data.image_size is None:
        raise image_size_required()
    train, test, class_names = split_imagefolder(data.root, data.test_fraction, data.split_seed)
    channels = folder_channels([*train.paths, *test.paths])
    side = train if split == "train" else test
    images = FolderImages(side.paths, data.image_size, channels)
    return RealImages(images, side.labels, len(class_names), class_names)
