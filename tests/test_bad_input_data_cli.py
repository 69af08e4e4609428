"""Bad input data and bad CLI values through the real ``ism`` command: one line, exit 2, nothing written.

Every case runs ``ism`` in a subprocess from its own temporary folder and must end with a non-zero exit, exactly one
non-empty stderr line ``ism: error: ...`` naming the file or option, no traceback, no new file or folder under
results/, models/, data/ or work/, and nothing at the output path it asked for. The cases run two at a time in one
module fixture (each subprocess imports torch); the parametrised tests then check one case each.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from .conftest import DEFAULT_CONFIG, tiny_run, train

GUARDED = ("results", "models", "data", "work")
IMAGES = "imgs"  # the image folder of a case, outside every guarded folder
TINY_TRAIN = ["model.hidden_size=32", "model.depth=2", "model.num_heads=2", "train.batch_size=28", "train.steps=1"]


@dataclass
class Case:
    args: list[str]  # after 'ism -q'; {model}, {shards} and {root} are filled in
    expect: list[str]  # substrings of the one error line (the file or option it must name)
    setup: str = "images"  # see _prepare
    outputs: list[str] = field(default_factory=list)  # paths (relative to the case folder) that must not appear


ENCODE = ["encode", "--config", "cfg.yaml", "--out-dir", "data/latents/x"]
TRAIN = ["train", "--config", "cfg.yaml", "--run", "sm", *(a for o in TINY_TRAIN for a in ("--set", o))]
SAMPLE = ["sample", "--checkpoint", "{model}", "--steps", "1"]
SHARD0, SHARD1 = "{shards}/steps1.shard-00000-of-00002.npz", "{shards}/steps1.shard-00001-of-00002.npz"
TRUNCATED = ["{root}/a/3.png", "(image file is truncated)", "remove or replace the file"]

CASES: dict[str, Case] = {
    # --- image data (workflow path 'ism encode' and direct path 'ism train' name the same file alike)
    "encode: truncated PNG in the train split": Case(ENCODE, TRUNCATED, "truncated-train", ["data/latents/x"]),
    "train: truncated PNG in the train split": Case(TRAIN, TRUNCATED, "truncated-train", ["models/sm"]),
    "encode: truncated PNG in the test split": Case(
        ENCODE, ["{root}/b/3.png", "image file is truncated"], "truncated-test", ["data/latents/x"]
    ),
    "encode: text file renamed .png": Case(ENCODE, ["{root}/a/2.png", "not a PNG or JPEG image"], "text-as-png"),
    "encode: mixed sizes, image_size null": Case(
        ENCODE, ["{root}/b/2.png", "12x10", "8x8", "data.image_size"], "mixed-sizes"
    ),
    "encode: same sizes, image_size null": Case(ENCODE, ["data.image_size is null", "8x8"], "size-null"),
    "encode: empty class folder": Case(ENCODE, ["{root}/c", "holds 0"], "empty-class"),
    "encode: no class folders": Case(ENCODE, ["data.root '{root}'", "no class sub-folders"], "no-classes"),
    "encode: missing root": Case(ENCODE, ["data.root '{root}'", "does not exist"], "missing-root"),
    "encode: root is a file": Case(ENCODE, ["data.root '{root}'", "is not a folder"], "root-is-file"),
    "encode: unreadable root": Case(ENCODE, ["'{root}'", "make it readable"], "unreadable-root"),
    "encode: 2-D point set": Case(ENCODE, ["data.dataset 'checkerboard'", "no encoding stage"], "points"),
    # --- encode arguments
    "encode: merge with a missing shard": Case(
        [*ENCODE, "--merge", "--num-shards", "2"],
        ["data/latents/x/shard-00001-of-00002.npy", "is missing", "--shard 1 --num-shards 2"],
        "one-shard-encoded",
        ["data/latents/x/train.npy", "data/latents/x/meta.json"],
    ),
    "encode: --shard 5 --num-shards 2": Case([*ENCODE, "--shard", "5", "--num-shards", "2"], ["--shard 5"]),
    "encode: --num-shards 0": Case([*ENCODE, "--num-shards", "0"], ["argument --num-shards: 0"]),
    "encode: --out-dir under a regular file": Case(
        ["encode", "--config", "cfg.yaml", "--out-dir", "notes.txt/latents"], ["--out-dir 'notes.txt/latents'"]
    ),
    # --- sample arguments (refused before the model is loaded)
    "sample: --num-images 0": Case([*SAMPLE, "--num-images", "0"], ["argument --num-images: 0"], "none"),
    "sample: --batch-size 0": Case([*SAMPLE, "--batch-size", "0"], ["argument --batch-size: 0"], "none"),
    "sample: --num-images -5": Case([*SAMPLE, "--num-images", "-5"], ["argument --num-images: -5"], "none"),
    "sample: --steps 3": Case(["sample", "--checkpoint", "{model}", "--steps", "1", "3"], ["argument --steps: 3"]),
    "sample: --steps 256 (above base_steps)": Case(
        ["sample", "--checkpoint", "{model}", "--steps", "256"], ["--steps [256]", "method.base_steps=128"], "none"
    ),
    "sample: --num-shards 0": Case([*SAMPLE, "--num-shards", "0"], ["argument --num-shards: 0"], "none"),
    "sample: --shard 5 --num-shards 2": Case([*SAMPLE, "--shard", "5", "--num-shards", "2"], ["--shard 5"], "none"),
    "sample: --out-dir under a regular file": Case(
        [*SAMPLE, "--out-dir", "notes.txt/samples"], ["--out-dir 'notes.txt/samples'", "'notes.txt'"], "none"
    ),
    # --- merge-samples
    "merge-samples: shards of different seeds": Case(
        ["merge-samples", SHARD0, "{shards}/other-seed.npz", "--out", "results/sm/samples/steps1.npz"],
        ["{shards}/other-seed.npz", "seed=5"],
        "none",
        ["results/sm/samples/steps1.npz"],
    ),
    "merge-samples: a shard missing": Case(
        ["merge-samples", SHARD0, "--out", "results/sm/samples/steps1.npz"],
        [SHARD0, "shard 0 of 2", "--num-shards 2"],
        "none",
        ["results/sm/samples/steps1.npz"],
    ),
    "merge-samples: --out under a regular file": Case(
        ["merge-samples", SHARD0, SHARD1, "--out", "notes.txt/steps1.npz"], ["--out 'notes.txt/steps1.npz'"], "none"
    ),
}


def _write_images(root: Path) -> None:
    """Two classes of four 8x8 RGB PNGs: with split_seed 0 and test_fraction 0.25, a/3.png is in the train split
    and b/3.png in the test split."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / name / f"{i}.png")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _prepare(folder: Path, setup: str) -> dict:
    """The case folder: cfg.yaml (an image-folder study), the images and a regular file notes.txt."""
    root = folder / IMAGES
    (folder / "notes.txt").write_text("a regular file\n")
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["data"].update(dataset="imagefolder", root=str(root), image_size=8)
    raw["evaluate"] = {"extractor": "inception-v3-compat"}  # the digits classifier knows no image folder
    raw["train"]["device"] = "cpu"
    if setup == "none":
        return {"root": root}
    _write_images(root)
    if setup == "truncated-train":
        _truncate(root / "a" / "3.png")
    elif setup == "truncated-test":
        _truncate(root / "b" / "3.png")
    elif setup == "text-as-png":
        (root / "a" / "2.png").write_text("this is a text file, not a picture\n")
    elif setup in ("mixed-sizes", "size-null"):
        raw["data"]["image_size"] = None
        if setup == "mixed-sizes":
            Image.new("RGB", (12, 10)).save(root / "b" / "2.png")
    elif setup == "empty-class":
        (root / "c").mkdir()
    elif setup == "no-classes":
        shutil.rmtree(root)
        root.mkdir()
    elif setup == "missing-root":
        shutil.rmtree(root)
    elif setup == "root-is-file":
        shutil.rmtree(root)
        root.write_text("not a folder\n")
    elif setup == "unreadable-root":
        root.chmod(0)
    elif setup == "points":  # a valid 2-D study: one mlp run
        raw.update(data={"dataset": "checkerboard", "test_fraction": 0.25, "split_seed": 0}, model={"arch": "mlp"})
        raw["runs"] = {"sm": raw["runs"]["sm"]}
        raw["pipeline"]["runs"] = ["sm"]
    elif setup == "one-shard-encoded":
        shard = folder / "data" / "latents" / "x" / "shard-00000-of-00002"
        shard.parent.mkdir(parents=True)
        np.save(f"{shard}.npy", np.zeros((3, 3, 8, 8), np.float32))
        np.save(f"{shard}.labels.npy", np.zeros(3, np.int64))
    (folder / "cfg.yaml").write_text(yaml.safe_dump(raw))
    return {"root": root}


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for top in GUARDED for p in [folder / top, *(folder / top).rglob("*")]}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict:
    from ism.sample import SampleSettings, sample_to_files

    shared = tmp_path_factory.mktemp("shared")
    model = shared / "model.pt"
    train(tiny_run("sm", "train.steps=2"), workdir=shared / "w", output=model, progress=False)
    shards = shared / "shards"
    for shard in (0, 1):
        settings = SampleSettings(num_images=20, shard=shard, num_shards=2)
        sample_to_files(model, shards, [1], settings, progress=False, device="cpu")
    settings = SampleSettings(seed=5, shard=1, num_shards=2)
    other = sample_to_files(model, shared / "o", [1], settings, progress=False, device="cpu")
    other[0].rename(shards / "other-seed.npz")

    def run(name: str, case: Case) -> dict:
        folder = tmp_path_factory.mktemp("case")
        fill = {"model": str(model), "shards": str(shards), **_prepare(folder, case.setup)}
        before = _snapshot(folder)
        args = [a.format(**fill) for a in case.args]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(
            [sys.executable, "-m", "ism.cli", "-q", *args], capture_output=True, text=True, cwd=folder, env=env
        )
        if case.setup == "unreadable-root":
            fill["root"].chmod(0o755)
        expect = [e.format(**fill) for e in case.expect]
        return {"done": done, "folder": folder, "before": before, "expect": expect}

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run, name, case) for name, case in CASES.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_stops_in_one_line_and_writes_nothing(outcomes, name):
    if CASES[name].setup == "unreadable-root" and os.geteuid() == 0:
        pytest.skip("root reads every folder: an unreadable root cannot be made here")
    outcome = outcomes[name]
    done, folder = outcome["done"], outcome["folder"]
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ism: error: "), lines[0]
    for part in outcome["expect"]:
        assert part in lines[0], (part, lines[0])
    assert _snapshot(folder) == outcome["before"], "a new file or folder under results/, models/, data/ or work/"
    for path in CASES[name].outputs:
        assert not (folder / path).exists(), path
    assert not list(folder.rglob(".*.tmp-*")), "a temporary file was left behind"


def test_encode_and_train_report_a_bad_image_in_the_same_words(outcomes):
    """The workflow path (ism encode) and the direct path (ism train) read images through one function."""
    lines = []
    for path in ("encode", "train"):
        outcome = outcomes[f"{path}: truncated PNG in the train split"]
        lines.append(outcome["done"].stderr.strip().replace(str(outcome["folder"]), "CASE"))
    assert lines[0] == lines[1] and "CASE/imgs/a/3.png" in lines[0]
