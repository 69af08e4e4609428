"""The ism command as a newcomer meets it: help, one-line errors before compute, train then sample."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from .conftest import DEFAULT_CONFIG, TINY_OVERRIDES


def ism(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "ism.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_help_texts():
    top = ism("--help")
    assert top.returncode == 0 and "train" in top.stdout and "sample" in top.stdout
    train_help = ism("train", "--help")
    assert train_help.returncode == 0 and "examples:" in train_help.stdout and "--set" in train_help.stdout
    sample_help = ism("sample", "--help")
    assert sample_help.returncode == 0 and "ADM evaluator" in sample_help.stdout


def test_bad_config_fails_in_one_line_before_any_work(tmp_path):
    result = ism(
        "train",
        "--config",
        str(DEFAULT_CONFIG),
        "--run",
        "sm",
        "--set",
        "sample.budgets=[1,3]",
        "--workdir",
        str(tmp_path / "w"),
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ism: error: ")
    assert "'sample.budgets'" in lines[0] and "budget 3 (item 1) is not a power of two" in lines[0]
    assert not (tmp_path / "w").exists() and not (tmp_path / "results").exists()


def test_bad_data_root_is_named(tmp_path):
    result = ism(
        "train",
        "--config",
        str(DEFAULT_CONFIG),
        "--run",
        "sm",
        "--set",
        "data.dataset=imagefolder",
        "--set",
        f"data.root={tmp_path / 'nowhere'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "nowhere" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_train_then_sample(tmp_path):
    sets = [a for o in [*TINY_OVERRIDES, "train.steps=4"] for a in ("--set", o)]
    trained = ism("-q", "train", "--config", str(DEFAULT_CONFIG), "--run", "sm", *sets, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    model = tmp_path / "models" / "sm" / "model.pt"
    assert model.is_file() and len(list((tmp_path / "work" / "sm").glob("*/ckpt"))) == 1
    sampled = ism("-q", "sample", "--checkpoint", str(model), "--steps", "1", "128", "--num-images", "8", cwd=tmp_path)
    assert sampled.returncode == 0, sampled.stderr
    for n in (1, 128):
        with np.load(tmp_path / "results" / "sm" / "samples" / f"steps{n}.npz") as f:
            assert f["arr_0"].shape == (8, 8, 8, 1)
        assert (tmp_path / "results" / "sm" / "samples" / f"steps{n}.png").stat().st_size > 0
    bad = ism("sample", "--checkpoint", str(model), "--steps", "3", cwd=tmp_path)
    assert bad.returncode == 2 and "argument --steps: 3 is not a power of two" in bad.stderr
    too_fine = ism("sample", "--checkpoint", str(model), "--steps", "256", cwd=tmp_path)
    assert too_fine.returncode == 2 and "--steps [256]" in too_fine.stderr and "base_steps=128" in too_fine.stderr


def test_sample_config_needs_a_run_before_the_model_is_read(tmp_path):
    result = ism(
        "sample", "--checkpoint", str(tmp_path / "missing.pt"), "--steps", "1", "--config", str(DEFAULT_CONFIG)
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ism: error: --config needs --run: the run whose 'sample' section applies"
    ]


def test_train_workdir_per_training_configuration(tmp_path):
    """The README tour: re-running resumes, more steps resume in the same folder, a changed training key
    (train.lr) trains from scratch in a new one instead of refusing the old checkpoints."""
    sets = [a for o in [*TINY_OVERRIDES, "train.checkpoint_every=2"] for a in ("--set", o)]

    def train(*more: str) -> set[Path]:
        extra = [a for o in more for a in ("--set", o)]
        done = ism("-q", "train", "--config", str(DEFAULT_CONFIG), "--run", "sm", *sets, *extra, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return {p.relative_to(tmp_path) for p in (tmp_path / "work" / "sm").glob("*/ckpt/ckpt-*.pt")}

    first = train("train.steps=2")
    assert len({p.parts[2] for p in first}) == 1
    longer = train("train.steps=4")
    assert {p.parts[2] for p in longer} == {p.parts[2] for p in first}, "more steps resume in the same folder"
    changed = train("train.steps=2", "train.lr=0.002")
    assert len({p.parts[2] for p in changed}) == 2, "a changed training key trains in a new folder"
