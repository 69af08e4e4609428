"""The report: rows per run (and guidance scale), the floor, metrics.json and the plot."""

import json

import pytest

from ism.atomic import write_json
from ism.report import collect, write_report


def _metrics(fid, nfe=None, weights="online"):
    meta = {} if nfe is None else {"sample_meta": {"nfe": nfe, "weights": weights}}
    return {"fid": fid, "kid": 0.0, "n": 450, "n_reference": 1347, "extractor": "ism-classifier-digits-abc"} | meta


def test_report_table_metrics_and_plot(tmp_path):
    for run, values in {"fm": {1: 100.0, 4: 30.0}, "sm": {1: 50.0, 4: 20.0}}.items():
        for steps, fid in values.items():
            nfe = 2 * steps if run == "fm" else steps  # fm sampled with CFG: two passes per step
            write_json(tmp_path / run / "metrics" / f"steps{steps}.json", _metrics(fid, nfe))
    write_json(tmp_path / "ism" / "metrics" / "steps1-w0.5.json", _metrics(40.0, 1, "infer"))
    write_json(tmp_path / "ism" / "metrics" / "steps1-w2.json", _metrics(45.0))  # old file: no metadata
    write_json(tmp_path / "floor.json", _metrics(3.3))
    for stray in ("notes.json", "steps4-w.json", "steps4.json.bak"):  # not metrics of a samples file: ignored
        (tmp_path / "sm" / "metrics" / stray).write_text("not json")
    table = write_report(tmp_path, ["fm", "sm", "ism"], tmp_path / "floor.json", tmp_path / "out", models=tmp_path)
    lines = table.strip().splitlines()
    assert lines[0] == "| run | weights | 1 step | 4 steps |"
    assert lines[2:] == [
        "| fm | online | 100.00 (2 NFE) | 30.00 (8 NFE) |",
        "| sm | online | 50.00 (1 NFE) | 20.00 (4 NFE) |",
        "| ism (w=0.5) | infer | 40.00 (1 NFE) | – |",
        "| ism (w=2) | unknown | 45.00 (1 NFE) | – |",
        "| real held-out images (floor) | – | 3.30 | 3.30 |",
    ]
    # metrics.json (what `dvc exp show` makes columns of): FID by machine key, run or <run>_w<w>, and budget.
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == {
        "fid": {
            "fm": {"steps1": 100.0, "steps4": 30.0},
            "sm": {"steps1": 50.0, "steps4": 20.0},
            "ism_w0.5": {"steps1": 40.0},
            "ism_w2": {"steps1": 45.0},
        },
        "floor": {"fid": 3.3},
        "extractor": "ism-classifier-digits-abc",
    }
    assert (tmp_path / "out" / "fid_vs_steps.png").read_bytes()[:4] == b"\x89PNG"
    assert "ism-classifier-digits-abc" in (tmp_path / "out" / "report.md").read_text()
    # The plot data for `dvc plots show`: one line per sampled (row, budget), nothing for budgets not sampled.
    assert (tmp_path / "out" / "fid_vs_steps.csv").read_text().splitlines() == [
        "steps,nfe,weights,run,fid",
        "1,2,online,fm,100.0000",
        "4,8,online,fm,30.0000",
        "1,1,online,sm,50.0000",
        "4,4,online,sm,20.0000",
        "1,1,infer,ism (w=0.5),40.0000",
        "1,1,unknown,ism (w=2),45.0000",
    ]


def test_training_loss_of_every_run_in_one_table(tmp_path):
    """results/train_loss.csv (step,run,loss) for `dvc plots show`: one line per run, whatever runs a study has."""
    for run, losses in {"fm": [1.5, 1.25], "ism-no-sot": [2.0, 1.75]}.items():
        log = tmp_path / "models" / run / "train_log" / "plots" / "metrics" / "train" / "loss.tsv"
        log.parent.mkdir(parents=True)
        log.write_text("step\tloss\n" + "".join(f"{3 * (i + 1)}\t{loss}\n" for i, loss in enumerate(losses)))
        write_json(tmp_path / "results" / run / "metrics" / "steps1.json", _metrics(10.0, 1))
    (tmp_path / "results" / "sm" / "metrics").mkdir(parents=True)  # no log (not trained here): no lines
    write_json(tmp_path / "results" / "sm" / "metrics" / "steps1.json", _metrics(10.0, 1))
    write_report(tmp_path / "results", ["fm", "sm", "ism-no-sot"], None, tmp_path / "results")
    assert (tmp_path / "results" / "train_loss.csv").read_text().splitlines() == [
        "step,run,loss",
        "3,fm,1.5",
        "6,fm,1.25",
        "3,ism-no-sot,2.0",
        "6,ism-no-sot,1.75",
    ]


def test_missing_run_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="run 'sm'"):
        collect(tmp_path, ["sm"])


def test_seeded_runs_pool_into_mean_and_spread_next_to_the_paper(tmp_path):
    """pipeline.seeds: ism-seed0..2 at each w pool into one row of mean ± sample std; each seed keeps its cells."""
    from ism.config import PaperConfig

    fids = {"fm-seed0": [100.0, 30.0], "fm-seed1": [110.0, 34.0], "fm-seed2": [120.0, 38.0]}
    for run, (one, four) in fids.items():
        write_json(tmp_path / run / "metrics" / "steps1.json", _metrics(one, 1))
        write_json(tmp_path / run / "metrics" / "steps4.json", _metrics(four, 4))
    for seed, fid in enumerate([40.0, 44.0, 48.0]):
        write_json(tmp_path / f"ism-seed{seed}" / "metrics" / "steps1-w0.5.json", _metrics(fid, 1, "infer"))
    runs = [*fids, "ism-seed0", "ism-seed1", "ism-seed2"]
    paper = PaperConfig(budgets=[1, 4], fid={"ism": [9.62, 3.17]}, source="iSM, ImageNet-256")
    table = write_report(tmp_path, runs, None, tmp_path / "out", models=tmp_path, paper=paper)
    assert table.strip().splitlines() == [
        "| run | seeds | 1 step | 4 steps | paper, 1 step | paper, 4 steps |",
        "|---|---:|---:|---:|---:|---:|",
        "| fm | 3 | 110.00 ± 10.00 | 34.00 ± 4.00 | – | – |",
        "| ism (w=0.5) | 3 | 44.00 ± 4.00 | – | 9.62 | 3.17 |",
    ]
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary["fid"] == {"fm": {"steps1": 110.0, "steps4": 34.0}, "ism_w0.5": {"steps1": 44.0}}
    assert summary["fid_std"] == {"fm": {"steps1": 10.0, "steps4": 4.0}, "ism_w0.5": {"steps1": 4.0}}
    assert summary["seeds"] == {"fm": 3, "ism_w0.5": 3}
    assert summary["fid_seed"]["fm-seed2"] == {"steps1": 120.0, "steps4": 38.0}
    assert summary["fid_seed"]["ism-seed1_w0.5"] == {"steps1": 44.0}
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## Mean ± standard deviation over training seeds" in text and "Published: iSM, ImageNet-256." in text
    assert "| fm-seed1 | online | 110.00 (1 NFE) | 34.00 (4 NFE) |" in text  # each seed's own row
    assert (tmp_path / "out" / "fid_vs_steps.png").read_bytes()[:4] == b"\x89PNG"


def test_one_seed_has_no_spread(tmp_path):
    write_json(tmp_path / "sm-seed3" / "metrics" / "steps1.json", _metrics(50.0, 1))
    table = write_report(tmp_path, ["sm-seed3"], None, tmp_path / "out", models=tmp_path)
    assert table.strip().splitlines()[-1] == "| sm | 1 | 50.00 |"
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["fid_std"] == {"sm": {}}
