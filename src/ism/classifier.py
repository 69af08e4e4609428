"""A small digit classifier whose penultimate layer is the feature space of FID on the embedded datasets.

Inception features mean little on 8×8 or 28×28 digits; the usual substitute (the "LeNet-FID" idea) is a small
classifier trained on the data itself. Its pre-activation penultimate layer (64-d for digits, 128-d for MNIST)
is the feature space. Training is deterministic (seeded init and order, CPU), and the checkpoint that the
metrics use is committed with its hash in the extractor's name: classifiers trained with other seeds shift FID
by about ±20% (DATA.md), so a metric is only comparable under one checkpoint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ism.checkpoint import CheckpointError, atomic_save, safe_load
from ism.data import BatchSchedule, Dataset, model_to_uint8, uint8_to_model

ASSETS = Path(__file__).resolve().parent / "assets"
ARCHITECTURES = {
    # name: (channels of the conv stages, kernel size, feature size)
    "digits": ((32, 64, 128), 3, 64),
    "mnist5k": ((16, 32), 5, 128),
}


class DigitClassifier(nn.Module):
    """conv stages (ReLU, 2×2 max-pool after the first two), global average pool, fc -> features, fc -> logits."""

    def __init__(self, in_channels: int, num_classes: int, channels: tuple[int, ...], kernel: int, features: int):
        super().__init__()
        layers, previous = [], in_channels
        for i, width in enumerate(channels):
            layers += [nn.Conv2d(previous, width, kernel, padding=kernel // 2), nn.ReLU()]
            if i < 2:
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


def build_classifier(dataset: str, in_channels: int, num_classes: int) -> DigitClassifier:
    if dataset not in ARCHITECTURES:
        raise ValueError(f"no classifier design for dataset '{dataset}' (have {sorted(ARCHITECTURES)})")
    channels, kernel, features = ARCHITECTURES[dataset]
    return DigitClassifier(in_channels, num_classes, channels, kernel, features)


def accuracy(model: DigitClassifier, images_uint8: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.inference_mode():
        return float((model(images_uint8).argmax(1) == labels).float().mean())


def train_classifier(data: Dataset, *, seed: int = 0, steps: int = 1500, batch_size: int = 64, lr: float = 2e-3):
    """Adam on the train split with a seeded init and data order; returns (model, test accuracy)."""
    torch.manual_seed(seed)
    model = build_classifier(data.name, data.sample_shape[0], data.num_classes)
    images, labels = model_to_uint8(data.train.images), data.train.labels
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = BatchSchedule(len(labels), batch_size, seed)
    for step in range(steps):
        idx = schedule.indices(step)
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    return model, accuracy(model, model_to_uint8(data.test.images), data.test.labels)


def save_classifier(model: DigitClassifier, path: str | Path, meta: dict[str, Any]) -> Path:
    return atomic_save({"format": "ism-classifier-v1", "weights": model.state_dict(), "meta": meta}, path)


def file_hash(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_classifier(path: str | Path) -> tuple[DigitClassifier, dict[str, Any]]:
    state = safe_load(path)
    if state.get("format") != "ism-classifier-v1":
        raise CheckpointError(f"'{path}' is not an ism classifier checkpoint (make one with 'ism classifier')")
    meta = state["meta"]
    model = build_classifier(meta["dataset"], meta["in_channels"], meta["num_classes"])
    model.load_state_dict(state["weights"])
    return model.eval().requires_grad_(False), meta


def default_classifier_path(dataset: str) -> Path:
    return ASSETS / f"classifier-{dataset}.pt"
