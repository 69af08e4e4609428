"""The ``ism`` command: one sub-command per stage of a study.

Every sub-command validates its inputs (config, data, checkpoint) before any compute starts and reports a problem
as one line ``ism: error: …`` naming the key or file, with exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ism import __version__

EPILOG_TRAIN = """\
examples:
  ism train --config config/config.yaml --run sm
  ism train --config config/config.yaml --run fm --set train.steps=200 --set train.batch_size=32

Resumes by itself from the newest checkpoint in WORKDIR/ckpt (written every train.checkpoint_every steps);
the finished model (online weights, every EMA copy and the resolved config) goes to OUTPUT.
"""

EPILOG_SAMPLE = """\
examples:
  ism sample --checkpoint results/sm/model.pt --steps 1 2 4 8 16 32 64 128
  ism sample --checkpoint results/sm/model.pt --steps 1 --num-images 64 --weights target

Writes OUT_DIR/steps<N>.npz (uint8 NHWC images in 'arr_0', the ADM evaluator layout, plus 'labels' and 'meta')
and a preview grid OUT_DIR/steps<N>.png for every budget N.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ism",
        description="Train shortcut models (SM, iSM) and flow matching; sample them in 1, 2, 4, … 128 steps.",
    )
    parser.add_argument("--version", action="version", version=f"ism {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        "train",
        help="train one run of a study config",
        epilog=EPILOG_TRAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one named run (e.g. fm, sm) of a study config on the CPU or a GPU.",
    )
    train.add_argument("--config", required=True, help="study YAML file (e.g. config/config.yaml)")
    train.add_argument("--run", required=True, help="name of a run under 'runs:' in the config (e.g. sm)")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. train.steps=100 (repeatable; values parsed as YAML)",
    )
    train.add_argument("--workdir", type=Path, help="resumable state (default: work/RUN)")
    train.add_argument("--output", type=Path, help="final model file (default: results/RUN/model.pt)")
    train.add_argument("--live-dir", type=Path, help="dvclive folder for training curves (default: none)")
    train.add_argument(
        "--until-step",
        type=int,
        metavar="S",
        help="stop after step S with a checkpoint (a time slice; run again to continue)",
    )

    sample = sub.add_parser(
        "sample",
        help="sample a trained model at several step budgets",
        epilog=EPILOG_SAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Generate images with N Euler steps of size 1/N for each budget N (powers of two).",
    )
    sample.add_argument("--checkpoint", required=True, type=Path, help="model.pt written by 'ism train'")
    sample.add_argument(
        "--steps",
        required=True,
        type=int,
        nargs="+",
        metavar="N",
        help="step budgets, powers of two up to method.base_steps (e.g. 1 2 4 128)",
    )
    sample.add_argument("--out-dir", type=Path, help="output folder (default: folder of CHECKPOINT/samples)")
    sample.add_argument("--num-images", type=int, help="images per budget (default: sample.num_images)")
    sample.add_argument("--batch-size", type=int, help="images per batch (default: sample.batch_size)")
    sample.add_argument("--seed", type=int, help="seed of noise and labels (default: sample.seed)")
    sample.add_argument("--weights", help="'online' or an EMA name from train.ema (default: sample.weights)")
    sample.add_argument(
        "--cfg-scale",
        type=float,
        help="CFG scale where the method allows it (SM: N = M only); 1 = off (default: config)",
    )
    sample.add_argument(
        "--guidance",
        type=float,
        nargs="+",
        metavar="W",
        help="guidance scales w of an intrinsic-guidance (iSM) run, one file each (default: sample.guidance)",
    )
    sample.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    classifier = sub.add_parser(
        "classifier",
        help="train the digit classifier whose features define FID on the embedded data",
        description="Train the small classifier of an embedded dataset deterministically (seeded init and order) and "
        "save it atomically. The committed checkpoints under src/ism/assets/ were made with the defaults.",
    )
    classifier.add_argument("--dataset", default="digits", choices=["digits", "mnist5k"])
    classifier.add_argument("--out", type=Path, help="checkpoint (default: src/ism/assets/classifier-DATASET.pt)")
    classifier.add_argument("--seed", type=int, default=0)
    classifier.add_argument("--steps", type=int, default=1500)

    evaluate = sub.add_parser(
        "evaluate",
        help="FID, KID, precision and recall of a samples file (or of real held-out images: the floor)",
        description="Compare samples with the train split of the run's dataset in the committed classifier's "
        "feature space (torch-fidelity). --floor scores held-out real test images instead.",
    )
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--samples", type=Path, help="steps<N>.npz written by 'ism sample'")
    source.add_argument("--floor", action="store_true", help="score the held-out real images (the floor)")
    evaluate.add_argument("--config", required=True, help="study YAML file")
    evaluate.add_argument("--run", help="run whose data section applies (default: the run named in the samples)")
    evaluate.add_argument("--num-images", type=int, help="with --floor: test images used (default: sample.num_images)")
    evaluate.add_argument("--classifier", type=Path, help="feature classifier (default: the committed one)")
    evaluate.add_argument("--out", required=True, type=Path, help="metrics JSON to write")

    report = sub.add_parser(
        "report",
        help="FID table (markdown), FID-vs-steps plot and metrics.json from the evaluated runs",
        description="Collect RESULTS/<run>/metrics/steps<N>[-w<w>].json of the given runs and write "
        "OUT_DIR/metrics.json, OUT_DIR/report.md and OUT_DIR/fid_vs_steps.png; print the table.",
    )
    report.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: results)")
    report.add_argument("--runs", nargs="+", required=True, help="runs in table order")
    report.add_argument("--floor", type=Path, help="metrics JSON of real held-out images ('ism evaluate --floor')")
    report.add_argument("--out-dir", type=Path, default=Path("results"), help="where to write (default: results)")
    return parser


def _report(args: argparse.Namespace) -> None:
    from ism.report import write_report

    print(write_report(args.results, args.runs, args.floor, args.out_dir), end="")


def _classifier(args: argparse.Namespace) -> None:
    from ism.classifier import default_classifier_path, save_classifier, train_classifier
    from ism.data import load_dataset

    data = load_dataset(args.dataset)
    model, test_accuracy = train_classifier(data, seed=args.seed, steps=args.steps)
    meta = {
        "dataset": args.dataset,
        "in_channels": data.sample_shape[0],
        "num_classes": data.num_classes,
        "seed": args.seed,
        "steps": args.steps,
        "test_accuracy": test_accuracy,
    }
    path = save_classifier(model, args.out or default_classifier_path(args.dataset), meta)
    print(f"{path}: test accuracy {test_accuracy:.4f}")


def _evaluate(args: argparse.Namespace) -> None:
    from ism.atomic import write_json
    from ism.classifier import default_classifier_path
    from ism.config import ConfigError, load_run, load_yaml
    from ism.data import model_to_uint8
    from ism.evaluate import image_metrics, read_samples
    from ism.train import load_data

    meta: dict = {}
    if args.samples is not None:
        if not args.samples.is_file():
            raise ConfigError(f"samples file '{args.samples}' does not exist (make it with 'ism sample')")
        samples, meta = read_samples(args.samples)
    run = args.run or meta.get("run") or next(iter(load_yaml(args.config).get("runs") or {"sm": {}}))
    cfg = load_run(args.config, run)
    data = load_data(cfg)
    classifier = args.classifier or default_classifier_path(cfg.data.dataset)
    if not Path(classifier).is_file():
        raise ConfigError(
            f"no feature classifier at '{classifier}': make it with "
            f"'ism classifier --dataset {cfg.data.dataset}' or pass --classifier"
        )
    reference = model_to_uint8(data.train.images)
    if args.floor:
        samples = model_to_uint8(data.test.images[: args.num_images or cfg.sample.num_images])
        meta = {"run": "real-test-images", "steps": 0}
    metrics = image_metrics(samples, reference, classifier) | {"sample_meta": meta, "dataset": cfg.data.dataset}
    write_json(args.out, metrics)
    print(f"{args.out}: FID {metrics['fid']:.2f} (n={metrics['n']}, {metrics['extractor']})")


def _train(args: argparse.Namespace) -> None:
    from ism.config import load_run
    from ism.train import Trainer

    cfg = load_run(args.config, args.run, args.overrides)
    trainer = Trainer(
        cfg,
        workdir=args.workdir or Path("work") / cfg.name,
        output=args.output or Path("results") / cfg.name / "model.pt",
        live_dir=args.live_dir,
        progress=not args.quiet,
    )
    result = trainer.run(until_step=args.until_step)
    if result.finished:
        print(f"trained {cfg.name}: {result.step} steps -> {result.output}")
    else:
        print(f"stopped {cfg.name} at step {result.step} of {cfg.train.steps}; run again to resume")


def _sample(args: argparse.Namespace) -> None:
    from ism.sample import sample_to_files

    written = sample_to_files(
        args.checkpoint,
        args.out_dir or args.checkpoint.parent / "samples",
        args.steps,
        num_images=args.num_images,
        batch_size=args.batch_size,
        seed=args.seed,
        weights=args.weights,
        cfg_scale=args.cfg_scale,
        guidance=args.guidance,
        device=args.device,
        progress=not args.quiet,
    )
    for path in written:
        print(path)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from ism.checkpoint import CheckpointError
    from ism.config import ConfigError
    from ism.data import DataError
    from ism.train import NonFiniteLossError

    try:
        commands = {
            "train": _train,
            "sample": _sample,
            "classifier": _classifier,
            "evaluate": _evaluate,
            "report": _report,
        }
        commands[args.command](args)
    except (ConfigError, DataError, CheckpointError, NonFiniteLossError, FileNotFoundError) as err:
        print(f"ism: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
