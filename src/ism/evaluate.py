"""Sample quality through torch-fidelity: FID, KID, precision and recall in a registered feature space.

For the embedded datasets and image folders the feature space is a small classifier's penultimate layer
(:mod:`ism.classifier`: the committed one of digits, or the one 'ism classifier --config' trains for the study),
registered under a name that carries the checkpoint's hash, so a metric names the exact extractor it was computed
with. The reference is the dataset's train split; the real-data floor is the same
metric for the held-out test split (as many images as the samples, DATA.md).

    FID = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})

Nothing here is unpickled (DESIGN D8). torch-fidelity reads its feature cache and the Inception weights with
``torch.load(weights_only=False)``, so neither of those loaders ever sees a file: features come from the registered
extractor through torch-fidelity's own batching (``get_featuresdict_from_dataset``), the reference features are kept
by us as float32 in an ``.npz`` read with ``allow_pickle=False``, and the metrics are torch-fidelity's functions of
feature tensors, called with the settings ``calculate_metrics`` used (so the numbers are unchanged). The Inception
weights are hash-checked and then read with ``weights_only=True`` (:class:`SafeInceptionV3`).

An ImageNet FID that is comparable with published numbers uses the ADM evaluator's reference-batch statistics
(``evaluate.reference_statistics``: ``mu``, ``sigma`` of 2048-d Inception pool features) instead of train-split
features; only FID is defined against statistics (:func:`fid_against_statistics`).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_fidelity import FeatureExtractorBase, register_feature_extractor
from torch_fidelity.defaults import DEFAULTS
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from ism.atomic import atomic_path, write_json
from ism.classifier import file_hash, load_classifier
from ism.config import EMBEDDED_DATASETS, INCEPTION_KEY, INCEPTION_URL, missing_inception_message
from ism.errors import EvaluateError, first_line

MIN_IMAGES = 2  # FID needs a covariance, KID a pair
PRC_NEIGHBORHOOD = DEFAULTS["prc_neighborhood"]  # precision/recall need more images than this on each side
SAMPLES_LAYOUT = "uint8 images (N, H, W, C) in 'arr_0', as 'ism sample' writes them"


# --- feature extractors -------------------------------------------------------------------------------------------


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


# The file's name, URL and key live in ism.config: the workflow checks the file before any job, without torch.
# torch-fidelity names the file after the start of its SHA-256 (the torch.hub convention, which checks exactly this
# prefix). The full digest is published nowhere we could verify offline, so the prefix is what is pinned. Safety does
# not rest on it: bytes that pass are read with weights_only=True, which builds tensors and plain containers only.
INCEPTION_SHA256_PREFIX = "6726825d"
INCEPTION_NAME = f"ism-inception-v3-compat-{INCEPTION_SHA256_PREFIX}"


def _check_inception_digest(path: Path, data: bytes, sha256_prefix: str) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if not digest.startswith(sha256_prefix):
        raise EvaluateError(
            f"{INCEPTION_KEY}: '{path}' is not torch-fidelity's Inception weights (SHA-256 {digest[:16]}…, expected "
            f"{sha256_prefix}…) and was not loaded; download {INCEPTION_URL} again or fix {INCEPTION_KEY}"
        )


def _missing_inception(path: Path) -> FileNotFoundError:
    return FileNotFoundError(f"{INCEPTION_KEY}: {missing_inception_message(path)}")


def check_inception_file(path: str | Path, *, sha256_prefix: str = INCEPTION_SHA256_PREFIX) -> Path:
    """The weights file exists and carries the pinned hash (checked before any compute; nothing is loaded)."""
    path = Path(path)
    if not path.is_file():
        raise _missing_inception(path)
    _check_inception_digest(path, path.read_bytes(), sha256_prefix)
    return path


def load_inception_state(path: str | Path, *, sha256_prefix: str = INCEPTION_SHA256_PREFIX) -> dict[str, torch.Tensor]:
    """torch-fidelity's Inception weights from ``path``: the pinned hash first, then ``torch.load(weights_only=True)``.

    The bytes hashed are the bytes loaded (read once), so the file cannot change between check and load.
    """
    path = Path(path)
    if not path.is_file():
        raise _missing_inception(path)
    data = path.read_bytes()
    _check_inception_digest(path, data, sha256_prefix)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for anything but tensors and plain containers, others for junk
        raise EvaluateError(
            f"{INCEPTION_KEY}: '{path}' is not a plain weights file and was not loaded "
            f"({type(exc).__name__}: {first_line(exc)})"
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise EvaluateError(f"{INCEPTION_KEY}: '{path}' does not hold a state dict of tensors")
    return state


class SafeInceptionV3(FeatureExtractorInceptionV3):
    """torch-fidelity's ``inception-v3-compat`` network and forward pass, with its weights read safely.

    torch-fidelity's constructor builds the network and then reads the weights with ``torch.load(weights_only=False)``.
    It is handed only an in-memory copy of the tensors that :func:`load_inception_state` verified and loaded with
    ``weights_only=True``, serialised here a moment before; the file itself never reaches it.
    """

    def __init__(
        self,
        name: str,
        features_list: list[str],
        feature_extractor_weights_path: str | Path | None = None,
        inception_sha256_prefix: str = INCEPTION_SHA256_PREFIX,
        **kwargs: Any,
    ):
        if feature_extractor_weights_path is None:
            raise EvaluateError(f"{INCEPTION_KEY}: no weights file given (nothing is downloaded at run time)")
        state = load_inception_state(feature_extractor_weights_path, sha256_prefix=inception_sha256_prefix)
        verified = io.BytesIO()
        torch.save(state, verified)
        verified.seek(0)
        try:
            super().__init__(name, features_list, feature_extractor_weights_path=verified, **kwargs)
        except RuntimeError as exc:  # load_state_dict: missing or unexpected keys, wrong shapes
            raise EvaluateError(
                f"{INCEPTION_KEY}: '{feature_extractor_weights_path}' does not fit torch-fidelity's Inception "
                f"({first_line(exc)})"
            ) from None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """torch-fidelity's forward; a grayscale batch (an all-gray image folder trains on 1 channel) is repeated
        to the 3 channels Inception takes, as the file's gray value would be by an RGB conversion."""
        if x.dim() == 4 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return super().forward(x)


def register_inception() -> str:
    """Register :class:`SafeInceptionV3` (once) and return its name. torch-fidelity's own ``inception-v3-compat``
    (which unpickles its weights file) is never asked for."""
    if INCEPTION_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(INCEPTION_NAME, SafeInceptionV3)
    return INCEPTION_NAME


@dataclass(frozen=True)
class Extractor:
    """A torch-fidelity feature extractor by registered name, with its local weights file."""

    name: str
    weights: Path


def resolve_extractor(
    kind: str,
    *,
    dataset: str,
    classifier: str | Path | None,
    inception_weights: str | Path,
    missing: str | None = None,
) -> Extractor:
    """The study's extractor, checked before any compute: a missing or foreign weights file is one error naming it.

    ``classifier``: the checkpoint (None: the dataset's committed one); ``missing``: what a missing checkpoint's
    error says after ``evaluate.classifier:`` (the caller knows how the study makes it).
    """
    if kind == "classifier":
        from ism.classifier import default_classifier_path

        path = Path(classifier) if classifier else default_classifier_path(dataset)
        if not path.is_file():
            make = (
                f"'ism classifier --dataset {dataset}'"
                if dataset in EMBEDDED_DATASETS and not classifier
                else f"'ism classifier --config STUDY --out {path}'"
            )
            why = missing or f"no feature classifier at '{path}': make it with {make} or set evaluate.classifier"
            raise FileNotFoundError(f"evaluate.classifier: {why}")
        return Extractor(register_classifier(path), path)
    return Extractor(register_inception(), check_inception_file(inception_weights))


class _Images(torch.utils.data.Dataset):
    """What torch-fidelity reads: bare uint8 (C, H, W) tensors."""

    def __init__(self, images_uint8: torch.Tensor):
        self.images = images_uint8

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


class FeatureSpace:
    """A registered extractor, built once: uint8 (N, C, H, W) images -> float32 (N, D) features of its metric layer."""

    def __init__(self, extractor: Extractor, *, batch_size: int = 500):
        cls = FEATURE_EXTRACTORS_REGISTRY[extractor.name]
        layers = {cls.get_default_feature_layer_for_metric(metric) for metric in ("fid", "kid", "prc")}
        if len(layers) != 1:
            raise ValueError(f"extractor '{extractor.name}' uses several layers {sorted(layers)}; ism stores one")
        (self.layer,) = layers
        self.extractor, self.batch_size = extractor, batch_size
        self.cuda = torch.cuda.is_available()
        self.module = create_feature_extractor(
            extractor.name,
            [self.layer],
            cuda=self.cuda,
            verbose=False,
            feature_extractor_weights_path=str(extractor.weights),
        )

    def __call__(self, images: torch.Tensor | torch.utils.data.Dataset) -> torch.Tensor:
        dataset = _Images(images) if isinstance(images, torch.Tensor) else images
        features = get_featuresdict_from_dataset(
            dataset, self.module, self.batch_size, self.cuda, save_cpu_ram=True, verbose=False
        )
        return features[self.layer]

    def dim(self, image_shape: tuple[int, ...]) -> int:
        """Feature size, from one blank image of (C, H, W) ``image_shape``."""
        with torch.no_grad():
            probe = torch.zeros(1, *image_shape, dtype=torch.uint8, device="cuda" if self.cuda else "cpu")
            return int(self.module.convert_features_tuple_to_dict(self.module(probe))[self.layer].shape[1])


# --- metrics from features ------------------------------------------------------------------------------------------


def feature_metrics(samples: torch.Tensor, reference: torch.Tensor) -> dict[str, float | None]:
    """FID, KID (mean, std), precision and recall of two (N, D) feature sets: torch-fidelity's functions with the
    settings ``calculate_metrics`` used (KID subsets of min(1000, N₁, N₂), seed 2020; precision/recall with 3 nearest
    neighbours, computed in parts). Precision and recall are None when a side has no more images than neighbours."""
    fid = fid_statistics_to_metric(fid_features_to_statistics(samples), fid_features_to_statistics(reference), False)
    kid = kid_features_to_metric(
        samples, reference, kid_subset_size=min(1000, len(samples), len(reference)), verbose=False
    )
    out = {
        "fid": float(fid[KEY_METRIC_FID]),
        "kid": float(kid[KEY_METRIC_KID_MEAN]),
        "kid_std": float(kid[KEY_METRIC_KID_STD]),
        "precision": None,
        "recall": None,
    }
    if min(len(samples), len(reference)) > PRC_NEIGHBORHOOD:
        prc = prc_features_to_metric(samples, reference, save_cpu_ram=True, verbose=False)
        out |= {"precision": float(prc[KEY_METRIC_PRECISION]), "recall": float(prc[KEY_METRIC_RECALL])}
    return out


def fid_against_statistics(samples: torch.Tensor, mu: np.ndarray, sigma: np.ndarray) -> float:
    """FID of (N, D) sample features against reference statistics (torch-fidelity's formula, in float64)."""
    stats = fid_features_to_statistics(samples)
    ours = {"mu": stats["mu"].astype(np.float64), "sigma": stats["sigma"].astype(np.float64)}
    theirs = {"mu": mu.astype(np.float64), "sigma": sigma.astype(np.float64)}
    return float(fid_statistics_to_metric(ours, theirs, False)[KEY_METRIC_FID])


def image_metrics(
    samples: torch.Tensor,
    reference: torch.Tensor | torch.utils.data.Dataset,
    extractor: Extractor | str | Path,
    *,
    batch_size: int = 500,
) -> dict[str, Any]:
    """FID, KID (mean, std), precision, recall of uint8 (N, C, H, W) ``samples`` against ``reference``.

    ``reference`` is a uint8 tensor or a Dataset of uint8 (C, H, W) tensors; ``extractor`` an :class:`Extractor` or a
    classifier checkpoint path.
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
    space = FeatureSpace(extractor, batch_size=batch_size)
    return feature_metrics(space(samples), space(reference)) | {
        "n": len(samples),
        "n_reference": len(reference),
        "extractor": extractor.name,
    }


# --- files: samples, reference features, reference statistics (never unpickled) -----------------------------------


def load_npz(path: str | Path, keys: tuple[str, ...], fix: str, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """Arrays ``keys`` (and those of ``optional`` present) of an ``.npz``, read with ``allow_pickle=False``.

    A pickle, a single ``.npy``, a missing key or an object array is one :class:`EvaluateError` naming the file and
    ending with ``fix``; nothing in the file is ever unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' does not exist: {fix}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise EvaluateError(
            f"'{path}' is not an .npz archive of plain arrays ({first_line(exc)}); it was not unpickled: {fix}"
        ) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise EvaluateError(f"'{path}' holds a single array, not an .npz archive with {list(keys)}: {fix}")
    with loaded:
        missing = [k for k in keys if k not in loaded.files]
        if missing:
            raise EvaluateError(f"'{path}' has no array {missing[0]!r} (it holds {sorted(loaded.files)}): {fix}")
        out = {}
        for key in (*keys, *(k for k in optional if k in loaded.files)):
            try:
                out[key] = loaded[key]
            except ValueError as exc:
                if "allow_pickle" in str(exc):
                    raise EvaluateError(
                        f"'{path}': array {key!r} holds Python objects, which are never unpickled: {fix}"
                    ) from None
                raise EvaluateError(f"'{path}': array {key!r} is unreadable ({first_line(exc)}): {fix}") from None
            except (OSError, EOFError, zipfile.BadZipFile) as exc:
                raise EvaluateError(f"'{path}': array {key!r} is unreadable ({first_line(exc)}): {fix}") from None
    return out


def _write_npz(path: Path, **arrays: np.ndarray) -> Path:
    """An uncompressed ``.npz``, written atomically (never half-written)."""
    # A file object, not the name: np.savez would append ".npz" to the temporary name.
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)
    return path


def _check_samples_layout(shape: tuple[int, ...], dtype: np.dtype, where: str) -> None:
    """What a samples array must be: uint8, 4-D, channels last (1 or 3), at least MIN_IMAGES images."""
    if dtype != np.uint8:
        raise EvaluateError(f"{where} holds {dtype} values, not {SAMPLES_LAYOUT}")
    if len(shape) != 4:
        raise EvaluateError(f"{where} holds a {len(shape)}-D array {shape}, not {SAMPLES_LAYOUT}")
    if shape[-1] not in (1, 3):
        hint = " (it looks channels-first, N, C, H, W)" if shape[1] in (1, 3) else ""
        raise EvaluateError(
            f"{where} holds shape {shape} with {shape[-1]} channels last{hint}; expected {SAMPLES_LAYOUT}"
        )
    if shape[0] < MIN_IMAGES:
        raise EvaluateError(f"{where} holds {shape[0]} image(s); FID needs at least {MIN_IMAGES}")


def samples_shape(path: str | Path) -> tuple[int, int, int, int]:
    """(N, C, H, W) of a samples file, checked as :func:`read_samples` checks it, from the header of its ``arr_0``
    alone: no image is read and nothing is unpickled, so every file of a scoring job is checked before the first is
    scored, at the cost of a few bytes each (an ImageNet file holds 50,000 images)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"samples file '{path}' does not exist (make it with 'ism sample')")
    fix = f"expected {SAMPLES_LAYOUT}"
    try:
        with zipfile.ZipFile(path) as archive, archive.open("arr_0.npy") as member:
            version = np.lib.format.read_magic(member)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f".npy format version {version}")
            read_header = getattr(np.lib.format, f"read_array_header_{version[0]}_0")
            shape, _, dtype = read_header(member)
    except KeyError:
        raise EvaluateError(f"'{path}' has no array 'arr_0': {fix}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        with path.open("rb") as f:
            single_array = f.read(6) == b"\x93NUMPY"
        if single_array:
            raise EvaluateError(f"'{path}' holds a single array, not an .npz archive with ['arr_0']: {fix}") from None
        raise EvaluateError(
            f"'{path}' is not an .npz archive of plain arrays ({first_line(exc)}); it was not unpickled: {fix}"
        ) from None
    if dtype.hasobject:
        raise EvaluateError(f"'{path}': array 'arr_0' holds Python objects, which are never unpickled: {fix}")
    _check_samples_layout(tuple(shape), dtype, f"samples file '{path}'")
    n, h, w, c = shape
    return n, c, h, w


def read_samples(path: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """uint8 (N, C, H, W) images and the metadata of a samples file written by ``ism sample``, checked: anything else
    (another dtype, channels first, not 4-D, fewer than two images, objects, no ``arr_0``) is one EvaluateError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"samples file '{path}' does not exist (make it with 'ism sample')")
    arrays = load_npz(path, ("arr_0",), f"expected {SAMPLES_LAYOUT}", optional=("meta",))
    images = arrays["arr_0"]
    where = f"samples file '{path}'"
    _check_samples_layout(images.shape, images.dtype, where)
    meta: dict[str, Any] = {}
    if "meta" in arrays:
        try:
            meta = json.loads(str(arrays["meta"]))
        except json.JSONDecodeError:
            raise EvaluateError(f"{where}: its 'meta' entry is not JSON (as 'ism sample' writes it)") from None
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), meta


def check_images(shape: tuple[int, ...], expected_chw: tuple[int, ...] | None, where: str, reference: str) -> None:
    """Images of ``shape`` (N, C, H, W) must match the reference's (C, H, W): a mismatch is one EvaluateError naming
    both."""
    got = tuple(shape[1:])
    if expected_chw is not None and got != tuple(expected_chw):
        c, h, w = got
        rc, rh, rw = expected_chw
        raise EvaluateError(
            f"{where} holds {h}x{w}x{c} images (H x W x C) but {reference} is {rh}x{rw}x{rc}: "
            "evaluate samples of this study's model against this study's reference"
        )


REFERENCE_FORMAT = "ism-fid-reference-v2"
REFERENCE_INFO = "reference.json"
REFERENCE_FEATURES = "reference.npz"


def write_reference(folder: str | Path, features: torch.Tensor, info: dict[str, Any]) -> Path:
    """Reference features as float32 ``features`` in FOLDER/reference.npz, then FOLDER/reference.json (both atomic)."""
    folder = Path(folder)
    array = features.detach().cpu().numpy().astype(np.float32)
    _write_npz(folder / REFERENCE_FEATURES, features=array)
    info = {**info, "format": REFERENCE_FORMAT, "features_file": REFERENCE_FEATURES, "n": len(array)}
    return write_json(folder / REFERENCE_INFO, info | {"dim": int(array.shape[1])})


def read_reference(folder: str | Path, extractor_name: str) -> tuple[torch.Tensor, dict[str, Any]]:
    """Features (float32 (N, D)) and info of a reference written by :func:`write_reference`, checked."""
    folder = Path(folder)
    path = folder / REFERENCE_INFO
    fix = f"rerun 'ism fid-reference --out-dir {folder}'"
    if not path.is_file():
        raise FileNotFoundError(f"no FID reference at '{path}': make it with 'ism fid-reference'")
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EvaluateError(f"'{path}' is not JSON: {fix}") from None
    if not isinstance(info, dict) or info.get("format") != REFERENCE_FORMAT:
        raise EvaluateError(
            f"'{path}' is not an FID reference of this version (torch-fidelity .pt caches are never loaded): {fix}"
        )
    if info.get("extractor") != extractor_name:
        raise EvaluateError(
            f"'{path}' was made with extractor '{info.get('extractor')}', not '{extractor_name}': {fix}"
        )
    shape = info.get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(s, int) and s > 0 for s in shape)):
        raise EvaluateError(f"'{path}' has no valid image_shape [C, H, W]: {fix}")
    features = load_npz(folder / REFERENCE_FEATURES, ("features",), fix)["features"]
    where = f"'{folder / REFERENCE_FEATURES}'"
    if features.dtype != np.float32 or features.ndim != 2:
        raise EvaluateError(f"{where} holds {features.dtype} {features.shape}, not float32 features (N, D): {fix}")
    if len(features) != info.get("n") or features.shape[1] != info.get("dim") or len(features) < MIN_IMAGES:
        raise EvaluateError(f"{where} holds {features.shape} features, but '{path}' says n={info.get('n')}: {fix}")
    if not np.isfinite(features).all():
        raise EvaluateError(f"{where} holds non-finite features: {fix}")
    return torch.from_numpy(features), info


STATISTICS_KEY = "evaluate.reference_statistics"


def read_statistics(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``mu`` (D,) and ``sigma`` (D, D) of an ADM reference batch (e.g. VIRTUAL_imagenet256_labeled.npz), checked:
    float, matching shapes, finite, sigma symmetric. Its images (``arr_0``) and spatial statistics are not read."""
    path = Path(path)
    fix = f"give {STATISTICS_KEY} an ADM reference batch (.npz with 'mu' (D,) and 'sigma' (D, D)) or unset it"
    arrays = load_npz(path, ("mu", "sigma"), fix)
    mu, sigma = arrays["mu"], arrays["sigma"]
    where = f"{STATISTICS_KEY}: '{path}'"
    if mu.dtype.kind != "f" or sigma.dtype.kind != "f":
        raise EvaluateError(f"{where} holds {mu.dtype} mu and {sigma.dtype} sigma, not floats: {fix}")
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)) or len(mu) == 0:
        raise EvaluateError(f"{where} holds mu {mu.shape} and sigma {sigma.shape}, not (D,) and (D, D): {fix}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise EvaluateError(f"{where} holds non-finite statistics: {fix}")
    if not np.allclose(sigma, sigma.T, rtol=1e-5, atol=1e-8):
        raise EvaluateError(f"{where}: sigma is not symmetric, so it is no covariance: {fix}")
    return mu, sigma
