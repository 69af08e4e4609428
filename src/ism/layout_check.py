"""Dry-run check of a study's training step at its cluster scale: the global row layout per level, each rank's
share, and the defects that would train the wrong objective without any error (``ism layout``).

Checked for every run, with the world size from its ``launch`` section (nodes x tasks per node):
- the self-consistency rows hold every level k = 0 … log2 M − 1 in the *global* layout (METHOD.md §A3);
- SM-style targets with CFG (``method.bootstrap_cfg_scale`` ≠ 1) have finest-level rows to apply it to, and a run
  that samples with CFG puts it into its targets as the release does (bootstrap_cfg = 1 means cfg_scale, §A4);
- the rows split evenly over the ranks, and the ranks' shards together are the global layout (DESIGN D9);
- a backbone preset keeps its own paper's attention scale and block-modulation init (config.py presets).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ism.config import DIT_PRESETS, RunConfig
from ism.method.shortcut import ROLE_NAMES, SELF_CONSISTENCY, ShortcutObjective, StepLayout
from ism.runtime import step_generator


@dataclass
class LayoutReport:
    run: str
    world_size: int
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def global_layout(cfg: RunConfig, step: int = 0) -> StepLayout:
    """Step ``step``'s layout for the global batch (noise omitted), as every rank draws it."""
    objective = ShortcutObjective(cfg.method, num_classes=1)
    return objective.layout(cfg.train.batch_size, step_generator(torch.device("cpu"), cfg.train.seed, step))


def check_run(cfg: RunConfig) -> LayoutReport:
    m, world = cfg.method, cfg.world_size
    report = LayoutReport(cfg.name, world)
    layout = global_layout(cfg)
    counts = layout.level_counts()
    report.lines.append(
        f"{cfg.name}: batch {cfg.train.batch_size} over {world} process(es) ({len(layout) // max(world, 1)} rows each)"
    )
    for role, per_level in counts.items():
        cells = ", ".join(f"k={k}: {n}" for k, n in per_level.items())
        report.lines.append(f"  {role:<9} {sum(per_level.values()):>5} rows  {cells}")
    sc_counts = counts.get(ROLE_NAMES[SELF_CONSISTENCY], {})
    sc_levels = set(sc_counts)
    if m.effective_sc_fraction > 0 and sc_levels != set(range(m.max_level)):
        missing = sorted(set(range(m.max_level)) - sc_levels)
        report.problems.append(f"{cfg.name}: self-consistency levels {missing} get no rows (method.sc_fraction)")
    finest = sc_counts.get(m.max_level - 1, 0)
    sm_targets = m.effective_sc_fraction > 0 and not m.guidance.intrinsic
    if sm_targets and m.bootstrap_cfg_scale != 1.0:
        report.lines.append(f"  CFG {m.bootstrap_cfg_scale} inside the targets of {finest} finest-level rows")
        if finest == 0:
            report.problems.append(f"{cfg.name}: no finest-level rows carry the bootstrap CFG")
    if sm_targets and m.bootstrap_cfg_scale == 1.0 and cfg.sample.cfg_scale != 1.0 and m.class_dropout > 0:
        report.problems.append(
            f"{cfg.name}: method.bootstrap_cfg_scale is 1 but the run samples with CFG {cfg.sample.cfg_scale}: "
            "the release's bootstrap_cfg=1 puts cfg_scale into the finest-level targets (set it to "
            f"{cfg.sample.cfg_scale})"
        )
    if len(layout) % world:
        report.problems.append(f"{cfg.name}: {len(layout)} rows do not split over {world} processes")
    else:
        shards = [layout.shard(r, world) for r in range(world)]
        union = torch.cat([s.source for s in shards]).sort().values
        if not torch.equal(union, layout.source.sort().values):
            report.problems.append(f"{cfg.name}: the ranks' shards are not the global layout")
        sc_per_rank = sorted({int((s.role == SELF_CONSISTENCY).sum()) for s in shards})
        report.lines.append(f"  self-consistency rows per rank: {sc_per_rank}")
    report.problems += preset_problems(cfg)
    return report


def preset_problems(cfg: RunConfig) -> list[str]:
    """A preset's architecture keys that the resolved run overrides (e.g. SiT inheriting the SM release's)."""
    preset = cfg.model.preset
    if preset is None:
        return []
    return [
        f"{cfg.name}: model.{key} is '{getattr(cfg.model, key)}' but preset {preset} uses '{value}' "
        "(set the preset's value, or choose a preset of the paper you follow)"
        for key, value in DIT_PRESETS[preset].items()
        if key in ("attention_scale", "block_modulation_init") and getattr(cfg.model, key) != value
    ]
