"""config/imagenet256.yaml pinned to its sources: every row of config/README.md's hyper-parameter table holds for
the resolved runs, and every key that shapes SM's or iSM's training or sampling has a row."""

import re

import pytest
import yaml

from ism.config import load_run, training_identity

from .conftest import REPO

STUDY = REPO / "config" / "imagenet256.yaml"
ROW = re.compile(r"^\| (?P<run>\w+) \| `(?P<key>[\w.]+)` \| `(?P<value>[^`]*)` \| (?P<source>.+) \|$")
# Bookkeeping that does not change what is trained or how it is scored (paths, seeds, inference batching).
EXEMPT = {
    "data.root",
    "data.vae",
    "data.test_fraction",
    "data.split_seed",
    "data.num_points",
    "data.encode_batch_size",
    "model.arch",
    "model.embed_dim",
    "method.transport.prefetch",
    "train.seed",
    "sample.seed",
    "sample.batch_size",
}
# Keys of a component that is switched off (or unused) in a run.
OFF = {
    "method.guidance.": lambda c: not c.method.guidance.intrinsic,
    "method.wavelet.": lambda c: not c.method.wavelet.enabled,
    "method.transport.": lambda c: not c.method.transport.enabled,
    "method.bootstrap_cfg_scale": lambda c: c.method.guidance.intrinsic,
    "sample.guidance": lambda c: not c.method.guidance.intrinsic,
    "sample.cfg_scale": lambda c: c.method.guidance.intrinsic,
}
SWITCHES = {"method.guidance.intrinsic", "method.wavelet.enabled", "method.transport.enabled"}


def _table() -> list[dict[str, str]]:
    text = (REPO / "config" / "README.md").read_text()
    block = text.split("<!-- hparams:start -->")[1].split("<!-- hparams:end -->")[0]
    rows = [m.groupdict() for line in block.splitlines() if (m := ROW.match(line.strip()))]
    assert len(rows) > 50, "the table did not parse"
    return rows


def _leaves(d: dict, prefix: str = ""):
    for key, value in d.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _values(run: str) -> tuple[object, dict]:
    cfg = load_run(STUDY, run)
    dump = training_identity(cfg) | {"sample": cfg.model_dump(mode="json")["sample"]}
    dump["train"]["steps"] = cfg.train.steps
    return cfg, dict(_leaves(dump))


@pytest.mark.parametrize("run", ["sm", "ism"])
def test_every_tabled_value_holds(run):
    _, values = _values(run)
    rows = [r for r in _table() if r["run"] in (run, "both")]
    for row in rows:
        assert row["key"] in values, f"{row['key']} is not a config key"
        expected = yaml.safe_load(row["value"])
        assert values[row["key"]] == expected, f"runs.{run}: {row['key']} = {values[row['key']]!r}, table {expected!r}"
        assert row["source"].strip(), row


@pytest.mark.parametrize("run", ["sm", "ism"])
def test_every_hyper_parameter_has_a_source(run):
    cfg, values = _values(run)
    tabled = {r["key"] for r in _table() if r["run"] in (run, "both")}
    untabled = [
        key
        for key in values
        if key not in tabled
        and key not in EXEMPT
        and key not in SWITCHES
        and not any(key.startswith(prefix) and off(cfg) for prefix, off in OFF.items())
    ]
    assert not untabled, f"runs.{run}: no source in config/README.md for {untabled}"
    assert tabled >= SWITCHES


def test_the_sm_baseline_puts_cfg_into_its_finest_targets_like_the_release():
    cfg = load_run(STUDY, "sm")
    assert cfg.method.bootstrap_cfg_scale == cfg.sample.cfg_scale == 1.5
