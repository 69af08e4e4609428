"""Bad studies and overrides stop before any compute: exit 2, one line naming the key, no traceback, and no file
under results/, models/, data/ or work/ (issue: configs that passed validation, then failed after compute)."""

import pytest
import yaml

from ism.cli import main

from .conftest import DEFAULT_CONFIG

BASE = yaml.safe_load(DEFAULT_CONFIG.read_text())


def _study(**changes) -> dict:
    study = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = study
        for part in parents:
            node = node.setdefault(part, {})
        node[key] = value
    return study


# (case, study file content or None for the default, ism arguments after --config F, text the line must hold)
CASES = [
    ("patch does not tile 8x8", None, ["--run", "sm", "--set", "model.patch_size=3"], "'model.patch_size'"),
    ("width not split into heads", None, ["--run", "sm", "--set", "model.hidden_size=30"], "'model.hidden_size'"),
    ("no runs", _study(runs={}), ["--run", "sm"], "'runs'"),
    ("inherit a list", _study(runs__x={"inherit": ["ism"]}), ["--run", "x"], "'runs.x.inherit'"),
    ("inherit unknown run", _study(runs__x={"inherit": "nope"}), ["--run", "x"], "no run named 'nope'"),
    ("inherit cycle", _study(runs__a={"inherit": "b"}, runs__b={"inherit": "a"}), ["--run", "a"], "cycle"),
    ("run not a mapping", _study(runs__x=5), ["--run", "sm"], "'runs.x'"),
    ("unparsable override", None, ["--run", "sm", "--set", "train.lr=[1"], "'train.lr' is not valid YAML"),
    ("override without =", None, ["--run", "sm", "--set", "train.lr"], "key.path=value"),
    ("empty pipeline.runs", _study(pipeline__runs=[]), ["--run", "sm"], "'pipeline.runs'"),
    ("pipeline names no run", _study(pipeline__runs=["nope"]), ["--run", "sm"], "'pipeline.runs.0'"),
    (
        "run named ..",
        _study(runs__dotdot=None) | {"runs": {"..": {"method": {"name": "sm"}}}},
        ["--run", ".."],
        "'runs...'",
    ),
    ("run named -h", {**BASE, "runs": {"-h": {"method": {"name": "sm"}}}}, ["--run=-h"], "'runs.-h'"),
    ("study named ..", _study(study=".."), ["--run", "sm"], "'study'"),
    ("steps: true", _study(train__steps=True), ["--run", "sm"], "'train.steps'"),
    ("lr not a number", _study(train__lr="fast"), ["--run", "sm"], "'train.lr'"),
    ("unknown key", _study(train__lerning_rate=1.0), ["--run", "sm"], "'train.lerning_rate'"),
    ("unknown run", None, ["--run", "nope"], "no run named 'nope'"),
    ("batch over 3 processes", None, ["--run", "sm", "--set", "launch.tasks=3"], "'train.batch_size'"),
    ("SC rows below levels", None, ["--run", "sm", "--set", "method.sc_fraction=0.05"], "'method.sc_fraction'"),
    ("OT shards", None, ["--run", "ism", "--set", "method.transport.shards=3"], "'method.transport.shards'"),
    ("unknown preset", None, ["--run", "sm", "--set", "model.preset=DiT-Q/2"], "'model.preset'"),
    ("budget not a power of 2", None, ["--run", "sm", "--set", "sample.budgets=[1, 3]"], "'sample.budgets'"),
    ("budget above M", None, ["--run", "sm", "--set", "method.base_steps=64"], "'sample.budgets'"),
    ("unknown sample weights", None, ["--run", "sm", "--set", "sample.weights=slow"], "'sample.weights'"),
    ("unknown label draw", None, ["--run", "sm", "--set", "sample.labels=stratified"], "'sample.labels'"),
    ("unknown target weights", None, ["--run", "sm", "--set", "method.target_weights=x"], "'method.target_weights'"),
    ("wavelet on 2-D toys", None, ["--run", "sm", "--set", "data.dataset=checkerboard"], "'model.arch'"),
    ("negative lr", None, ["--run", "sm", "--set", "train.lr=-1"], "'train.lr'"),
    ("cuda without a GPU", None, ["--run", "sm", "--set", "train.device=cuda"], "'train.device'"),
    ("top-level list", [1, 2], ["--run", "sm"], "mapping at the top level"),
    ("not YAML", "a: [1\n", ["--run", "sm"], "is not valid YAML"),
    ("missing file", "<missing>", ["--run", "sm"], "does not exist"),
]


TRAIN_ONLY = {"cuda without a GPU"}


@pytest.mark.parametrize(("case", "study", "args", "named"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", ["train", "layout"])
def test_bad_config_stops_in_one_line_before_any_compute(
    case, study, args, named, command, tmp_path, monkeypatch, capsys
):
    if command == "layout" and case in TRAIN_ONLY:
        pytest.skip("a dry run needs no device")
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "study.yaml"
    if study is None:
        config.write_text(DEFAULT_CONFIG.read_text())
    elif study != "<missing>":
        config.write_text(study if isinstance(study, str) else yaml.safe_dump(study))
    if command == "layout":
        args = [a for a in args if a != "--run" and not a.startswith("--run=")]
        run = [a for a in args if not a.startswith("--") and "=" not in a][:1]
        args = (["--run", *run] if run and run[0] not in ("..",) else []) + [a for a in args if a not in run]
    status = main(["-q", command, "--config", str(config), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2, (case, err)
    assert len(err) == 1 and err[0].startswith("ism: error:") and named in err[0], (case, err)
    assert not [p.name for p in tmp_path.iterdir() if p.name != "study.yaml"], "nothing written"
