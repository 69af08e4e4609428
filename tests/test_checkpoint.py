"""Checkpoint files: atomic writes, weights-only loading, newest-valid selection, pruning."""

import pickle

import pytest
import torch

from ism.checkpoint import (
    CheckpointError,
    atomic_save,
    checkpoint_path,
    list_checkpoints,
    newest_valid_checkpoint,
    prune_checkpoints,
    safe_load,
)


class _Exploit:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_pickled_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model": _Exploit()}))
    with pytest.raises(CheckpointError, match=r"evil\.pt"):
        safe_load(path)
    assert not (tmp_path / "PWNED").exists()


def test_atomic_save_round_trip_leaves_no_temporary(tmp_path):
    atomic_save({"w": torch.arange(3)}, tmp_path / "sub" / "x.pt")
    assert torch.equal(safe_load(tmp_path / "sub" / "x.pt")["w"], torch.arange(3))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.pt"]


def test_failed_write_keeps_the_old_file(tmp_path):
    atomic_save({"v": 1}, tmp_path / "x.pt")
    with pytest.raises(Exception):  # noqa: B017 - any pickling error
        atomic_save({"v": lambda: 0}, tmp_path / "x.pt")
    assert safe_load(tmp_path / "x.pt") == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_newest_valid_and_pruning(tmp_path):
    for step in (2, 10, 4):
        atomic_save({"step": step}, checkpoint_path(tmp_path, step))
    (tmp_path / "notes.txt").write_text("ignored")
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10, 4, 2]
    checkpoint_path(tmp_path, 10).write_bytes(b"\x80\x02garbage")
    path, state = newest_valid_checkpoint(tmp_path)
    assert path == checkpoint_path(tmp_path, 4) and state["step"] == 4
    prune_checkpoints(tmp_path, keep=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10]
    assert newest_valid_checkpoint(tmp_path / "none") is None
