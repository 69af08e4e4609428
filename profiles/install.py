"""Install profiles/slurm as the user profile `slurm`, so that `snakemake --profile slurm` works as typed.

    python profiles/install.py --partition gpu --cpu-partition cpu --account myproj

writes ~/.config/snakemake/slurm/config.yaml (or $XDG_CONFIG_HOME/snakemake/slurm): the repo's profile with your
partitions and account filled in. GPU rules (those with a `gpu` resource) go to --partition, the others to
--cpu-partition. Rerun it after pulling a changed profile. Only the standard library and PyYAML are used.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def installed_profile(args: argparse.Namespace) -> dict:
    profile = yaml.safe_load((HERE / "slurm" / "config.yaml").read_text())
    defaults = profile.setdefault("default-resources", {})
    if args.cpu_partition:
        defaults["slurm_partition"] = args.cpu_partition
    if args.account:
        defaults["slurm_account"] = args.account
    for resources in profile.get("set-resources", {}).values():
        if "gpu" in resources and args.partition:
            resources["slurm_partition"] = args.partition
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
    if args.max_cpus or args.max_mem_mb:  # a small cluster (or the single-node test cluster)
        for rule, threads in profile.get("set-threads", {}).items():
            profile["set-threads"][rule] = min(threads, args.max_cpus or threads)
        for resources in [defaults, *profile.get("set-resources", {}).values()]:
            for key in ("cpus_per_gpu", "cpus_per_task"):
                if key in resources and args.max_cpus:
                    resources[key] = min(resources[key], args.max_cpus)
            if "mem_mb" in resources and args.max_mem_mb:
                resources["mem_mb"] = min(resources["mem_mb"], args.max_mem_mb)
    if args.gpus_off:  # a cluster without GPUs: drop the GPU requests, keep the CPU counts
        for resources in profile.get("set-resources", {}).values():
            if resources.pop("gpu", None) is not None:
                resources["cpus_per_task"] = resources.pop("cpus_per_gpu", 1)
    return profile


def main() -> None:
    config_home = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partition", help="partition of GPU jobs (sample, evaluate, encode)")
    parser.add_argument("--cpu-partition", help="partition of the other jobs (default: the cluster's default)")
    parser.add_argument("--account", help="SLURM account (slurm_account; the plugin then does not guess one)")
    parser.add_argument(
        "--no-account",
        action="store_true",
        help="submit without an account (slurm-no-account; plugin 2.8.0 ignores it and logs 3 account warnings per "
        "run, then submits without -A anyway: harmless)",
    )
    parser.add_argument("--status-command", choices=["sacct", "squeue"], help="squeue where sacct is unavailable")
    parser.add_argument("--init-seconds", type=int, help="first status check after this many seconds (40)")
    parser.add_argument("--max-cpus", type=int, help="cap every job's CPU request (small clusters)")
    parser.add_argument("--max-mem-mb", type=int, help="cap every job's memory request in MB (small clusters)")
    parser.add_argument("--gpus-off", action="store_true", help="request CPUs instead of GPUs")
    parser.add_argument("--dest", type=Path, default=config_home / "snakemake" / "slurm", help="profile folder")
    args = parser.parse_args()
    args.dest.mkdir(parents=True, exist_ok=True)
    target = args.dest / "config.yaml"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(
        "# Installed by profiles/install.py from the ism repository; edit there and reinstall.\n"
        + yaml.safe_dump(installed_profile(args), sort_keys=False)
    )
    tmp.replace(target)
    print(f"installed {target}: run `snakemake --profile slurm`")


if __name__ == "__main__":
    main()
