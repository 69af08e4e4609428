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
from ism.config import ConfigError, RunConfig, is_power_of_two, run_config_from_json
from ism.data import model_to_uint8
from ism.data.encode import output_folder_problem
from ism.method.shortcut import guided
from ism.models import build_network
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
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``num_images`` samples (model space, on the CPU), their labels, and metadata saying how they were made.

    Batch b draws its labels (uniform) and noise from a generator seeded by (seed, b), so every run and budget
    sampled with the same seed and batch size starts from the same noise and labels (common random numbers).
    Shard i of S generates only its contiguous block of batches; the shards concatenated in order are exactly
    the unsharded result, whatever S.
    """
    from tqdm import tqdm

    cfg = trained.config
    scale = cfg.sample.cfg_scale if cfg_scale is None else cfg_scale
    applied = scale if guidance_allowed(cfg, steps) else 1.0
    intrinsic = cfg.method.guidance.intrinsic
    if intrinsic and guidance is None:
        guidance = cfg.sample.guidance[0]
    if not intrinsic and guidance is not None:
        raise ConfigError(f"run '{cfg.name}' was trained without intrinsic guidance: it takes no guidance scale w")
    device = torch.device(device)
    level = query_level(cfg, steps)
    images, labels = [], []
    num_batches = math.ceil(num_images / batch_size)
    _check_counts(num_images, batch_size, shard, num_shards)
    mine = np.array_split(np.arange(num_batches), num_shards)[shard].tolist()
    for b in tqdm(mine, disable=not progress, desc=f"sample N={steps}"):
        n = min(batch_size, num_images - b * batch_size)
        g = seeded_generator(device, "sample", seed, b)
        y = torch.randint(0, trained.num_classes, (n,), generator=g, device=device)
        noise = torch.randn((n, *trained.sample_shape), generator=g, device=device)
        x = euler_sample(
            trained.network,
            noise,
            y,
            steps=steps,
            level=level,
            cfg_scale=applied,
            null_label=trained.num_classes,
            guidance=guidance,
        )
        images.append(x.cpu())
        labels.append(y.cpu())
    meta = {
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
    if not images:  # more shards than batches: this shard is empty
        return torch.zeros((0, *trained.sample_shape)), torch.zeros(0, dtype=torch.int64), meta
    return torch.cat(images), torch.cat(labels), meta


def save_samples(path: str | Path, samples: torch.Tensor, labels: torch.Tensor, meta: dict[str, Any]) -> Path:
    """Images as uint8 NHWC ``arr_0`` (the ADM evaluator layout); vectors as float32 ``arr_0``; plus labels, meta."""
    path = Path(path)
    if samples.dim() == 4:
        array = model_to_uint8(samples).permute(0, 2, 3, 1).contiguous().numpy()
    else:
        array = samples.float().numpy()
    buffer = io.BytesIO()
    np.savez(buffer, arr_0=array, labels=labels.numpy().astype(np.int64), meta=np.array(json.dumps(meta)))
    write_bytes(path, buffer.getvalue())
    return path


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
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 4))
        points = samples[:, :2].numpy()
        ax.scatter(points[:, 0], points[:, 1], s=1, alpha=0.5)
        ax.set_aspect("equal")
        fig.savefig(buffer, format="png", dpi=100)
        plt.close(fig)
    write_bytes(path, buffer.getvalue())
    return path


def sample_name(steps: int, guidance: float | None) -> str:
    """``steps<N>`` or, for runs with intrinsic guidance, ``steps<N>-w<w>`` (e.g. steps4-w1.5)."""
    return f"steps{steps}" if guidance is None else f"steps{steps}-w{guidance:g}"


def shard_name(name: str, shard: int, num_shards: int) -> str:
    return f"{name}.shard-{shard:05d}-of-{num_shards:05d}"


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


def sample_to_files(
    model_path: str | Path,
    out_dir: str | Path | None,
    budgets: list[int],
    *,
    num_images: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    weights: str | None = None,
    cfg_scale: float | None = None,
    guidance: list[float] | None = None,
    device: str = "auto",
    progress: bool = True,
    shard: int = 0,
    num_shards: int = 1,
    settings: Any = None,
) -> list[Path]:
    """Sample every budget (× every guidance scale w of an intrinsic-guidance run) and write
    ``<name>.npz`` and ``<name>.png`` into ``out_dir`` (names from :func:`sample_name`).

    With ``num_shards > 1`` only shard ``shard`` is generated, into ``<name>.shard-<i>-of-<S>.npz`` (no grid);
    :func:`merge_sample_shards` joins them. ``settings`` (a SampleConfig, e.g. the study's current ``sample``
    section) replaces the one stored in the model file, so sampling changes need no retraining.
    """
    _check_counts(num_images, batch_size, shard, num_shards)
    not_powers = [n for n in budgets if not is_power_of_two(n)]
    if not budgets or not_powers:
        raise ConfigError(f"--steps {not_powers or budgets}: budgets must be powers of two (1, 2, 4, ..., 128)")
    if out_dir is not None:
        check_output_folder(out_dir, "--out-dir")  # before the model is even loaded
    dev = select_device(device, source="--device")
    trained = load_trained(model_path, weights=weights or (settings.weights if settings else None), device=dev)
    if settings is not None:
        trained.config = trained.config.model_copy(update={"sample": settings})
    cfg = trained.config
    too_fine = [n for n in budgets if not is_power_of_two(n) or n > cfg.method.base_steps]
    if too_fine:
        raise ConfigError(
            f"--steps {too_fine}: budgets must be powers of two up to method.base_steps={cfg.method.base_steps}"
        )
    if cfg.method.guidance.intrinsic:
        scales: list[float | None] = list(guidance or cfg.sample.guidance)
        if any(w < 0 for w in scales):
            raise ConfigError(f"--guidance {scales}: guidance scales must be >= 0")
    elif guidance:
        raise ConfigError(f"--guidance: run '{cfg.name}' was trained without intrinsic guidance (use --cfg-scale)")
    else:
        scales = [None]
    s = cfg.sample
    if out_dir is None:
        out_dir = Path("results") / cfg.name / "samples"
        check_output_folder(out_dir, "the default --out-dir")
    out_dir = Path(out_dir)
    written = []
    for steps in budgets:
        for w in scales:
            samples, labels, meta = generate(
                trained,
                steps,
                num_images=s.num_images if num_images is None else num_images,
                batch_size=s.batch_size if batch_size is None else batch_size,
                seed=s.seed if seed is None else seed,
                cfg_scale=cfg_scale,
                guidance=w,
                device=dev,
                progress=progress,
                shard=shard,
                num_shards=num_shards,
            )
            images = to_pixels(trained, samples)
            name = sample_name(steps, w)
            if num_shards > 1:
                written.append(
                    save_samples(Path(out_dir) / f"{shard_name(name, shard, num_shards)}.npz", images, labels, meta)
                )
                continue
            written.append(save_samples(Path(out_dir) / f"{name}.npz", images, labels, meta))
            save_grid(Path(out_dir) / f"{name}.png", images)
    return written


def merge_sample_shards(shards: list[str | Path], out: str | Path) -> Path:
    """Concatenate shard files (in shard order) into ``out`` (+ its grid ``out`` with .png); checks they fit.

    Every shard is read and checked (a samples file, shard i of one ``ism sample --num-shards S`` call, the same
    model and settings as the first) before ``out`` is written; a problem is one line naming the file.
    """
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out '{out}' is a folder: pass the merged samples file to write, e.g. '{out}/steps1.npz'")
    problem = output_folder_problem(out.parent)
    if problem:
        raise ConfigError(f"--out '{out}' cannot be written: {problem}")
    paths = [Path(path) for path in shards]
    read = [_read_shard(path, i) for i, path in enumerate(paths)]
    arrays, labels, metas = (list(column) for column in zip(*read, strict=True))
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
    keep = ("run", "steps", "guidance", "seed", "batch_size", "num_images", "weights", "train_step")
    for path, meta, array in zip(paths[1:], metas[1:], arrays[1:], strict=True):
        differs = [key for key in keep if meta.get(key) != metas[0].get(key)]
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
    meta = {**metas[0], "shard": [0, 1], "merged_from": total}
    array = np.concatenate(arrays)
    if len(array) != meta["num_images"]:
        raise ConfigError(
            f"sample shards {[str(p) for p in paths]} hold {len(array)} images, expected {meta['num_images']}: "
            "sample the shards again"
        )
    buffer = io.BytesIO()
    np.savez(buffer, arr_0=array, labels=np.concatenate(labels), meta=np.array(json.dumps(meta)))
    write_bytes(out, buffer.getvalue())
    if array.ndim == 4:
        pixels = torch.from_numpy(array).permute(0, 3, 1, 2).float() / 127.5 - 1
        save_grid(out.with_suffix(".png"), pixels)
    return out


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
