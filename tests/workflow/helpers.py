"""Run the real workflow (snakemake, dvc) on a copy of the repository in a temporary folder."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from ism.config import deep_merge

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TINY = Path(__file__).with_name("tiny.yaml")
# What a workflow copy needs: the DAG, the profiles, the config, and (for DVC's dependency hashes) the code.
WORKFLOW_FILES = ("Snakefile", "workflow", "profiles", "config", "dvc.yaml", "src", ".gitignore")


def env() -> dict[str, str]:
    """The test's venv first on PATH (rules call `ism`, DVC stages call `snakemake`), one thread per job."""
    return os.environ | {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "OMP_NUM_THREADS": "1",
        "GIT_AUTHOR_NAME": "ism tests",
        "GIT_AUTHOR_EMAIL": "tests@ism.invalid",
        "GIT_COMMITTER_NAME": "ism tests",
        "GIT_COMMITTER_EMAIL": "tests@ism.invalid",
    }


def tiny_study(**overrides: Any) -> dict[str, Any]:
    """The default study with tests/workflow/tiny.yaml (and ``overrides``) merged on top."""
    study = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    study = deep_merge(study, yaml.safe_load(TINY.read_text()))
    return deep_merge(study, overrides)


def workflow_copy(folder: Path, study: dict[str, Any] | None = None) -> Path:
    """Copy the workflow into ``folder`` with ``study`` as its config/config.yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, folder / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, folder / name)
    if study is not None:
        write_study(folder, study)
    return folder


def write_study(folder: Path, study: dict[str, Any]) -> None:
    (folder / "config" / "config.yaml").write_text(yaml.safe_dump(study, sort_keys=False))


def snakemake(folder: Path, *args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(BIN / "snakemake"), *args],
        cwd=folder,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def job_counts(folder: Path, *args: str) -> dict[str, int]:
    """{rule: jobs} of a dry run (``snakemake -n --quiet rules``); empty when nothing is to be done."""
    result = snakemake(folder, "-n", "-c1", "--quiet", "rules", *args)
    text = result.stdout + result.stderr
    counts = dict(re.findall(r"^([A-Za-z0-9_.-]+)\s+(\d+)$", text, re.M))
    counts.pop("total", None)
    return {rule: int(n) for rule, n in counts.items()}


def run(folder: Path, *command: str, timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=folder, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result
