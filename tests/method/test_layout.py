"""The step layout is built once for the global batch (DESIGN D9): the ImageNet study's per-level rows at world
sizes 1, 8 and 32 are the release's, the ranks' shards are exactly the global rows, rows computed per shard
equal the single-process rows, and configs that cannot hold the layout stop before any job."""

import subprocess
import sys

import pytest
import torch

from ism.config import ConfigError, load_run
from ism.layout_check import check_run, global_layout
from ism.method.shortcut import GUIDANCE, SELF_CONSISTENCY, VELOCITY, ShortcutObjective
from ism.models import build_model

from ..conftest import REPO, tiny_run

IMAGENET = REPO / "config" / "imagenet256.yaml"
# The release's level split for B = 256 (METHOD.md §A3): B_sc = 32, 4 rows for each of k = 6..1, 8 for k = 0.
RELEASE_SM = {"sc": {6: 4, 5: 4, 4: 4, 3: 4, 2: 4, 1: 4, 0: 8}, "fm": {7: 224}}


def _world(nodes: int, gpus: int) -> list[str]:
    return [f"launch.nodes={nodes}", f"launch.gpus_per_node={gpus}"]


@pytest.mark.parametrize(("nodes", "gpus"), [(1, 1), (1, 8), (4, 8)])
def test_imagenet_layout_has_the_release_rows_at_every_world_size(nodes, gpus):
    cfg = load_run(IMAGENET, "sm", _world(nodes, gpus))
    assert cfg.world_size == nodes * gpus
    layout = global_layout(cfg)
    assert layout.level_counts() == RELEASE_SM
    shards = [layout.shard(r, cfg.world_size) for r in range(cfg.world_size)]
    assert sorted(torch.cat([s.source for s in shards]).tolist()) == list(range(256))
    for field in ("role", "k", "t"):  # each row keeps its global values on whichever rank trains it
        gathered = torch.empty_like(getattr(layout, field))
        for r, s in enumerate(shards):
            gathered[r :: cfg.world_size] = getattr(s, field)
        assert torch.equal(gathered, getattr(layout, field))
    # What the per-process construction did on 8 GPUs: 32 local rows, B_sc = 4 < 7 levels, all of them at k = 0.
    per_process = ShortcutObjective(cfg.method, 1000).layout(256 // 8, torch.Generator().manual_seed(0))
    assert per_process.level_counts()["sc"] == {0: 4}


def test_ism_layout_at_32_gpus_keeps_every_level_and_role():
    cfg = load_run(IMAGENET, "ism")
    assert cfg.world_size == 32
    counts = global_layout(cfg).level_counts()
    assert set(counts["sc"]) == set(range(7)) and sum(counts["sc"].values()) == 64
    assert counts["fm"] == {7: 96} and counts["guidance"] == {7: 96}


def _tiny_dit():
    torch.manual_seed(0)
    return build_model(
        "dit",
        sample_shape=(1, 8, 8),
        num_classes=10,
        hidden_size=32,
        depth=2,
        num_heads=2,
        level_embedding=True,
        guidance_embedding=True,
    )


@pytest.mark.parametrize("run", ["sm", "ism"])
@pytest.mark.parametrize("world_size", [2, 4])
def test_rows_built_per_shard_are_the_single_process_rows(run, world_size):
    cfg = tiny_run(run)
    objective = ShortcutObjective(cfg.method, num_classes=10)
    model = _tiny_dit().eval()
    x1 = torch.randn(28, 1, 8, 8, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    y = torch.arange(28) % 10
    layout = objective.layout(28, torch.Generator().manual_seed(5), noise_shape=(1, 8, 8))
    single = objective.rows(model, layout, x1[layout.source], y[layout.source])
    assert {GUIDANCE, SELF_CONSISTENCY, VELOCITY} >= set(single.role.tolist())
    for rank in range(world_size):
        shard = layout.shard(rank, world_size)
        rows = objective.rows(model, shard, x1[shard.source], y[shard.source])
        for field in ("x_t", "t", "k", "y", "w", "target", "role"):
            a, b = getattr(rows, field), getattr(single, field)
            if a is None:
                assert b is None
                continue
            torch.testing.assert_close(a, b[rank::world_size], rtol=1e-5, atol=1e-6, msg=f"{field} rank {rank}")


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["train.batch_size=250", *_world(1, 8)], "train.batch_size"),  # 250 rows do not split over 8 GPUs
        (["train.batch_size=48", "method.sc_fraction=0.125"], "method.sc_fraction"),  # B_sc = 6 < 7 levels
        (["method.transport.enabled=true", "method.transport.shards=3"], "method.transport.shards"),
    ],
)
def test_configs_that_cannot_hold_the_layout_stop_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        load_run(IMAGENET, "sm", overrides)


def _layout_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "ism.cli", "layout", "--config", str(IMAGENET), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )


def test_layout_dry_run_of_the_imagenet_study_passes_and_prints_the_levels():
    result = _layout_cli()
    assert result.returncode == 0, result.stderr
    assert "sm: batch 256 over 8 process(es) (32 rows each)" in result.stdout
    assert "k=6: 4, k=5: 4, k=4: 4, k=3: 4, k=2: 4, k=1: 4, k=0: 8" in result.stdout
    assert "CFG 1.5 inside the targets of 4 finest-level rows" in result.stdout
    assert "ism: batch 256 over 32 process(es) (8 rows each)" in result.stdout


@pytest.mark.parametrize(
    ("run", "override", "defect"),
    [
        ("sm", "method.bootstrap_cfg_scale=1.0", "bootstrap_cfg_scale is 1"),  # the old ImageNet value
        ("ism", "model.attention_scale=head_dim", "preset SiT-XL/2 uses 'sqrt_head_dim'"),  # the old inheritance
        ("ism", "model.block_modulation_init=xavier", "preset SiT-XL/2 uses 'zero'"),
    ],
)
def test_layout_dry_run_fails_on_the_old_defects(run, override, defect):
    result = _layout_cli("--run", run, "--set", override)
    assert result.returncode == 1 and defect in result.stderr, result.stderr


def test_checks_see_a_missing_level_when_validation_is_bypassed():
    cfg = load_run(IMAGENET, "sm")
    broken = cfg.model_copy(update={"train": cfg.train.model_copy(update={"batch_size": 32})})
    assert any("levels [1, 2, 3, 4, 5, 6] get no rows" in p for p in check_run(broken).problems)
