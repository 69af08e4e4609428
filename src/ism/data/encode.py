"""Encode a dataset once into latents stored as memory-mappable ``.npy`` shards, then merge them.

File format (one folder per dataset, e.g. ``data/latents/<dataset>/``)::

    shard-00003-of-00016.npy          float32 latents (rows, C, H, W) of contiguous block 3 of 16
    shard-00003-of-00016.labels.npy   int64 labels (rows,)
    train.npy                         the shards concatenated in order (after merge_shards)
    labels.npy                        int64 labels (rows,)
    meta.json                         encoder, vae, scale_factor, flips, num_images, num_rows, shape, classes

Why this layout:

* **memmap** - plain ``.npy`` files open with ``np.load(mmap_mode="r")``, so training reads rows straight from the
  page cache and ImageNet latents never have to fit in RAM; merging streams shard by shard for the same reason.
* **shards** - shard ``i`` of ``n`` is the contiguous block ``np.array_split(range(N), n)[i]`` of the source
  images, so one cluster job per shard encodes in parallel and every rerun produces the same shard.
* **atomic** - every file is written through :func:`ism.atomic.atomic_path`: under a hidden temporary name in the
  same folder (``.NAME.tmp-PID``), fsynced, then renamed with ``os.replace``. A shard's labels file is written
  after its latents and ``meta.json`` after ``train.npy`` and ``labels.npy``, and each is deleted before its
  companions are rewritten, so a killed job leaves nothing that :func:`merge_shards` or :func:`load_latents` would
  accept.

Encoders:

* ``identity`` - the latents are the images in model space, ``x / 127.5 - 1``; ``scale_factor`` is 1.0.
* ``sd-vae`` - a diffusers ``AutoencoderKL``; latents are posterior *samples* (as DiT does) times
  ``scale_factor``. Output row ``r`` of ``train.npy`` uses the noise of ``torch.Generator().manual_seed(r)``
  (drawn on the CPU), so the latents do not depend on the number of shards, the batch size or the device.

With ``flips=True`` every image gives two rows, **interleaved**: row ``2 i`` is image ``i`` and row ``2 i + 1``
its horizontal flip (the DiT/ADM augmentation, done once at encoding time). ``num_rows = 2 * num_images``.

Every problem raises :class:`EncodeError` with one line naming the file, key or value and the fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from ism.atomic import atomic_path, write_json
from ism.config import ENCODERS
from ism.data.datasets import shard_bounds
from ism.data.images import uint8_to_model
from ism.errors import EncodeError, one_line
from ism.naming import shard_label

if TYPE_CHECKING:
    from diffusers import AutoencoderKL

DEFAULT_SCALE_FACTOR = 0.18215  # Stable Diffusion's VAE latent scale, used by DiT and LDM
TRAIN_FILE = "train.npy"
LABELS_FILE = "labels.npy"
META_FILE = "meta.json"
_REQUIRED_META = ("dataset", "encoder", "flips", "num_images", "num_classes", "class_names")
_COPY_BYTES = 64 * 2**20  # merge copies at most this much per step
_ENCODE_FIX = "run `ism encode` for this dataset"


# ------------------------------------------------------------------------------------------------- shards


def shard_paths(out_dir: str | Path, shard: int, num_shards: int) -> tuple[Path, Path]:
    """(latents, labels) file paths of shard ``shard`` of ``num_shards`` in ``out_dir``."""
    stem = shard_label(shard, num_shards)
    return Path(out_dir) / f"{stem}.npy", Path(out_dir) / f"{stem}.labels.npy"


def encode_shard(
    images_uint8: torch.Tensor,
    labels: torch.Tensor | np.ndarray,
    out_dir: str | Path,
    *,
    shard: int,
    num_shards: int,
    encoder: str = "identity",
    vae: str | Path | AutoencoderKL | None = None,
    scale_factor: float = DEFAULT_SCALE_FACTOR,
    flips: bool = False,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Path:
    """Encode contiguous block ``shard`` of ``num_shards`` of the images; returns the shard's latents file.

    ``images_uint8`` is the whole source set as uint8 (N, C, H, W) and ``labels`` its (N,) integer labels.
    ``vae`` (``sd-vae`` only) is a local folder written by ``save_pretrained``, a Hugging Face hub id, or an
    ``AutoencoderKL`` instance (moved to ``device``). ``identity`` ignores ``vae`` and ``scale_factor``.
    ``batch_size`` counts source images; with ``flips`` the encoder sees twice as many rows per batch.
    """
    _check_encoder(encoder)
    images, label_array = _checked_images(images_uint8, labels)
    _check_shard(shard, num_shards, len(images))
    if batch_size < 1:
        raise EncodeError(f"batch_size must be a positive number of images, got {batch_size}")
    problem = output_folder_problem(out_dir)
    if problem:
        raise EncodeError(f"cannot write the latents folder '{out_dir}': {problem}")
    copies = 2 if flips else 1
    if encoder == "identity":
        encode_batch = _identity_encoder
    else:
        encode_batch = _vae_encoder(vae, images.shape[1], scale_factor, device)

    start, stop = shard_bounds(len(images), shard, num_shards)
    latents_path, labels_path = shard_paths(out_dir, shard, num_shards)
    latents_path.parent.mkdir(parents=True, exist_ok=True)
    labels_path.unlink(missing_ok=True)  # the labels file, written last, marks a complete shard
    latents_path.unlink(missing_ok=True)

    desc = f"encode shard {shard + 1}/{num_shards}"
    with torch.inference_mode(), tqdm(total=stop - start, disable=not progress, desc=desc, unit="img") as bar:

        def batches() -> Iterator[np.ndarray]:
            for begin in range(start, stop, batch_size):
                end = min(begin + batch_size, stop)
                x = _with_flips(uint8_to_model(images[begin:end]), flips)
                yield encode_batch(x, begin * copies).float().cpu().numpy()
                bar.update(end - begin)

        _write_npy_stream(latents_path, (stop - start) * copies, batches())
    _write_npy(labels_path, np.repeat(label_array[start:stop], copies))
    return latents_path


def output_folder_problem(folder: str | Path) -> str | None:
    """Why ``folder`` could not be created or written into, or None; creates nothing (checked before compute)."""
    folder = Path(folder)
    existing = folder
    try:
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        if not existing.is_dir():
            kind = "a regular file" if existing.is_file() else "not a folder"
            return f"'{existing}' is {kind}: choose another output folder or move the file away"
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"'{existing}' is not writable by this user: choose another output folder"
    except OSError as err:
        return f"{one_line(err)}: choose another output folder"
    return None


def _check_encoder(encoder: str) -> None:
    if encoder not in ENCODERS:
        raise EncodeError(f"unknown encoder '{encoder}': choose one of {', '.join(ENCODERS)}")


def _checked_images(images: torch.Tensor, labels: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """A uint8 (N, C, H, W) tensor, or a lazy image set with the same ``dtype``/``shape`` whose slices are such
    tensors (an image folder read file by file, so ImageNet never sits in RAM)."""
    if getattr(images, "dtype", None) != torch.uint8 or len(getattr(images, "shape", ())) != 4:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        dtype = getattr(images, "dtype", None)
        raise EncodeError(f"images must be a uint8 (N, C, H, W) torch tensor, got {dtype} of shape {shape}")
    label_array = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if label_array.shape != (len(images),) or not np.issubdtype(label_array.dtype, np.integer):
        raise EncodeError(
            f"labels must be {len(images)} integers (one per image), got {label_array.dtype} of shape "
            f"{label_array.shape}"
        )
    return (images.cpu() if isinstance(images, torch.Tensor) else images), label_array.astype(np.int64)


def _check_shard(shard: int, num_shards: int, num_images: int) -> None:
    if not 1 <= num_shards <= num_images:
        raise EncodeError(
            f"num_shards must be between 1 and the number of images ({num_images}), got {num_shards}: use fewer shards"
        )
    if not 0 <= shard < num_shards:
        raise EncodeError(f"shard must be in [0, {num_shards}) for num_shards={num_shards}, got {shard}")


def _identity_encoder(x: torch.Tensor, first_row: int) -> torch.Tensor:
    return x


def _with_flips(x: torch.Tensor, flips: bool) -> torch.Tensor:
    """x, or x interleaved with its horizontal flips: rows x[0], flip(x[0]), x[1], flip(x[1]), ..."""
    if not flips:
        return x
    return torch.stack([x, torch.flip(x, dims=[-1])], dim=1).flatten(0, 1)


# ---------------------------------------------------------------------------------------------------- VAE


def load_vae(vae: str | Path) -> AutoencoderKL:
    """An ``AutoencoderKL`` from a local ``save_pretrained`` folder (never touching the network) or a hub id."""
    from diffusers import AutoencoderKL

    text = str(vae)
    folder = Path(text).expanduser()
    local = folder.is_dir()
    if not local and (isinstance(vae, Path) or folder.is_absolute() or text.startswith((".", "~"))):
        raise EncodeError(
            f"VAE folder '{folder}' does not exist: pass a folder written by AutoencoderKL.save_pretrained "
            "or a Hugging Face hub id"
        )
    try:
        if local:
            model = AutoencoderKL.from_pretrained(str(folder), local_files_only=True)
        else:
            model = AutoencoderKL.from_pretrained(text)
    except Exception as err:  # diffusers and huggingface_hub raise many types (network, missing files, config)
        raise EncodeError(
            f"cannot load the VAE '{text}' ({one_line(err)}): offline users should pass a local folder "
            "saved with AutoencoderKL.save_pretrained"
        ) from err
    return model.eval()


def _vae_encoder(
    vae: str | Path | AutoencoderKL | None, channels: int, scale_factor: float, device: str | torch.device
) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """(model-space batch, its first output row) -> scaled posterior samples, seeded per output row."""
    if vae is None:
        raise EncodeError("encoder 'sd-vae' needs a VAE: pass vae=<local save_pretrained folder or hub id>")
    if channels not in (1, 3):
        raise EncodeError(f"encoder 'sd-vae' needs 1- or 3-channel images, got {channels} channels")
    model = load_vae(vae) if isinstance(vae, str | Path) else vae.eval()
    model = model.to(device)

    def encode(x: torch.Tensor, first_row: int) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        generators = [torch.Generator().manual_seed(first_row + i) for i in range(len(x))]
        posterior = model.encode(x.to(device)).latent_dist
        return posterior.sample(generator=generators) * scale_factor

    return encode


def decode_latents(
    latents: torch.Tensor, meta: dict[str, Any], vae_model: AutoencoderKL | None = None, batch_size: int = 64
) -> torch.Tensor:
    """Latents -> images in model space [-1, 1] on the latents' device.

    ``identity`` returns ``latents`` unchanged; ``sd-vae`` returns ``vae.decode(z / scale_factor).sample``
    clamped to [-1, 1], decoding on ``vae_model``'s device (or loading ``meta["vae"]`` onto the latents' device).
    """
    encoder = meta.get("encoder")
    _check_encoder(encoder)
    if encoder == "identity":
        return latents
    if batch_size < 1:
        raise EncodeError(f"batch_size must be a positive number of latents, got {batch_size}")
    if vae_model is None:
        if not meta.get("vae"):
            raise EncodeError("meta.json of an 'sd-vae' encoding names no VAE: pass vae_model or re-encode")
        vae_model = load_vae(meta["vae"]).to(latents.device)
    vae_device = next(vae_model.parameters()).device
    scale = float(meta.get("scale_factor", DEFAULT_SCALE_FACTOR))
    images = []
    with torch.no_grad():  # not inference_mode: callers may go on to modify the returned tensor
        for begin in range(0, len(latents), batch_size):
            z = latents[begin : begin + batch_size].to(vae_device, torch.float32) / scale
            images.append(vae_model.decode(z).sample.clamp(-1.0, 1.0).to(latents.device))
    return torch.cat(images)


# ------------------------------------------------------------------------------------------- merge and load


def merge_shards(out_dir: str | Path, num_shards: int, meta: dict[str, Any], *, keep_shards: bool = False) -> Path:
    """Concatenate the shards in order into ``train.npy`` + ``labels.npy`` + ``meta.json``; returns ``train.npy``.

    ``meta`` needs ``dataset``, ``encoder``, ``flips``, ``num_images``, ``num_classes`` and ``class_names``
    (plus ``vae`` and ``scale_factor`` for ``sd-vae``; ``identity`` records ``vae: null, scale_factor: 1.0``);
    ``num_rows`` and ``shape`` are filled in from the shards. The copy streams through a memory-mapped
    destination, so the dataset never sits in RAM. The shard files are removed afterwards unless ``keep_shards``.
    """
    out = Path(out_dir)
    if num_shards < 1:
        raise EncodeError(f"num_shards must be a positive integer, got {num_shards}")
    full_meta = _checked_meta(meta)
    shards = [_open_shard(out, i, num_shards) for i in range(num_shards)]
    first_path, first = shards[0][0], shards[0][1]
    for path, latents, _ in shards[1:]:
        if latents.shape[1:] != first.shape[1:]:
            raise EncodeError(
                f"shard '{path}' holds latents of shape {list(latents.shape[1:])} but '{first_path}' holds "
                f"{list(first.shape[1:])}: re-encode all shards with the same settings"
            )
    num_rows = sum(len(latents) for _, latents, _ in shards)
    expected_rows = full_meta["num_images"] * (2 if full_meta["flips"] else 1)
    if num_rows != expected_rows:
        raise EncodeError(
            f"the {num_shards} shards in '{out}' hold {num_rows} rows but meta says {full_meta['num_images']} "
            f"images with flips={full_meta['flips']} ({expected_rows} rows): re-encode with the same settings"
        )
    labels = np.concatenate([shard_labels for _, _, shard_labels in shards])
    if labels.min() < 0 or labels.max() >= full_meta["num_classes"]:
        raise EncodeError(
            f"shard labels span [{labels.min()}, {labels.max()}] but meta says {full_meta['num_classes']} "
            "classes: pass the dataset's num_classes"
        )
    full_meta.update(num_rows=num_rows, shape=list(first.shape[1:]))

    (out / META_FILE).unlink(missing_ok=True)  # meta.json, written last, marks a complete merge
    rows_per_copy = max(1, _COPY_BYTES // max(1, first[:1].nbytes))

    def chunks() -> Iterator[np.ndarray]:
        for _, latents, _ in shards:
            for begin in range(0, len(latents), rows_per_copy):
                yield latents[begin : begin + rows_per_copy]

    train_path = _write_npy_stream(out / TRAIN_FILE, num_rows, chunks())
    _write_npy(out / LABELS_FILE, labels)
    write_json(out / META_FILE, full_meta)
    if not keep_shards:
        for i in range(num_shards):
            for path in shard_paths(out, i, num_shards):
                path.unlink(missing_ok=True)
    return train_path


def _checked_meta(meta: dict[str, Any]) -> dict[str, Any]:
    missing = [key for key in _REQUIRED_META if key not in meta]
    if missing:
        raise EncodeError(f"merge_shards meta lacks {', '.join(missing)}: pass every key of the encoding")
    full = dict(meta)
    _check_encoder(full["encoder"])
    if full["encoder"] == "identity":
        full.update(vae=None, scale_factor=1.0)
    else:
        full["vae"] = None if full.get("vae") is None else str(full["vae"])  # None: an in-memory VAE was used
        full["scale_factor"] = float(full.get("scale_factor", DEFAULT_SCALE_FACTOR))
    if not (isinstance(full["num_images"], int) and full["num_images"] >= 1):
        raise EncodeError(f"meta num_images must be a positive integer, got {full['num_images']!r}")
    full["flips"] = bool(full["flips"])
    full["class_names"] = [str(name) for name in full["class_names"]]
    if len(full["class_names"]) != full["num_classes"]:
        raise EncodeError(
            f"meta has {len(full['class_names'])} class_names but num_classes={full['num_classes']}: make them agree"
        )
    return full


def _open_shard(out: Path, shard: int, num_shards: int) -> tuple[Path, np.ndarray, np.ndarray]:
    latents_path, labels_path = shard_paths(out, shard, num_shards)
    for path in (latents_path, labels_path):
        if not path.is_file():
            raise EncodeError(
                f"shard file '{path}' is missing: encode it first (ism encode --shard {shard} "
                f"--num-shards {num_shards}), or merge with the --num-shards the shards were encoded with"
            )
    latents = _load_npy(latents_path, f"re-run the encoding of shard {shard}")
    labels = _load_npy(labels_path, f"re-run the encoding of shard {shard}")
    if latents.ndim != 4 or latents.dtype != np.float32:
        raise EncodeError(
            f"shard '{latents_path}' holds {latents.dtype} of shape {list(latents.shape)}, not float32 "
            f"(rows, C, H, W): re-run the encoding of shard {shard}"
        )
    if labels.shape != (len(latents),):
        raise EncodeError(
            f"shard '{labels_path}' holds {labels.shape} labels for {len(latents)} latent rows: "
            f"re-run the encoding of shard {shard}"
        )
    return latents_path, latents, labels


def load_latents(folder: str | Path) -> tuple[np.memmap, np.ndarray, dict[str, Any]]:
    """(latents as a read-only memmap, int64 labels, meta) of a merged encoding in ``folder``."""
    folder = Path(folder)
    for name in (TRAIN_FILE, LABELS_FILE, META_FILE):
        if not (folder / name).is_file():
            raise EncodeError(f"latent file '{folder / name}' is missing: {_ENCODE_FIX}")
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError) as err:
        raise EncodeError(f"'{folder / META_FILE}' is unreadable ({one_line(err)}): {_ENCODE_FIX}") from err
    latents = _load_npy(folder / TRAIN_FILE, _ENCODE_FIX)
    labels = np.asarray(_load_npy(folder / LABELS_FILE, _ENCODE_FIX))
    if not isinstance(meta, dict):
        raise EncodeError(f"'{folder / META_FILE}' does not hold a JSON object: {_ENCODE_FIX}")
    if latents.ndim != 4 or labels.shape != (len(latents),):
        raise EncodeError(
            f"'{folder}' is inconsistent: {TRAIN_FILE} has shape {list(latents.shape)} and {LABELS_FILE} "
            f"{list(labels.shape)}: {_ENCODE_FIX}"
        )
    if meta.get("shape") != list(latents.shape[1:]) or meta.get("num_rows") != len(latents):
        raise EncodeError(
            f"'{folder / META_FILE}' says {meta.get('num_rows')} rows of shape {meta.get('shape')} but "
            f"{TRAIN_FILE} holds {len(latents)} of {list(latents.shape[1:])}: {_ENCODE_FIX}"
        )
    return latents, labels, meta


# ----------------------------------------------------------------------------------------------- npy files


def _load_npy(path: Path, fix: str) -> np.memmap:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise EncodeError(f"'{path}' is not a readable .npy file ({one_line(err)}): {fix}") from err


def _write_npy(path: Path, array: np.ndarray) -> Path:
    # A file object, not the name: np.save would append ".npy" to the temporary name.
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.save(f, array, allow_pickle=False)
    return path


def _write_npy_stream(path: Path, num_rows: int, chunks: Iterator[np.ndarray]) -> Path:
    """Write float32 rows from ``chunks`` to ``path`` through a memory-mapped temporary file (never all in RAM).

    The row shape is taken from the first chunk; the chunks must hold exactly ``num_rows`` rows.
    """
    with atomic_path(path) as tmp:
        destination: np.memmap | None = None
        filled = 0
        for chunk in chunks:
            if destination is None:
                shape = (num_rows, *chunk.shape[1:])
                destination = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
            destination[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
        if destination is None or filled != num_rows:
            raise EncodeError(f"internal error: wrote {filled} of {num_rows} rows to '{path}'")
        destination.flush()
        del destination  # unmaps the file before atomic_path fsyncs and renames it
    return path
