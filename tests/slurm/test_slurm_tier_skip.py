"""When the `slurm` tier skips and when it fails (default tier: no cluster, the host probes are faked).

Without root, apt-get/dpkg or Linux no cluster can start: the tier skips with one line, before cluster.sh runs,
unless ISM_SLURM_REQUIRED=1 (CI), which fails it. A cluster.sh that fails where it should work is one line as a
skip and its last lines as a failure.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from . import conftest as tier

DEBIAN_TOOLS = {"dpkg-query", "apt-get"}
CLUSTER_SH_FAILURE = "\n".join(
    [*(f"ism-slurm: step {i}" for i in range(10)), "ism-slurm: ERROR: apt-get install slurmctld failed", "E: no net"]
)


@pytest.fixture
def host(monkeypatch):
    """A fake host (root on Debian, no controller running): tests change its fields; cluster.sh is faked too."""
    fake = SimpleNamespace(
        euid=0,
        tools=set(DEBIAN_TOOLS),  # names found on PATH
        controller_up=False,
        cluster_sh=(0, "ism-slurm: up in 1.2 s: slurm 22.05.8, ..."),  # (exit code, output) of cluster.sh up
        calls=[],  # cluster.sh actions run
    )

    def cluster_sh(action, timeout_s):
        fake.calls.append(action)
        return fake.cluster_sh

    monkeypatch.setattr(tier, "_platform", lambda: "linux")
    monkeypatch.setattr(tier, "_euid", lambda: fake.euid)
    monkeypatch.setattr(tier, "_which", lambda name: f"/usr/bin/{name}" if name in fake.tools else None)
    monkeypatch.setattr(tier, "_controller_up", lambda: fake.controller_up)
    monkeypatch.setattr(tier, "_cluster_sh", cluster_sh)
    return fake


def _skip_message(required: bool = False) -> str:
    with pytest.raises(pytest.skip.Exception) as excinfo:
        tier.start_cluster(required=required)
    return excinfo.value.msg


def _fail_message() -> str:
    with pytest.raises(pytest.fail.Exception) as excinfo:
        tier.start_cluster(required=True)
    return excinfo.value.msg


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("not root", "not root and no SLURM controller running"),
        ("no apt", "no apt-get/dpkg-query to install SLURM"),
        ("not linux", "cluster.sh needs Linux (Debian 12), this is darwin"),
    ],
    ids=["not-root", "no-apt", "not-linux"],
)
def test_a_host_that_cannot_run_slurm_skips_in_one_line_without_cluster_sh_and_fails_when_required(
    host, monkeypatch, case, expected
):
    if case == "not root":
        host.euid = 1000
    elif case == "no apt":
        host.tools = {"dpkg-query"}
    else:
        monkeypatch.setattr(tier, "_platform", lambda: "darwin")
    assert tier.cannot_run_reason() is not None

    message = _skip_message()
    assert "\n" not in message
    assert message.startswith("SLURM tier skipped: ")
    assert expected in message
    assert message.endswith("; CI requires it (ISM_SLURM_REQUIRED=1)")

    message = _fail_message()
    assert message.startswith("SLURM tier required (ISM_SLURM_REQUIRED=1) but unavailable: ")
    assert expected in message
    assert host.calls == []  # decided up front, cluster.sh never ran


@pytest.mark.parametrize("case", ["root on Debian", "non-root, controller up", "root, no apt, daemons installed"])
def test_a_host_that_can_run_slurm_goes_on_to_cluster_sh(host, case):
    if case == "non-root, controller up":
        host.euid, host.controller_up = 1000, True
        host.cluster_sh = (0, "ism-slurm: reusing the running cluster (scontrol ping: UP; node state 'idle')")
    elif case == "root, no apt, daemons installed":
        host.tools = {"dpkg-query", "slurmctld"}
    assert tier.cannot_run_reason() is None
    cluster = tier.start_cluster(required=True)
    assert host.calls == ["up"]
    assert cluster.started_here == (case != "non-root, controller up")


def test_a_failing_cluster_sh_skips_with_its_error_line_and_fails_with_its_tail_when_required(host):
    host.cluster_sh = (1, CLUSTER_SH_FAILURE)

    message = _skip_message()
    assert "\n" not in message
    assert "cluster.sh up exited 1: ism-slurm: ERROR: apt-get install slurmctld failed" in message
    assert "step 9" not in message

    message = _fail_message()
    assert "cluster.sh up exited 1: ism-slurm: ERROR: apt-get install slurmctld failed" in message.splitlines()[0]
    assert message.splitlines()[-8:] == CLUSTER_SH_FAILURE.splitlines()[-8:]  # the tail, as before
    assert host.calls == ["up", "up"]


def test_a_long_or_multi_line_reason_stays_one_line():
    with pytest.raises(pytest.skip.Exception) as excinfo:
        tier.unavailable("first\nsecond " + "x" * 500, required=False)
    message = excinfo.value.msg
    assert "\n" not in message
    assert "first second" in message
    assert len(message) < 320


def test_tier_skips_are_reported_at_one_place_so_that_pytest_rs_prints_one_line():
    def report_of(reason: str, line: int) -> SimpleNamespace:
        hook = tier.pytest_runtest_makereport(item=None, call=None)
        next(hook)
        report = SimpleNamespace(skipped=True, longrepr=(f"tests/slurm/test_{line}.py", line, reason))
        with pytest.raises(StopIteration) as done:
            hook.send(report)
        return done.value.value

    reason = "Skipped: SLURM tier skipped: not root; CI requires it (ISM_SLURM_REQUIRED=1)"
    assert report_of(reason, 10).longrepr == report_of(reason, 20).longrepr
    assert report_of(reason, 10).longrepr[0] == tier.__file__
    other = report_of("Skipped: could not import 'submitit'", 10)
    assert other.longrepr == ("tests/slurm/test_10.py", 10, "Skipped: could not import 'submitit'")
