"""Milliseconds per training step of fm, sm, ism and ism minus each component, on the same model and batch.

    python benchmarks/train_step.py [--config config/config.yaml] [--rounds 3]

One interleaved run (machines are noisy): each round times a block of K consecutive steps of every run (K = the
sOT pool size, so each block pays for exactly one pool's assignment: the next pool is solved in the background
during the block, and whatever of it is not hidden by then is waited for inside the block), and the mean ms/step
over the rounds is reported. Next to each measured ratio run/fm stand two predictions:

- rows: a training forward+backward of B rows costs about 3 forwards of B rows; the targets add no-grad forwards
  of 2 (B_sc + B_cfg) rows (two half-steps of the self-consistency rows, plus the unconditional copies of SM's
  finest-level CFG rows) and 2 B_g rows (intrinsic guidance: c and ∅ at d = 0):
      run / fm ≈ (3 B + 2 (B_sc + B_cfg) + 2 B_g) / (3 B)
- flops: torch's FLOP counter over one whole training step of the run, over fm's.

Also printed: the share of ism's step time that sOT costs (ism vs ism-no-sot), the assignment's own time per
pool, and the model's achieved GFLOP/s against a plain fp32 matmul's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _common import count_flops, matmul_gflops
from ism.config import load_run
from ism.method.shortcut import self_consistency_levels
from ism.train import Trainer

# (label, run, overrides): every run of the default study, plus ism with the sOT solver in a background thread.
VARIANTS = [
    (run, run, [])
    for run in (
        "fm",
        "sm",
        "ism",
        "ism-no-guidance",
        "ism-no-interval",
        "ism-wavelet",
        "ism-no-sot",
        "ism-no-twin-ema",
    )
]
VARIANTS.append(("ism (sOT thread)", "ism", ["method.transport.prefetch=thread"]))
RUNS = [label for label, _, _ in VARIANTS]


def predicted_by_rows(trainer: Trainer) -> float:
    objective, method = trainer.objective, trainer.cfg.method
    batch = trainer.cfg.train.batch_size
    num_sc, num_fm = objective.split_sizes(batch)
    num_guidance = objective.guidance_rows(num_fm)
    cfg_rows = 0
    if not method.guidance.intrinsic and method.bootstrap_cfg_scale != 1.0:
        cfg_rows = int((self_consistency_levels(num_sc, method.max_level) == method.max_level - 1).sum())
    return (3 * batch + 2 * (num_sc + cfg_rows) + 2 * num_guidance) / (3 * batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    trainers = {
        label: Trainer(
            load_run(args.config, run, ["train.device=cpu", *extra]), workdir="/tmp/ism-bench", progress=False
        )
        for label, run, extra in VARIANTS
    }
    block = trainers["ism"].cfg.method.transport.pool_batches
    steps = dict.fromkeys(RUNS, 0)

    def run_block(run: str) -> float:
        start = time.perf_counter()
        for _ in range(block):
            trainers[run].train_step(steps[run])
            steps[run] += 1
        if trainers[run].pairing is not None:  # the next pool's solve belongs to this run's time, not the next's
            trainers[run].pairing.wait()
        return (time.perf_counter() - start) * 1e3 / block

    for run in RUNS:  # warm-up: one block each (also solves and prefetches the first sOT pools)
        run_block(run)
    per_round = {run: [] for run in RUNS}
    for _ in range(args.rounds):
        for run in RUNS:
            per_round[run].append(run_block(run))
    ms = {run: statistics.mean(values) for run, values in per_round.items()}

    flops = {}
    for run, trainer in trainers.items():
        flops[run] = count_flops(lambda t=trainer, r=run: t.train_step(steps[r]))
        steps[run] += 1

    ism = trainers["ism"]
    pool_start = time.perf_counter()
    ism.pairing.solve_pool(10_000)
    pool_ms = (time.perf_counter() - pool_start) * 1e3
    for trainer in trainers.values():
        if trainer.pairing is not None:
            trainer.pairing.close()

    fm = trainers["fm"]
    batch = fm.cfg.train.batch_size
    x, y = fm.x_train[:batch], fm.y_train[:batch]
    forward = count_flops(lambda: fm.model(x, torch.rand(batch), torch.full((batch,), 7), y))
    achieved = 3 * forward / (ms["fm"] * 1e-3) / 1e9
    peak = matmul_gflops()

    params = sum(p.numel() for p in fm.model.parameters())
    print(
        f"model: {fm.cfg.model.arch} hidden {fm.cfg.model.hidden_size} depth {fm.cfg.model.depth} "
        f"({params / 1e6:.2f} M params), batch {batch}, sample shape {tuple(fm.data.sample_shape)}, "
        f"threads {args.threads}; mean of {args.rounds} blocks of {block} steps per run"
    )
    print(f"{'run':18s} {'ms/step':>8s} {'run/fm':>7s} {'rows':>6s} {'flops':>6s}")
    for run in RUNS:
        print(
            f"{run:18s} {ms[run]:8.1f} {ms[run] / ms['fm']:7.3f} {predicted_by_rows(trainers[run]):6.3f} "
            f"{flops[run] / flops['fm']:6.3f}"
        )
    pool = ism.cfg.method.transport.pool_batches * batch
    for label in ("ism", "ism (sOT thread)"):
        share = (ms[label] - ms["ism-no-sot"]) / ms[label]
        print(f"sOT share of the step time, {label}: {share * 100:+.1f}% (vs ism-no-sot)")
    print(f"one {pool}x{pool} exact assignment: {pool_ms:.0f} ms = {pool_ms / block:.1f} ms per step")
    print(
        f"forward {forward / 1e9:.3f} GFLOP; fm step achieves {achieved:.1f} GFLOP/s "
        f"= {achieved / peak:.2f} of a 1024^3 fp32 matmul ({peak:.1f} GFLOP/s)"
    )


if __name__ == "__main__":
    main()
