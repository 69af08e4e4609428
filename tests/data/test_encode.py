"""Latent encoding: deterministic shards, streamed merge, memmapped loading and the SD-VAE path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ism.data import load_dataset, model_to_uint8
from ism.data.encode import (
    DEFAULT_SCALE_FACTOR,
    EncodeError,
    decode_latents,
    encode_shard,
    load_latents,
    merge_shards,
    shard_bounds,
    shard_paths,
)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The digits training split as uint8 (N, 1, 8, 8) images, labels and class names."""
    data = load_dataset("digits")
    return model_to_uint8(data.train.images), data.train.labels, list(data.class_names)


def digits_meta(num_images: int, class_names: list[str], **overrides) -> dict:
    meta = {
        "dataset": "digits",
        "encoder": "identity",
        "flips": False,
        "num_images": num_images,
        "num_classes": len(class_names),
        "class_names": class_names,
    }
    return {**meta, **overrides}


def encode_all(images, labels, out: Path, num_shards: int, **kwargs) -> None:
    for shard in range(num_shards):
        encode_shard(images, labels, out, shard=shard, num_shards=num_shards, progress=False, **kwargs)


def visible_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# ------------------------------------------------------------------------------------------------- identity


@pytest.mark.parametrize(("num_images", "num_shards"), [(10, 3), (1347, 16), (5, 5), (7, 1)])
def test_shards_are_the_contiguous_blocks_of_np_array_split(num_images: int, num_shards: int):
    blocks = np.array_split(np.arange(num_images), num_shards)
    for shard, block in enumerate(blocks):
        start, stop = shard_bounds(num_images, shard, num_shards)
        assert list(range(start, stop)) == block.tolist()


def test_identity_shards_merge_into_a_read_only_memmap_equal_to_the_images(digits, tmp_path):
    images, labels, class_names = digits
    encode_all(images, labels, tmp_path, 3, batch_size=100)

    latents_path, labels_path = shard_paths(tmp_path, 1, 3)
    assert latents_path.name == "shard-00001-of-00003.npy" and labels_path.name == "shard-00001-of-00003.labels.npy"
    start, stop = shard_bounds(len(images), 1, 3)
    shard = np.load(latents_path, mmap_mode="r")
    assert shard.dtype == np.float32 and shard.shape == (stop - start, 1, 8, 8)
    assert np.array_equal(np.load(labels_path), labels[start:stop].numpy())

    train_path = merge_shards(tmp_path, 3, digits_meta(len(images), class_names, scale_factor=0.5, vae="x"))
    assert train_path == tmp_path / "train.npy"
    assert visible_files(tmp_path) == {"train.npy", "labels.npy", "meta.json"}  # shards removed, no temporaries

    latents, loaded_labels, meta = load_latents(tmp_path)
    assert isinstance(latents, np.memmap) and not latents.flags.writeable
    expected = load_dataset("digits").train.images.numpy()
    assert latents.dtype == np.float32 and np.array_equal(latents, expected)
    assert loaded_labels.dtype == np.int64 and np.array_equal(loaded_labels, labels.numpy())
    assert meta == {
        **digits_meta(len(images), class_names),
        "vae": None,
        "scale_factor": 1.0,  # identity ignores the scale factor and VAE it was given
        "num_rows": len(images),
        "shape": [1, 8, 8],
    }
    assert json.loads((tmp_path / "meta.json").read_text()) == meta


def test_flips_interleave_each_image_with_its_horizontal_flip(digits, tmp_path):
    images, labels, class_names = digits
    encode_all(images, labels, tmp_path, 2, flips=True, batch_size=64)
    merge_shards(tmp_path, 2, digits_meta(len(images), class_names, flips=True), keep_shards=True)

    latents, loaded_labels, meta = load_latents(tmp_path)
    x = load_dataset("digits").train.images
    assert latents.shape == (2 * len(images), 1, 8, 8) and meta["num_rows"] == 2 * len(images)
    assert np.array_equal(latents[0::2], x.numpy())
    assert np.array_equal(latents[1::2], torch.flip(x, dims=[-1]).numpy())
    assert np.array_equal(loaded_labels, np.repeat(labels.numpy(), 2))
    assert shard_paths(tmp_path, 0, 2)[0].is_file()  # keep_shards


def test_shards_do_not_depend_on_the_batch_size(digits, tmp_path):
    images, labels, _ = digits
    first = encode_shard(images, labels, tmp_path / "a", shard=2, num_shards=4, batch_size=7, progress=False)
    second = encode_shard(images, labels, tmp_path / "b", shard=2, num_shards=4, batch_size=1000, progress=False)
    assert np.array_equal(np.load(first), np.load(second))


def test_merge_names_a_missing_shard_even_when_a_leftover_temporary_is_there(digits, tmp_path):
    images, labels, class_names = digits
    encode_all(images, labels, tmp_path, 3)
    missing = shard_paths(tmp_path, 1, 3)[0]
    # A job killed mid-write leaves only its temporary file: it must never pass for the shard.
    missing.rename(missing.with_name(f".{missing.name}.tmp-12345"))
    with pytest.raises(EncodeError, match=r"shard file '.*shard-00001-of-00003\.npy' is missing"):
        merge_shards(tmp_path, 3, digits_meta(len(images), class_names))
    assert not (tmp_path / "train.npy").exists() and not (tmp_path / "meta.json").exists()


def test_merge_rejects_a_shard_without_labels_and_a_shard_of_another_shape(digits, tmp_path):
    images, labels, class_names = digits
    encode_all(images, labels, tmp_path, 2)
    meta = digits_meta(len(images), class_names)
    labels_file = shard_paths(tmp_path, 1, 2)[1]
    labels_file.unlink()
    with pytest.raises(EncodeError, match=r"shard-00001-of-00002\.labels\.npy' is missing"):
        merge_shards(tmp_path, 2, meta)

    encode_shard(images, labels, tmp_path, shard=1, num_shards=2, flips=False, progress=False)
    odd, odd_labels = shard_paths(tmp_path, 1, 2)
    np.save(odd, np.zeros((len(np.load(odd_labels)), 1, 4, 4), dtype=np.float32))
    with pytest.raises(EncodeError, match=r"shard '.*shard-00001-of-00002\.npy' holds latents of shape \[1, 4, 4\]"):
        merge_shards(tmp_path, 2, meta)


def test_merge_rejects_meta_that_disagrees_with_the_shards(digits, tmp_path):
    images, labels, class_names = digits
    encode_all(images, labels, tmp_path, 2)
    with pytest.raises(EncodeError, match="flips=True"):
        merge_shards(tmp_path, 2, digits_meta(len(images), class_names, flips=True))
    with pytest.raises(EncodeError, match="lacks num_classes"):
        merge_shards(
            tmp_path, 2, {k: v for k, v in digits_meta(len(images), class_names).items() if k != "num_classes"}
        )


def test_a_failed_encode_leaves_no_shard_and_no_temporary(digits, tmp_path, monkeypatch):
    images, labels, _ = digits
    calls = 0

    def failing_tqdm_update(self, n=1):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt  # as if the job were stopped after its first batch

    monkeypatch.setattr("tqdm.tqdm.update", failing_tqdm_update)
    with pytest.raises(KeyboardInterrupt):
        encode_shard(images, labels, tmp_path, shard=0, num_shards=1, batch_size=100, progress=False)
    assert visible_files(tmp_path) == set()


def test_load_latents_rejects_a_stale_or_partial_folder(digits, tmp_path):
    images, labels, class_names = digits
    encode_all(images, labels, tmp_path, 1)
    merge_shards(tmp_path, 1, digits_meta(len(images), class_names))
    np.save(tmp_path / "labels.npy", np.zeros(5, dtype=np.int64))
    with pytest.raises(EncodeError, match=r"train.npy has shape \[1347, 1, 8, 8\] and labels.npy \[5\]"):
        load_latents(tmp_path)

    (tmp_path / "meta.json").unlink()  # merge deletes meta.json first and writes it last
    with pytest.raises(EncodeError, match=r"meta\.json' is missing: run `ism encode`"):
        load_latents(tmp_path)


# ----------------------------------------------------------------------------------------------- bad input


def test_load_latents_on_an_empty_folder_names_train_npy(tmp_path):
    (tmp_path / ".train.npy.tmp-999").write_bytes(b"partial")
    with pytest.raises(EncodeError, match=r"'.*train\.npy' is missing: run `ism encode`"):
        load_latents(tmp_path)


def test_unknown_encoder_is_named(digits, tmp_path):
    images, labels, _ = digits
    with pytest.raises(EncodeError, match="unknown encoder 'sd-vea'"):
        encode_shard(images, labels, tmp_path, shard=0, num_shards=1, encoder="sd-vea", progress=False)
    with pytest.raises(EncodeError, match="unknown encoder 'vq'"):
        decode_latents(torch.zeros(1, 4, 2, 2), {"encoder": "vq"})


def test_bad_shard_arguments_and_images_are_reported(digits, tmp_path):
    images, labels, _ = digits
    with pytest.raises(EncodeError, match=r"shard must be in \[0, 2\)"):
        encode_shard(images, labels, tmp_path, shard=2, num_shards=2, progress=False)
    with pytest.raises(EncodeError, match="use fewer shards"):
        encode_shard(images[:3], labels[:3], tmp_path, shard=0, num_shards=4, progress=False)
    with pytest.raises(EncodeError, match="uint8"):
        encode_shard(images.float(), labels, tmp_path, shard=0, num_shards=1, progress=False)
    with pytest.raises(EncodeError, match="labels must be 1347 integers"):
        encode_shard(images, labels[:5], tmp_path, shard=0, num_shards=1, progress=False)
    with pytest.raises(EncodeError, match="needs a VAE"):
        encode_shard(images, labels, tmp_path, shard=0, num_shards=1, encoder="sd-vae", progress=False)


# --------------------------------------------------------------------------------------------------- SD-VAE


@pytest.fixture(scope="module")
def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=16,
    )
    return vae.eval()


@pytest.fixture(scope="module")
def rgb_images() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (10, 3, 16, 16), generator=generator, dtype=torch.uint8)
    return images, torch.arange(10) % 3


def vae_encode(images, labels, out: Path, vae, **kwargs) -> np.ndarray:
    kwargs = {"shard": 0, "num_shards": 1, "batch_size": 4, "progress": False, **kwargs}
    return np.load(encode_shard(images, labels, out, encoder="sd-vae", vae=vae, **kwargs))


def test_vae_latents_are_seeded_posterior_samples_times_the_scale_factor(tiny_vae, rgb_images, tmp_path):
    images, labels = rgb_images
    latents = vae_encode(images, labels, tmp_path / "a", tiny_vae)
    assert latents.shape == (10, 4, 8, 8) and latents.dtype == np.float32  # 2 blocks: one 2x downsampling

    with torch.no_grad():
        posterior = tiny_vae.encode(images.float() / 127.5 - 1).latent_dist
    noise = torch.cat([torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(r)) for r in range(10)])
    expected = (posterior.mean + posterior.std * noise) * DEFAULT_SCALE_FACTOR
    np.testing.assert_allclose(latents, expected.numpy(), rtol=1e-4, atol=1e-5)

    unscaled = vae_encode(images, labels, tmp_path / "b", tiny_vae, scale_factor=1.0)
    np.testing.assert_allclose(latents, unscaled * DEFAULT_SCALE_FACTOR, rtol=1e-5, atol=1e-7)


def test_vae_latents_are_deterministic_and_independent_of_sharding(tiny_vae, rgb_images, tmp_path):
    images, labels = rgb_images
    whole = vae_encode(images, labels, tmp_path / "a", tiny_vae, flips=True)
    again = vae_encode(images, labels, tmp_path / "b", tiny_vae, flips=True, batch_size=3)
    np.testing.assert_allclose(whole, again, rtol=1e-5, atol=1e-6)

    out = tmp_path / "sharded"
    encode_all(images, labels, out, 3, encoder="sd-vae", vae=tiny_vae, flips=True, batch_size=2)
    merge_shards(out, 3, {**digits_meta(10, ["a", "b", "c"]), "encoder": "sd-vae", "vae": None, "flips": True})
    latents, loaded_labels, meta = load_latents(out)
    np.testing.assert_allclose(latents, whole, rtol=1e-5, atol=1e-6)
    assert np.array_equal(loaded_labels, np.repeat(labels.numpy(), 2))
    assert meta["scale_factor"] == DEFAULT_SCALE_FACTOR and meta["shape"] == [4, 8, 8] and meta["num_rows"] == 20

    # the flipped row differs from the original one (different image, different noise)
    assert not np.allclose(whole[0], whole[1])


def test_a_saved_vae_folder_gives_identical_latents(tiny_vae, rgb_images, tmp_path):
    images, labels = rgb_images
    tiny_vae.save_pretrained(tmp_path / "vae")
    from_instance = vae_encode(images, labels, tmp_path / "a", tiny_vae)
    from_folder = vae_encode(images, labels, tmp_path / "b", str(tmp_path / "vae"))
    np.testing.assert_array_equal(from_instance, from_folder)


def test_a_missing_vae_folder_is_named(rgb_images, tmp_path):
    images, labels = rgb_images
    with pytest.raises(EncodeError, match=r"VAE folder '.*no-such-vae' does not exist"):
        vae_encode(images, labels, tmp_path, str(tmp_path / "no-such-vae"))


def test_grayscale_images_are_repeated_to_rgb(tiny_vae, rgb_images, tmp_path):
    images, labels = rgb_images
    gray = images[:, :1]
    latents = vae_encode(gray, labels, tmp_path / "a", tiny_vae)
    as_rgb = vae_encode(gray.repeat(1, 3, 1, 1), labels, tmp_path / "b", tiny_vae)
    np.testing.assert_array_equal(latents, as_rgb)


def test_decode_returns_model_space_images(tiny_vae, rgb_images, tmp_path):
    images, labels = rgb_images
    latents = torch.from_numpy(vae_encode(images, labels, tmp_path, tiny_vae))
    meta = {"encoder": "sd-vae", "vae": None, "scale_factor": DEFAULT_SCALE_FACTOR}
    decoded = decode_latents(latents, meta, vae_model=tiny_vae, batch_size=4)
    assert decoded.shape == (10, 3, 16, 16) and decoded.dtype == torch.float32
    assert decoded.min() >= -1 and decoded.max() <= 1
    with torch.no_grad():
        direct = tiny_vae.decode(latents / DEFAULT_SCALE_FACTOR).sample.clamp(-1, 1)
    torch.testing.assert_close(decoded, direct, rtol=1e-4, atol=1e-5)
    decoded.add_(0)  # an ordinary tensor, not an inference-mode one

    with pytest.raises(EncodeError, match="names no VAE"):
        decode_latents(latents, meta)
    identity = torch.rand(2, 1, 8, 8)
    assert decode_latents(identity, {"encoder": "identity"}) is identity


def test_output_folder_problem_names_a_file_in_the_way(tmp_path):
    from ism.data.encode import output_folder_problem

    (tmp_path / "notes.txt").write_text("x")
    assert output_folder_problem(tmp_path / "new" / "deeper") is None
    assert "'" + str(tmp_path / "notes.txt") + "' is a regular file" in output_folder_problem(
        tmp_path / "notes.txt" / "x"
    )
    assert "is a regular file" in output_folder_problem(tmp_path / "notes.txt")
    assert not (tmp_path / "new").exists(), "checking creates nothing"


def test_encode_refuses_a_latents_folder_under_a_file_before_writing(digits, tmp_path):
    images, labels, _ = digits
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(EncodeError, match=r"cannot write the latents folder .*notes\.txt' is a regular file"):
        encode_shard(images, labels, tmp_path / "notes.txt" / "latents", shard=0, num_shards=1, progress=False)


def test_merge_names_the_command_that_makes_a_missing_shard(digits, tmp_path):
    images, labels, class_names = digits
    encode_shard(images, labels, tmp_path, shard=0, num_shards=2, progress=False)
    with pytest.raises(EncodeError, match=r"shard-00001-of-00002\.npy' is missing: .*--shard 1 --num-shards 2"):
        merge_shards(tmp_path, 2, digits_meta(len(images), class_names))
    assert visible_files(tmp_path) == {"shard-00000-of-00002.npy", "shard-00000-of-00002.labels.npy"}
