"""Training: smoke run, bitwise resume, corrupt-checkpoint fallback, NaN stop, config guard, dvclive."""

import json

import pytest
import torch

from ism.checkpoint import CheckpointError, list_checkpoints, safe_load
from ism.sample import generate, load_trained
from ism.train import NonFiniteLossError, Trainer

from .conftest import tiny_run, train


def _weights(path):
    state = safe_load(path)
    return state["weights"]


def _assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            _assert_same_tensors(a[key], b[key])
        else:
            assert torch.equal(a[key], b[key]), key


def test_digits_smoke_train_checkpoint_resume_and_sample(tmp_path):
    cfg = tiny_run("sm", "train.steps=6", "sample.cfg_scale=1.5")  # the release's CFG at N = M
    first = train(cfg, workdir=tmp_path / "w", output=tmp_path / "model.pt", progress=False, until_step=3)
    assert not first.finished and first.step == 3 and first.output is None
    assert [s for s, _ in list_checkpoints(tmp_path / "w" / "ckpt")] == [3, 2]
    second = train(cfg, workdir=tmp_path / "w", output=tmp_path / "model.pt", progress=False)
    assert second.finished and second.resumed_from == 3 and second.step == 6
    trained = load_trained(tmp_path / "model.pt", weights="target")
    assert trained.step == 6 and trained.weights == "target"
    for steps in (1, 128):
        images, labels, meta = generate(trained, steps, num_images=12, batch_size=8, seed=0)
        assert images.shape == (12, 1, 8, 8) and labels.shape == (12,)
        assert torch.isfinite(images).all()
        assert meta["steps"] == steps and meta["weights"] == "target"
    assert meta["cfg_scale"] == 1.5 and meta["nfe"] == 256, "CFG at N = M doubles the NFE"


@pytest.mark.parametrize(("run", "extra"), [("sm", []), ("fm", []), ("sm", ["train.fused_adamw=true"])])
def test_interrupted_and_resumed_run_equals_uninterrupted_bitwise(tmp_path, run, extra):
    cfg = tiny_run(run, "train.steps=9", "train.checkpoint_every=4", *extra)
    train(cfg, workdir=tmp_path / "a", output=tmp_path / "a.pt", progress=False)
    # Stop at 6: the newest checkpoint is step 6 (the slice end); resume runs steps 6..8.
    train(cfg, workdir=tmp_path / "b", output=tmp_path / "b.pt", progress=False, until_step=6)
    resumed = train(cfg, workdir=tmp_path / "b", output=tmp_path / "b.pt", progress=False)
    assert resumed.resumed_from == 6
    _assert_same_tensors(_weights(tmp_path / "a.pt"), _weights(tmp_path / "b.pt"))


def test_corrupt_newest_checkpoint_falls_back_and_still_matches(tmp_path):
    cfg = tiny_run("sm", "train.steps=6", "train.keep_checkpoints=3")
    train(cfg, workdir=tmp_path / "a", output=tmp_path / "a.pt", progress=False)
    train(cfg, workdir=tmp_path / "b", output=tmp_path / "b.pt", progress=False, until_step=4)
    newest = list_checkpoints(tmp_path / "b" / "ckpt")[0][1]
    newest.write_bytes(newest.read_bytes()[:100])  # a torn file, as from a full disk
    resumed = train(cfg, workdir=tmp_path / "b", output=tmp_path / "b.pt", progress=False)
    assert resumed.resumed_from == 2
    _assert_same_tensors(_weights(tmp_path / "a.pt"), _weights(tmp_path / "b.pt"))


def test_checkpoint_holds_model_ema_optimizer_and_order_state(tmp_path):
    cfg = tiny_run("sm", "train.steps=2")
    train(cfg, workdir=tmp_path, progress=False)
    state = safe_load(list_checkpoints(tmp_path / "ckpt")[0][1])
    assert state["step"] == 2
    assert {"model", "optimizer", "emas", "rng", "data_order", "config"} <= state.keys()
    assert state["emas"]["target"]["num_updates"] == 2
    assert state["optimizer"]["state"], "AdamW moments are saved"


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_run("sm", "train.steps=8")
    trainer = Trainer(cfg, workdir=tmp_path, progress=False)
    trainer.run(until_step=4)
    good = list_checkpoints(tmp_path / "ckpt")[0][1]
    before = good.read_bytes()
    trainer = Trainer(cfg, workdir=tmp_path, progress=False)
    trainer.x_train = torch.full_like(trainer.x_train, float("nan"))  # bad data injected
    with pytest.raises(NonFiniteLossError, match=r"at step 4\b.*ckpt-00000004\.pt"):
        trainer.run()
    assert list_checkpoints(tmp_path / "ckpt")[0][1] == good and good.read_bytes() == before


def test_resuming_with_a_different_training_config_is_refused(tmp_path):
    train(tiny_run("sm", "train.steps=2"), workdir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="different configuration"):
        train(tiny_run("sm", "train.steps=4", "train.lr=0.01"), workdir=tmp_path, progress=False)
    # Extending the run (more steps) is allowed and resumes.
    result = train(tiny_run("sm", "train.steps=4"), workdir=tmp_path, progress=False)
    assert result.resumed_from == 2 and result.step == 4


def test_dvclive_writes_training_curves_without_touching_dvc(tmp_path):
    cfg = tiny_run("sm", "train.steps=3")
    train(cfg, workdir=tmp_path / "w", live_dir=tmp_path / "live", progress=False)
    summary = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert summary["step"] == 3 and "loss" in summary["train"]
    history = (tmp_path / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert len(history) == 1 + 3
    assert not (tmp_path / "dvc.yaml").exists()


def test_target_network_follows_config(tmp_path):
    online = Trainer(tiny_run("sm", "method.target_weights=online"), workdir=tmp_path / "a", progress=False)
    assert online.target_network() is online.model
    ema = Trainer(tiny_run("sm", "method.target_weights=target"), workdir=tmp_path / "b", progress=False)
    assert ema.target_network() is ema.emas["target"].model


def test_fused_adamw_is_a_switch_deterministic_but_not_the_default_numerics(tmp_path):
    """The fused kernel repeats itself bitwise; it differs from the default kernel, so it is off by default and
    enters the training identity only when on (the default's work folders keep their digest)."""
    from ism.config import training_identity

    default = tiny_run("sm", "train.steps=3")
    fused = tiny_run("sm", "train.steps=3", "train.fused_adamw=true")
    assert "fused_adamw" not in training_identity(default)["train"]
    assert training_identity(fused)["train"]["fused_adamw"] is True
    for name, cfg in (("a", fused), ("b", fused), ("c", default)):
        train(cfg, workdir=tmp_path / name, output=tmp_path / f"{name}.pt", progress=False)
    _assert_same_tensors(_weights(tmp_path / "a.pt"), _weights(tmp_path / "b.pt"))
    online = [_weights(tmp_path / f"{name}.pt")["online"] for name in ("a", "c")]
    assert any(not torch.equal(online[0][k], online[1][k]) for k in online[0])
