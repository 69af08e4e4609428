"""Study-level stages that read the whole study file: encode the data, embed the real reference, score samples.

Each function is ``inputs + study config -> files``; the CLI (and through it the workflow) calls them. The real
images come from one place, :func:`ism.data.real.real_images`, so encoding, the FID reference, the floor and
``ism train`` always agree on the split and the pixels: the train split is encoded and is the FID reference, the
held-out test split gives the floor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ism.atomic import write_json
from ism.config import (
    RunConfig,
    StudyConfig,
    classifier_source,
    load_yaml,
    missing_classifier_message,
    resolve_run,
    validate_study,
)
from ism.data.real import FolderImages, real_images
from ism.evaluate import (
    MIN_IMAGES,
    EvaluateError,
    Extractor,
    FeatureSpace,
    check_images,
    feature_metrics,
    fid_against_statistics,
    read_reference,
    read_samples,
    read_statistics,
    resolve_extractor,
    samples_shape,
    write_reference,
)


def load_study(path: str | Path) -> tuple[StudyConfig, dict[str, Any]]:
    raw = load_yaml(path)
    return validate_study(raw), raw


def base_run(raw: dict[str, Any], study: StudyConfig) -> RunConfig:
    """The configuration every run shares for data (runs may not override ``data``)."""
    return resolve_run(raw, next(iter(study.runs)))


def encode(config: str | Path, out_dir: str | Path, *, shard: int, num_shards: int, progress: bool = True) -> Path:
    """Encode shard ``shard`` of ``num_shards`` of the train split into ``out_dir``."""
    from ism.data.encode import encode_shard
    from ism.runtime import select_device

    study, raw = load_study(config)
    cfg = base_run(raw, study)
    train = real_images(cfg.data, "train")
    d = cfg.data
    return encode_shard(
        train.images,
        train.labels,
        out_dir,
        shard=shard,
        num_shards=num_shards,
        encoder=d.encoder,
        vae=d.vae,
        scale_factor=d.latent_scale,
        flips=d.flips,
        batch_size=d.encode_batch_size,
        device=select_device(cfg.train.device),
        progress=progress,
    )


def merge_encoded(config: str | Path, out_dir: str | Path, *, num_shards: int) -> Path:
    from ism.data.encode import merge_shards

    study, raw = load_study(config)
    cfg = base_run(raw, study)
    train = real_images(cfg.data, "train")
    d = cfg.data
    meta = {
        "dataset": d.dataset,
        "encoder": d.encoder,
        "vae": d.vae,
        "scale_factor": d.latent_scale if d.encoder == "sd-vae" else 1.0,
        "flips": d.flips,
        "num_images": len(train.images),
        "num_classes": train.num_classes,
        "class_names": list(train.class_names),
    }
    return merge_shards(out_dir, num_shards, meta)


def _extractor(study: StudyConfig, config: str | Path) -> Extractor:
    """The study's feature extractor: its classifier (given, committed, or built by 'ism classifier --config') or
    Inception, its file checked."""
    e = study.evaluate
    source = classifier_source(study)
    classifier, missing = (source[0], missing_classifier_message(*source, config)) if source else (None, None)
    return resolve_extractor(
        e.extractor,
        dataset=study.data.dataset,
        classifier=classifier,
        inception_weights=e.inception_weights,
        missing=missing,
    )


def _check_fits(study: StudyConfig, config: str | Path, extractor: Extractor, shape: tuple[int, ...], where: str):
    """A classifier embeds only images of the shape it was trained on (its global pool would accept any size)."""
    if study.evaluate.extractor == "classifier":
        from ism.classifier import input_problem, load_classifier

        problem = input_problem(load_classifier(extractor.weights)[1], shape)
        if problem:
            raise EvaluateError(
                f"evaluate.classifier: '{extractor.weights}' cannot embed {where}: {problem}; train one on this "
                f"study's images with 'ism classifier --config {config} --out FILE' and name it in evaluate.classifier"
            )


def _reference(cfg: RunConfig, study: StudyConfig) -> torch.Tensor | FolderImages:
    """The real reference images: the train split, or its first ``evaluate.reference_images``."""
    train = real_images(cfg.data, "train")
    limit = study.evaluate.reference_images
    return (train.first(limit) if limit is not None else train).images


def reference(config: str | Path, out_dir: str | Path) -> Path:
    """Embed the real reference once: float32 features in ``out_dir``/reference.npz, its info in reference.json."""
    study, raw = load_study(config)
    extractor = _extractor(study, config)
    ref = _reference(base_run(raw, study), study)
    if len(ref) < MIN_IMAGES:
        raise EvaluateError(f"config key 'evaluate.reference_images': the reference needs at least {MIN_IMAGES} images")
    _check_fits(study, config, extractor, tuple(ref.shape[1:]), "the study's train split")
    features = FeatureSpace(extractor, batch_size=study.evaluate.batch_size)(ref)
    info = {
        "extractor": extractor.name,
        "dataset": study.data.dataset,
        "image_shape": [int(s) for s in ref.shape[1:]],
    }
    return write_reference(out_dir, features, info)


def evaluate(config: str | Path, samples: str | Path, out: str | Path, reference_dir: str | Path | None) -> dict:
    """Metrics of a samples file against the reference (read from ``reference_dir`` when given)."""
    return evaluate_files(config, [samples], [out], reference_dir)[0]


def evaluate_files(
    config: str | Path,
    samples: list[str | Path],
    outs: list[str | Path],
    reference_dir: str | Path | None,
) -> list[dict]:
    """Metrics of several samples files, ``outs[i]`` for ``samples[i]``, in one process: the study, the feature
    extractor and the reference are read (or the reference embedded) once. Each file's metrics are those
    :func:`evaluate` writes for it alone, byte for byte.

    Every samples file is checked against the reference from its header before the first image is embedded; then
    each is read once and scored in turn (one file's images in memory at a time)."""
    if len(samples) != len(outs):
        raise EvaluateError(f"{len(samples)} samples files but {len(outs)} metrics files: give one --out per --samples")
    if len({str(Path(out)) for out in outs}) != len(outs):
        raise EvaluateError(f"metrics files {[str(o) for o in outs]}: each samples file needs its own --out")
    for path in samples:
        if not Path(path).is_file():
            raise FileNotFoundError(f"samples file '{path}' does not exist (make it with 'ism sample')")
    scorer = _Scorer(config, reference_dir)
    for path in samples:
        scorer.check(samples_shape(path), f"samples file '{path}'")
    return [scorer.score(*read_samples(path), out) for path, out in zip(samples, outs, strict=True)]


def floor(config: str | Path, out: str | Path, reference_dir: str | Path | None) -> dict:
    """The real-data floor: held-out test images, as many as the samples, scored exactly like samples."""
    study, raw = load_study(config)
    test = real_images(base_run(raw, study).data, "test")
    held_out = test.first(study.evaluate.floor_images or study.sample.num_images).images
    scorer = _Scorer(config, reference_dir)
    scorer.check(held_out.shape, "the floor's images")
    return scorer.score(held_out, {"run": "real-test-images", "steps": 0}, out)


class _Scorer:
    """What scoring reads once for any number of image sets: the study, its feature extractor (weights present and
    hash-checked) and the reference (ADM statistics, the stored reference features, or the train split's images,
    embedded at the first score)."""

    def __init__(self, config: str | Path, reference_dir: Any):
        study, raw = load_study(config)  # also checks the layout of evaluate.reference_statistics
        self.config, self.study = config, study
        self.extractor = _extractor(study, config)
        e = study.evaluate
        self.statistics = self.reference_features = self.reference_images = None
        if e.reference_statistics:
            self.statistics = read_statistics(e.reference_statistics)
            self.label = f"adm-statistics:{e.reference_statistics}"
            size = study.data.image_size
            self.shape = (3, size, size) if size else None
            self.against = f"'{e.reference_statistics}' (data.image_size)"
        elif reference_dir is not None:
            self.reference_features, info = read_reference(reference_dir, self.extractor.name)
            self.label = "train-split"
            self.shape = tuple(info["image_shape"])
            self.against = f"the reference in '{reference_dir}'"
        else:
            self.reference_images = _reference(base_run(raw, study), study)
            self.label = "train-split"
            self.shape = tuple(self.reference_images.shape[1:])
            self.against = "the study's train split"
        self._space: FeatureSpace | None = None

    def check(self, shape: tuple[int, ...], where: str) -> None:
        """Images of ``shape`` (N, C, H, W) the reference and the extractor can take, or one EvaluateError naming
        ``where``."""
        check_images(shape, self.shape, where, self.against)
        _check_fits(self.study, self.config, self.extractor, tuple(shape[1:]), where)

    @property
    def space(self) -> FeatureSpace:
        if self._space is None:
            self._space = FeatureSpace(self.extractor, batch_size=self.study.evaluate.batch_size)
        return self._space

    def score(self, images: torch.Tensor | FolderImages, meta: dict, out: str | Path) -> dict:
        """The metrics of checked ``images`` (see :meth:`check`), written to ``out`` last."""
        e, space = self.study.evaluate, self.space
        if self.statistics is not None:
            mu, sigma = self.statistics
            dim = space.dim(tuple(images.shape[1:]))
            if dim != len(mu):
                raise EvaluateError(
                    f"evaluate.reference_statistics: '{e.reference_statistics}' holds {len(mu)}-d statistics but "
                    f"extractor '{self.extractor.name}' gives {dim}-d features "
                    "(ADM statistics need inception-v3-compat)"
                )
            metrics = {
                "fid": fid_against_statistics(space(images), mu, sigma),
                "kid": None,  # KID and precision/recall need the reference's features, not its statistics
                "kid_std": None,
                "precision": None,
                "recall": None,
                "n_reference": None,
            }
        else:
            if self.reference_features is None:
                self.reference_features = space(self.reference_images)
            reference = self.reference_features
            metrics = feature_metrics(space(images), reference) | {"n_reference": len(reference)}
        metrics |= {
            "n": len(images),
            "extractor": self.extractor.name,
            "reference": self.label,
            "sample_meta": meta,
            "dataset": self.study.data.dataset,
        }
        write_json(out, metrics)
        return metrics
