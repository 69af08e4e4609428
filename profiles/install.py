"""Install profiles/slurm as the user profile `slurm`, so that `snakemake --profile slurm` works as typed.

    python profiles/install.py --partition gpu --cpu-partition cpu --account myproj

writes ~/.config/snakemake/slurm/config.yaml (or $XDG_CONFIG_HOME/snakemake/slurm): the repo's profile with your
cluster's settings filled in. Jobs ask for what the study's config says they need (pipeline.resources); with both
partitions given, a partition file beside the profile lets the slurm executor plugin send jobs that ask for GPUs to
--partition and the others to --cpu-partition (its slurm-partition-config); with one, every job goes there.
Rerun it after pulling a changed profile. Only the standard library and PyYAML are used.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
PARTITION_FILE = "partitions.yaml"


def installed_profile(args: argparse.Namespace, dest: Path) -> tuple[dict, dict | None]:
    """(the profile, the partition file or None) for this cluster."""
    profile = yaml.safe_load((HERE / "slurm" / "config.yaml").read_text())
    defaults = profile.setdefault("default-resources", {})
    partitions = None
    if args.partition and args.cpu_partition:
        # The plugin scores each partition against a job's resources: a GPU job fits only a partition with GPUs,
        # a CPU job prefers one without (partitions.py, score_job_fit, plugin 2.8.0).
        partitions = {"partitions": {args.cpu_partition: {"max_gpu": 0}, args.partition: {"max_gpu": args.max_gpus}}}
        profile["slurm-partition-config"] = str(dest / PARTITION_FILE)
    elif args.partition or args.cpu_partition:
        defaults["slurm_partition"] = args.partition or args.cpu_partition
    if args.account:
        defaults["slurm_account"] = args.account
    if args.no_account:
        # Ignored by the pinned snakemake-executor-plugin-slurm 2.8.0: it declares `no_account` (__init__.py:287)
        # but never reads it (its only use went with upstream PR #241, v1.2.0). Without a slurm_account resource,
        # get_account_arg (__init__.py:1626-1673) logs "No SLURM account given, trying to guess." and two more
        # warnings once per snakemake call, then submits without -A (the guess, accounts.py:68-69, always fails).
        # Kept: it is the plugin's documented switch. A real account (--account) is the setting that stops it.
        profile["slurm-no-account"] = True
    if args.status_command:
        profile["slurm-status-command"] = args.status_command
    if args.init_seconds is not None:
        profile["slurm-init-seconds-before-status-checks"] = args.init_seconds
    if not defaults:
        del profile["default-resources"]
    return profile, partitions


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main() -> None:
    config_home = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partition", help="partition of jobs that ask for GPUs (all jobs without --cpu-partition)")
    parser.add_argument("--cpu-partition", help="partition of jobs that ask for no GPU (default: --partition)")
    parser.add_argument("--max-gpus", type=int, default=8, help="GPUs one job may ask for on --partition (8)")
    parser.add_argument("--account", help="SLURM account (slurm_account; the plugin then does not guess one)")
    parser.add_argument(
        "--no-account",
        action="store_true",
        help="submit without an account (slurm-no-account; plugin 2.8.0 ignores it and logs 3 account warnings per "
        "run, then submits without -A anyway: harmless)",
    )
    parser.add_argument("--status-command", choices=["sacct", "squeue"], help="squeue where sacct is unavailable")
    parser.add_argument("--init-seconds", type=int, help="first status check after this many seconds (40)")
    parser.add_argument("--dest", type=Path, default=config_home / "snakemake" / "slurm", help="profile folder")
    args = parser.parse_args()
    dest = args.dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    profile, partitions = installed_profile(args, dest)
    if partitions:
        _write(dest / PARTITION_FILE, yaml.safe_dump(partitions, sort_keys=False))
    _write(
        dest / "config.yaml",
        "# Installed by profiles/install.py from the ism repository; edit there and reinstall.\n"
        + yaml.safe_dump(profile, sort_keys=False),
    )
    print(f"installed {dest / 'config.yaml'}: run `snakemake --profile slurm`")


if __name__ == "__main__":
    main()
