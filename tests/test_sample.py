"""The Euler sampler, where CFG applies, common random numbers, and the sample file layout."""

import json

import numpy as np
import pytest
import torch

from ism.checkpoint import CheckpointError
from ism.sample import euler_sample, generate, guidance_allowed, load_trained, query_level, save_samples

from .conftest import tiny_run, train


class Decay(torch.nn.Module):
    """s(x) = −x: N Euler steps of size 1/N give x_N = (1 − 1/N)^N x_0."""

    def forward(self, x, t, k, y, w=None):
        self.seen_k = k
        return -x


class LabelVelocity(torch.nn.Module):
    """A constant velocity per label: conditional 1, unconditional (null = 10) 0."""

    def forward(self, x, t, k, y, w=None):
        return (y != 10).float().reshape(-1, 1).expand_as(x)


@pytest.mark.parametrize("steps", [1, 2, 4, 128])
def test_euler_sample_matches_the_closed_form(steps):
    noise = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    model = Decay()
    x = euler_sample(model, noise, torch.zeros(5, dtype=torch.long), steps=steps, level=3)
    assert torch.allclose(x, (1 - 1 / steps) ** steps * noise, rtol=1e-5, atol=1e-6)
    assert torch.all(model.seen_k == 3)


def test_cfg_mixes_conditional_and_unconditional_in_one_pass():
    noise = torch.zeros(4, 2)
    labels = torch.tensor([0, 1, 2, 3])
    assert torch.allclose(euler_sample(LabelVelocity(), noise, labels, steps=4, level=2), torch.ones(4, 2))
    guided_x = euler_sample(LabelVelocity(), noise, labels, steps=4, level=2, cfg_scale=1.5, null_label=10)
    assert torch.allclose(guided_x, torch.full((4, 2), 1.5)), "0 + 1.5 (1 - 0) per unit time"
    with pytest.raises(ValueError, match="power of two"):
        euler_sample(LabelVelocity(), noise, labels, steps=3, level=2)


def test_where_guidance_and_levels_apply():
    sm, fm = tiny_run("sm"), tiny_run("fm")
    assert [guidance_allowed(sm, n) for n in (1, 64, 128)] == [False, False, True]
    assert all(guidance_allowed(fm, n) for n in (1, 64, 128))
    assert [query_level(sm, n) for n in (1, 2, 128)] == [0, 1, 7]
    assert [query_level(fm, n) for n in (1, 2, 128)] == [7, 7, 7], "flow matching has one level"


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "model.pt"
    train(tiny_run("sm", "train.steps=2"), workdir=out.parent / "w", output=out, progress=False)
    return out


def test_budgets_share_noise_and_labels(trained_model):
    trained = load_trained(trained_model, weights="online")
    _, labels_1, _ = generate(trained, 1, num_images=16, batch_size=8, seed=3)
    _, labels_8, _ = generate(trained, 8, num_images=16, batch_size=8, seed=3)
    assert torch.equal(labels_1, labels_8)
    _, other, _ = generate(trained, 1, num_images=16, batch_size=8, seed=4)
    assert not torch.equal(labels_1, other)
    # An all-zero network (zero-initialised output layer) leaves the noise unchanged: same seed, same noise.
    with torch.no_grad():
        for p in trained.network.parameters():
            p.zero_()
    a, _, _ = generate(trained, 1, num_images=16, batch_size=8, seed=3)
    b, _, _ = generate(trained, 4, num_images=16, batch_size=8, seed=3)
    assert torch.equal(a, b) and a.std() > 0.5


def test_balanced_labels_give_every_class_its_share_with_the_uniform_draws_noise(trained_model):
    """sample.labels: balanced: each class n/k times (+-1), the same labels at every budget and for any sharding,
    and the noise of the uniform draw, so the two label draws compare paired."""
    trained = load_trained(trained_model, weights="online")
    with torch.no_grad():  # an all-zero network returns its noise: the samples are the noise
        for p in trained.network.parameters():
            p.zero_()
    kwargs = dict(num_images=23, batch_size=5, seed=3)
    noise_u, labels_u, meta_u = generate(trained, 1, **kwargs)
    noise_b, labels_b, meta_b = generate(trained, 1, **kwargs, label_draw="balanced")
    assert torch.equal(noise_u, noise_b)
    counts = torch.bincount(labels_b, minlength=trained.num_classes)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 23, counts
    assert torch.bincount(labels_u, minlength=trained.num_classes).max() > counts.max(), "seed 3 draws unevenly"
    assert "labels" not in meta_u and meta_b["labels"] == "balanced"
    assert torch.equal(labels_b, generate(trained, 4, **kwargs, label_draw="balanced")[1])
    shards = [generate(trained, 1, **kwargs, label_draw="balanced", shard=i, num_shards=3)[1] for i in range(3)]
    assert torch.equal(torch.cat(shards), labels_b)
    other_seed = generate(trained, 1, num_images=23, batch_size=5, seed=4, label_draw="balanced")[1]
    assert not torch.equal(labels_b, other_seed)


def test_sample_file_layout(trained_model, tmp_path):
    trained = load_trained(trained_model)
    images, labels, meta = generate(trained, 2, num_images=6, batch_size=6, seed=0)
    path = save_samples(tmp_path / "steps2.npz", images, labels, meta)
    with np.load(path, allow_pickle=False) as f:
        assert f["arr_0"].dtype == np.uint8 and f["arr_0"].shape == (6, 8, 8, 1)
        assert f["labels"].tolist() == labels.tolist()
        stored = json.loads(str(f["meta"]))
    assert stored["weights"] == "online" and stored["steps"] == 2 and stored["nfe"] == 2
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file left behind"


def test_loading_errors_name_the_file(trained_model, tmp_path):
    with pytest.raises(CheckpointError, match="no weights named 'slow'"):
        load_trained(trained_model, weights="slow")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_trained(tmp_path / "missing.pt")
    ckpt = next((trained_model.parent / "w" / "ckpt").glob("ckpt-*.pt"))
    with pytest.raises(CheckpointError, match="not an ism model file"):
        load_trained(ckpt)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pt"):
        load_trained(tmp_path / "garbage.pt")


def test_tile_images_places_each_image_in_row_major_order_with_white_padding():
    from ism.sample import tile_images

    images = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 1, 2, 2)  # three 2x2 gray images
    grid = tile_images(images, columns=2)
    assert grid.shape == (2 * 3 + 1, 2 * 3 + 1, 1)
    assert (grid[0] == 255).all() and (grid[:, 0] == 255).all()  # the 1-px border
    np.testing.assert_array_equal(grid[1:3, 1:3, 0], images[0, 0])
    np.testing.assert_array_equal(grid[1:3, 4:6, 0], images[1, 0])
    np.testing.assert_array_equal(grid[4:6, 1:3, 0], images[2, 0])
    assert (grid[4:6, 4:6] == 255).all()  # no fourth image: left blank


# -------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_images": 0}, r"--num-images 0: must be a positive"),
        ({"batch_size": -5}, r"--batch-size -5: must be a positive"),
        ({"num_shards": 0}, r"--num-shards 0: must be a positive"),
        ({"shard": 5, "num_shards": 2}, r"--shard 5: with --num-shards 2 shards are numbered 0\.\.1"),
    ],
)
def test_bad_counts_are_refused_before_the_model_is_read(tmp_path, kwargs, message):
    from ism.config import ConfigError
    from ism.sample import SampleSettings, sample_to_files

    with pytest.raises(ConfigError, match=message):  # the model file does not even exist
        sample_to_files(tmp_path / "missing.pt", tmp_path / "out", [1], SampleSettings(**kwargs), progress=False)
    with pytest.raises(ConfigError, match=r"--steps \[3\]"):
        sample_to_files(tmp_path / "missing.pt", tmp_path / "out", [1, 3], progress=False)
    with pytest.raises(ConfigError, match=r"--guidance \[0.5, -1\]: guidance scales must be >= 0"):
        sample_to_files(tmp_path / "missing.pt", tmp_path / "out", [1], SampleSettings(guidance=[0.5, -1]))
    assert not (tmp_path / "out").exists()


def test_an_out_dir_under_a_file_is_refused_before_the_model_is_read(tmp_path):
    from ism.config import ConfigError
    from ism.sample import sample_to_files

    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"--out-dir '.*notes\.txt/samples' cannot be written: .* is a regular file"):
        sample_to_files(tmp_path / "missing.pt", tmp_path / "notes.txt" / "samples", [1], progress=False)


def test_merge_names_the_shard_that_does_not_fit(trained_model, tmp_path):
    from ism.config import ConfigError
    from ism.sample import SampleSettings, merge_sample_shards, sample_to_files

    def shard(i, folder, **settings):
        settings = SampleSettings(num_images=6, batch_size=2, shard=i, num_shards=2, **settings)
        return sample_to_files(trained_model, tmp_path / folder, [1], settings, progress=False, device="cpu")[0]

    first, second = shard(0, "a"), shard(1, "a")
    other = shard(1, "b", seed=7)
    out = tmp_path / "merged" / "steps1.npz"
    with pytest.raises(ConfigError, match=rf"'{other}' has seed=7 but '{first}' has 0"):
        merge_sample_shards([first, other], out)
    with pytest.raises(ConfigError, match=rf"'{second}' is shard 1 of 2, not shard 0 of the 2 files given"):
        merge_sample_shards([second, first], out)
    with pytest.raises(ConfigError, match=rf"'{first}' is shard 0 of 2, not shard 0 of the 1 files given"):
        merge_sample_shards([first], out)
    (tmp_path / "junk.npz").write_text("not numpy")
    with pytest.raises(ConfigError, match=r"junk\.npz' is not a samples file written by 'ism sample'"):
        merge_sample_shards([first, tmp_path / "junk.npz"], out)
    assert not out.parent.exists()
    assert merge_sample_shards([first, second], out) == out and out.is_file()


def test_the_given_section_applies_and_given_values_override_it(trained_model, tmp_path):
    from ism.sample import SampleSettings, sample_to_files

    study = tiny_run("sm", "sample.seed=5", "sample.num_images=4", "sample.batch_size=4").sample
    settings = SampleSettings(section=study, batch_size=3)
    (path,) = sample_to_files(trained_model, tmp_path, [2], settings, progress=False, device="cpu")
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
    assert path.name == "steps2.npz" and (tmp_path / "steps2.png").is_file()
    assert (meta["seed"], meta["num_images"], meta["batch_size"]) == (5, 4, 3)
