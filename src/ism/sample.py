"""Sampling at any power-of-two budget N with the Euler rule of shortcut models (METHOD.md §A9).

    x_0 ~ N(0, I);   for i = 0 … N−1:   t_i = i/N,   x ← x + d · s_θ(x, t_i, k, y),   d = 1/N,  k = log2 N

One forward per step. Classifier-free guidance ``v = v_u + w (v_c − v_u)`` (two passes folded into one batched
forward) is applied only where the method trained an unconditional branch at the queried level: SM trains ∅ only
at the finest level k = log2 M (N = M), flow matching at its single level (any N).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ism.atomic import write_bytes
from ism.checkpoint import MODEL_FORMAT, CheckpointError, safe_load
from ism.config import ConfigError, RunConfig, SampleConfig, is_power_of_two, run_config_from_json
from ism.data import model_to_uint8, nchw_to_nhwc_uint8, uint8_to_model
from ism.data.encode import output_folder_problem
from ism.figures import axes, png_bytes
from ism.method.shortcut import guided
from ism.models import build_network
from ism.naming import guidance_scales, sample_name, shard_name
from ism.runtime import seeded_generator, select_device


@dataclass
class TrainedModel:
    network: nn.Module
    config: RunConfig
    weights: str  # which copy was loaded: 'online' or an EMA name
    step: int
    sample_shape: tuple[int, ...]
    num_classes: int
    encoding: dict[str, Any] = field(default_factory=lambda: {"encoder": "identity"})


def load_trained(path: str | Path, weights: str | None = None, device: str | torch.device = "cpu") -> TrainedModel:
    """Rebuild a network from a final model file and load the requested weights (default: the config's)."""
    state = safe_load(path, map_location="cpu")
    if state.get("format") != MODEL_FORMAT:
        raise CheckpointError(
            f"'{path}' is not an ism model file (expected format {MODEL_FORMAT}; "
            "pass the model.pt written by 'ism train', not a resumable ckpt-*.pt)"
        )
    cfg = run_config_from_json(state["config"])
    weights = weights or cfg.sample.weights
    if weights not in state["weights"]:
        raise CheckpointError(f"'{path}' has no weights named '{weights}' (it has {sorted(state['weights'])})")
    shape = tuple(state["sample_shape"])
    network = build_network(cfg, shape, state["num_classes"])
    network.load_state_dict(state["weights"][weights])
    network.to(device).eval().requires_grad_(False)
    encoding = state.get("encoding") or {"encoder": "identity"}
    return TrainedModel(network, cfg, weights, int(state["step"]), shape, int(state["num_classes"]), encoding)


def guidance_allowed(cfg: RunConfig, steps: int) -> bool:
    """Where CFG may mix two passes: SM's unconditional branch exists only at the finest level; flow matching
    has a single level; intrinsic guidance replaces CFG by the network's w input (never two passes)."""
    if cfg.method.guidance.intrinsic:
        return False
    return (not cfg.method.uses_levels) or steps == cfg.method.base_steps


def query_level(cfg: RunConfig, steps: int) -> int:
    """k = log2 N for shortcut models; flow matching always sees its only level, log2 M."""
    return int(math.log2(steps)) if cfg.method.uses_levels else cfg.method.max_level


@torch.inference_mode()
def euler_sample(
    network: nn.Module,
    noise: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int,
    level: int,
    cfg_scale: float = 1.0,
    null_label: int | None = None,
    guidance: float | None = None,
) -> torch.Tensor:
    """Integrate from t = 0 (noise) to t = 1 (data) in ``steps`` Euler steps of size d = 1/steps.

    ``guidance`` is the w input of a network trained with intrinsic guidance (one forward per step)."""
    if not is_power_of_two(steps):
        raise ValueError(f"steps={steps} is not a power of two")
    guide = cfg_scale != 1.0
    if guide and null_label is None:
        raise ValueError("null_label is needed for classifier-free guidance")
    batch = noise.shape[0]
    d = 1.0 / steps
    x = noise
    y = torch.cat([labels, torch.full_like(labels, null_label)]) if guide else labels
    k = torch.full((y.shape[0],), level, dtype=torch.long, device=noise.device)
    w = None if guidance is None else torch.full((y.shape[0],), float(guidance), device=noise.device)
    for i in range(steps):
        t = torch.full((y.shape[0],), i * d, device=noise.device)
        if guide:
            v = network(torch.cat([x, x]), t, k, y, w).float()
            v = guided(v[:batch], v[batch:], cfg_scale)
        else:
            v = network(x, t, k, y, w).float()
        x = x + d * v
    return x


def generate(
    trained: TrainedModel,
    steps: int,
    *,
    num_images: int,
    batch_size: int,
    seed: int,
    cfg_scale: float | None = None,
    guidance: float | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    shard: int = 0,
    num_shards: int = 1,
    label_draw: str = "uniform",
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``num_images`` samples (model space, on the CPU), their labels, and metadata saying how they were made.

    Batch b draws its labels (uniform) and noise from a generator seeded by (seed, b), so every run and budget
    sampled with the same seed and batch size starts from the same noise and labels (common random numbers).
    With ``label_draw="balanced"`` the labels are instead :func:`balanced_labels` (the noise is unchanged).
    Shard i of S generates only its contiguous block of batches; the shards concatenated in order are exactly
    the unsharded result, whatever S.
    """
    from tqdm import tqdm

    cfg = trained.config
    applied = _applied_cfg_scale(cfg, steps, cfg_scale)
    guidance = _network_guidance(cfg, guidance)
    device = torch.device(device)
    level = query_level(cfg, steps)
    _check_counts(num_images, batch_size, shard, num_shards)
    batches = _shard_batches(num_images, batch_size, shard, num_shards)
    # The same Euler integration for every batch.
    integration = dict(steps=steps, level=level, cfg_scale=applied, null_label=trained.num_classes, guidance=guidance)
    balanced = balanced_labels(trained.num_classes, num_images, seed) if label_draw == "balanced" else None
    images, labels = [], []
    for b in tqdm(batches, disable=not progress, desc=f"sample N={steps}"):
        noise, y = _batch_noise_and_labels(trained, seed, b, min(batch_size, num_images - b * batch_size), device)
        if balanced is not None:  # the same noise as the uniform draw (drawn after its labels): paired comparisons
            y = balanced[b * batch_size : b * batch_size + len(y)].to(device)
        x = euler_sample(trained.network, noise, y, **integration)
        images.append(x.cpu())
        labels.append(y.cpu())
    meta = {  # the key order is part of the file's bytes
        "run": cfg.name,
        "steps": steps,
        "level": level,
        "nfe": steps * (2 if applied != 1.0 else 1),
        "cfg_scale": applied,
        "guidance": guidance,
        "weights": trained.weights,
        "train_step": trained.step,
        "seed": seed,
        "batch_size": batch_size,
        "num_images": num_images,
        "shard": [shard, num_shards],
    }
    if label_draw != "uniform":  # files sampled with uniform labels keep their bytes
        meta["labels"] = label_draw
    samples, labels = _joined(images, labels, trained.sample_shape)
    return samples, labels, meta


def _applied_cfg_scale(cfg: RunConfig, steps: int, cfg_scale: float | None) -> float:
    """The CFG scale the sampler mixes with at this budget (None: the config's); 1 where CFG does not apply."""
    scale = cfg.sample.cfg_scale if cfg_scale is None else cfg_scale
    return scale if guidance_allowed(cfg, steps) else 1.0


def _network_guidance(cfg: RunConfig, guidance: float | None) -> float | None:
    """The w input of an intrinsic-guidance network (None: the config's first scale); None for any other run."""
    if not cfg.method.guidance.intrinsic:
        if guidance is not None:
            raise ConfigError(f"run '{cfg.name}' was trained without intrinsic guidance: it takes no guidance scale w")
        return None
    return cfg.sample.guidance[0] if guidance is None else guidance


def _shard_batches(num_images: int, batch_size: int, shard: int, num_shards: int) -> list[int]:
    """The indices of the batches shard ``shard`` of ``num_shards`` generates: a contiguous block."""
    num_batches = math.ceil(num_images / batch_size)
    return np.array_split(np.arange(num_batches), num_shards)[shard].tolist()


def balanced_labels(num_classes: int, num_images: int, seed: int) -> torch.Tensor:
    """``num_images`` labels with every class ⌊n/k⌋ or ⌈n/k⌉ times (classes 0, 1, ... take the extra one), in an
    order shuffled by ``seed`` alone: each shard slices the same sequence, so shards merge to the whole file."""
    labels = torch.arange(num_images) % num_classes
    return labels[torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))]


def _batch_noise_and_labels(
    trained: TrainedModel, seed: int, batch: int, size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``batch``'s starting noise and labels, drawn (labels first) from a generator seeded by (seed, batch)."""
    g = seeded_generator(device, "sample", seed, batch)
    labels = torch.randint(0, trained.num_classes, (size,), generator=g, device=device)
    noise = torch.randn((size, *trained.sample_shape), generator=g, device=device)
    return noise, labels


def _joined(
    images: list[torch.Tensor], labels: list[torch.Tensor], sample_shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batches as one tensor of samples and one of labels."""
    if not images:  # more shards than batches: this shard is empty
        return torch.zeros((0, *sample_shape)), torch.zeros(0, dtype=torch.int64)
    return torch.cat(images), torch.cat(labels)


def save_samples(path: str | Path, samples: torch.Tensor, labels: torch.Tensor, meta: dict[str, Any]) -> Path:
    """Images as uint8 NHWC ``arr_0`` (the ADM evaluator layout); vectors as float32 ``arr_0``; plus labels, meta."""
    path = Path(path)
    array = nchw_to_nhwc_uint8(samples) if samples.dim() == 4 else samples.float().numpy()
    return _write_samples_file(path, array, labels.numpy().astype(np.int64), meta)


def _write_samples_file(path: Path, array: np.ndarray, labels: np.ndarray, meta: dict[str, Any]) -> Path:
    """``arr_0``, ``labels`` and the JSON ``meta`` as one .npz, written atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, arr_0=array, labels=labels, meta=np.array(json.dumps(meta)))
    return write_bytes(path, buffer.getvalue())


def tile_images(images: np.ndarray, columns: int, padding: int = 1, pad_value: int = 255) -> np.ndarray:
    """uint8 (N, C, H, W) images as one (rows·(H+p)+p, columns·(W+p)+p, C) picture, ``padding`` px apart."""
    n, c, h, w = images.shape
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    grid = np.full((rows * (h + padding) + padding, columns * (w + padding) + padding, c), pad_value, np.uint8)
    for i, image in enumerate(images):
        top, left = padding + (i // columns) * (h + padding), padding + (i % columns) * (w + padding)
        grid[top : top + h, left : left + w] = image.transpose(1, 2, 0)
    return grid


def save_grid(
    path: str | Path,
    samples: torch.Tensor,
    *,
    columns: int = 10,
    max_images: int = 100,
    scale: int | None = None,
) -> Path:
    """A PNG of the first samples: an image grid (nearest-upscaled when tiny), or a scatter plot for 2-D data."""
    path = Path(path)
    buffer = io.BytesIO()
    if samples.dim() == 4:
        from PIL import Image

        grid = tile_images(model_to_uint8(samples[:max_images]).numpy(), columns)
        picture = Image.fromarray(grid.squeeze(-1) if grid.shape[-1] == 1 else grid)
        side = samples.shape[-1]
        scale = scale or max(1, 64 // side)
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
        picture.save(buffer, format="PNG")
    else:
        fig, ax = axes(figsize=(4, 4))
        points = samples[:, :2].numpy()
        ax.scatter(points[:, 0], points[:, 1], s=1, alpha=0.5)
        ax.set_aspect("equal")
        buffer.write(png_bytes(fig, dpi=100, tight=False))
    write_bytes(path, buffer.getvalue())
    return path


def to_pixels(trained: TrainedModel, samples: torch.Tensor) -> torch.Tensor:
    """Model-space samples as images: latents go through the decoder of the encoder they were trained in."""
    if trained.encoding.get("encoder", "identity") == "identity":
        return samples
    from ism.data.encode import decode_latents

    return decode_latents(samples, trained.encoding)


def _check_counts(num_images: int | None, batch_size: int | None, shard: int, num_shards: int) -> None:
    """One-line errors for the counts a user types (None = take the config's value)."""
    for option, value in (("--num-images", num_images), ("--batch-size", batch_size)):
        if value is not None and not (isinstance(value, int) and value >= 1):
            raise ConfigError(f"{option} {value}: must be a positive whole number (leave it out for the config's)")
    if not (isinstance(num_shards, int) and num_shards >= 1):
        raise ConfigError(f"--num-shards {num_shards}: must be a positive whole number (1 = no sharding)")
    if not 0 <= shard < num_shards:
        raise ConfigError(f"--shard {shard}: with --num-shards {num_shards} shards are numbered 0..{num_shards - 1}")


def check_output_folder(folder: str | Path, option: str) -> None:
    """Refuse, in one line and before any compute, an output folder that cannot be created or written."""
    problem = output_folder_problem(folder)
    if problem:
        raise ConfigError(f"{option} '{folder}' cannot be written: {problem}")


# The SampleSettings values that override the sample section's value of the same name.
_SECTION_OVERRIDES = ("num_images", "batch_size", "seed", "weights", "labels", "cfg_scale", "guidance")


@dataclass(frozen=True)
class SampleSettings:
    """What one ``ism sample`` call asks for besides the model file and the budgets.

    ``section`` is the sample section that applies (e.g. the study's current one, so sampling changes need no
    retraining; None: the one stored in the model file); each other value left None keeps that section's.
    """

    section: SampleConfig | None = None
    num_images: int | None = None
    batch_size: int | None = None
    seed: int | None = None
    weights: str | None = None
    labels: str | None = None
    cfg_scale: float | None = None
    guidance: list[float] | None = None  # one file per scale (intrinsic-guidance runs only)
    shard: int = 0
    num_shards: int = 1

    def check(self) -> None:
        """One-line errors naming the option, for the values a user types (before any model is read)."""
        _check_counts(self.num_images, self.batch_size, self.shard, self.num_shards)
        if self.guidance and any(w < 0 for w in self.guidance):
            raise ConfigError(f"--guidance {list(self.guidance)}: guidance scales must be >= 0")

    def weights_to_load(self) -> str | None:
        """The weights asked for, else those of this call's section (None: the model's own choice)."""
        return self.weights or (self.section.weights if self.section else None)

    def section_for(self, stored: SampleConfig) -> SampleConfig:
        """The sample section that applies to a model whose file stores ``stored``, with the values given here."""
        given = {key: getattr(self, key) for key in _SECTION_OVERRIDES if getattr(self, key) is not None}
        return (self.section or stored).model_copy(update=given)


def sample_to_files(
    model_path: str | Path,
    out_dir: str | Path | None,
    budgets: list[int],
    settings: SampleSettings = SampleSettings(),
    *,
    device: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """Sample every budget (× every guidance scale w of an intrinsic-guidance run) and write
    ``<name>.npz`` and ``<name>.png`` into ``out_dir`` (default results/<run>/samples; names from
    :func:`ism.naming.sample_name`).

    With ``settings.num_shards > 1`` only shard ``settings.shard`` is generated, into
    ``<name>.shard-<i>-of-<S>.npz`` (no grid); :func:`merge_sample_shards` joins them.
    """
    settings.check()
    check_budgets(budgets)
    if out_dir is not None:
        check_output_folder(out_dir, "--out-dir")  # before the model is even loaded
    dev = select_device(device, source="--device")
    trained = load_trained(model_path, weights=settings.weights_to_load(), device=dev)
    trained.config = trained.config.model_copy(update={"sample": settings.section_for(trained.config.sample)})
    cfg = trained.config
    check_budgets(budgets, cfg.method.base_steps)
    if settings.guidance and not cfg.method.guidance.intrinsic:
        raise ConfigError(f"--guidance: run '{cfg.name}' was trained without intrinsic guidance (use --cfg-scale)")
    if out_dir is None:
        out_dir = Path("results") / cfg.name / "samples"
        check_output_folder(out_dir, "the default --out-dir")
    files = [(steps, w) for steps in budgets for w in guidance_scales(cfg)]
    return [_sample_file(trained, steps, w, Path(out_dir), settings, dev, progress) for steps, w in files]


def check_budgets(budgets: list[int], base_steps: int | None = None) -> None:
    """Refuse, in one line naming --steps, budgets that are not powers of two (up to ``base_steps`` if given)."""
    bad = [n for n in budgets if not is_power_of_two(n) or (base_steps is not None and n > base_steps)]
    if budgets and not bad:
        return
    if base_steps is None:
        raise ConfigError(f"--steps {bad or budgets}: budgets must be powers of two (1, 2, 4, ..., 128)")
    raise ConfigError(f"--steps {bad}: budgets must be powers of two up to method.base_steps={base_steps}")


def _sample_file(
    trained: TrainedModel,
    steps: int,
    w: float | None,
    out_dir: Path,
    settings: SampleSettings,
    device: torch.device,
    progress: bool,
) -> Path:
    """One samples file (or this call's shard of it) at budget ``steps`` and guidance scale ``w``; its path."""
    s = trained.config.sample
    samples, labels, meta = generate(
        trained,
        steps,
        num_images=s.num_images,
        batch_size=s.batch_size,
        seed=s.seed,
        cfg_scale=s.cfg_scale,
        guidance=w,
        device=device,
        progress=progress,
        shard=settings.shard,
        num_shards=settings.num_shards,
        label_draw=s.labels,
    )
    images = to_pixels(trained, samples)
    name = sample_name(steps, w)
    if settings.num_shards > 1:
        return save_samples(
            out_dir / f"{shard_name(name, settings.shard, settings.num_shards)}.npz", images, labels, meta
        )
    path = save_samples(out_dir / f"{name}.npz", images, labels, meta)
    save_grid(out_dir / f"{name}.png", images)
    return path


def merge_sample_shards(shards: list[str | Path], out: str | Path) -> Path:
    """Concatenate shard files (in shard order) into ``out`` (+ its grid ``out`` with .png); checks they fit.

    Every shard is read and checked (a samples file, shard i of one ``ism sample --num-shards S`` call, the same
    model and settings as the first) before ``out`` is written; a problem is one line naming the file.
    """
    out = Path(out)
    _check_merged_file(out)
    paths = [Path(path) for path in shards]
    read = [_read_shard(path, i) for i, path in enumerate(paths)]
    arrays, labels, metas = (list(column) for column in zip(*read, strict=True))
    _check_shard_order(paths, metas)
    _check_shards_alike(paths, metas, arrays)
    meta = {**metas[0], "shard": [0, 1], "merged_from": len(paths)}
    array = np.concatenate(arrays)
    if len(array) != meta["num_images"]:
        raise ConfigError(
            f"sample shards {[str(p) for p in paths]} hold {len(array)} images, expected {meta['num_images']}: "
            "sample the shards again"
        )
    _write_samples_file(out, array, np.concatenate(labels), meta)
    if array.ndim == 4:
        save_grid(out.with_suffix(".png"), uint8_to_model(torch.from_numpy(array).permute(0, 3, 1, 2)))
    return out


def _check_merged_file(out: Path) -> None:
    if out.is_dir():
        raise ConfigError(f"--out '{out}' is a folder: pass the merged samples file to write, e.g. '{out}/steps1.npz'")
    problem = output_folder_problem(out.parent)
    if problem:
        raise ConfigError(f"--out '{out}' cannot be written: {problem}")


def _check_shard_order(paths: list[Path], metas: list[dict[str, Any]]) -> None:
    """File i must be shard i of as many shards as there are files."""
    total = len(paths)
    for i, (path, meta) in enumerate(zip(paths, metas, strict=True)):
        position = meta.get("shard", [0, 1])
        if position != [i, total]:
            valid = isinstance(position, list) and len(position) == 2
            what, of = (f"shard {position[0]} of {position[1]}", position[1]) if valid else (f"{position!r}", "S")
            raise ConfigError(
                f"sample shard '{path}' is {what}, not shard {i} of the {total} files given: "
                f"pass every shard of one 'ism sample --num-shards {of}' call, in shard order"
            )


# What the shards of one 'ism sample' call share.
_SHARED_BY_SHARDS = ("run", "steps", "guidance", "seed", "batch_size", "num_images", "weights", "train_step")


def _check_shards_alike(paths: list[Path], metas: list[dict[str, Any]], arrays: list[np.ndarray]) -> None:
    """Every shard must come from the same call as the first: same model and settings, same sample layout."""
    for path, meta, array in zip(paths[1:], metas[1:], arrays[1:], strict=True):
        differs = [key for key in _SHARED_BY_SHARDS if meta.get(key) != metas[0].get(key)]
        if differs:
            key = differs[0]
            raise ConfigError(
                f"sample shard '{path}' has {key}={meta.get(key)!r} but '{paths[0]}' has {metas[0].get(key)!r}: "
                "merge the shards of one 'ism sample' call"
            )
        if array.shape[1:] != arrays[0].shape[1:] or array.dtype != arrays[0].dtype:
            raise ConfigError(
                f"sample shard '{path}' holds {array.dtype} samples of shape {list(array.shape[1:])} but "
                f"'{paths[0]}' holds {arrays[0].dtype} of {list(arrays[0].shape[1:])}: merge the shards of one call"
            )


def _read_shard(path: Path, index: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(samples, labels, meta) of one shard file, or one ConfigError naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"sample shard '{path}' does not exist (sample it with 'ism sample --shard {index}')")
    fix = f"sample it again with 'ism sample --shard {index}'"
    try:
        with np.load(path, allow_pickle=False) as loaded:
            files = getattr(loaded, "files", None)
            if files is None or not {"arr_0", "labels", "meta"} <= set(files):
                raise ConfigError(f"sample shard '{path}' lacks arr_0, labels or meta: {fix}")
            array, labels, meta = loaded["arr_0"], loaded["labels"], json.loads(str(loaded["meta"]))
    except ConfigError:
        raise
    except Exception as err:  # numpy and zipfile raise ValueError, OSError, BadZipFile, EOFError, ...
        raise ConfigError(f"sample shard '{path}' is not a samples file written by 'ism sample': {fix}") from err
    if not isinstance(meta, dict) or len(labels) != len(array):
        raise ConfigError(f"sample shard '{path}' has inconsistent labels or meta: {fix}")
    return array, labels, meta
