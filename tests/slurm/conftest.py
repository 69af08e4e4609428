"""Fixtures for the `slurm` tier: a real single-node SLURM cluster (tests/slurm/cluster.sh).

Where no cluster can run (not root, no apt-get/dpkg, not Linux) the tier is skipped with one line, found by cheap
checks before cluster.sh is tried. With ISM_SLURM_REQUIRED=1 (what .ci/run sets) it fails instead, and a failing
cluster.sh shows its last lines.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

CLUSTER_SH = Path(__file__).resolve().with_name("cluster.sh")
REPO = CLUSTER_SH.parents[2]
UP_TIMEOUT_S = 300  # includes apt-get install (about 20-30 s) on a fresh machine
DOWN_TIMEOUT_S = 120
PING_TIMEOUT_S = 15  # `scontrol ping` waits ~9 s for a controller that is named in slurm.conf but not running
# Set to 1 (CI: .ci/run) to turn "cluster cannot start" into a failure instead of a skip.
REQUIRED_ENV = "ISM_SLURM_REQUIRED"
# Set to 1 to leave a cluster started by this session running afterwards.
KEEP_ENV = "ISM_SLURM_KEEP"
SKIP_PREFIX = "SLURM tier skipped: "
# The daemons may sit in sbin directories that a non-root PATH lacks.
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


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


def _one_line(text: str, limit: int = 240) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _last_error(out: str) -> str:
    """The line of cluster.sh's output that says what went wrong: its last ERROR line, else its last line."""
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "timed out" in line]
    return (errors or lines or ["no output"])[-1]


# ---- host probes (monkeypatched by test_slurm_tier_skip.py) --------------------------------------


def _platform() -> str:
    return sys.platform


def _euid() -> int | None:
    return os.geteuid() if hasattr(os, "geteuid") else None


def _which(name: str) -> str | None:
    return shutil.which(name, path=SBIN_PATH)


def _controller_up() -> bool:
    """True when a SLURM controller answers `scontrol ping` (cluster.sh up then reuses it, as any user)."""
    scontrol = _which("scontrol")
    if scontrol is None:
        return False
    try:
        out = subprocess.run(
            [scontrol, "ping"], capture_output=True, text=True, timeout=PING_TIMEOUT_S, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "is UP" in out


def cannot_run_reason() -> str | None:
    """Why `cluster.sh up` cannot work on this host, from cheap checks (no cluster.sh call); None if it may.

    cluster.sh reuses a running controller as any user; otherwise it must run as root on Linux with dpkg-query
    and apt-get (it installs slurmctld, slurmd, slurm-client and munge from the Debian archive when missing).
    """
    if _platform() != "linux":
        problem = f"cluster.sh needs Linux (Debian 12), this is {_platform()}"
    elif _euid() != 0:
        problem = "not root and no SLURM controller running (cluster.sh up installs and starts one as root)"
    elif _which("dpkg-query") is None or (_which("apt-get") is None and _which("slurmctld") is None):
        problem = "no apt-get/dpkg-query to install SLURM and no running controller (cluster.sh needs Debian 12)"
    else:
        return None
    return None if _controller_up() else problem


def unavailable(reason: str, *, required: bool, detail: str = "") -> NoReturn:
    """Skip the tier with one line, or fail it (with DETAIL, e.g. cluster.sh's last lines) when REQUIRED."""
    if required:
        message = f"SLURM tier required ({REQUIRED_ENV}=1) but unavailable: {_one_line(reason)}"
        pytest.fail(f"{message}\n{detail}" if detail else message, pytrace=False)
    pytest.skip(f"{SKIP_PREFIX}{_one_line(reason)}; CI requires it ({REQUIRED_ENV}=1)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Report every tier skip at one place, so that `pytest -rs` folds them into one line.

    pytest reports a skip raised in a fixture at each test's location: one `SKIPPED` line per test.
    """
    report = yield
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and SKIP_PREFIX in str(longrepr[2]):
        report.longrepr = (str(Path(__file__)), unavailable.__code__.co_firstlineno, longrepr[2])
    return report


def start_cluster(required: bool) -> SlurmCluster:
    """`cluster.sh up` after the cheap checks; skips or fails (see `unavailable`) when no cluster can run."""
    reason = cannot_run_reason()
    if reason is not None:
        unavailable(reason, required=required)
    rc, out = _cluster_sh("up", UP_TIMEOUT_S)
    if rc != 0:
        unavailable(
            f"cluster.sh up exited {rc}: {_last_error(out)} (see `bash tests/slurm/cluster.sh up`)",
            required=required,
            detail=f"cluster.sh up, last lines:\n{_tail(out)}",
        )
    return SlurmCluster(started_here="ism-slurm: reusing" not in out, up_output=out)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running SLURM cluster (controller on localhost, partitions debug, gpu and urgent, fake gpu:2).

    Reuses a running cluster; otherwise starts one and stops it at the end of the session.
    Skips with one line (or fails with ISM_SLURM_REQUIRED=1) when it cannot be started.
    """
    cluster = start_cluster(required=os.environ.get(REQUIRED_ENV) == "1")
    yield cluster
    if cluster.started_here and os.environ.get(KEEP_ENV) != "1":
        rc, out = _cluster_sh("down", DOWN_TIMEOUT_S)
        if rc != 0:
            warnings.warn(f"cluster.sh down exited {rc}:\n{_tail(out)}", stacklevel=1)
