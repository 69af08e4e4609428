"""Sampling speed: images per second at every budget, and 1-step sampling against one bare forward pass.

    python benchmarks/sample.py [--config config/config.yaml] [--num-images 450]

The 1-step sampler runs one forward per image plus the Euler update; its time over a bare forward of the same
model on the same inputs is the sampler's overhead (the limit is 1.0; the aim is at most 1.05). Then the cost of
the same images' forwards split into batches of each size in --batch-sizes at --batch-threads threads (a study's
sample job runs one thread), relative to one batch of all of them: what `sample.batch_size` should be.
"""

from __future__ import annotations

import argparse

import torch

from _common import interleaved_ms
from ism.config import load_run
from ism.data.real import load_data
from ism.models import build_network
from ism.sample import euler_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--num-images", type=int, default=450)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[25, 50, 75, 90, 150, 225])
    parser.add_argument("--batch-threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cfg = load_run(args.config, "sm", ["train.device=cpu"])
    data = load_data(cfg.data)
    network = build_network(cfg, data.sample_shape, data.num_classes).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    for p in network.parameters():  # random weights: speed does not depend on training, but zeros could
        p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    n = args.num_images
    noise = torch.randn((n, *data.sample_shape), generator=g)
    labels = torch.randint(0, data.num_classes, (n,), generator=g)
    t0 = torch.zeros(n)
    k0 = torch.zeros(n, dtype=torch.long)

    def bare_forward():
        with torch.inference_mode():
            return network(noise, t0, k0, labels)

    def one_step():
        return euler_sample(network, noise, labels, steps=1, level=0)

    ms = interleaved_ms({"forward": bare_forward, "1-step": one_step}, args.repeats)
    print(f"{n} images {tuple(data.sample_shape)}, threads {args.threads}")
    print(
        f"bare forward {ms['forward']:.2f} ms   1-step sample {ms['1-step']:.2f} ms   "
        f"ratio {ms['1-step'] / ms['forward']:.3f} (limit 1.0, aim <= 1.05)"
    )
    print("budget  ms/batch  images/s  (CFG at N = M doubles the forwards)")
    for steps in cfg.sample.budgets:
        scale = cfg.sample.cfg_scale if steps == cfg.method.base_steps else 1.0
        repeats = max(1, min(args.repeats, 256 // steps))
        run_ms = interleaved_ms(
            {
                "run": lambda s=steps, w=scale: euler_sample(
                    network, noise, labels, steps=s, level=0, cfg_scale=w, null_label=data.num_classes
                )
            },
            repeats,
            warmup=1,
        )["run"]
        print(f"{steps:6d}  {run_ms:8.1f}  {n / (run_ms * 1e-3):8.0f}")

    torch.set_num_threads(args.batch_threads)

    def in_batches(size: int):
        def forwards():
            with torch.inference_mode():
                for start in range(0, n, size):
                    rows = slice(start, start + size)
                    network(noise[rows], t0[rows], k0[rows], labels[rows])

        return forwards

    sizes = [n, *(size for size in args.batch_sizes if size < n)]
    ms = interleaved_ms({size: in_batches(size) for size in sizes}, max(3, args.repeats // 4))
    print(f"batch size  ms per {n} images  ratio to one batch of {n}  ({args.batch_threads} thread(s))")
    for size in sizes:
        print(f"{size:10d}  {ms[size]:8.1f}  {ms[size] / ms[n]:6.3f}")


if __name__ == "__main__":
    main()
