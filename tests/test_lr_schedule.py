"""The learning-rate schedule (ism.lr_schedule): its equations, the trainer applying them, resuming and identity."""

import itertools
import math

import pytest
import torch

from ism.config import training_identity
from ism.lr_schedule import is_scheduled, learning_rate
from ism.train import Trainer

from .conftest import tiny_run, train
from .test_train import _assert_same_tensors, _weights


def test_warmup_then_cosine_follows_the_equations():
    t = tiny_run(
        "fm",
        "train.lr=0.001",
        "train.steps=10",
        "train.lr_schedule=cosine",
        "train.warmup_steps=2",
        "train.final_lr_fraction=0.1",
    ).train
    rates = [learning_rate(t, step) for step in range(10)]
    assert rates[:2] == pytest.approx([0.0005, 0.001])  # eta (t + 1) / W
    for step in range(2, 10):  # eta_min + (eta - eta_min)(1 + cos(pi (t - W)/(T - W)))/2
        assert rates[step] == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * (step - 2) / 8)))
    assert rates[2] == pytest.approx(0.001) and all(a > b for a, b in itertools.pairwise(rates[2:]))


def test_constant_rate_is_not_scheduled_and_warmup_alone_is():
    assert not is_scheduled(tiny_run("fm").train)
    warm = tiny_run("fm", "train.lr=0.002", "train.warmup_steps=4").train
    assert is_scheduled(warm) and [learning_rate(warm, s) for s in (0, 3, 4, 99)] == [0.0005, 0.002, 0.002, 0.002]


def test_the_trainer_updates_with_the_scheduled_rate_and_logs_it(tmp_path):
    cfg = tiny_run("sm", "train.steps=5", "train.lr=0.001", "train.lr_schedule=cosine")
    trainer = Trainer(cfg, workdir=tmp_path / "w", progress=False)
    for step in range(3):
        logs = trainer.train_step(step)
        assert (
            trainer.optimizer.param_groups[0]["lr"]
            == learning_rate(cfg.train, step)
            == pytest.approx(float(logs["lr"]))
        )
    assert "lr" not in Trainer(tiny_run("sm"), workdir=tmp_path / "c", progress=False).train_step(0)


def test_a_cosine_run_resumes_bitwise_but_its_steps_are_part_of_its_identity(tmp_path):
    cfg = tiny_run(
        "sm", "train.steps=8", "train.checkpoint_every=3", "train.lr_schedule=cosine", "train.warmup_steps=2"
    )
    train(cfg, workdir=tmp_path / "a", output=tmp_path / "a.pt", progress=False)
    train(cfg, workdir=tmp_path / "b", output=tmp_path / "b.pt", progress=False, until_step=5)
    assert train(cfg, workdir=tmp_path / "b", output=tmp_path / "b.pt", progress=False).resumed_from == 5
    _assert_same_tensors(_weights(tmp_path / "a.pt"), _weights(tmp_path / "b.pt"))
    longer = tiny_run(
        "sm", "train.steps=16", "train.checkpoint_every=3", "train.lr_schedule=cosine", "train.warmup_steps=2"
    )
    assert training_identity(longer) != training_identity(cfg)
    # Constant rate (the default): steps stay resumable and the new keys stay out of the identity.
    plain = training_identity(tiny_run("sm", "train.steps=8"))
    assert plain == training_identity(tiny_run("sm", "train.steps=16"))
    assert not {"lr_schedule", "warmup_steps", "final_lr_fraction"} & set(plain["train"])


def test_a_scheduled_rate_changes_the_weights(tmp_path):
    """The schedule reaches the optimizer (a constant run and a cosine one part after their first step)."""
    for name, extra in (("constant", []), ("cosine", ["train.lr_schedule=cosine"])):
        train(
            tiny_run("fm", "train.steps=3", *extra),
            workdir=tmp_path / name,
            output=tmp_path / f"{name}.pt",
            progress=False,
        )
    a, b = (_weights(tmp_path / f"{name}.pt")["online"] for name in ("constant", "cosine"))
    assert any(not torch.equal(a[k], b[k]) for k in a)
