# Helpers shared by the rules: config validation, the run x budget grid, and the rerun keys.
import re
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.utils import validate

from ism.atomic import write_bytes
from ism.config import (
    ConfigError,
    pipeline_runs,
    resolve_run,
    training_identity,
    validate_study,
    without_new_defaults,
)
from ism.naming import (
    digest,
    guidance_scales,
    parse_sample_name,
    sample_name,
    sample_names,
    shard_label,
    shard_name,
    training_workdir,
)

# One line naming the key, before any job starts (the library's check, then the exported JSON Schema).
try:
    STUDY = validate_study(config)
except ConfigError as err:
    raise WorkflowError(f"config error: {err}") from None
validate(config, schema="../schemas/config.schema.json", set_default=False)

RUNS = pipeline_runs(STUDY)
RUN_CONFIGS = {run: resolve_run(config, run) for run in RUNS}
DATASET = STUDY.data.dataset
LATENTS = f"data/latents/{DATASET}"
ENCODE_SHARDS = STUDY.pipeline.encode_shards
SAMPLE_SHARDS = STUDY.pipeline.sample_shards
# per_file: one sampling and one evaluation job per samples file; per_run: one of each per run, for all its files.
GROUPING = STUDY.pipeline.job_grouping
# Cores, GPUs, memory and time of each step's jobs: the study's (pipeline.resources), not the profile's.
JOBS = STUDY.pipeline.resources
# The `ism` of the environment running Snakemake, so rules work without an activated venv.
ISM_BIN = shlex.quote(str(Path(sys.executable).parent / "ism"))
ISM = f"{ISM_BIN} -q"

# Every job reads the validated study (with any --config overrides) from this file; it is rewritten only
# when its content changes. Rerun decisions come from the `params` keys below, not from this file's mtime.
STUDY_FILE = f"work/config/{STUDY.study}.yaml"


def _write_study_file():
    text = yaml.safe_dump(dict(config), sort_keys=True)
    path = Path(STUDY_FILE)
    if not path.is_file() or path.read_text() != text:
        write_bytes(path, text.encode())


_write_study_file()

# The feature extractor's files, before any job (a study is valid without them: `ism layout` needs none): the
# Inception weights exist and are large enough (their hash is checked when loaded), a given classifier exists.
try:
    from ism.config import check_extractor_files

    check_extractor_files(STUDY, STUDY_FILE)
except ConfigError as err:
    raise WorkflowError(f"config error: {err}") from None


def training_key(wildcards):
    """What determines the trained weights: changing it retrains, changing anything else does not."""
    cfg = RUN_CONFIGS[wildcards.run]
    # train.steps counts too: more steps retrain by resuming from the newest checkpoint of the run's workdir.
    return digest([training_identity(cfg), cfg.train.steps])


def train_workdir(wildcards):
    """Where the run trains (ism.naming.training_workdir, also `ism train`'s default): one folder per training
    configuration, so a changed training key never meets checkpoints the trainer must refuse.
    """
    return str(training_workdir(RUN_CONFIGS[wildcards.run]))


def sampling_key(wildcards):
    """What determines a samples file besides its budget and w (which are in its name)."""
    s = RUN_CONFIGS[wildcards.run].sample.model_dump(
        mode="json", exclude={"budgets", "guidance"}
    )
    return digest([without_new_defaults(s, ("sample",)), SAMPLE_SHARDS])


# What determines the real images (the encoding, the reference, the study's classifier); keys added since, at their
# defaults, are left out so that existing workspaces keep their keys.
DATA = without_new_defaults(STUDY.data.model_dump(mode="json"), ("data",))


def evaluation_key(wildcards=None):
    return digest([STUDY.evaluate.model_dump(mode="json"), DATA])


def data_key(wildcards=None):
    return digest(DATA)


# A samples file's name (ism.naming.sample_name) in wildcards: steps<N>, or steps<N>-w<w> for a run with intrinsic
# guidance. {w} is the guidance scale alone and {w_tag} the "-w" before it; both are empty for a file without w.
SAMPLE = "steps{steps}{w_tag}{w}"


def guidance_option(wildcards):
    """The file's guidance scale as `ism sample --guidance w`; nothing for a file without one."""
    return f"--guidance {wildcards.w}" if wildcards.w else ""


def samples_option(wildcards, input):
    """The samples file `ism evaluate` scores (the floor scores held-out real images instead)."""
    return f"--samples {shlex.quote(input.samples)}"


def run_files(run, folder, suffix, scales=None):
    """The samples files of a run (every budget, at each guidance scale w in ``scales``, default all) as paths with
    the {run} wildcard: a per-run job's outputs or inputs (its rule constrains {run} to that run).
    """
    cfg = RUN_CONFIGS[run]
    return [
        f"results/{{run}}/{folder}/{sample_name(steps, w)}.{suffix}"
        for steps in cfg.sample.budgets
        for w in guidance_scales(cfg)
        if scales is None or w in scales
    ]


def _file_layout(run):
    """What a run's samples files are: (budgets, guidance scales); runs of one layout share their rules."""
    cfg = RUN_CONFIGS[run]
    return tuple(cfg.sample.budgets), tuple(guidance_scales(cfg))


def _rule_suffix(budgets, scales, budget_layouts):
    """_w0.5 (the scales, if any), preceded by _steps1-2-4 when runs with these scales sample other budgets too."""
    steps = f"_steps{'-'.join(map(str, budgets))}" if budget_layouts > 1 else ""
    return steps + (
        "" if scales == (None,) else "_w" + "_".join(f"{w:g}" for w in scales)
    )


def sample_jobs():
    """Per-run sampling rules as (name, runs, [w], log): one rule per (budgets, w), one job per run of it. A run
    without guidance has one job; an intrinsic-guidance run one per scale w (its scales cost alike and run side by
    side). Rules are named by file layout, not by run (sample_run, sample_run_w0.5, ...), so seeds add jobs, not
    rules.
    """
    jobs = {}
    for run in RUNS:
        budgets, scales = _file_layout(run)
        for w in scales:
            jobs.setdefault((budgets, w), []).append(run)
    for (budgets, w), runs in jobs.items():
        budget_layouts = sum(1 for _, other in jobs if other == w)
        log = (
            "logs/sample/{run}/run.log"
            if w is None
            else f"logs/sample/{{run}}/run-w{w:g}.log"
        )
        yield f"sample_run{_rule_suffix(budgets, (w,), budget_layouts)}", runs, [w], log


def evaluate_jobs():
    """Per-run scoring rules as (name, runs): one rule per file layout (evaluate_run, evaluate_run_w0.5_1, ...),
    one job per run of it."""
    groups = {}
    for run in RUNS:
        groups.setdefault(_file_layout(run), []).append(run)
    for (budgets, scales), runs in groups.items():
        budget_layouts = sum(1 for _, other in groups if other == scales)
        yield f"evaluate_run{_rule_suffix(budgets, scales, budget_layouts)}", runs


def only_runs(runs):
    """A per-run rule's constraint: {run} is one of these runs' names, nothing else."""
    return "|".join(map(re.escape, runs))


def _named_files(output):
    """(steps, w) of each samples file among a job's outputs."""
    return [
        parse_sample_name(Path(path).stem) for path in output if path.endswith(".npz")
    ]


def run_budgets(wildcards, output):
    """`ism sample --steps` of a per-run job: the budgets its files name (derived from its outputs, so a new
    budget reruns the job because a file is missing, not because a parameter changed).
    """
    return " ".join(str(n) for n in dict.fromkeys(n for n, _ in _named_files(output)))


def run_guidance(wildcards, output):
    """`ism sample --guidance` of a per-run job: the scales its files name; nothing for a run without w."""
    scales = [
        w for w in dict.fromkeys(w for _, w in _named_files(output)) if w is not None
    ]
    return f"--guidance {' '.join(f'{w:g}' for w in scales)}" if scales else ""


def sample_labels(name):
    """A per-run job's grid labels in the report, as the per-file rule's: budget (right-aligned to BUDGET_WIDTH,
    sample.smk) and guidance scale w."""
    steps, w = parse_sample_name(name)
    return {"steps": str(steps).rjust(BUDGET_WIDTH)} | (
        {"guidance w": f"{w:g}"} if w is not None else {}
    )


def shard_number(wildcards):
    return int(wildcards.shard)


def shard_count(wildcards):
    return int(wildcards.shards)


def sample_shard_files():
    """Every shard of one samples file in shard order (the job's wildcards fill in run, steps and w)."""
    return [
        f"work/{{run}}/sample-shards/{shard_name(SAMPLE, i, SAMPLE_SHARDS)}.npz"
        for i in range(SAMPLE_SHARDS)
    ]


LATENT_FILES = [
    f"{LATENTS}/{name}" for name in ("train.npy", "labels.npy", "meta.json")
]
MODELS = [f"models/{run}/model.pt" for run in RUNS]


def train_threads(wildcards):
    """Cores the job takes on *this* machine: a local submitit job uses launch.cpus_per_task, a SLURM one none."""
    launch = RUN_CONFIGS[wildcards.run].launch
    return launch.cpus_per_task if launch.cluster != "slurm" else 1


def encode_shard_files(suffix):
    return [
        f"{LATENTS}/{shard_label(i, ENCODE_SHARDS)}.{suffix}"
        for i in range(ENCODE_SHARDS)
    ]


def output_folder(wildcards, output):
    """The folder of a rule's first output (the CLI writes several files there)."""
    return str(Path(output[0]).parent)


def latents_folder(wildcards, input):
    return str(Path(input.latents[0]).parent)


METRICS = [
    f"results/{run}/metrics/{name}.json"
    for run in RUNS
    for name in sample_names(RUN_CONFIGS[run])
]
REPORT = [
    f"results/{name}"
    for name in ("report.md", "metrics.json", "fid_vs_steps.png", "fid_vs_steps.csv")
]


wildcard_constraints:
    run=r"[A-Za-z0-9_.-]+",
    dataset=r"[A-Za-z0-9_.-]+",
    shards=r"\d{5}",
    steps=r"\d+",
    w_tag=r"(-w)?",
    w=r"(?<=-w)\d+(\.\d+)?|(?<!-w)",  # a number after "-w", else nothing
    shard=r"\d+",
