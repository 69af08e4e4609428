"""iSM end to end in the trainer: twin EMA roles and arithmetic, sOT wiring, guidance sampling, bitwise resume."""

import pytest
import torch

from ism.checkpoint import safe_load
from ism.config import ConfigError, load_run
from ism.sample import SampleSettings, generate, load_trained, sample_to_files
from ism.train import Trainer

from .conftest import DEFAULT_CONFIG, TINY_OVERRIDES, train


def tiny_ism(run="ism", *extra):
    return load_run(DEFAULT_CONFIG, run, [*TINY_OVERRIDES, "method.transport.pool_batches=3", *extra])


def test_ablation_runs_switch_off_exactly_one_component():
    ism = tiny_ism()
    m = ism.method
    switches = (m.guidance.intrinsic, m.guidance.interval, m.wavelet.enabled, m.transport.enabled)
    assert switches == (True, True, False, True)  # the wavelet loss is off on 8x8 pixels (ism-wavelet has it)
    assert (m.target_weights, ism.sample.weights) == ("target", "infer")
    changed = {
        "ism-no-guidance": "guidance.intrinsic",
        "ism-no-interval": "guidance.interval",
        "ism-wavelet": "wavelet.enabled",
        "ism-no-sot": "transport.enabled",
        "ism-no-twin-ema": "target_weights",
    }
    base = flatten(ism.method.model_dump())
    for run, key in changed.items():
        other = flatten(tiny_ism(run).method.model_dump())
        assert {k for k in base if base[k] != other[k]} == {key}, run


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_twin_ema_roles_and_exact_decay_arithmetic(tmp_path):
    trainer = Trainer(tiny_ism(), workdir=tmp_path, progress=False)
    assert trainer.target_network() is trainer.emas["target"].model, "the fast EMA produces every target"
    init = [p.detach().clone() for p in trainer.model.parameters()]
    expected = {"target": [p.clone() for p in init], "infer": [p.clone() for p in init]}
    for step in range(3):
        trainer.train_step(step)
        online = [p.detach() for p in trainer.model.parameters()]
        for name, decay in (("target", 0.95), ("infer", 0.9999)):
            beta = min(decay, (1 + step) / (10 + step))  # warm-up: 0.1, 2/11, 0.25
            expected[name] = [beta * e + (1 - beta) * p for e, p in zip(expected[name], online, strict=True)]
    for name, ema in trainer.emas.items():
        for got, want in zip(ema.model.parameters(), expected[name], strict=True):
            assert torch.allclose(got, want, atol=1e-6), name
    assert trainer.emas["target"].decay_at(1000) == 0.95 and trainer.emas["infer"].decay_at(1000) < 0.9999


def test_samples_come_from_the_slow_copy_and_take_a_guidance_scale(tmp_path):
    train(tiny_ism("ism", "train.steps=3"), workdir=tmp_path / "w", output=tmp_path / "m.pt", progress=False)
    state = safe_load(tmp_path / "m.pt")
    assert set(state["weights"]) == {"online", "target", "infer"}
    trained = load_trained(tmp_path / "m.pt")
    assert trained.weights == "infer"
    _, _, meta = generate(trained, 1, num_images=4, batch_size=4, seed=0, guidance=2.0)
    assert meta["guidance"] == 2.0 and meta["nfe"] == 1 and meta["cfg_scale"] == 1.0, "one forward per step"
    settings = SampleSettings(num_images=4, guidance=[0, 1.5])
    written = sample_to_files(tmp_path / "m.pt", tmp_path / "s", [1, 4], settings, progress=False, device="cpu")
    assert sorted(p.name for p in written) == ["steps1-w0.npz", "steps1-w1.5.npz", "steps4-w0.npz", "steps4-w1.5.npz"]
    sm = load_run(DEFAULT_CONFIG, "sm", [*TINY_OVERRIDES, "train.steps=1"])
    train(sm, workdir=tmp_path / "sm", output=tmp_path / "sm.pt", progress=False)
    with pytest.raises(ConfigError, match="without intrinsic guidance"):
        sample_to_files(tmp_path / "sm.pt", tmp_path / "s2", [1], SampleSettings(guidance=[1.0]), device="cpu")


def test_guidance_input_changes_the_samples_once_trained(tmp_path):
    train(tiny_ism("ism", "train.steps=4"), workdir=tmp_path / "w", output=tmp_path / "m.pt", progress=False)
    trained = load_trained(tmp_path / "m.pt", weights="online")
    a, _, _ = generate(trained, 2, num_images=4, batch_size=4, seed=0, guidance=0.0)
    b, _, _ = generate(trained, 2, num_images=4, batch_size=4, seed=0, guidance=3.0)
    assert not torch.equal(a, b)


def test_sot_batches_keep_their_images(tmp_path):
    trainer = Trainer(tiny_ism(), workdir=tmp_path, progress=False)
    for step in range(5):
        indices, _ = trainer.pairing.batch(step)
        assert torch.equal(indices, trainer.schedule.indices(step))
    trainer.pairing.close()


@pytest.mark.parametrize(("run", "prefetch"), [("ism", "thread"), ("ism", "sync"), ("ism-no-sot", "auto")])
def test_ism_resume_is_bitwise(tmp_path, run, prefetch):
    cfg = tiny_ism(run, "train.steps=8", "train.checkpoint_every=3", f"method.transport.prefetch={prefetch}")
    train(cfg, workdir=tmp_path / "a", output=tmp_path / "a.pt", progress=False)
    train(cfg, workdir=tmp_path / "b", output=tmp_path / "b.pt", progress=False, until_step=4)
    resumed = train(cfg, workdir=tmp_path / "b", output=tmp_path / "b.pt", progress=False)
    assert resumed.resumed_from == 4
    a, b = safe_load(tmp_path / "a.pt")["weights"], safe_load(tmp_path / "b.pt")["weights"]
    for copy in ("online", "target", "infer"):
        for key in a[copy]:
            assert torch.equal(a[copy][key], b[copy][key]), (copy, key)


@pytest.mark.parametrize("study", ["mnist.yaml", "ablation.yaml"])
def test_every_ism_run_of_the_shipped_studies_trains(tmp_path, study):
    """Two steps of each intrinsic-guidance run of a shipped study at a tiny width: the MNIST study's wavelet loss on
    28x28 (two levels) failed inside its training job before its run was ever tried."""
    from ism.config import load_yaml, validate_study

    path = DEFAULT_CONFIG.parent / study
    for run in validate_study(load_yaml(path)).runs:
        cfg = load_run(path, run, [*TINY_OVERRIDES, "train.steps=2", "method.transport.pool_batches=2"])
        if cfg.method.name == "ism":
            result = train(cfg, workdir=tmp_path / run, output=tmp_path / f"{run}.pt", progress=False)
            assert result.step == 2, run
