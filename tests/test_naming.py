"""Samples file names: one format for the sampler, the workflow's targets and the report."""

import pytest

from ism.naming import parse_sample_name, sample_name, sample_names, seeded_run, shard_name, split_seeded_run

from .conftest import tiny_run


@pytest.mark.parametrize(
    ("steps", "w", "name"),
    [
        (1, None, "steps1"),
        (128, None, "steps128"),
        (4, 0.0, "steps4-w0"),
        (4, 1.5, "steps4-w1.5"),
        (2, 1.0, "steps2-w1"),
    ],
)
def test_a_name_reads_back_as_its_budget_and_guidance_scale(steps, w, name):
    assert sample_name(steps, w) == name
    assert parse_sample_name(name) == (steps, w)


@pytest.mark.parametrize("name", ["steps", "steps4-w", "steps4-w1.5.npz", "step4", "steps4-x1", "steps-1"])
def test_other_names_are_refused(name):
    with pytest.raises(ValueError, match="not a samples file name"):
        parse_sample_name(name)


def test_a_run_has_one_file_per_budget_and_guidance_scale():
    assert sample_names(tiny_run("sm", "sample.budgets=[1,4]")) == ["steps1", "steps4"]
    ism = tiny_run("ism", "sample.budgets=[1,4]", "sample.guidance=[0.5,1]")
    assert sample_names(ism) == ["steps1-w0.5", "steps1-w1", "steps4-w0.5", "steps4-w1"]
    assert sample_names(tiny_run("sm", "sample.guidance=[0.5,1]", "sample.budgets=[2]")) == ["steps2"]


def test_shard_names_number_shards_with_five_digits():
    assert shard_name("steps4-w0.5", 3, 16) == "steps4-w0.5.shard-00003-of-00016"


@pytest.mark.parametrize(
    ("name", "split"),
    [("ism-seed2", ("ism", 2)), ("ism-no-sot-seed10", ("ism-no-sot", 10)), ("ism", ("ism", None))],
)
def test_a_seeded_run_name_reads_back_as_its_run_and_seed(name, split):
    assert split_seeded_run(name) == split
    if split[1] is not None:
        assert seeded_run(*split) == name
