"""Training as a submitit job: local subprocess, SLURM, or in-process (debug), with preemption-safe requeue.

The ``train`` rule of the workflow runs on the submit host and calls :func:`launch`, which submits one job,
streams its log, waits, and cancels the job if it is itself interrupted (Ctrl-C, SIGTERM from Snakemake).

:class:`TrainingJob` is the submitted callable. Before a time limit or on preemption SLURM sends USR2; submitit
then calls :meth:`TrainingJob.checkpoint`, which writes a checkpoint of the *last finished step* and returns a
fresh callable that resumes from it after the requeue. The handler is held back while a step runs
(:class:`StepBoundarySignal`), so a checkpoint never captures a half-applied optimizer step; the resumed run is
bitwise identical to an uninterrupted one on the CPU (every draw is seeded by (seed, step), see :mod:`ism.train`).

Multi-GPU / multi-node: ``launch.nodes`` × ``launch.gpus_per_node`` tasks, one per GPU; each task exports the
``torch.distributed`` environment with submitit's ``TorchDistributedEnvironment`` and joins the process group.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ism.config import LaunchConfig, RunConfig
from ism.errors import LaunchError

log = logging.getLogger(__name__)

# The signal SLURM sends before a time limit or a preemption (submitit asks for --signal=USR2@delay).
CHECKPOINT_SIGNAL = signal.SIGUSR2


class StepBoundarySignal:
    """Runs the handler of ``signum`` (submitit's checkpoint-and-requeue) only between the blocks of :meth:`guard`.

    Masking the signal in the main thread is not enough: the kernel hands a process-directed signal to any thread
    that does not block it (torch starts helper threads on import), and CPython then runs the Python handler in
    the main thread at its next bytecode, mid-step. So the handler installed here only notes a signal that
    arrives inside a block, and the block's end calls the handler it replaced.
    """

    def __init__(self, signum: int = CHECKPOINT_SIGNAL):
        self.signum = signum
        self.pending = False
        self._inside = False
        self._replaced: Any = None

    def install(self) -> None:
        self._replaced = signal.signal(self.signum, self._handle)  # only the main thread may install handlers

    def uninstall(self) -> None:
        if self._replaced is not None:
            signal.signal(self.signum, self._replaced)
            self._replaced = None

    @contextlib.contextmanager
    def guard(self):
        self._inside = True
        try:
            yield
        finally:
            self._inside = False
            if self.pending:
                self.pending = False
                self._forward()

    def _handle(self, signum: int, frame: Any) -> None:
        if self._inside:
            self.pending = True
        else:
            self._forward()

    def _forward(self) -> None:
        replaced = self._replaced
        if callable(replaced):
            replaced(self.signum, None)
        elif replaced == signal.SIG_DFL:  # no handler before ours: the signal's default action (terminate)
            self.uninstall()
            signal.raise_signal(self.signum)


LAUNCHER_PID_ENV = "ISM_LAUNCHER_PID"


class TrainingJob:
    """The submitted callable: trains one run, resuming from the newest checkpoint of ``workdir``."""

    def __init__(
        self,
        config: RunConfig,
        *,
        workdir: str | Path,
        output: str | Path,
        live_dir: str | Path | None = None,
        latents: str | Path | None = None,
        until_step: int | None = None,
    ):
        self.config = config
        self.workdir = Path(workdir).resolve()
        self.output = Path(output).resolve()
        self.live_dir = Path(live_dir).resolve() if live_dir is not None else None
        self.latents = Path(latents).resolve() if latents is not None else None
        self.until_step = until_step
        self._trainer = None

    def __call__(self) -> dict[str, Any]:
        import torch

        from ism.train import Trainer

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        launcher = os.environ.get(LAUNCHER_PID_ENV)
        if self.config.launch.cluster == "local" and launcher and launcher.isdigit():
            _exit_when_gone(int(launcher))
        distributed = _join_process_group()
        torch.set_num_threads(self.config.launch.cpus_per_task)
        boundary = StepBoundarySignal()
        self._trainer = Trainer(
            self.config,
            workdir=self.workdir,
            output=self.output,
            live_dir=self.live_dir,
            latents=self.latents,
            progress=False,
            step_guard=boundary.guard,
        )
        if threading.current_thread() is threading.main_thread():  # handlers install there only (debug jobs)
            boundary.install()
        try:
            result = self._trainer.run(until_step=self.until_step)
        finally:
            boundary.uninstall()
            if distributed:
                torch.distributed.destroy_process_group()
        log.info("training ended at step %d (resumed from %d)", result.step, result.resumed_from)
        # Every task returns a digest of its weights: under DDP all tasks must hold the same model.
        digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in self._trainer.model.parameters()))
        return {
            "step": result.step,
            "finished": result.finished,
            "resumed_from": result.resumed_from,
            "rank": self._trainer.rank,
            "world_size": self._trainer.world_size,
            "weights_sha256": digest.hexdigest(),
        }

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Called by submitit on USR2 (time limit or preemption): save, then resubmit a fresh instance."""
        import submitit

        trainer = self._trainer
        if trainer is not None and trainer.step > 0 and trainer.is_main_process:
            path = trainer.save_checkpoint()
            log.warning("signal received: checkpoint of step %d written to %s; requeueing", trainer.step, path)
        fresh = TrainingJob(
            self.config,
            workdir=self.workdir,
            output=self.output,
            live_dir=self.live_dir,
            latents=self.latents,
            until_step=self.until_step,
        )
        return submitit.helpers.DelayedSubmission(fresh)


def _join_process_group() -> bool:
    """With more than one task, export MASTER_ADDR/RANK/… from the job and init torch.distributed."""
    import submitit
    import torch

    try:
        tasks = submitit.JobEnvironment().num_tasks
    except RuntimeError:  # the debug executor runs in-process, outside any job
        return False
    if tasks <= 1:
        return False
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=torch.cuda.is_available())
    torch.distributed.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return True


def make_executor(launch: LaunchConfig, name: str):
    """A submitit executor for ``launch.cluster`` with the resources of ``launch`` (all explicit)."""
    import submitit

    folder = Path(launch.folder) / name / "%j"
    executor = submitit.AutoExecutor(
        folder=folder, cluster=launch.cluster, slurm_max_num_timeout=launch.max_num_timeout
    )
    params: dict[str, Any] = {
        "name": f"ism-train-{name}",
        "timeout_min": launch.timeout_min,
        "nodes": launch.nodes,
        "tasks_per_node": launch.tasks_per_node,
        "cpus_per_task": launch.cpus_per_task,
        "mem_gb": launch.mem_gb,
        "stderr_to_stdout": True,
        "slurm_signal_delay_s": launch.signal_delay_s,
    }
    if launch.gpus_per_node:
        params["gpus_per_node"] = launch.gpus_per_node
    if launch.partition:
        params["slurm_partition"] = launch.partition
    if launch.account:
        params["slurm_account"] = launch.account
    if launch.slurm_additional:
        params["slurm_additional_parameters"] = dict(launch.slurm_additional)
    executor.update_parameters(**params)
    return executor


class _NoSacctNoise(logging.Filter):
    """Without SLURM accounting submitit warns on every poll that sacct failed; its results still arrive."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Bypassing sacct error" not in record.getMessage()


logging.getLogger("submitit").addFilter(_NoSacctNoise())


def launch(
    job: TrainingJob, *, poll_s: float = 2.0, stream: bool = True, watch_pid: int | None = None
) -> dict[str, Any]:
    """Submit ``job``, stream its log while waiting, and cancel it if this process is interrupted or the process
    ``watch_pid`` (the workflow's Snakemake) ends. A local job also ends by itself if this launcher dies."""
    import submitit

    cfg = job.config
    if cfg.launch.cluster == "slurm" and "SLURM_JOB_ID" in os.environ:
        # Never nest: a train rule sent to a compute node would hold an idle allocation for the whole run.
        raise LaunchError(
            f"ism launch for run '{cfg.name}' is running inside SLURM job {os.environ['SLURM_JOB_ID']}: the train "
            "rule must run on the submit host (it is a localrule; do not submit it yourself)"
        )
    executor = make_executor(cfg.launch, cfg.name)
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())  # a local job watches its launcher (inherits the env)
    with submitit.helpers.clean_env():
        submitted = executor.submit(job)
    _remove_folder_template(cfg)
    log_path = Path(str(submitted.paths.stdout))
    print(f"submitted run '{cfg.name}' as {cfg.launch.cluster} job {submitted.job_id}; log: {log_path}", flush=True)
    if cfg.launch.cluster == "debug":
        return _result(submitted, log_path)

    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    position = 0
    try:
        while not submitted.done():
            position = _stream(log_path, position) if stream else position
            if watch_pid is not None and not _alive(watch_pid):
                raise KeyboardInterrupt(f"process {watch_pid} (the workflow) ended")
            time.sleep(poll_s)
        _stream(log_path, position) if stream else None
        return _result(submitted, log_path)
    except KeyboardInterrupt:
        print(f"interrupted: cancelling job {submitted.job_id}", file=sys.stderr, flush=True)
        submitted.cancel(check=False)
        if cfg.launch.cluster == "local":
            _stop_local(submitted)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        _remove_folder_template(cfg)


def _remove_folder_template(cfg: RunConfig) -> None:
    """submitit creates the folder template itself (a literal '%j' folder) and leaves it empty: remove it."""
    with contextlib.suppress(OSError):
        (Path(cfg.launch.folder) / cfg.name / "%j").rmdir()


def _stop_local(submitted: Any, grace_s: float = 3.0) -> None:
    """Make sure a cancelled local job is gone: submitit cancels with SIGINT, which a controller started from a
    background shell ignores (SIG_IGN is inherited), and its training task ignores SIGTERM; kill what is left."""
    controller = getattr(submitted, "_process", None)
    if controller is None:
        return
    try:
        controller.wait(timeout=grace_s)
        return
    except Exception:  # still running
        pass
    for pid in [*_descendants(controller.pid), controller.pid]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        controller.wait(timeout=grace_s)


def _descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, recursively, from /proc (Linux; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = _stat_fields(stat)
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def _stat_fields(stat: Path) -> list[str]:
    """The fields of a /proc/<pid>/stat file after the command name (state, ppid, …)."""
    return stat.read_text().rsplit(")", 1)[1].split()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie child counts as ended)."""
    try:
        state = _stat_fields(Path(f"/proc/{pid}/stat"))[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state != "Z"


def _exit_when_gone(pid: int, poll_s: float = 2.0) -> None:
    """Watchdog of a local job: end this process when its launcher (``ism launch``) has died, e.g. by kill -9,
    so no orphaned trainer keeps writing. Checkpoints are atomic and the workdir lock dies with the process."""

    def watch() -> None:
        while _alive(pid):
            time.sleep(poll_s)
        log.error("the launcher (pid %d) is gone: stopping this local training job", pid)
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=watch, name="ism-launcher-watch", daemon=True).start()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _stream(path: Path, position: int) -> int:
    """Print what the job appended to its log since ``position``; return the new position."""
    try:
        with path.open("rb") as f:
            f.seek(position)
            chunk = f.read()
    except FileNotFoundError:
        return position
    if chunk:
        sys.stdout.write(chunk.decode(errors="replace"))
        sys.stdout.flush()
    return position + len(chunk)


def _result(submitted: Any, log_path: Path) -> dict[str, Any]:
    try:
        results = submitted.results()
    except Exception as err:  # submitit re-raises the job's failure with its traceback
        last = str(err).strip().splitlines()
        raise LaunchError(
            f"training job {submitted.job_id} failed ({last[-1] if last else type(err).__name__}); log: {log_path}"
        ) from None
    return results[0]
