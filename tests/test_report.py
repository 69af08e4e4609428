"""The report: rows per run (and guidance scale), the floor, metrics.json and the plot."""

import json

import pytest

from ism.atomic import write_json
from ism.report import collect, write_report


def _metrics(fid):
    return {"fid": fid, "kid": 0.0, "n": 450, "n_reference": 1347, "extractor": "ism-classifier-digits-abc"}


def test_report_table_metrics_and_plot(tmp_path):
    for run, values in {"fm": {1: 100.0, 4: 30.0}, "sm": {1: 50.0, 4: 20.0}}.items():
        for steps, fid in values.items():
            write_json(tmp_path / run / "metrics" / f"steps{steps}.json", _metrics(fid))
    write_json(tmp_path / "ism" / "metrics" / "steps1-w0.5.json", _metrics(40.0))
    write_json(tmp_path / "ism" / "metrics" / "steps1-w2.json", _metrics(45.0))
    write_json(tmp_path / "floor.json", _metrics(3.3))
    table = write_report(tmp_path, ["fm", "sm", "ism"], tmp_path / "floor.json", tmp_path / "out")
    lines = table.strip().splitlines()
    assert lines[0] == "| run | 1 step | 4 steps |"
    assert lines[2:] == [
        "| fm | 100.00 | 30.00 |",
        "| sm | 50.00 | 20.00 |",
        "| ism (w=0.5) | 40.00 | – |",
        "| ism (w=2) | 45.00 | – |",
        "| real held-out images (floor) | 3.30 | 3.30 |",
    ]
    stored = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert stored["runs"]["sm"]["4"]["fid"] == 20.0 and stored["floor"]["fid"] == 3.3
    assert (tmp_path / "out" / "fid_vs_steps.png").read_bytes()[:4] == b"\x89PNG"
    assert "ism-classifier-digits-abc" in (tmp_path / "out" / "report.md").read_text()
    # The plot data for `dvc plots show`: one line per sampled (row, budget), nothing for budgets not sampled.
    assert (tmp_path / "out" / "fid_vs_steps.csv").read_text().splitlines() == [
        "steps,run,fid",
        "1,fm,100.0000",
        "4,fm,30.0000",
        "1,sm,50.0000",
        "4,sm,20.0000",
        "1,ism (w=0.5),40.0000",
        "1,ism (w=2),45.0000",
    ]


def test_missing_run_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="run 'sm'"):
        collect(tmp_path, ["sm"])
