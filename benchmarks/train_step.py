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

    python benchmarks/train_step.py --ceiling [--threads 1] [--rounds 5]

instead measures fm, sm and ism against their model-shape GEMM ceiling: every matmul one training step runs
(aten mm/addmm/bmm of the forward passes, the targets' no-grad forwards and the backward, as recorded by a
dispatch mode) is replayed as bare calls on operands of the same shapes and strides, at the same thread count and
interleaved with the steps. ceiling = GEMM FLOPs / replay time; step GFLOP/s = the same FLOPs / step time; their
ratio (replay time / step time) is the share of the step that the GEMMs it must do would take alone. Each run is
timed with the default AdamW and with ``train.fused_adamw=true``. (Attention runs as one fused SDPA kernel and
the patch embedding as a convolution: neither is in the GEMM list, so their time counts as overhead.)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _common import GemmRecorder, count_flops, interleaved_ms, matmul_gflops
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


def gemm_ceiling(args: argparse.Namespace) -> None:
    """fm, sm and ism steps (default and fused AdamW) against the bare GEMMs of their own step."""
    variants = {
        f"{run}{label}": Trainer(
            load_run(args.config, run, ["train.device=cpu", *extra]), workdir="/tmp/ism-bench", progress=False
        )
        for run in ("fm", "sm", "ism")
        for label, extra in (("", []), (" fused", ["train.fused_adamw=true"]))
    }
    block = variants["ism"].cfg.method.transport.pool_batches
    steps = dict.fromkeys(variants, 0)
    update_s = {name: {"AdamW": 0.0, "EMA": 0.0} for name in variants}
    for name, trainer in variants.items():  # time the optimizer and the EMA updates inside the steps
        trainer.optimizer.step = timed(trainer.optimizer.step, update_s[name], "AdamW")
        for ema in trainer.emas.values():
            ema.update = timed(ema.update, update_s[name], "EMA")

    def steps_block(name: str):
        def run_block() -> None:
            for _ in range(block):
                variants[name].train_step(steps[name])
                steps[name] += 1
            if variants[name].pairing is not None:
                variants[name].pairing.wait()

        return run_block

    gemms = {}
    for name in ("fm", "sm", "ism"):
        steps_block(name)()  # warm-up, and past the first sOT pool
        recorder = GemmRecorder()
        with recorder:
            variants[name].train_step(steps[name])
        steps[name] += 1
        gemms[name] = recorder

    def replay_block(name: str):
        replay = gemms[name].replayer()

        def run_block() -> None:
            for _ in range(block):
                replay()

        return run_block

    functions = {name: steps_block(name) for name in variants}
    functions |= {f"{name} GEMMs": replay_block(name) for name in gemms}
    counted = dict(steps)
    update_s = {name: dict.fromkeys(parts, 0.0) for name, parts in update_s.items()}  # from here on
    for name, trainer in variants.items():
        trainer.optimizer.step.seconds = update_s[name]
        for ema in trainer.emas.values():
            ema.update.seconds = update_s[name]
    ms = {name: value / block for name, value in interleaved_ms(functions, args.rounds, warmup=1).items()}
    for trainer in variants.values():
        if trainer.pairing is not None:
            trainer.pairing.close()

    print(f"threads {args.threads}; median of {args.rounds} interleaved blocks of {block} steps (or GEMM replays) each")
    header = ("ms/step", "GEMMs", "GFLOP", "step GFLOP/s", "ceiling", "ratio", "AdamW ms", "EMA ms")
    print(f"{'run':10s} " + " ".join(f"{h:>{max(6, len(h))}s}" for h in header))
    for name in variants:
        run = name.split()[0]
        flops = gemms[run].flops
        replay_ms = ms[f"{run} GEMMs"]
        step_rate, ceiling = flops / (ms[name] * 1e-3) / 1e9, flops / (replay_ms * 1e-3) / 1e9
        print(
            f"{name:10s} {ms[name]:7.1f} {len(gemms[run].calls):6d} {flops / 1e9:6.2f} {step_rate:12.1f} "
            f"{ceiling:7.1f} {step_rate / ceiling:6.3f} "
            + " ".join(f"{seconds * 1e3 / (steps[name] - counted[name]):8.1f}" for seconds in update_s[name].values())
        )
    for run in gemms:
        print(f"{run}: the step's GEMMs replayed alone take {ms[f'{run} GEMMs']:.1f} ms")
    print("where a step's time goes (torch profiler, self CPU time of 4 steps; the profiler adds its own overhead):")
    families = [*FAMILIES, "other"]
    print(f"{'run':10s} " + " ".join(f"{f:>9s}" for f in families))
    for run in gemms:
        shares = step_breakdown(variants[run], steps[run], 4)
        steps[run] += 4
        print(f"{run:10s} " + " ".join(f"{shares[f] * 100:8.1f}%" for f in families))


# Operator families of a training step's profile (aten op names; first match wins).
FAMILIES = {
    "GEMM": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "attention": ("aten::_scaled_dot_product",),
    "GELU": ("aten::gelu",),
    "LayerNorm": ("aten::native_layer_norm",),
    "copies": ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::cat", "aten::index", "aten::fill_"),
    "AdamW+EMA": ("aten::lerp_", "aten::mul_", "aten::addcmul_", "aten::addcdiv_", "aten::sqrt", "aten::_fused_adamw"),
    "elementwise": ("aten::mul", "aten::add", "aten::sub", "aten::div", "aten::silu", "aten::sum", "aten::pow"),
}


def step_breakdown(trainer: Trainer, first_step: int, count: int) -> dict[str, float]:
    """Shares of the profiled self CPU time of ``count`` steps per operator family."""
    from torch.profiler import profile

    with profile() as prof:
        for step in range(first_step, first_step + count):
            trainer.train_step(step)
    totals = dict.fromkeys([*FAMILIES, "other"], 0.0)
    for event in prof.key_averages():
        family = next((f for f, prefixes in FAMILIES.items() if event.key.startswith(prefixes)), "other")
        totals[family] += event.self_cpu_time_total
    whole = sum(totals.values())
    return {family: value / whole for family, value in totals.items()}


def timed(function, seconds: dict[str, float], part: str):
    """``function``, adding its wall time to ``seconds[part]`` (the dict can be swapped via ``.seconds``)."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            wrapper.seconds[part] += time.perf_counter() - start

    wrapper.seconds = seconds
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ceiling", action="store_true", help="fm/sm/ism against their model-shape GEMM ceiling")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.ceiling:
        gemm_ceiling(args)
        return

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
