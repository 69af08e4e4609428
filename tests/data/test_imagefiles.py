"""Image files to pixels: the ADM centre crop, the channel rule from file headers, and read_pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ism.data import DataError
from ism.data.imagefiles import adm_center_crop, folder_channels, image_channels, read_pixels


def save(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    (image.convert(mode) if mode else image).save(path)
    return path


# ------------------------------------------------------------------------------------------ ADM centre crop


def gradient_image(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    pixels = np.concatenate([np.broadcast_to(x, (height, width, 1)), np.broadcast_to(y, (height, width, 1))], -1)
    return Image.fromarray(np.concatenate([pixels, pixels[..., :1]], -1).astype(np.uint8))


@pytest.mark.parametrize(("width", "height"), [(50, 30), (30, 50), (16, 16), (10, 7), (300, 17)])
def test_adm_center_crop_returns_exactly_the_requested_square(width: int, height: int):
    cropped = adm_center_crop(gradient_image(width, height), 16)
    assert cropped.size == (16, 16) and cropped.mode == "RGB"


def test_adm_center_crop_box_halves_large_images_before_the_bicubic_resize(monkeypatch):
    calls: list[tuple[tuple[int, int], int]] = []
    original = Image.Image.resize

    def spy(self, size, resample=None, *args, **kwargs):
        calls.append((tuple(size), resample))
        return original(self, size, resample, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    cropped = adm_center_crop(gradient_image(160, 130), 32)  # short side 130 >= 2 * 32 twice
    assert cropped.size == (32, 32)
    box, bicubic = Image.Resampling.BOX, Image.Resampling.BICUBIC
    assert calls == [((80, 65), box), ((40, 32), box)]  # 32 is already the target: no bicubic step needed

    calls.clear()
    adm_center_crop(gradient_image(100, 70), 32)  # 70 >= 64: one halving to 50x35, then bicubic to 46x32
    assert calls == [((50, 35), box), ((46, 32), bicubic)]

    calls.clear()
    adm_center_crop(gradient_image(60, 40), 32)  # 40 < 64: straight to bicubic
    assert calls == [((48, 32), bicubic)]


def test_adm_center_crop_keeps_the_centre():
    pixels = np.zeros((40, 80), dtype=np.uint8)
    pixels[:, 20:60] = 255  # a white centred square on black side bands
    cropped = np.asarray(adm_center_crop(Image.fromarray(pixels), 20))
    assert cropped.shape == (20, 20) and (cropped == 255).all()


def test_adm_center_crop_refuses_a_size_below_one_pixel_naming_the_key():
    with pytest.raises(DataError, match=r"data\.image_size must be a positive number of pixels, got 0"):
        adm_center_crop(gradient_image(8, 8), 0)


# -------------------------------------------------------------------------------------------- channel rule


def test_gray_modes_are_one_channel_and_every_other_mode_three(tmp_path: Path):
    gray = np.arange(16, dtype=np.uint8).reshape(4, 4)
    colour = np.stack([gray, gray[::-1], gray.T], axis=-1)
    assert image_channels(save(tmp_path / "l.png", gray)) == 1
    assert image_channels(save(tmp_path / "la.png", gray, "LA")) == 1
    assert image_channels(save(tmp_path / "i16.png", gray.astype(np.uint16) * 257)) == 1
    assert image_channels(save(tmp_path / "l.jpg", gray)) == 1
    assert image_channels(save(tmp_path / "rgb.png", colour)) == 3
    assert image_channels(save(tmp_path / "p.png", colour, "P")) == 3  # a palette is decoded to RGB
    assert image_channels(save(tmp_path / "rgba.png", colour, "RGBA")) == 3


def test_folder_channels_stops_at_the_first_colour_image(tmp_path: Path):
    gray = save(tmp_path / "0.png", np.zeros((4, 4), np.uint8))
    colour = save(tmp_path / "1.png", np.zeros((4, 4, 3), np.uint8))
    broken = tmp_path / "2.png"
    broken.write_text("not an image")
    assert folder_channels([gray, colour, broken]) == 3  # an ImageNet folder costs one header, not one per file
    assert folder_channels([gray, gray]) == 1
    with pytest.raises(DataError, match=r"cannot read image '.*2\.png' \(not a PNG or JPEG image\): remove or replace"):
        folder_channels([gray, broken, colour])


def test_read_pixels_crops_then_repeats_a_gray_image_to_rgb_in_a_colour_folder(tmp_path: Path):
    rng = np.random.default_rng(0)
    path = save(tmp_path / "gray.png", rng.integers(0, 256, (30, 50), dtype=np.uint8))
    gray = read_pixels(path, 16, channels=1)
    assert gray.shape == (1, 16, 16) and gray.dtype == np.uint8 and gray.flags.writeable
    assert np.array_equal(gray[0], np.asarray(adm_center_crop(Image.open(path), 16)))
    assert np.array_equal(read_pixels(path, 16, channels=3), np.repeat(gray, 3, axis=0))
    assert read_pixels(path, None, channels=1).shape == (1, 30, 50)  # no image_size: the file's own size


def test_read_pixels_refuses_a_colour_image_where_the_folder_was_gray(tmp_path: Path):
    path = save(tmp_path / "colour.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"'.*colour\.png' is in colour but was listed as grayscale"):
        read_pixels(path, None, channels=1)
