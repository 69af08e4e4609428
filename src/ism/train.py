"""The training loop: AdamW, EMA copies, atomic checkpoints, automatic resume, dvclive metrics.

Determinism: the data order of step s comes from :class:`ism.data.BatchSchedule` (seeded by (seed, epoch)) and
every random draw of step s from a generator seeded by (seed, s). A run resumed from a checkpoint therefore draws
exactly what an uninterrupted run would, and on the CPU it ends with bitwise identical weights.

Layout of a run: ``workdir/ckpt/ckpt-<step>.pt`` (resumable, outside every pipeline output), ``workdir/live``
(dvclive curves) and the final ``output`` file (online weights, every EMA copy, and the resolved config).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ism import __version__
from ism.checkpoint import (
    MODEL_FORMAT,
    CheckpointError,
    atomic_save,
    checkpoint_path,
    newest_valid_checkpoint,
    prune_checkpoints,
)
from ism.config import RunConfig, run_config_from_json, training_identity
from ism.data import BatchSchedule, Dataset, Split
from ism.data.real import load_data
from ism.errors import NonFiniteLossError
from ism.lr_schedule import is_scheduled, learning_rate, set_learning_rate
from ism.method.ema import EMA
from ism.method.shortcut import ShortcutObjective, role_logs
from ism.method.transport import PooledPairing, shards_of_rank
from ism.models import build_network
from ism.runtime import autocast, select_device, step_generator
from ism.workdir_lock import exclusive_workdir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    step: int
    finished: bool
    resumed_from: int
    output: Path | None


def load_encoded(folder: str | Path) -> tuple[Dataset, dict[str, Any]]:
    """The training set from an encoded folder (``ism encode``), memory-mapped: rows load when a batch reads them."""
    from ism.data.encode import load_latents

    latents, labels, meta = load_latents(folder)
    with warnings.catch_warnings():  # read-only memmap: training never writes to it
        warnings.simplefilter("ignore", UserWarning)
        images = torch.from_numpy(latents)
    empty = Split(images=images[:0], labels=torch.zeros(0, dtype=torch.int64))
    data = Dataset(
        name=meta["dataset"],
        train=Split(images=images, labels=torch.from_numpy(labels)),
        test=empty,
        num_classes=int(meta["num_classes"]),
        sample_shape=tuple(meta["shape"]),
        class_names=tuple(meta["class_names"]),
    )
    return data, meta


class Trainer:
    """Trains one run; ``run(until_step=s)`` stops early (a time-limited job's slice) and can be resumed."""

    def __init__(
        self,
        cfg: RunConfig,
        *,
        workdir: str | Path,
        output: str | Path | None = None,
        live_dir: str | Path | None = None,
        dataset: Dataset | None = None,
        latents: str | Path | None = None,
        progress: bool = True,
        step_guard: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ):
        self.cfg = cfg
        self.workdir = Path(workdir)
        self.ckpt_dir = self.workdir / "ckpt"
        self.output = Path(output) if output is not None else None
        self.live_dir = Path(live_dir) if live_dir is not None else None
        self.progress = progress
        self.step_guard = step_guard  # wraps each step (launch.py defers the checkpoint signal to step boundaries)
        self._join_processes()
        self._load_training_set(dataset, latents)
        self._build_model()
        self._plan_batches()
        self.step = 0
        self.resumed_from = 0

    def _join_processes(self) -> None:
        """This process's rank and device; the batch must split evenly over the processes (DESIGN D9)."""
        self.rank, self.world_size = _distributed_rank()
        self.device = select_device(self.cfg.train.device, local_rank=self.rank if self.world_size > 1 else None)
        if self.cfg.train.batch_size % self.world_size:
            raise ValueError(
                f"config key 'train.batch_size': {self.cfg.train.batch_size} does not split over {self.world_size} "
                "processes: choose a multiple of launch.nodes x tasks per node"
            )

    def _load_training_set(self, dataset: Dataset | None, latents: str | Path | None) -> None:
        """The data: given, an encoded folder (``ism encode``), or read directly from ``data.*``; then placed.

        Small sets move to the device once; a memory-mapped latent set stays on the host, read batch by batch.
        """
        self.encoding: dict[str, Any] = {"encoder": "identity"}
        if dataset is not None:
            self.data = dataset
        elif latents is not None:
            self.data, self.encoding = load_encoded(latents)
        else:
            self.data = load_data(self.cfg.data)
        train = self.data.train
        on_host = not train.images.is_contiguous() or train.images.untyped_storage().nbytes() > 2**30
        self.x_train = train.images if on_host else train.images.to(self.device)
        self.y_train = train.labels if on_host else train.labels.to(self.device)

    def _build_model(self) -> None:
        """Network (its initial weights a function of the seed), AdamW, the EMA copies, the objective, and the
        network the step runs (DDP-wrapped over several processes)."""
        cfg, t = self.cfg, self.cfg.train
        torch.manual_seed(t.seed)
        self.model = build_network(cfg, self.data.sample_shape, self.data.num_classes).to(self.device)
        fused = {"fused": True} if t.fused_adamw else {}  # else torch's default kernel (the reference numerics)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay, **fused
        )
        self.emas = {name: EMA(self.model, e.decay, e.warmup) for name, e in t.ema.items()}
        self.objective = ShortcutObjective(cfg.method, self.data.num_classes)
        self.network = self.model
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = DistributedDataParallel(self.model, device_ids=ids)

    def _plan_batches(self) -> None:
        """The resumable data order of every step, and the sOT pairing of each batch with its noise (if enabled)."""
        t, ot = self.cfg.train, self.cfg.method.transport
        self.schedule = BatchSchedule(len(self.data.train.labels), t.batch_size, t.seed)
        self.pairing = None
        if ot.enabled:
            self.pairing = PooledPairing(
                self.data.train.images,
                self.schedule,
                ot.pool_batches,
                t.seed,
                prefetch=ot.prefetch == "thread" or (ot.prefetch == "auto" and self.device.type == "cuda"),
                labels=self.data.train.labels if ot.class_wise else None,
                shards=ot.shards,
                shard_ids=shards_of_rank(t.batch_size, ot.shards, self.rank, self.world_size),
            )

    # --- state ------------------------------------------------------------------------------------------
    @property
    def is_main_process(self) -> bool:
        return self.rank == 0

    def target_network(self) -> torch.nn.Module:
        name = self.cfg.method.target_weights
        return self.model if name == "online" else self.emas[name].model

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "config": self.cfg.model_dump_json(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "emas": {name: ema.state_dict() for name, ema in self.emas.items()},
            # Every draw is seeded by (seed, step) and the data order by (seed, epoch): step and seed are the state.
            "rng": {"seed": self.cfg.train.seed, "scheme": "sha256(seed, step)"},
            "data_order": {
                "seed": self.cfg.train.seed,
                "batch_size": self.cfg.train.batch_size,
                "epoch": self.schedule.epoch_of(self.step),
            },
            "ism_version": __version__,
        }

    def resume(self) -> int:
        """Load the newest valid checkpoint of this workdir, if any; returns its step."""
        found = newest_valid_checkpoint(self.ckpt_dir, map_location=self.device)
        if found is None:
            return 0
        path, state = found
        stored = run_config_from_json(state["config"])
        if training_identity(stored) != training_identity(self.cfg):
            raise CheckpointError(
                f"checkpoint '{path}' was trained with a different configuration; use a new workdir or delete "
                f"'{self.ckpt_dir}' to start over"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for name, ema in self.emas.items():
            ema.load_state_dict(state["emas"][name])
        self.step = self.resumed_from = int(state["step"])
        log.info("resumed from %s (step %d)", path, self.step)
        return self.step

    def save_checkpoint(self) -> Path:
        if not self.is_main_process:
            return checkpoint_path(self.ckpt_dir, self.step)
        path = atomic_save(self.state_dict(), checkpoint_path(self.ckpt_dir, self.step))
        prune_checkpoints(self.ckpt_dir, self.cfg.train.keep_checkpoints)
        return path

    def save_model(self) -> Path:
        """The final artefact: online weights, every EMA, the config and what the sampler needs."""
        assert self.output is not None
        weights = {"online": self.model.state_dict()} | {n: e.model.state_dict() for n, e in self.emas.items()}
        return atomic_save(
            {
                "format": MODEL_FORMAT,
                "config": self.cfg.model_dump_json(),
                "step": self.step,
                "weights": weights,
                "sample_shape": list(self.data.sample_shape),
                "num_classes": self.data.num_classes,
                "encoding": self.encoding,
                "ism_version": __version__,
            },
            self.output,
        )

    # --- loop -------------------------------------------------------------------------------------------
    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        """One optimiser step. The step's layout (roles, levels, t, w, dropout, noise) is drawn for the global
        batch from the generator of (seed, step) on every rank alike; each rank trains its shard of the rows
        (DESIGN D9), so W processes take the same step as one."""
        generator = step_generator(self.device, self.cfg.train.seed, step)
        if self.pairing is not None:  # sOT: the same batch, with noise re-paired over its pool
            idx, pool_noise = self.pairing.batch(step)
        else:
            idx, pool_noise = self.schedule.indices(step), None
        layout = self.objective.layout(
            len(idx),
            generator,
            noise_shape=None if pool_noise is not None else tuple(self.data.sample_shape),
            dtype=self.x_train.dtype,
            device=self.device,
        )
        local = layout.shard(self.rank, self.world_size)
        images = idx[local.source.cpu()]
        x1 = self.x_train[images.to(self.x_train.device)].to(self.device, non_blocking=True)
        y = self.y_train[images.to(self.y_train.device)].to(self.device, non_blocking=True)
        x0 = None if pool_noise is None else pool_noise[local.source.cpu()].to(self.device)
        with autocast(self.device, self.cfg.train.precision):
            loss, stats = self.objective.loss(self.network, self.target_network(), local, x1, y, x0)
        if self.world_size > 1:  # the logs of the global step; the gradient is averaged by DDP
            torch.distributed.all_reduce(stats)
        logs = role_logs(stats)
        if not torch.isfinite(logs["loss"]):  # the global loss: every rank stops alike
            kept = newest_valid_checkpoint(self.ckpt_dir)
            where = f"the last good checkpoint is '{kept[0]}'" if kept else "no checkpoint was written yet"
            raise NonFiniteLossError(
                f"loss is {logs['loss'].item()} at step {step}; stopped before the update ({where}). "
                "Check the data for NaN/inf and lower train.lr"
            )
        self.optimizer.zero_grad(set_to_none=True)
        set_learning_rate(self.optimizer, self.cfg.train, step)
        loss.backward()
        if self.cfg.train.grad_clip is not None:
            logs["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        if is_scheduled(self.cfg.train):
            logs["lr"] = torch.tensor(learning_rate(self.cfg.train, step))
        for ema in self.emas.values():
            ema.update(self.model)
        return logs

    def run(self, until_step: int | None = None) -> TrainResult:
        """Train until ``until_step`` (or the end), holding the workdir's lock (one writer, DESIGN D10)."""
        lock = exclusive_workdir(self.workdir) if self.is_main_process else contextlib.nullcontext()
        with lock:
            return self._run(until_step)

    def _run(self, until_step: int | None) -> TrainResult:
        t = self.cfg.train
        self.resume()
        end = t.steps if until_step is None else min(until_step, t.steps)
        live = self._open_live()
        self.model.train()
        bar = tqdm(
            total=t.steps,
            initial=self.step,
            disable=not self.progress,
            desc=f"train {self.cfg.name}",
            dynamic_ncols=True,
            mininterval=1.0,
        )
        try:
            while self.step < end:
                # One guarded unit: the step and its bookkeeping, so a checkpoint signal lands between units.
                with self.step_guard():
                    logs = self.train_step(self.step)
                    self.step += 1
                    bar.update(1)
                    if self.step % t.log_every == 0 or self.step == end:
                        self._log(logs, bar, live)
                    if self.step % t.checkpoint_every == 0 or self.step == end:
                        self.save_checkpoint()
        finally:
            bar.close()
            if self.pairing is not None:
                self.pairing.close()
            if live is not None:
                live.end()
        finished = self.step >= t.steps
        output = self.save_model() if finished and self.output is not None and self.is_main_process else None
        return TrainResult(step=self.step, finished=finished, resumed_from=self.resumed_from, output=output)

    def _log(self, logs: dict[str, torch.Tensor], bar: tqdm, live: Any) -> None:
        values = {k: float(v) for k, v in logs.items()}
        bar.set_postfix(loss=f"{values['loss']:.4f}")
        log.info("step %d %s", self.step, " ".join(f"{k}={v:.5f}" for k, v in values.items()))
        if live is not None:
            live.step = self.step
            for key, value in values.items():
                live.log_metric(f"train/{key}", value)
            live.make_summary()

    def _open_live(self):
        if self.live_dir is None or not self.is_main_process:
            return None
        from dvclive import Live  # imported lazily: dvclive pulls in git tooling

        # save_dvc_exp/dvcyaml off: a job must never write DVC state (dvc.yaml declares the plots itself).
        return Live(str(self.live_dir), resume=self.step > 0, save_dvc_exp=False, dvcyaml=False, report=None)


def _distributed_rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
