"""Sample quality through torch-fidelity: FID, KID, precision and recall in a registered feature space.

For the embedded datasets the feature space is the committed digit classifier's penultimate layer
(:mod:`ism.classifier`), registered under a name that carries the checkpoint's hash, so a metric names the exact
extractor it was computed with. The reference is the dataset's train split; the real-data floor is the same
metric for the held-out test split (as many images as the samples, DATA.md).

    FID = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch_fidelity
from torch_fidelity import FeatureExtractorBase, register_feature_extractor
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from ism.classifier import file_hash, load_classifier


class ClassifierFeatures(FeatureExtractorBase):
    """torch-fidelity extractor: uint8 (B, C, H, W) images -> the classifier's penultimate features."""

    def __init__(
        self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None, **kwargs: Any
    ):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(f"feature extractor '{name}' needs feature_extractor_weights_path")
        self.classifier, _ = load_classifier(feature_extractor_weights_path)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("features",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return "features"

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 1, 8, 8, dtype=torch.uint8)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        if images.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images, got {images.dtype}")
        return (self.classifier.embed(images).float(),)


def register_classifier(path: str | Path) -> str:
    """Register the classifier at ``path`` (once) and return its name: ism-classifier-<dataset>-<sha256[:12]>."""
    _, meta = load_classifier(path)
    name = f"ism-classifier-{meta['dataset']}-{file_hash(path)[:12]}"
    if name not in FEATURE_EXTRACTORS_REGISTRY:  # torch-fidelity refuses a name twice
        register_feature_extractor(name, ClassifierFeatures)
    return name


class _Images(torch.utils.data.Dataset):
    """What torch-fidelity reads: bare uint8 (C, H, W) tensors."""

    def __init__(self, images_uint8: torch.Tensor):
        self.images = images_uint8

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def image_metrics(samples: torch.Tensor, reference: torch.Tensor, classifier_path: str | Path) -> dict[str, Any]:
    """FID, KID (mean, std), precision, recall of uint8 (N, C, H, W) ``samples`` against ``reference``."""
    if samples.dtype != torch.uint8 or reference.dtype != torch.uint8:
        raise TypeError("samples and reference must be uint8 (N, C, H, W) tensors")
    if samples.shape[1:] != reference.shape[1:]:
        raise ValueError(f"samples {tuple(samples.shape[1:])} and reference {tuple(reference.shape[1:])} differ")
    name = register_classifier(classifier_path)
    result = torch_fidelity.calculate_metrics(
        input1=_Images(samples),
        input2=_Images(reference),
        fid=True,
        kid=True,
        prc=True,
        feature_extractor=name,
        feature_extractor_weights_path=str(classifier_path),
        cuda=torch.cuda.is_available(),
        save_cpu_ram=True,
        cache=False,
        verbose=False,
        kid_subset_size=min(1000, len(samples), len(reference)),
        batch_size=500,
    )
    return {
        "fid": float(result["frechet_inception_distance"]),
        "kid": float(result["kernel_inception_distance_mean"]),
        "kid_std": float(result["kernel_inception_distance_std"]),
        "precision": float(result["precision"]),
        "recall": float(result["recall"]),
        "n": len(samples),
        "n_reference": len(reference),
        "extractor": name,
    }


def read_samples(path: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """uint8 (N, C, H, W) images and the metadata of a samples file written by ``ism sample``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"samples file '{path}' does not exist (make it with 'ism sample')")
    with np.load(path, allow_pickle=False) as f:
        images, meta = f["arr_0"], json.loads(str(f["meta"])) if "meta" in f else {}
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"'{path}' holds {images.dtype} {images.shape}, not uint8 images (N, H, W, C)")
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), meta
