"""How much of a FID is the sampling seed? One trained model scored at several sampling seeds and image counts.

    python benchmarks/fid_noise.py --model MODEL.pt [--config config/config.yaml] [--budgets 1] [--guidance 0.5] \
        [--weights infer] [--labels balanced] [--images 450 2000 5000] [--seeds 0 1 2 3 4 5] [--out DIR]

For each image count n and sampling seed s the model samples n images at every budget (and each guidance scale w
of an intrinsic-guidance model) from ``--weights`` (default: the model's own), scored like the workflow scores (the
study's extractor and reference, embedded once into ``DIR/reference``). Prints, per n, budget and w, the FID's mean
± sample std over the seeds, its range, and the share of the std in the mean term ‖μ_g − μ_r‖² (the rest is the
covariance term): a seed's mean feature μ_g moves by about √(Tr Σ_g / n), and that shift projects onto the model's
bias μ̄_g − μ_r, so the spread grows with the bias and shrinks only as 1/√n. ``DIR/fid_noise.csv`` keeps every
point (``n,seed,steps,w,fid,mean_term``); finished points are not recomputed.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

import numpy as np
import torch

from ism.atomic import write_bytes
from ism.evaluate import read_samples
from ism.naming import parse_sample_name
from ism.sample import SampleSettings, sample_to_files
from ism.study import _Scorer, reference

FIELDS = ["n", "seed", "steps", "w", "fid", "mean_term"]


def score(scorer: _Scorer, path: Path) -> tuple[float, float]:
    """(FID, its mean term ‖μ_g − μ_r‖²) of a samples file, as the workflow's scoring computes the FID."""
    images, meta = read_samples(path)
    scorer.check(images.shape, f"samples file '{path}'")
    fid = scorer.score(images, meta, path.with_suffix(".json"))["fid"]
    features = scorer.space(images).double()
    return fid, float(((features.mean(0) - scorer.reference_features.double().mean(0)) ** 2).sum())


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="an exported model (ism train --output)")
    parser.add_argument("--config", default="config/config.yaml", help="the study whose extractor scores")
    parser.add_argument("--budgets", type=int, nargs="+", default=[1])
    parser.add_argument("--guidance", type=float, nargs="+", help="w of an intrinsic-guidance model")
    parser.add_argument("--weights", help="online or an EMA name (default: the model's sample.weights)")
    parser.add_argument("--labels", choices=["uniform", "balanced"], help="label draw (default: the model's)")
    parser.add_argument("--images", type=int, nargs="+", default=[450, 2000, 5000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fid_noise"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out
    if not (out / "reference" / "reference.npz").is_file():
        reference(args.config, out / "reference")
    scorer = _Scorer(args.config, out / "reference")
    table = out / "fid_noise.csv"
    rows = read_rows(table)
    done = {(int(r["n"]), int(r["seed"])) for r in rows}
    for n in args.images:
        for seed in args.seeds:
            if (n, seed) in done:
                continue
            settings = SampleSettings(
                num_images=n, seed=seed, weights=args.weights, labels=args.labels, guidance=args.guidance
            )
            files = sample_to_files(
                args.model, out / f"n{n}-seed{seed}", args.budgets, settings, device="cpu", progress=False
            )
            for path in files:
                steps, w = parse_sample_name(path.stem)
                fid, mean_term = score(scorer, path)
                rows.append(
                    {
                        "n": n,
                        "seed": seed,
                        "steps": steps,
                        "w": "" if w is None else f"{w:g}",
                        "fid": f"{fid:.4f}",
                        "mean_term": f"{mean_term:.4f}",
                    }
                )
            lines = [",".join(FIELDS)] + [",".join(str(r[k]) for k in FIELDS) for r in rows]
            write_bytes(table, ("\n".join(lines) + "\n").encode())
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((int(r["n"]), int(r["steps"]), r["w"]), []).append(r)
    print("| images | steps | w | seeds | FID mean ± std | range | std of mean term / std of FID |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for (n, steps, w), group in sorted(groups.items()):
        fids = [float(r["fid"]) for r in group]
        means = [float(r["mean_term"]) for r in group]
        std = statistics.stdev(fids) if len(fids) > 1 else float("nan")
        share = statistics.stdev(means) / std if len(fids) > 1 and std > 0 else float("nan")
        print(
            f"| {n} | {steps} | {w or '–'} | {len(fids)} | {np.mean(fids):.2f} ± {std:.2f} | "
            f"{min(fids):.2f}–{max(fids):.2f} | {share:.2f} |"
        )


if __name__ == "__main__":
    main()
