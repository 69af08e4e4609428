"""Training curves (ism.curves, `ism curves`): each run's loss from its dvclive log, one line per run (its seeds
pooled)."""

import pytest

from ism.cli import main
from ism.curves import LOSS_LOG, Curve, pooled_curves, read_loss, training_losses
from ism.errors import DataError


def _log(models, run, text):
    path = models / run / LOSS_LOG
    path.parent.mkdir(parents=True)
    path.write_text(text)


def test_losses_of_the_runs_with_a_log_in_run_order(tmp_path):
    _log(tmp_path, "ism-no-sot", "step\tloss\n3\t2.0\n6\t1.75\n")
    _log(tmp_path, "fm", "timestamp\tstep\tloss\n1\t3\t1.5\n2\t6\t1.25\n")  # column order is read from the header
    losses = training_losses(tmp_path, ["fm", "sm", "ism-no-sot"])  # sm has no log: no line
    assert losses == {"fm": ([3, 6], [1.5, 1.25]), "ism-no-sot": ([3, 6], [2.0, 1.75])}


@pytest.mark.parametrize("text", ["", "step\tvalue\n3\t1.0\n", "step\tloss\n3\tnan?\n", "step\tloss\n3\n"])
def test_a_bad_log_is_one_line_naming_it(tmp_path, text):
    _log(tmp_path, "fm", text)
    with pytest.raises(DataError, match=r"training log .*loss\.tsv"):
        read_loss(tmp_path / "fm" / LOSS_LOG)


def test_cli_writes_one_figure_whatever_runs(tmp_path, capsys):
    _log(tmp_path, "fm", "step\tloss\n3\t1.5\n6\t1.25\n")
    _log(tmp_path, "sm", "step\tloss\n3\t-0.5\n")  # a non-positive loss keeps a linear axis
    out = tmp_path / "curves" / "train_loss.png"
    assert main(["curves", "--runs", "fm", "sm", "ism", "--models", str(tmp_path), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().out.strip() == str(out)
    # No log at all still gives the figure (the report rule always writes it), saying so.
    empty = tmp_path / "empty.png"
    assert main(["curves", "--runs", "fm", "--models", str(tmp_path / "none"), "--out", str(empty)]) == 0
    assert empty.read_bytes()[:4] == b"\x89PNG"


def test_seeds_of_a_run_are_one_curve_their_mean_in_their_range():
    losses = {
        "fm": ([3, 6], [1.5, 1.25]),
        "ism-seed0": ([3, 6, 9], [2.0, 1.0, 0.5]),
        "ism-seed1": ([3, 6], [4.0, 2.0]),  # stopped earlier: the pooled curve ends at the last common step
        "ism-seed2": ([3, 6], [3.0, 0.5]),
    }
    assert pooled_curves(losses) == {
        "fm": Curve([3, 6], [1.5, 1.25], [1.5, 1.25], [1.5, 1.25], seeds=1),
        "ism": Curve([3, 6], [3.0, 3.5 / 3], [2.0, 0.5], [4.0, 2.0], seeds=3),
    }


def test_cli_draws_seeded_runs(tmp_path):
    for seed, text in enumerate(["step\tloss\n3\t1.5\n6\t1.25\n", "step\tloss\n3\t1.0\n6\t0.75\n"]):
        _log(tmp_path, f"fm-seed{seed}", text)
    out = tmp_path / "train_loss.png"
    assert main(["curves", "--runs", "fm-seed0", "fm-seed1", "--models", str(tmp_path), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
