"""Config validation: one line naming the key, before any compute; the exported schema agrees."""

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from ism.config import (
    ConfigError,
    RunConfig,
    classifier_source,
    load_run,
    load_yaml,
    resolve_run,
    run_config_from_json,
    study_json_schema,
    training_identity,
    validate_study,
)
from ism.naming import training_workdir

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "config" / "config.yaml"


def _study():
    return yaml.safe_load(DEFAULT.read_text())


def test_default_study_validates_and_every_run_resolves():
    study = validate_study(_study())
    for run in study.runs:
        cfg = resolve_run(_study(), run)
        assert cfg.name == run
    fm = load_run(DEFAULT, "fm")
    assert fm.method.effective_sc_fraction == 0.0 and not fm.method.uses_levels
    sm = load_run(DEFAULT, "sm")
    assert sm.method.effective_sc_fraction == 0.25 and sm.method.uses_levels and sm.method.max_level == 7


@pytest.mark.parametrize(
    ("override", "key", "words"),
    [
        ("sample.budgets=[1, 3]", "sample.budgets", "not a power of two"),
        ("train.lr=fast", "train.lr", "number"),
        ("train.lrr=0.1", "train.lrr", "unknown key"),
        ("method.base_steps=96", "method.base_steps", "power of two"),
        ("method.target_weights=slow", "method.target_weights", "neither 'online' nor an EMA"),
        ("sample.budgets=[1, 256]", "sample.budgets", "exceed method.base_steps"),
        ("model.arch=mlp", "model.arch", "does not fit dataset"),
        ("data.test_fraction=1.5", "data.test_fraction", "less than 1"),
        ("train.device=tpu", "train.device", "not one of"),
        ("model.preset=DiT-Q/2", "model.preset", "unknown"),
    ],
)
def test_bad_values_are_rejected_with_the_key_named(override, key, words):
    with pytest.raises(ConfigError) as info:
        load_run(DEFAULT, "sm", [override])
    message = str(info.value)
    assert "\n" not in message
    assert key in message and words in message


def test_unknown_run_and_missing_file():
    with pytest.raises(ConfigError, match="no run named 'ism2'"):
        load_run(DEFAULT, "ism2")
    with pytest.raises(ConfigError, match="does not exist"):
        load_run(REPO / "config" / "nope.yaml", "sm")


def test_bad_top_level_key_is_named(tmp_path):
    bad = _study() | {"trian": {"steps": 5}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="'trian': unknown key"):
        load_run(path, "sm")


def test_run_overrides_merge_deeply():
    study = _study()
    study["runs"]["sm-fast"] = {
        "train": {"ema": {"target": {"decay": 0.95}}},
        "method": {"sc_fraction": 0.125},
    }
    cfg = resolve_run(study, "sm-fast")
    assert cfg.train.ema["target"].decay == 0.95
    assert cfg.train.ema["target"].warmup is True, "sibling keys of an override survive"
    assert cfg.method.sc_fraction == 0.125 and cfg.train.steps == study["train"]["steps"]


def test_preset_fills_sizes_and_explicit_keys_win():
    cfg = RunConfig.model_validate({"model": {"preset": "DiT-B/2"}})
    assert (cfg.model.hidden_size, cfg.model.depth, cfg.model.num_heads) == (768, 12, 12)
    cfg = RunConfig.model_validate({"model": {"preset": "DiT-B/2", "depth": 2}})
    assert cfg.model.depth == 2 and cfg.model.hidden_size == 768


def test_config_round_trips_through_json():
    cfg = load_run(DEFAULT, "sm", ["train.steps=7"])
    assert run_config_from_json(cfg.model_dump_json()) == cfg


def test_exported_schema_accepts_the_default_and_rejects_bad_keys():
    schema = study_json_schema()
    jsonschema.validate(_study(), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_study() | {"trian": {}}, schema)
    bad = _study()
    bad["train"]["batch_size"] = "big"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_runs_inherit_from_other_runs():
    study = _study()
    study["runs"] |= {"a": {"inherit": "sm", "train": {"lr": 0.01}}, "b": {"inherit": "a", "train": {"seed": 3}}}
    cfg = resolve_run(study, "b")
    assert (cfg.train.lr, cfg.train.seed, cfg.method.name) == (0.01, 3, "sm")
    study["runs"] |= {"c": {"inherit": "d"}, "d": {"inherit": "c"}}
    with pytest.raises(ConfigError, match="inheritance cycle c -> d -> c"):
        resolve_run(study, "c")
    study["runs"]["e"] = {"inherit": "nope"}
    with pytest.raises(ConfigError, match="no run named 'nope' \\(inherited by 'e'\\)"):
        resolve_run(study, "e")


def test_wavelet_levels_must_fit_the_image_before_any_compute():
    """MNIST's 28x28 halves exactly twice: more levels are refused at load time, naming the key (they failed
    inside the training job before); the default (null) takes the two that fit."""
    mnist = REPO / "config" / "mnist.yaml"
    assert load_run(mnist, "ism").method.wavelet.levels is None
    with pytest.raises(ConfigError, match=r"'method\.wavelet\.levels': 3 level\(s\) of 'haar' do not fit the 28x28"):
        load_run(mnist, "ism", ["method.wavelet.levels=3"])
    with pytest.raises(ConfigError, match=r"at most 3"):
        load_run(DEFAULT, "ism-wavelet", ["method.wavelet.levels=4"])
    # One weight per level, also checked before any compute (it failed inside the training job before).
    with pytest.raises(
        ConfigError, match=r"'method\.wavelet\.level_weights': 2 weight\(s\) for 3 level\(s\) of the 8x8"
    ):
        load_run(DEFAULT, "ism-wavelet", ["method.wavelet.level_weights=[1, 0.5]"])
    assert (
        load_run(DEFAULT, "ism-wavelet", ["method.wavelet.level_weights=[1, 0.5, 0.25]"]).method.wavelet.levels is None
    )


def test_pad_to_grows_the_image_for_every_size_check_and_is_refused_where_it_cannot_apply():
    """data.pad_to: MNIST padded to 32x32 allows 5 wavelet levels and patches of 8, checked at load time; it is for
    the embedded sets only and cannot shrink them. Unset, it is left out of the training identity (folders keep
    their digests)."""
    mnist = REPO / "config" / "mnist.yaml"
    padded = load_run(mnist, "ism", ["data.pad_to=32", "method.wavelet.levels=5", "model.patch_size=8"])
    assert padded.data.side == 32 and padded.method.wavelet.levels == 5
    with pytest.raises(ConfigError, match=r"'method\.wavelet\.levels': 6 level\(s\) of 'haar' do not fit the 32x32"):
        load_run(mnist, "ism", ["data.pad_to=32", "method.wavelet.levels=6"])
    with pytest.raises(ConfigError, match=r"'data\.pad_to'.*smaller than the 28x28 'mnist5k' images"):
        load_run(mnist, "ism", ["data.pad_to=16"])
    with pytest.raises(ConfigError, match=r"'data\.pad_to'.*only the embedded image sets"):
        load_run(DEFAULT, "fm", ["data.dataset=checkerboard", "model.arch=mlp", "data.pad_to=8"])
    native = load_run(mnist, "ism")
    assert "pad_to" not in training_identity(native)["data"]
    assert training_identity(padded)["data"]["pad_to"] == 32
    # The committed digits classifier embeds 8x8 images only: padded digits train the study's own.
    study = _study()
    assert classifier_source(validate_study(study))[1] == "committed"
    study["data"]["pad_to"] = 16
    assert classifier_source(validate_study(study)) == (Path("models/classifier-digits.pt"), "built")


def test_ism_component_rules():
    with pytest.raises(ConfigError, match=r"'method\.wavelet\.enabled': the wavelet loss needs images"):
        load_run(DEFAULT, "ism-wavelet", ["data.dataset=checkerboard", "model.arch=mlp"])
    with pytest.raises(ConfigError, match=r"cannot be combined with method\.release_slicing"):
        load_run(DEFAULT, "ism", ["method.release_slicing=true"])
    with pytest.raises(ConfigError, match=r"'method\.wavelet\.name'.*not an orthogonal"):
        load_run(DEFAULT, "ism", ["method.wavelet.name=bior2.2"])


@pytest.mark.parametrize(
    ("pipeline", "key", "words"),
    [
        ({"resources": {"sample": {"gpus": -1}}}, "pipeline.resources.sample.gpus", "greater than or equal to 0"),
        ({"resources": {"sample": {"mem_mb": "lots"}}}, "pipeline.resources.sample.mem_mb", "integer"),
        ({"resources": {"train": {"cpus": 4}}}, "pipeline.resources.train", "unknown key"),
        ({"threads": 8}, "pipeline.threads", "unknown key"),  # now pipeline.resources.<step>.cpus
    ],
)
def test_job_resources_are_validated_with_the_key_named(pipeline, key, words):
    study = _study()
    study["pipeline"] = {**study.get("pipeline", {}), **pipeline}
    with pytest.raises(ConfigError, match=rf"config key '{re.escape(key)}': .*{words}"):
        validate_study(study)


def test_job_resources_default_to_a_small_cpu_job_and_the_imagenet_study_asks_for_gpus():
    jobs = validate_study(_study()).pipeline.resources
    assert (jobs.evaluate.cpus, jobs.evaluate.gpus, jobs.evaluate.mem_mb) == (1, 0, 2000)
    imagenet = validate_study(load_yaml(DEFAULT.with_name("imagenet256.yaml"))).pipeline.resources
    assert all(getattr(imagenet, step).gpus == 1 for step in ("encode", "reference", "sample", "evaluate"))


def test_seeds_make_one_run_per_seed_that_differs_only_in_its_training_seed():
    from ism.config import pipeline_runs, training_identity
    from ism.naming import training_workdir

    study = _study()
    study["pipeline"] |= {"runs": ["sm", "ism"], "seeds": [0, 2]}
    assert pipeline_runs(validate_study(study)) == ["sm-seed0", "sm-seed2", "ism-seed0", "ism-seed2"]
    ism, seed2 = resolve_run(study, "ism"), resolve_run(study, "ism-seed2")
    assert (seed2.name, seed2.train.seed) == ("ism-seed2", 2)
    assert seed2.model_dump(exclude={"name", "train"}) == ism.model_dump(exclude={"name", "train"})
    assert seed2.train.model_dump(exclude={"seed"}) == ism.train.model_dump(exclude={"seed"})
    # Seed 0 is the run as the study defines it: same training identity, same folder, its checkpoints reused.
    assert training_identity(resolve_run(study, "ism-seed0")) == training_identity(ism)
    assert training_workdir(resolve_run(study, "ism-seed0")) == training_workdir(ism)
    assert training_workdir(seed2) != training_workdir(ism)
    # A command-line override still wins over the seed the name gives.
    assert resolve_run(study, "ism-seed2", ["train.seed=7"]).train.seed == 7
    with pytest.raises(ConfigError, match="no run named 'nope-seed1'"):
        resolve_run(study, "nope-seed1")


@pytest.mark.parametrize(
    ("pipeline", "runs", "message"),
    [
        ({"seeds": [0, 0]}, {}, r"'pipeline.seeds': \[0, 0\] is not a non-empty list of distinct seeds"),
        ({"seeds": []}, {}, r"'pipeline.seeds': \[\] is not a non-empty list"),
        ({"seeds": [-1]}, {}, r"'pipeline.seeds'"),
        ({"runs": ["sm", "sm-seed1"], "seeds": [1]}, {"sm-seed1": {"inherit": "sm"}}, r"'runs.sm-seed1': with"),
    ],
)
def test_bad_seeds_are_named(pipeline, runs, message):
    study = _study()
    study["pipeline"] |= pipeline
    study["runs"] |= runs
    with pytest.raises(ConfigError, match=message):
        validate_study(study)


def test_paper_numbers_name_a_run_and_give_one_fid_per_budget():
    study = _study() | {"paper": {"budgets": [1, 4], "fid": {"ism": [9.62, 3.17]}, "source": "iSM Table 5"}}
    assert validate_study(study).paper.fid == {"ism": [9.62, 3.17]}
    with pytest.raises(ConfigError, match=r"'paper.fid.ism': 1 values for 2 budgets"):
        validate_study(study | {"paper": {"budgets": [1, 4], "fid": {"ism": [9.62]}}})
    with pytest.raises(ConfigError, match=r"'paper.fid.ism-ig': no run named 'ism-ig'"):
        validate_study(study | {"paper": {"budgets": [1], "fid": {"ism-ig": [9.62]}}})


def test_wavelet_weighting_defaults_to_fine_rising_and_band_mean_keeps_old_digests():
    """The default form changed after the seeded ablation: a run that asks for band_mean (the form before the switch
    existed) keeps its training identity; the new default is another objective, so another identity."""
    fine = load_run(DEFAULT, "ism-wavelet")
    band = load_run(DEFAULT, "ism-wavelet", ["method.wavelet.weighting=band_mean"])
    assert fine.method.wavelet.weighting == "fine_rising"
    assert "weighting" not in training_identity(band)["method"]["wavelet"]
    assert training_identity(fine)["method"]["wavelet"]["weighting"] == "fine_rising"
    assert load_run(REPO / "config" / "imagenet256.yaml", "ism").method.wavelet.weighting == "fine_rising"


@pytest.mark.parametrize(
    "study, digests",
    [
        ("config.yaml", {"fm": "d0b9760f241c8cfa", "sm": "e721ed1bfe0717b6", "ism": "5ff8fe1262c711f4"}),
        ("mnist.yaml", {"fm": "fee2bf88f079cf2f", "sm": "6655a30631e5a849", "ism": "1ded39cb3ea7af3d"}),
    ],
)
def test_committed_studies_keep_their_training_folders(study, digests):
    """A new config key must not move the folder of a run that does not use it: users' checkpoints would retrain.
    These are the digests the studies trained under before the wavelet form became a key (fine_rising moved every
    run's digest, wavelet loss or not, until the form of an unused loss left the identity)."""
    path = REPO / "config" / study
    assert {run: training_workdir(load_run(path, run)).name for run in digests} == digests


def test_the_form_of_an_unused_wavelet_loss_is_not_part_of_the_identity():
    plain = training_identity(load_run(DEFAULT, "sm"))
    for override in ("method.wavelet.weighting=band_mean", "method.wavelet.distance=absolute"):
        assert training_identity(load_run(DEFAULT, "sm", [override])) == plain
    on = training_identity(load_run(DEFAULT, "sm", ["method.wavelet.enabled=true"]))
    assert on["method"]["wavelet"]["weighting"] == "fine_rising"


def test_a_checkpoint_older_than_a_key_reads_back_with_the_behaviour_it_trained_with():
    """A wavelet run saved before method.wavelet.weighting existed trained with per-band means: it must resume
    under ``weighting: band_mean`` (the form it had), and be refused under the new default."""
    cfg = load_run(DEFAULT, "ism-wavelet", ["method.wavelet.weighting=band_mean"])
    stored = json.loads(cfg.model_dump_json())
    del stored["method"]["wavelet"]["weighting"], stored["train"]["lr_schedule"], stored["data"]["pad_to"]
    old = run_config_from_json(json.dumps(stored))
    assert old == cfg
    assert training_identity(old) != training_identity(load_run(DEFAULT, "ism-wavelet"))


def test_a_sampling_key_added_at_its_default_leaves_the_sampling_key_as_it_was():
    """sample.labels came after studies had sampled: at 'uniform' it is left out, so their files stay up to date."""
    from ism.config import SampleConfig, without_new_defaults

    dump = SampleConfig().model_dump(mode="json")
    assert "labels" not in without_new_defaults(dict(dump), ("sample",))
    assert without_new_defaults(dict(dump, labels="balanced"), ("sample",))["labels"] == "balanced"
