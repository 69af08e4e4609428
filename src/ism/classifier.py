"""A small classifier whose penultimate layer is the feature space of FID on small labelled image sets.

Inception features mean little on 8×8 or 28×28 digits or on a few thousand images of one's own; the usual
substitute (the "LeNet-FID" idea) is a small classifier trained on the data itself. Its pre-activation penultimate
layer (64-d for digits, 128-d for MNIST) is the feature space. Training is deterministic on the CPU (seeded init and
order), the bytes of a saved checkpoint depend only on what it holds (not on its file name), and the extractor's
registered name carries the file's hash: classifiers trained with other seeds shift FID by about ±20% (DATA.md), so
a metric is only comparable under one checkpoint.

Two ways to make one: ``ism classifier --dataset digits|mnist5k`` (the committed ``assets/classifier-digits.pt``,
dedicated designs), and ``ism classifier --config STUDY`` for the dataset of any study (image folders too: a generic
small conv net at ``data.image_size``), whose checkpoint records its architecture and image shape.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ism import config
from ism.atomic import write_bytes
from ism.checkpoint import CheckpointError, safe_load
from ism.config import ConfigError, DataConfig
from ism.data import BatchSchedule, Dataset, model_to_uint8, uint8_to_model
from ism.errors import first_line

FORMAT = "ism-classifier-v1"

ASSETS = config.ASSETS


@dataclass(frozen=True)
class Architecture:
    """conv stages of ``channels`` (``kernel`` × ``kernel``, ReLU; a 2×2 max-pool after each of the first ``pools``),
    global average pool, fc -> ``features`` (the FID features), fc -> logits."""

    channels: tuple[int, ...]
    kernel: int
    features: int
    pools: int = 2

    def to_meta(self) -> dict[str, Any]:
        return {"channels": list(self.channels), "kernel": self.kernel, "features": self.features, "pools": self.pools}

    @classmethod
    def from_meta(cls, meta: Any) -> Architecture:
        try:
            channels = tuple(int(c) for c in meta["channels"])
            return cls(channels, int(meta["kernel"]), int(meta["features"]), int(meta["pools"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"architecture {meta!r} lacks channels, kernel, features or pools ({exc})") from None


# The dedicated designs of the embedded sets (DATA.md); the committed checkpoints record no architecture.
ARCHITECTURES = {
    "digits": Architecture((32, 64, 128), 3, 64),
    "mnist5k": Architecture((16, 32), 5, 128),
}


def generic_architecture(side: int) -> Architecture:
    """Any other image set: the digits design, with a 2×2 max-pool after its first two stages, and after the third
    too from 32×32 images, before the global average pool."""
    return Architecture((32, 64, 128), 3, 64, pools=min(3, max(2, math.ceil(math.log2(side / 4)))))


def architecture_for(dataset: str, side: int) -> Architecture:
    return ARCHITECTURES.get(dataset) or generic_architecture(side)


class DigitClassifier(nn.Module):
    """conv stages (ReLU, 2×2 max-pool after the first ``pools``), global average pool, fc -> features, fc -> logits."""

    def __init__(
        self, in_channels: int, num_classes: int, channels: tuple[int, ...], kernel: int, features: int, pools: int = 2
    ):
        super().__init__()
        layers, previous = [], in_channels
        for i, width in enumerate(channels):
            layers += [nn.Conv2d(previous, width, kernel, padding=kernel // 2), nn.ReLU()]
            if i < pools:
                layers.append(nn.MaxPool2d(2))
            previous = width
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.features = nn.Linear(previous, features)
        self.head = nn.Linear(features, num_classes)

    def embed(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """Pre-activation penultimate features of uint8 (B, C, H, W) images (input convention uint8/127.5 − 1)."""
        return self.features(self.body(uint8_to_model(images_uint8)))

    def forward(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.embed(images_uint8)))


def build_classifier(
    dataset: str, in_channels: int, num_classes: int, architecture: Architecture | None = None
) -> DigitClassifier:
    """The network of ``architecture``, or of the dataset's dedicated design when none is given."""
    if architecture is None:
        if dataset not in ARCHITECTURES:
            raise ValueError(f"no classifier design for dataset '{dataset}' (have {sorted(ARCHITECTURES)})")
        architecture = ARCHITECTURES[dataset]
    a = architecture
    return DigitClassifier(in_channels, num_classes, a.channels, a.kernel, a.features, a.pools)


def accuracy(model: DigitClassifier, images_uint8: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.inference_mode():
        return float((model(images_uint8).argmax(1) == labels).float().mean())


def train_classifier(data: Dataset, *, seed: int = 0, steps: int = 1500, batch_size: int = 64, lr: float = 2e-3):
    """An embedded set's classifier (its dedicated design) on its train split; returns (model, test accuracy)."""
    return fit_classifier(
        model_to_uint8(data.train.images),
        data.train.labels,
        model_to_uint8(data.test.images),
        data.test.labels,
        build=lambda: build_classifier(data.name, data.sample_shape[0], data.num_classes),
        seed=seed,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
    )


def fit_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    build: Callable[[], DigitClassifier],
    seed: int,
    steps: int,
    batch_size: int = 64,
    lr: float = 2e-3,
) -> tuple[DigitClassifier, float]:
    """Adam on uint8 (N, C, H, W) ``images`` with a seeded init (``build`` runs after seeding) and a seeded data
    order (:class:`BatchSchedule`); returns (model in eval mode, accuracy on the test images)."""
    torch.manual_seed(seed)
    model = build()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = BatchSchedule(len(labels), batch_size, seed)
    for step in range(steps):
        idx = schedule.indices(step)
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    return model, accuracy(model, test_images, test_labels)


def train_study_classifier(data: DataConfig, *, seed: int, steps: int) -> tuple[DigitClassifier, dict[str, Any]]:
    """The classifier of a study's dataset (``data``): trained on the train split of the study's own split and pixels
    (:func:`ism.data.real.real_images`, what FID embeds), tested on the held-out side; returns (model, meta)."""
    from ism.data.real import real_images

    if data.dataset not in config.CLASSIFIER_DATASETS:
        raise ConfigError(
            f"config key 'data.dataset': '{data.dataset}' is a set of 2-D points; a feature classifier needs a "
            f"labelled image dataset ({', '.join(config.CLASSIFIER_DATASETS)})"
        )
    train, test = real_images(data, "train"), real_images(data, "test")
    images, test_images = _stacked(train.images), _stacked(test.images)
    in_channels, height, width = (int(s) for s in images.shape[1:])
    architecture = architecture_for(data.dataset, min(height, width))
    model, test_accuracy = fit_classifier(
        images,
        torch.from_numpy(train.labels).long(),
        test_images,
        torch.from_numpy(test.labels).long(),
        build=lambda: build_classifier(data.dataset, in_channels, train.num_classes, architecture),
        seed=seed,
        steps=steps,
    )
    meta = {
        "dataset": data.dataset,
        "architecture": architecture.to_meta(),
        "in_channels": in_channels,
        "num_classes": train.num_classes,
        "class_names": list(train.class_names),
        "image_shape": [in_channels, height, width],
        "test_fraction": data.test_fraction,
        "split_seed": data.split_seed,
        "seed": seed,
        "steps": steps,
        "test_accuracy": test_accuracy,
    }
    return model, meta


def _stacked(images: torch.Tensor | Any) -> torch.Tensor:
    """uint8 (N, C, H, W) in memory (an image folder's files are read here, once)."""
    return images if isinstance(images, torch.Tensor) else images[0 : len(images)]


def save_classifier(model: DigitClassifier, path: str | Path, meta: dict[str, Any]) -> Path:
    """Write the checkpoint atomically. It is serialised in memory first: torch.save to a file names the archive's
    records after the file (here, a temporary name), so the bytes, and the hash in the extractor's name, would
    depend on where the file was written."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "weights": model.state_dict(), "meta": meta}, buffer)
    return write_bytes(path, buffer.getvalue())


def file_hash(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_classifier(path: str | Path) -> tuple[DigitClassifier, dict[str, Any]]:
    """A checkpoint of :func:`save_classifier`, read with ``weights_only=True``; its recorded architecture, or the
    dataset's dedicated design for checkpoints that record none (the committed ones)."""
    state = safe_load(path)
    if state.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not an ism classifier checkpoint (make one with 'ism classifier')")
    meta = state.get("meta")
    try:
        architecture = Architecture.from_meta(meta["architecture"]) if "architecture" in meta else None
        model = build_classifier(meta["dataset"], meta["in_channels"], meta["num_classes"], architecture)
        model.load_state_dict(state["weights"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"classifier '{path}' does not fit its own record ({first_line(exc)}): make it again with 'ism classifier'"
        ) from None
    return model.eval().requires_grad_(False), meta


def default_classifier_path(dataset: str) -> Path:
    return config.committed_classifier_path(dataset)


def input_problem(meta: dict[str, Any], image_shape: tuple[int, ...]) -> str | None:
    """Why a classifier cannot embed images of (C, H, W) ``image_shape``, or None. A checkpoint of
    'ism classifier --config' records its image shape; the committed ones only their channels."""
    shape = tuple(int(s) for s in image_shape)
    expected = meta.get("image_shape")
    if expected is not None and tuple(expected) != shape:
        c, h, w = expected
        return f"it was trained on {h}x{w}x{c} images (H x W x C), these are {shape[1]}x{shape[2]}x{shape[0]}"
    if meta.get("in_channels") != shape[0]:
        return f"it takes {meta.get('in_channels')}-channel images, these have {shape[0]}"
    return None
