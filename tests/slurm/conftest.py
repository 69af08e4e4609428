"""Fixtures for the `slurm` tier: a real single-node SLURM cluster (tests/slurm/cluster.sh)."""

from __future__ import annotations

import os
import signal
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

CLUSTER_SH = Path(__file__).resolve().with_name("cluster.sh")
REPO = CLUSTER_SH.parents[2]
UP_TIMEOUT_S = 300  # includes apt-get install (about 20-30 s) on a fresh machine
DOWN_TIMEOUT_S = 120
# Set to 1 in CI to turn "cluster cannot start" into an error instead of a skip.
REQUIRED_ENV = "ISM_SLURM_REQUIRED"
# Set to 1 to leave a cluster started by this session running afterwards.
KEEP_ENV = "ISM_SLURM_KEEP"


@dataclass(frozen=True)
class SlurmCluster:
    started_here: bool  # False when cluster.sh reused an already running cluster
    up_output: str


def _cluster_sh(action: str, timeout_s: float) -> tuple[int, str]:
    """Run `cluster.sh ACTION`; return (exit code, combined output). Exit code 124 on timeout."""
    proc = subprocess.Popen(
        ["bash", str(CLUSTER_SH), action],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # so a timeout can kill apt-get & co. as a group
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            out = ""
        return 124, f"{out}\ncluster.sh {action} timed out after {timeout_s:.0f} s"
    return proc.returncode, out


def _tail(text: str, n: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running SLURM cluster (controller on localhost, partitions debug and gpu, fake gpu:2).

    Reuses a running cluster; otherwise starts one and stops it at the end of the session.
    Skips (or fails with ISM_SLURM_REQUIRED=1) when it cannot be started.
    """
    rc, out = _cluster_sh("up", UP_TIMEOUT_S)
    if rc != 0:
        reason = f"SLURM cluster unavailable: cluster.sh up exited {rc}:\n{_tail(out)}"
        if os.environ.get(REQUIRED_ENV) == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    started_here = "ism-slurm: reusing" not in out
    yield SlurmCluster(started_here=started_here, up_output=out)
    if started_here and os.environ.get(KEEP_ENV) != "1":
        rc, out = _cluster_sh("down", DOWN_TIMEOUT_S)
        if rc != 0:
            warnings.warn(f"cluster.sh down exited {rc}:\n{_tail(out)}", stacklevel=1)
