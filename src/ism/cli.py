"""The ``ism`` command: one sub-command per stage of a study.

Every sub-command validates its inputs (config, data, checkpoint) before any compute starts and reports a problem
as one line ``ism: error: …`` naming the key or file, with exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ism import __version__

if TYPE_CHECKING:
    from ism.config import SampleConfig

EPILOG_TRAIN = """\
examples:
  ism train --config config/config.yaml --run sm
  ism train --config config/config.yaml --run fm --set train.steps=200 --set train.batch_size=32

Resumes by itself from the newest checkpoint in WORKDIR/ckpt (written every train.checkpoint_every steps);
the finished model (online weights, every EMA copy and the resolved config) goes to OUTPUT.
"""

EPILOG_SAMPLE = """\
examples:
  ism sample --checkpoint models/sm/model.pt --steps 1 2 4 8 16 32 64 128
  ism sample --checkpoint models/sm/model.pt --steps 1 --num-images 64 --weights target

Writes OUT_DIR/steps<N>.npz (uint8 NHWC images in 'arr_0', the ADM evaluator layout, plus 'labels' and 'meta')
and a preview grid OUT_DIR/steps<N>.png for every budget N.
"""


def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (0 would otherwise fall back to the config in silence)."""
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return value


def _non_negative_int(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative: shards are numbered from 0")
    return value


def _step_budget(text: str) -> int:
    """argparse type: a power of two (1, 2, 4, ...); the model's method.base_steps caps it after loading."""
    from ism.config import is_power_of_two

    value = _whole_number(text)
    if not is_power_of_two(value):
        raise argparse.ArgumentTypeError(f"{value} is not a power of two (1, 2, 4, ..., 128)")
    return value


def _device_name(text: str) -> str:
    """argparse type: a device name ism takes (whether CUDA is present is checked when the device is selected)."""
    from ism.config import device_name_problem

    problem = device_name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Report a bad or missing argument of this sub-command as the single line ``ism: error: ...`` (exit 2)."""
    command = parser.prog.split()[-1]

    def error(message: str):
        parser.exit(2, f"ism: error: {message} (see 'ism {command} --help')\n")

    parser.error = error  # type: ignore[method-assign]
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ism",
        description="Train shortcut models (SM, iSM) and flow matching; sample them in 1, 2, 4, … 128 steps.",
    )
    parser.add_argument("--version", action="version", version=f"ism {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in (  # in the order of 'ism --help'
        _add_train,
        _add_launch,
        _add_sample,
        _add_merge_samples,
        _add_encode,
        _add_fid_reference,
        _add_layout,
        _add_schema,
        _add_classifier,
        _add_evaluate,
        _add_report,
        _add_curves,
    ):
        add_command(sub)
    return parser


def _command(
    sub: argparse._SubParsersAction, name: str, handler: Callable[[argparse.Namespace], int | None], **kwargs: Any
) -> argparse.ArgumentParser:
    """A sub-command that runs ``handler(args)``; a bad or missing argument of it is one line, exit 2."""
    parser = sub.add_parser(name, **kwargs)
    parser.set_defaults(handler=handler)
    return _one_line_errors(parser)


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. train.steps=100 (repeatable; values parsed as YAML)",
    )


# ------------------------------------------------------------------------------------------------ train, launch


def _train_common() -> argparse.ArgumentParser:
    """Arguments shared by 'train' (in this process) and 'launch' (as a submitit job)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", required=True, help="study YAML file (e.g. config/config.yaml)")
    common.add_argument("--run", required=True, help="name of a run under 'runs:' in the config (e.g. sm)")
    _add_overrides(common)
    common.add_argument("--workdir", type=Path, help="resumable state (default: work/RUN/<training digest>)")
    common.add_argument("--output", type=Path, help="final model file (default: models/RUN/model.pt)")
    common.add_argument("--live-dir", type=Path, help="dvclive folder for training curves (default: none)")
    common.add_argument("--latents", type=Path, help="encoded data from 'ism encode' (default: load the dataset)")
    common.add_argument(
        "--until-step", type=int, metavar="S", help="stop after step S with a checkpoint (run again to continue)"
    )
    return common


def _add_train(sub: argparse._SubParsersAction) -> None:
    _command(
        sub,
        "train",
        _train,
        help="train one run of a study config (in this process)",
        parents=[_train_common()],
        epilog=EPILOG_TRAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one named run (e.g. fm, sm) of a study config on the CPU or a GPU.",
    )


def _train(args: argparse.Namespace) -> None:
    from ism.train import Trainer

    cfg = _run_config(args)
    trainer = Trainer(cfg, **_train_paths(args, cfg), progress=not args.quiet)
    result = trainer.run(until_step=args.until_step)
    if result.finished:
        print(f"trained {cfg.name}: {result.step} steps -> {result.output}")
    else:
        print(f"stopped {cfg.name} at step {result.step} of {cfg.train.steps}; run again to resume")


def _add_launch(sub: argparse._SubParsersAction) -> None:
    launch = _command(
        sub,
        "launch",
        _launch,
        help="train one run as a submitit job (local, slurm or debug), wait for it and stream its log",
        parents=[_train_common()],
        description="Submit the training of one run with submitit, stream its log and wait; Ctrl-C or SIGTERM "
        "cancels the job. On SLURM the job checkpoints on USR2 (time limit, preemption) and requeues itself.",
    )
    launch.add_argument("--cluster", choices=["local", "slurm", "debug"], help="submitit executor (launch.cluster)")
    launch.add_argument(
        "--watch-pid",
        type=int,
        metavar="PID",
        help="cancel the job and stop when process PID ends (the workflow passes Snakemake's own pid, so a killed "
        "Snakemake leaves no training behind)",
    )


def _launch(args: argparse.Namespace) -> None:
    from ism.launch import TrainingJob, launch

    cfg = _run_config(args)
    if args.cluster:
        cfg = cfg.model_copy(update={"launch": cfg.launch.model_copy(update={"cluster": args.cluster})})
    job = TrainingJob(cfg, **_train_paths(args, cfg), until_step=args.until_step)
    result = launch(job, watch_pid=args.watch_pid)
    state = "trained" if result["finished"] else "stopped at step"
    print(f"{state} {cfg.name}: step {result['step']} (resumed from {result['resumed_from']})")


def _run_config(args: argparse.Namespace):
    from ism.config import load_run

    return load_run(args.config, args.run, args.overrides)


def _train_paths(args: argparse.Namespace, cfg) -> dict:
    from ism.naming import training_workdir

    return {
        "workdir": args.workdir or training_workdir(cfg),
        "output": args.output or Path("models") / cfg.name / "model.pt",
        "live_dir": args.live_dir,
        "latents": args.latents,
    }


# ------------------------------------------------------------------------------------------ sample, merge-samples


def _add_sample(sub: argparse._SubParsersAction) -> None:
    sample = _command(
        sub,
        "sample",
        _sample,
        help="sample a trained model at several step budgets",
        epilog=EPILOG_SAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Generate images with N Euler steps of size 1/N for each budget N (powers of two).",
    )
    sample.add_argument("--checkpoint", required=True, type=Path, help="model.pt written by 'ism train'")
    sample.add_argument(
        "--steps",
        required=True,
        type=_step_budget,
        nargs="+",
        metavar="N",
        help="step budgets, powers of two up to method.base_steps (e.g. 1 2 4 128)",
    )
    sample.add_argument("--out-dir", type=Path, help="output folder (default: results/RUN/samples)")
    sample.add_argument("--num-images", type=_positive_int, help="images per budget (default: sample.num_images)")
    sample.add_argument("--batch-size", type=_positive_int, help="images per batch (default: sample.batch_size)")
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
    sample.add_argument("--device", default="auto", type=_device_name, help="auto, cpu, cuda or cuda:N (default: auto)")
    sample.add_argument("--config", help="study file whose 'sample' section applies (default: the model's own)")
    sample.add_argument("--run", help="with --config: the run whose 'sample' section applies")
    sample.add_argument(
        "--shard", type=_non_negative_int, default=0, help="shard I of --num-shards (a contiguous block of batches)"
    )
    sample.add_argument(
        "--num-shards", type=_positive_int, default=1, help="split each file into this many jobs (default 1)"
    )


def _sample(args: argparse.Namespace) -> None:
    from ism.sample import SampleSettings, sample_to_files

    settings = SampleSettings(
        section=_study_sample_section(args),
        num_images=args.num_images,
        batch_size=args.batch_size,
        seed=args.seed,
        weights=args.weights,
        cfg_scale=args.cfg_scale,
        guidance=args.guidance,
        shard=args.shard,
        num_shards=args.num_shards,
    )
    for path in sample_to_files(
        args.checkpoint, args.out_dir, args.steps, settings, device=args.device, progress=not args.quiet
    ):
        print(path)


def _study_sample_section(args: argparse.Namespace) -> SampleConfig | None:
    """The 'sample' section of --run in the study --config, or None to sample with the model file's own."""
    from ism.config import ConfigError, load_run

    if not args.config:
        return None
    if not args.run:
        raise ConfigError("--config needs --run: the run whose 'sample' section applies")
    return load_run(args.config, args.run).sample


def _add_merge_samples(sub: argparse._SubParsersAction) -> None:
    merge = _command(
        sub,
        "merge-samples",
        _merge_samples,
        help="join the shards of one samples file (written by 'ism sample --shard')",
        description="Concatenate sample shards 0..S-1 in order into one steps<N>.npz and its grid.",
    )
    merge.add_argument("shards", nargs="+", type=Path, help="shard files in shard order")
    merge.add_argument("--out", required=True, type=Path, help="merged samples file")


def _merge_samples(args: argparse.Namespace) -> None:
    from ism.sample import merge_sample_shards

    print(merge_sample_shards(args.shards, args.out))


# ------------------------------------------------------------------------------------------- encode, fid-reference


def _add_encode(sub: argparse._SubParsersAction) -> None:
    encode = _command(
        sub,
        "encode",
        _encode,
        help="encode the study's training images (identity or SD-VAE latents) into memory-mappable files",
        description="Encode shard I of S of the train split into OUT_DIR (one job per shard); --merge joins "
        "the S shards into OUT_DIR/train.npy, labels.npy and meta.json.",
    )
    encode.add_argument("--config", required=True, help="study YAML file")
    encode.add_argument("--out-dir", required=True, type=Path, help="latents folder (e.g. data/latents/digits)")
    encode.add_argument("--shard", type=_non_negative_int, default=0, help="which shard to encode (default 0)")
    encode.add_argument("--num-shards", type=_positive_int, default=1, help="number of shards (default 1)")
    encode.add_argument("--merge", action="store_true", help="merge the shards instead of encoding one")


def _encode(args: argparse.Namespace) -> None:
    _check_encode_inputs(args)
    from ism import study

    if args.merge:
        path = study.merge_encoded(args.config, args.out_dir, num_shards=args.num_shards)
    else:
        path = study.encode(
            args.config, args.out_dir, shard=args.shard, num_shards=args.num_shards, progress=not args.quiet
        )
    print(path)


def _check_encode_inputs(args: argparse.Namespace) -> None:
    """Everything 'ism encode' can know before computing: the shard numbers, the output folder, and for an image
    folder that every image this shard answers for (its train block and its test block) decodes."""
    from ism.config import (  # not ism.study: a refusal stays quick
        IMAGE_DATASETS,
        load_yaml,
        resolve_run,
        validate_study,
    )
    from ism.data import DataError
    from ism.data.datasets import check_imagefolder, image_size_required
    from ism.data.encode import EncodeError, output_folder_problem

    if not args.merge and args.shard >= args.num_shards:
        raise EncodeError(
            f"--shard {args.shard}: with --num-shards {args.num_shards} shards are numbered 0..{args.num_shards - 1}"
        )
    problem = output_folder_problem(args.out_dir)
    if problem:
        raise EncodeError(f"--out-dir '{args.out_dir}' cannot be written: {problem}")
    raw = load_yaml(args.config)
    d = resolve_run(raw, next(iter(validate_study(raw).runs))).data  # runs may not override 'data'
    if d.dataset not in IMAGE_DATASETS:
        raise DataError(
            f"data.dataset '{d.dataset}' is a set of 2-D points, not images: it has no encoding stage "
            "(ism train reads it directly)"
        )
    if d.dataset != "imagefolder":
        return
    if args.merge:
        if d.image_size is None:
            raise image_size_required()
        return
    check_imagefolder(d.root, d.test_fraction, d.split_seed, d.image_size, shard=args.shard, num_shards=args.num_shards)


def _add_fid_reference(sub: argparse._SubParsersAction) -> None:
    reference = _command(
        sub,
        "fid-reference",
        _fid_reference,
        help="embed the real reference images once (features used by 'ism evaluate')",
        description="Compute the features of the train split with the study's extractor (torch-fidelity) and "
        "write them as float32 to OUT_DIR/reference.npz (no pickle), their info to OUT_DIR/reference.json.",
    )
    reference.add_argument("--config", required=True, help="study YAML file")
    reference.add_argument("--out-dir", required=True, type=Path, help="reference folder (results/fid_reference)")


def _fid_reference(args: argparse.Namespace) -> None:
    from ism import study

    print(study.reference(args.config, args.out_dir))


# ------------------------------------------------------------------------------------- layout, schema, classifier


def _add_layout(sub: argparse._SubParsersAction) -> None:
    layout = _command(
        sub,
        "layout",
        _layout,
        help="dry-run check of the training step's row layout at the study's world size",
        description="Print each run's global self-consistency/flow-matching/guidance rows per level and each "
        "rank's share (world size from launch.nodes x tasks per node); exit 1 on a layout defect.",
    )
    layout.add_argument("--config", required=True, help="study YAML file (e.g. config/imagenet256.yaml)")
    layout.add_argument("--run", dest="runs", nargs="+", help="runs to check (default: every run of the study)")
    _add_overrides(layout)


def _layout(args: argparse.Namespace) -> int:
    from ism.config import load_run, load_yaml, validate_study
    from ism.layout_check import check_run

    raw = load_yaml(args.config)
    study = validate_study(raw)
    problems = []
    for run in args.runs or list(study.runs):
        report = check_run(load_run(args.config, run, args.overrides))
        print("\n".join(report.lines))
        problems += report.problems
    for problem in problems:
        print(f"ism: layout defect: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _add_schema(sub: argparse._SubParsersAction) -> None:
    schema = _command(sub, "schema", _schema, help="write the JSON Schema of study files (workflow/schemas)")
    schema.add_argument("--out", required=True, type=Path, help="schema file to write")


def _schema(args: argparse.Namespace) -> None:
    import json

    from ism.atomic import write_bytes
    from ism.config import study_json_schema

    write_bytes(args.out, (json.dumps(study_json_schema(), indent=2, sort_keys=True) + "\n").encode())
    print(args.out)


EPILOG_CLASSIFIER = """\
examples:
  ism classifier --config my-folder-study.yaml                # the study's dataset (an image folder too)
  ism classifier --config my-folder-study.yaml --out models/classifier-mine.pt --steps 3000
  ism classifier --dataset mnist5k                            # an embedded set's dedicated design

--config trains on the study's train split (data.*: its split and pixels, at data.image_size), tests on the held-out
side, with evaluate.classifier_steps and evaluate.classifier_seed unless --steps/--seed are given, and writes
OUT (default: evaluate.classifier, else models/classifier-STUDY.pt, where the workflow's classifier rule puts it).
--dataset trains an embedded set's dedicated design on its default split (src/ism/assets/classifier-digits.pt was
made with 'ism classifier --dataset digits'). The same inputs give the same bytes on the CPU, wherever the file is
written (atomically); FID names the extractor ism-classifier-DATASET-<sha256[:12]>.
"""


def _add_classifier(sub: argparse._SubParsersAction) -> None:
    from ism.config import EMBEDDED_DATASETS

    classifier = _command(
        sub,
        "classifier",
        _classifier,
        help="train the small classifier whose features define FID (embedded data, image folders)",
        description="Train the feature classifier of FID deterministically (seeded init and order, CPU).",
        epilog=EPILOG_CLASSIFIER,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = classifier.add_mutually_exclusive_group()
    source.add_argument("--config", help="study YAML file: train on its dataset (digits, mnist5k, imagefolder)")
    source.add_argument(
        "--dataset", choices=EMBEDDED_DATASETS, help="an embedded dataset with its default split (default: digits)"
    )
    classifier.add_argument(
        "--out",
        type=Path,
        help="checkpoint (default: --config: evaluate.classifier, else models/classifier-STUDY.pt; "
        "--dataset: src/ism/assets/classifier-DATASET.pt)",
    )
    classifier.add_argument("--seed", type=int, help="init and data order (default: evaluate.classifier_seed, else 0)")
    classifier.add_argument(
        "--steps", type=_positive_int, help="training steps (default: evaluate.classifier_steps, else 1500)"
    )


def _classifier(args: argparse.Namespace) -> None:
    from ism.classifier import save_classifier

    if args.config is not None:
        model, meta, out = _study_classifier(args)
    else:
        model, meta, out = _embedded_classifier(args)
    path = save_classifier(model, out, meta)
    print(f"{path}: test accuracy {meta['test_accuracy']:.4f}")


def _study_classifier(args: argparse.Namespace):
    from ism import study
    from ism.classifier import train_study_classifier
    from ism.config import BUILT_CLASSIFIER

    cfg, _ = study.load_study(args.config)
    e = cfg.evaluate
    seed = e.classifier_seed if args.seed is None else args.seed
    steps = e.classifier_steps if args.steps is None else args.steps
    model, meta = train_study_classifier(cfg.data, seed=seed, steps=steps)
    return model, meta, args.out or Path(e.classifier or BUILT_CLASSIFIER.format(study=cfg.study))


def _embedded_classifier(args: argparse.Namespace):
    from ism.classifier import default_classifier_path, train_classifier
    from ism.data import load_dataset

    dataset = args.dataset or "digits"
    seed = 0 if args.seed is None else args.seed
    steps = 1500 if args.steps is None else args.steps
    data = load_dataset(dataset)
    model, test_accuracy = train_classifier(data, seed=seed, steps=steps)
    # The meta of the committed checkpoint, key for key: the same command gives the same bytes (and extractor name).
    meta = {
        "dataset": dataset,
        "in_channels": data.sample_shape[0],
        "num_classes": data.num_classes,
        "seed": seed,
        "steps": steps,
        "test_accuracy": test_accuracy,
    }
    return model, meta, args.out or default_classifier_path(dataset)


# ------------------------------------------------------------------------------------------------ evaluate, report


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    evaluate = _command(
        sub,
        "evaluate",
        _evaluate,
        help="FID, KID, precision and recall of samples files (or of real held-out images: the floor)",
        description="Compare samples with the train split of the run's dataset in the study's feature space "
        "(torch-fidelity), or with the ADM reference statistics of evaluate.reference_statistics (FID only). "
        "--floor scores held-out real test images instead. Samples must match the reference's size and channels.",
    )
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--samples",
        type=Path,
        nargs="+",
        metavar="NPZ",
        help="steps<N>.npz written by 'ism sample'; several files are scored in one process (one --out each)",
    )
    source.add_argument("--floor", action="store_true", help="score the held-out real images (the floor)")
    evaluate.add_argument("--config", required=True, help="study YAML file")
    evaluate.add_argument(
        "--reference",
        type=Path,
        help="folder written by 'ism fid-reference' (default: embed now; unused with evaluate.reference_statistics)",
    )
    evaluate.add_argument(
        "--out", required=True, type=Path, nargs="+", metavar="JSON", help="metrics JSON to write, one per --samples"
    )


def _evaluate(args: argparse.Namespace) -> None:
    from ism import study
    from ism.config import ConfigError

    if args.floor:
        if len(args.out) != 1:
            raise ConfigError(f"--floor writes one metrics file, not {len(args.out)}: give one --out")
        written = [study.floor(args.config, args.out[0], args.reference)]
    else:
        if len(args.out) != len(args.samples):
            raise ConfigError(
                f"{len(args.samples)} --samples files but {len(args.out)} --out files: give one --out per samples file"
            )
        written = study.evaluate_files(args.config, args.samples, args.out, args.reference)
    for out, metrics in zip(args.out, written, strict=True):
        print(f"{out}: FID {metrics['fid']:.2f} (n={metrics['n']}, {metrics['extractor']})")


def _add_report(sub: argparse._SubParsersAction) -> None:
    report = _command(
        sub,
        "report",
        _report,
        help="FID table (markdown), FID-vs-steps plot and metrics.json from the evaluated runs",
        description="Collect RESULTS/<run>/metrics/steps<N>[-w<w>].json of the given runs and write "
        "OUT_DIR/metrics.json, OUT_DIR/report.md and OUT_DIR/fid_vs_steps.png; print the table.",
    )
    report.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: results)")
    report.add_argument("--runs", nargs="+", required=True, help="runs in table order")
    report.add_argument("--metrics", nargs="+", type=Path, help="only these metrics files (default: all found)")
    report.add_argument("--floor", type=Path, help="metrics JSON of real held-out images ('ism evaluate --floor')")
    report.add_argument("--out-dir", type=Path, default=Path("results"), help="where to write (default: results)")
    report.add_argument(
        "--config", help="study YAML whose 'paper' section gives published FIDs to print next to the runs"
    )


def _report(args: argparse.Namespace) -> None:
    from ism.config import load_yaml, validate_study
    from ism.report import write_report

    paper = validate_study(load_yaml(args.config)).paper if args.config else None
    print(write_report(args.results, args.runs, args.floor, args.out_dir, metrics=args.metrics, paper=paper), end="")


def _add_curves(sub: argparse._SubParsersAction) -> None:
    curves = _command(
        sub,
        "curves",
        _curves,
        help="plot the training loss of every run against its step (one figure, one line per run)",
        description="Read each run's training log (dvclive, MODELS/RUN/train_log, written by 'ism launch "
        "--live-dir') and plot its loss against the step, one line per run, as one PNG. A run without a log has "
        "no line.",
    )
    curves.add_argument("--runs", nargs="+", required=True, help="runs in legend order")
    curves.add_argument("--models", type=Path, default=Path("models"), help="model folders (default: models)")
    curves.add_argument("--out", type=Path, required=True, help="PNG to write, e.g. results/train_loss.png")


def _curves(args: argparse.Namespace) -> None:
    from ism.curves import write_curves

    print(write_curves(args.models, args.runs, args.out))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from ism.errors import USER_ERRORS

    try:
        status = args.handler(args)
    except (*USER_ERRORS, FileNotFoundError) as err:
        print(f"ism: error: {err}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
