"""Sample quality through torch-fidelity: FID, KID, precision and recall in a registered feature space.

For the embedded datasets the feature space is the committed digit classifier's penultimate layer
(:mod:`ism.classifier`), registered under a name that carries the checkpoint's hash, so a metric names the exact
extractor it was computed with. The reference is the dataset's train split; the real-data floor is the same
metric for the held-out test split (as many images as the samples, DATA.md).

    FID = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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


class ImageFiles(torch.utils.data.Dataset):
    """uint8 (3, S, S) tensors read lazily from image files (ADM centre crop), for references too big for RAM."""

    def __init__(self, paths: list[Path], image_size: int):
        self.paths, self.image_size = paths, image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        from ism.data.encode import adm_center_crop

        with Image.open(self.paths[i]) as image:
            array = np.asarray(adm_center_crop(image.convert("RGB"), self.image_size))
        return torch.from_numpy(array.copy()).permute(2, 0, 1)


INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)


@dataclass(frozen=True)
class Extractor:
    """A torch-fidelity feature extractor by registered name, with its local weights file."""

    name: str
    weights: Path


def resolve_extractor(
    kind: str, *, dataset: str, classifier: str | Path | None, inception_weights: str | Path
) -> Extractor:
    """The study's extractor, checked before any compute: a missing weights file is one error naming it."""
    if kind == "classifier":
        from ism.classifier import default_classifier_path

        path = Path(classifier) if classifier else default_classifier_path(dataset)
        if not path.is_file():
            raise FileNotFoundError(
                f"evaluate.classifier: no feature classifier at '{path}': make it with "
                f"'ism classifier --dataset {dataset}' or set evaluate.classifier"
            )
        return Extractor(register_classifier(path), path)
    path = Path(inception_weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"evaluate.inception_weights: '{path}' does not exist. Download it once on a machine with internet "
            f"(curl -L -o '{path}' {INCEPTION_URL}) and copy it here, or set evaluate.inception_weights"
        )
    return Extractor("inception-v3-compat", path)


def image_metrics(
    samples: torch.Tensor,
    reference: torch.Tensor | torch.utils.data.Dataset,
    extractor: Extractor | str | Path,
    *,
    cache_root: str | Path | None = None,
    cache_name: str | None = None,
    batch_size: int = 500,
) -> dict[str, Any]:
    """FID, KID (mean, std), precision, recall of uint8 (N, C, H, W) ``samples`` against ``reference``.

    ``reference`` is a uint8 tensor or a Dataset of uint8 (C, H, W) tensors. With ``cache_root`` and
    ``cache_name`` the reference features are read from (or written to) torch-fidelity's cache there, so the
    real data is embedded once per study (the ``fid_reference`` rule) rather than once per samples file.
    """
    if not isinstance(extractor, Extractor):  # a classifier checkpoint path
        extractor = Extractor(register_classifier(extractor), Path(extractor))
    if samples.dtype != torch.uint8:
        raise TypeError("samples must be a uint8 (N, C, H, W) tensor")
    if isinstance(reference, torch.Tensor):
        if reference.dtype != torch.uint8:
            raise TypeError("reference must be uint8 (N, C, H, W) images")
        if samples.shape[1:] != reference.shape[1:]:
            raise ValueError(f"samples {tuple(samples.shape[1:])} and reference {tuple(reference.shape[1:])} differ")
        reference = _Images(reference)
    cached = cache_root is not None and cache_name is not None
    result = torch_fidelity.calculate_metrics(
        input1=_Images(samples),
        input2=reference,
        fid=True,
        kid=True,
        prc=True,
        feature_extractor=extractor.name,
        feature_extractor_weights_path=str(extractor.weights),
        cuda=torch.cuda.is_available(),
        save_cpu_ram=True,
        cache=cached,
        cache_root=str(cache_root) if cached else None,
        input2_cache_name=cache_name if cached else None,
        verbose=False,
        kid_subset_size=min(1000, len(samples), len(reference)),
        batch_size=batch_size,
    )
    return {
        "fid": float(result["frechet_inception_distance"]),
        "kid": float(result["kernel_inception_distance_mean"]),
        "kid_std": float(result["kernel_inception_distance_std"]),
        "precision": float(result["precision"]),
        "recall": float(result["recall"]),
        "n": len(samples),
        "n_reference": len(reference),
        "extractor": extractor.name,
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
