"""Image files to uint8 pixels: the one reader, the one crop and the one channel rule of ism.

``ism train`` reading an image folder whole (:func:`ism.data.load_dataset`) and ``ism encode``, the FID reference
and the real-data floor reading it file by file (:func:`ism.data.real.real_images`) all call :func:`read_pixels`, so
a study trains on exactly the pixels it is scored against:

* every file is decoded by :func:`read_image` (a bad file is one :class:`DataError` naming it);
* ``data.image_size`` applies :func:`adm_center_crop`, the ADM/DiT preprocessing behind the papers' FIDs;
* a folder of grayscale images only gives 1-channel images; one colour image makes the whole folder RGB, its gray
  images repeated to three channels (:func:`folder_channels`, read from the file headers alone).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from ism.errors import DataError, one_line

# Modes kept as one channel. 16-bit modes are scaled to 8 bits ourselves: PIL's convert("L") clips them.
_GRAY_8BIT_MODES = frozenset({"1", "L", "LA", "La"})
_GRAY_16BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_MODE_OF_CHANNELS = {1: "L", 3: "RGB"}


def read_image(path: str | Path) -> Image.Image:
    """The one way ism reads an image file: fully decoded, as 8-bit "L" (grayscale) or "RGB".

    Every failure (missing or unreadable file, not an image, truncated or corrupt data, a decompression bomb) is
    one :class:`DataError` naming the file, so ``ism train`` and ``ism encode`` report a bad file alike.
    """
    with _opened(path) as opened:
        opened.load()  # decodes every byte: a truncated or corrupt file fails here, not later in a job
        return _to_8bit(opened)


def image_channels(path: str | Path) -> int:
    """1 for a grayscale file, 3 for any other, from its header (nothing is decoded)."""
    with _opened(path) as opened:
        return 1 if _is_gray(opened.mode) else 3


def folder_channels(paths: Iterable[Path]) -> int:
    """3 if any image is in colour, else 1: the channels of every image of one folder.

    Stops at the first colour image, so an RGB folder (ImageNet) costs one header read, not one per file.
    """
    return 3 if any(image_channels(path) == 3 for path in paths) else 1


def check_image_size(image_size: int | None) -> None:
    if image_size is not None and image_size < 1:
        raise DataError(f"data.image_size must be a positive number of pixels, got {image_size}")


def adm_center_crop(pil_image: Image.Image, image_size: int) -> Image.Image:
    """The ADM/DiT ImageNet preprocessing: an ``image_size`` x ``image_size`` centre crop.

    While the short side is at least ``2 * image_size`` the image is halved with BOX filtering (cheap and
    alias-free), then resized with BICUBIC so that its short side is exactly ``image_size``, then the centred
    square is cropped. The image mode is kept.
    """
    check_image_size(image_size)
    image = pil_image
    while min(image.size) >= 2 * image_size:
        image = image.resize((image.width // 2, image.height // 2), resample=Image.Resampling.BOX)
    ratio = image_size / min(image.size)
    # max() guards the short side against rounding below image_size for extreme aspect ratios
    width = max(image_size, round(image.width * ratio))
    height = max(image_size, round(image.height * ratio))
    if (width, height) != image.size:
        image = image.resize((width, height), resample=Image.Resampling.BICUBIC)
    left, top = (width - image_size) // 2, (height - image_size) // 2
    return image.crop((left, top, left + image_size, top + image_size))


def read_pixels(path: str | Path, image_size: int | None, channels: int) -> np.ndarray:
    """One image file as uint8 (channels, H, W): decoded, ADM-centre-cropped to ``image_size`` (None: kept as is),
    then a gray image repeated to RGB when ``channels`` (its folder's :func:`folder_channels`) is 3."""
    image = read_image(path)
    if image_size is not None:
        image = adm_center_crop(image, image_size)  # in the file's own mode: a gray image is cropped once, not thrice
    if image.mode != _MODE_OF_CHANNELS[channels]:
        if channels == 1:  # a colour image in a folder whose headers said grayscale only: it changed since
            raise DataError(f"image '{path}' is in colour but was listed as grayscale: re-run, as the folder changed")
        image = image.convert("RGB")  # L -> RGB copies the gray value into all three channels
    pixels = np.array(image, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


@contextlib.contextmanager
def _opened(path: str | Path) -> Iterator[Image.Image]:
    """``Image.open(path)``, with any failure while it is open turned into one DataError naming the file."""
    try:
        with Image.open(path) as opened:
            yield opened
    except Image.UnidentifiedImageError as err:
        raise DataError(f"cannot read image '{path}' (not a PNG or JPEG image): remove or replace the file") from err
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image '{path}' ({one_line(err)}): remove or replace the file") from err


def _is_gray(mode: str) -> bool:
    return mode in _GRAY_8BIT_MODES or mode in _GRAY_16BIT_MODES


def _to_8bit(image: Image.Image) -> Image.Image:
    """Grayscale modes -> "L", 16-bit grayscale rescaled by 255/65535, everything else -> "RGB"."""
    if image.mode in _GRAY_8BIT_MODES:
        return image.convert("L")
    if image.mode in _GRAY_16BIT_MODES:
        wide = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.rint(np.clip(wide, 0, 65535) * (255 / 65535)).astype(np.uint8), mode="L")
    return image.convert("RGB")
