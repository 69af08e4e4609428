"""Cost of one sOT pool shard at ImageNet-latent size: the float64 cost matrix and the exact assignment.

    python benchmarks/sot_pool.py                  # 1,024, 2,048 and 4,096 points (about 10 s)
    python benchmarks/sot_pool.py --points 8192    # one global pool of iSM's K = 32 at B = 256 (about a minute)

Uses the library's own functions (ism.method.transport) on 32×32×4 latents (4,096-d) at one thread, as one rank's
prefetch thread solves it; config/README.md ("sOT across ranks") records the figures and the choice they support.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from ism.method.transport import solve_assignment, squared_distances


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--dim", type=int, default=4 * 32 * 32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"host: {platform.processor() or platform.machine()}, 1 thread, {args.dim}-d points")
    print("| points per shard | cost matrix | assignment | total |\n|---:|---:|---:|---:|")
    for n in args.points:
        data = torch.randn(n, args.dim, generator=torch.Generator().manual_seed(0))
        noise = torch.randn(n, args.dim, generator=torch.Generator().manual_seed(1))
        start = time.perf_counter()
        cost = squared_distances(noise, data).numpy()
        built = time.perf_counter()
        solve_assignment(cost)
        solved = time.perf_counter()
        print(f"| {n:,} | {built - start:.2f} s | {solved - built:.2f} s | {solved - start:.2f} s |", flush=True)


if __name__ == "__main__":
    main()
