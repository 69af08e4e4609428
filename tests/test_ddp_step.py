"""One training step at any world size: W data-parallel processes (gloo) take exactly the single-process step.

The step's layout (roles, levels, t, w, label dropout, noise) is drawn for the global batch; each rank trains
its shard (DESIGN D9). Checked through the real Trainer under DDP: the global loss and per-role losses, and the
gradients after DDP's all-reduce, equal the single-process values to float tolerance, for SM (with the
finest-level CFG rows) and for iSM (intrinsic guidance, sharded class-wise sOT).
"""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ism.train import Trainer

from .conftest import tiny_run

# iSM also under a learning-rate schedule (warm-up, then cosine): every rank updates with step t's rate.
ISM = (
    "ism",
    "method.transport.shards=2",
    "method.transport.pool_batches=2",
    "train.steps=4",
    "train.warmup_steps=1",
    "train.lr_schedule=cosine",
)
RUNS = {"sm": ("sm",), "ism": ISM}


def _two_steps(cfg, workdir) -> dict:
    """Loss logs and (all-reduced) gradients of steps 0 and 1 (the second uses the EMA/online targets after an
    update), then the weights."""
    trainer = Trainer(cfg, workdir=workdir, progress=False)
    out = {"logs": [], "grads": []}
    for step in (0, 1):
        logs = trainer.train_step(step)
        out["logs"].append({k: float(v) for k, v in logs.items()})
        out["grads"].append([p.grad.detach().clone() for p in trainer.model.parameters()])
    out["weights"] = [p.detach().clone() for p in trainer.model.parameters()]
    return out


def _worker(rank: int, world_size: int, run: tuple[str, ...], init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        cfg = tiny_run(*run, f"launch.tasks={world_size}")
        result = _two_steps(cfg, os.path.join(os.path.dirname(out_file), f"w{rank}"))
        if rank == 0:
            torch.save(result, out_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", sorted(RUNS))
def test_data_parallel_step_equals_the_single_process_step(name, tmp_path):
    torch.set_num_threads(1)
    single = _two_steps(tiny_run(*RUNS[name]), tmp_path / "single")
    for world_size in (2, 4):
        out = tmp_path / f"ddp{world_size}.pt"
        mp.spawn(
            _worker,
            args=(world_size, RUNS[name], str(tmp_path / f"init{world_size}"), str(out)),
            nprocs=world_size,
            join=True,
        )
        ddp = torch.load(out, weights_only=True)
        for step in (0, 1):
            assert ddp["logs"][step].keys() == single["logs"][step].keys()
            for key, value in single["logs"][step].items():
                assert ddp["logs"][step][key] == pytest.approx(value, rel=1e-5), (world_size, step, key)
            for a, b in zip(ddp["grads"][step], single["grads"][step], strict=True):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=f"W={world_size}, step {step}")
        for a, b in zip(ddp["weights"], single["weights"], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
