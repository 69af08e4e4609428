"""DVC on top of the workflow, in a real git + DVC repository: `dvc repro`, one `dvc exp run -S` per kind of study
key (each must change exactly the outputs that depend on it, and leave none stale), queued ablations, and the
metrics, params and plots that `dvc exp show` / `dvc plots show` give.

The tiny study, one budget: fm and ism (one samples file each: ism at w = 0.5). Each experiment starts from the
committed baseline (`git checkout` + `dvc checkout`, which also restores Snakemake's rerun records) and compares
every file of the outputs (data/latents, models, results) by content and by modification time.
"""

import hashlib
import json
import re
import shutil
import time
from fnmatch import fnmatch
from pathlib import Path

import pytest

from .helpers import REPO, job_counts, run, tiny_study, workflow_copy

pytestmark = pytest.mark.slow

# With the default study's per-run jobs (one `ism sample` and one `ism evaluate` per run, per run and w for ism).
STUDY = tiny_study(sample={"budgets": [1]}, pipeline={"job_grouping": "per_run"})
OUTPUTS = ("data/latents", "models", "results")
# What the report rule writes, whenever any metric changes: the FID table, plot and metrics change with them, the
# training losses (results/train_loss.*) only when a model does.
REPORT = ["results/report.md", "results/metrics.json", "results/fid_vs_steps.png", "results/fid_vs_steps.csv"]
LOSSES = ["results/train_loss.*"]
REFERENCE = ["results/fid_reference/*.npz", "results/floor.json"]  # the real images' features and their FID
# As the DVC stage runs Snakemake: models are compared by checksum when a checkout has dated them after their samples.
CHECKSUMS = ("--max-checksum-file-size", "256MB")


def _run_files(run: str, *names: str) -> list[str]:
    """Glob patterns of one run's outputs: its model and training log (and the losses table), its samples, their
    metrics."""
    parts = {
        "model": f"models/{run}/*",
        "losses": LOSSES[0],
        "samples": f"results/{run}/samples/*",
        "metrics": f"results/{run}/metrics/*",
    }
    return [parts[name] for name in names or parts]


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """{path: (sha256, mtime_ns)} of every output file."""
    files = {}
    for top in OUTPUTS:
        for path in sorted((folder / top).rglob("*")):
            if path.is_file():
                stat = path.stat()
                files[str(path.relative_to(folder))] = (hashlib.sha256(path.read_bytes()).hexdigest(), stat.st_mtime_ns)
    return files


def differences(before: dict, after: dict) -> tuple[set[str], set[str]]:
    """(files whose content changed, appeared or vanished; files written again, whatever their content)."""
    changed = {p for p in before.keys() | after.keys() if before.get(p, ("",))[0] != after.get(p, ("",))[0]}
    written = {p for p in after if before.get(p) != after[p]}
    return changed, written


def matching(files, patterns) -> set[str]:
    return {f for f in files if any(fnmatch(f, pattern) for pattern in patterns)}


def metrics(folder: Path, path: str = "results/metrics.json") -> dict:
    return json.loads((folder / path).read_text())


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The tiny study as a git + DVC repository with a local remote, reproduced and committed (the baseline)."""
    root = tmp_path_factory.mktemp("dvc")
    folder = workflow_copy(root / "repo", STUDY)
    shutil.copy2(REPO / ".dvcignore", folder / ".dvcignore")
    run(folder, "git", "init", "-q")
    run(folder, "dvc", "init", "-q")
    run(folder, "dvc", "remote", "add", "-d", "store", str(root / "store"))
    run(folder, "git", "add", "-A")
    run(folder, "git", "commit", "-qm", "tiny study")
    run(folder, "dvc", "repro")
    run(folder, "git", "add", "-A")
    run(folder, "git", "commit", "-qm", "baseline results")
    # Each run's newest checkpoint of the baseline, for the test of a retrain next to them.
    for ckpt_dir in folder.glob("work/*/*/ckpt"):
        newest = max(ckpt_dir.glob("ckpt-*.pt"))
        target = root / "baseline-ckpt" / newest.relative_to(folder)
        target.parent.mkdir(parents=True)
        shutil.copy2(newest, target)
    return folder


def restore_baseline(folder: Path, checkpoints: bool = False) -> dict[str, tuple[str, int]]:
    """Back to the committed baseline (study file, dvc.lock, outputs and Snakemake's records); returns the snapshot.

    The training workdirs (work/, outside every output: checkpoints) go, as in a fresh clone after `dvc pull`: the
    train rule refuses to resume from another configuration's checkpoint (test_retrain_next_to_old_checkpoints).
    With ``checkpoints`` they hold the baseline's newest checkpoints instead, as after `dvc repro`."""
    run(folder, "git", "checkout", "-q", "HEAD", "--", "config/config.yaml", "dvc.lock")
    run(folder, "dvc", "checkout", "--force", "-q")
    shutil.rmtree(folder / "work", ignore_errors=True)
    if checkpoints:
        shutil.copytree(folder.parent / "baseline-ckpt" / "work", folder / "work")
    assert "Data and pipelines are up to date" in run(folder, "dvc", "status").stdout
    return snapshot(folder)


def test_repro_is_cached_pushed_and_plotted(repo):
    assert "Data and pipelines are up to date" in run(repo, "dvc", "repro").stdout
    run(repo, "dvc", "push")
    assert any((repo.parent / "store").rglob("*")), "the local remote received the outputs"
    assert job_counts(repo, *CHECKSUMS) == {}, "Snakemake agrees: nothing to do"
    # `dvc plots show`: FID against NFE and the training loss, one line per run of this study (its own runs).
    plots = json.loads(run(repo, "dvc", "plots", "show", "--json").stdout)["data"]
    points = plots["FID against NFE"][0]["content"]["data"]["values"]
    assert {p["run"] for p in points} == {"fm", "ism (w=0.5)"}
    fid = metrics(repo)["fid"]
    assert {(p["run"], int(p["steps"])): float(p["fid"]) for p in points} == pytest.approx(
        {("fm", 1): fid["fm"]["steps1"], ("ism (w=0.5)", 1): fid["ism_w0.5"]["steps1"]}, abs=1e-4
    )
    assert {int(p["nfe"]) for p in points} == {1}
    losses = plots["Training loss"][0]["content"]["data"]["values"]
    assert {(p["run"], int(p["step"])) for p in losses} == {(r, s) for r in ("fm", "ism") for s in (3, 6)}


# (id, -S assignments, outputs whose content must change (glob patterns), a check of the new results)
KINDS = [
    (
        "data",  # everything is computed again; the latents' and the reference's descriptions come out the same
        ["data.split_seed=1"],
        ["data/latents/*.npy", "models/*", "results/*/samples/*", "results/*/metrics/*", *REFERENCE, *REPORT, *LOSSES],
        None,
    ),
    ("model", ["model.depth=2"], [*_run_files("fm"), *_run_files("ism"), *REPORT], None),
    ("method", ["method.class_dropout=0.2"], [*_run_files("fm"), *_run_files("ism"), *REPORT], None),
    ("train", ["train.lr=0.001"], [*_run_files("fm"), *_run_files("ism"), *REPORT], None),
    ("run-override", ["runs.ism.method.transport.enabled=false"], [*_run_files("ism"), *REPORT], None),
    (
        "sample",
        ["sample.seed=1"],
        [*_run_files("fm", "samples", "metrics"), *_run_files("ism", "samples", "metrics"), *REPORT],
        lambda folder: metrics(folder, "results/fm/metrics/steps1.json")["sample_meta"]["seed"] == 1,
    ),
    (
        "run-sample",  # the case: a run-level sampling key (once left the results stale)
        ["runs.ism.sample.guidance=[1.0]"],
        ["results/ism/samples/steps1-w1.*", "results/ism/metrics/steps1-w1.json", *REPORT],
        lambda folder: set(metrics(folder)["fid"]) == {"fm", "ism_w1"},
    ),
    (
        "evaluate",
        ["evaluate.reference_images=150"],
        ["results/fid_reference/*", "results/floor.json", "results/*/metrics/*", *REPORT],
        lambda folder: metrics(folder, "results/ism/metrics/steps1-w0.5.json")["n_reference"] == 150,
    ),
    (
        "pipeline",
        ["pipeline.runs=[fm,ism,sm]"],
        [*_run_files("sm"), *REPORT],
        lambda folder: set(metrics(folder)["fid"]) == {"fm", "ism_w0.5", "sm"},
    ),
]


# Outputs a kind's jobs write again though their content does not depend on the key.
REWRITTEN = {"data": ["data/latents/digits/meta.json", "results/fid_reference/reference.json"]}


@pytest.mark.parametrize(("kind", "assignments", "changes", "check"), KINDS, ids=[kind[0] for kind in KINDS])
def test_each_kind_of_key_changes_exactly_its_outputs(repo, kind, assignments, changes, check):
    before = restore_baseline(repo)
    sets = [arg for assignment in assignments for arg in ("-S", f"config/config.yaml:{assignment}")]
    log = run(repo, "dvc", "exp", "run", "-n", kind, *sets).stdout
    after = snapshot(repo)
    why = "\n" + "\n".join(re.findall(r"^\s+(?:output|reason): .*$", log, re.M))  # Snakemake's jobs and reasons
    changed, written = differences(before, after)
    expected = matching(before.keys() | after.keys(), changes)
    # Stale: an output that depends on the key kept its old content. Over-triggered: one that does not, changed.
    assert sorted(expected - changed) == [], f"stale outputs{why}"
    assert sorted(changed - expected) == [], f"outputs changed that do not depend on the key{why}"
    # Snakemake ran only what depends on the key (only the report is rewritten whole, whatever changed in it).
    rewritten = matching(after, [*REPORT, *LOSSES, *REWRITTEN.get(kind, [])])
    assert sorted(written - changed - rewritten) == [], f"outputs recomputed that do not depend on the key{why}"
    assert check is None or check(repo)
    # Nothing is left to do, for DVC or for Snakemake (whose records DVC keeps with the outputs).
    assert "Data and pipelines are up to date" in run(repo, "dvc", "status").stdout
    assert job_counts(repo, *CHECKSUMS) == {}
    # The experiment's metrics are what `dvc exp show` lists for it.
    shown = json.loads(run(repo, "dvc", "exp", "show", "--json").stdout)
    experiment = next(e["revs"][0] for entry in shown for e in entry.get("experiments") or [] if e["name"] == kind)
    assert experiment["data"]["metrics"]["results/metrics.json"]["data"] == metrics(repo)


def test_retrain_next_to_old_checkpoints(repo):
    """As after `dvc repro`: the baseline's checkpoints are in work/; an experiment that changes a training key
    trains from scratch in its own workdir (the trainer would refuse the old configuration's checkpoints) and
    leaves the baseline's checkpoints where a switch back finds them."""
    restore_baseline(repo, checkpoints=True)
    old = sorted(p.relative_to(repo) for p in repo.glob("work/*/*/ckpt/ckpt-*.pt"))
    assert old, "the baseline's checkpoints are in place"
    result = run(
        repo,
        "dvc",
        "exp",
        "run",
        "-n",
        "lr-next-to-checkpoints",
        "-S",
        "config/config.yaml:train.lr=0.002",
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert all((repo / path).is_file() for path in old), "the baseline's checkpoints are kept"
    new = {p.parent.parent for p in repo.glob("work/*/*/ckpt/ckpt-*.pt")} - {(repo / p).parent.parent for p in old}
    assert {folder.parent.name for folder in new} == {"fm", "ism"}, "each run trained in a new workdir"


def wait_for_queue(folder: Path, timeout: float = 600) -> str:
    """Block until `dvc queue status` lists no queued or running task; returns the last status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run(folder, "dvc", "queue", "status").stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        time.sleep(2)
    raise AssertionError(f"the queue did not finish in {timeout} s:\n{status}")


def test_queued_ablations_and_their_columns(repo):
    """Two ablations of iSM's optimal transport, queued and run in DVC's temporary copies: as a new run added to
    pipeline.runs, and as a run-level override of ism. Both train the same network (CPU training is bitwise
    reproducible), so their FIDs agree, and neither touches what does not depend on it."""
    restore_baseline(repo)
    baseline = metrics(repo)
    queue = {
        "q-add-run": "pipeline.runs=[fm,ism,ism-no-sot]",
        "q-override": "runs.ism.method.transport.enabled=false",
    }
    for name, assignment in queue.items():
        run(repo, "dvc", "exp", "run", "--queue", "-n", name, "-S", f"config/config.yaml:{assignment}")
    run(repo, "dvc", "queue", "start")
    status = wait_for_queue(repo)
    assert status.count("Success") >= 2 and "Failed" not in status, status
    # In the temporary copies, Snakemake had the baseline's records: it ran only the ablation's jobs.
    for name, run_name in (("q-add-run", "ism-no-sot"), ("q-override", "ism")):
        log = run(repo, "dvc", "queue", "logs", name).stdout
        trained = re.findall(r"output: models/([^/]+)/model\.pt", log)
        sampled = re.findall(r"output: results/([^/]+)/samples/", log)
        assert trained == [run_name] and sampled == [run_name], log[-3000:]

    # `dvc exp show`: one column per run (machine keys: <run>_w<w> for each guidance scale) and budget.
    table = run(repo, "dvc", "exp", "show", "--csv").stdout.splitlines()
    header = table[0].split(",")
    for column in ("fid.fm.steps1", "fid.ism_w0.5.steps1", "fid.ism-no-sot_w0.5.steps1", "floor.fid"):
        assert column in header, header
    assert not [c for c in header if " " in c or "(" in c], "no display labels in column names"
    shown = json.loads(run(repo, "dvc", "exp", "show", "--json").stdout)
    results = {
        e["name"]: e["revs"][0]["data"]["metrics"]["results/metrics.json"]["data"]["fid"]
        for entry in shown
        for e in entry.get("experiments") or []
        if e["name"] in queue
    }
    added, overridden = results["q-add-run"], results["q-override"]
    assert added["ism-no-sot_w0.5"] == overridden["ism_w0.5"] != baseline["fid"]["ism_w0.5"]
    assert added["ism_w0.5"] == baseline["fid"]["ism_w0.5"]
    assert added["fm"] == overridden["fm"] == baseline["fid"]["fm"]

    # An applied experiment brings its outputs with Snakemake's records of them: nothing to redo.
    run(repo, "dvc", "exp", "apply", "q-override")
    assert metrics(repo)["fid"] == overridden
    assert job_counts(repo, *CHECKSUMS) == {}
