"""atomic_path, the one atomic writer: success replaces the file, an exception leaves it and no temporary."""

import os

import pytest

from ism.atomic import atomic_path, temporary_name, write_bytes, write_json


def test_success_replaces_the_file_through_a_hidden_temporary_in_the_same_folder(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    write_bytes(target, b"old")
    with atomic_path(target) as tmp:
        assert tmp == tmp_path / "sub" / f".out.bin.tmp-{os.getpid()}" == temporary_name(target)
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # nothing visible until the block ends
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]


def test_an_exception_leaves_the_old_file_intact_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text('{"v": 2, "trunc')
        raise RuntimeError("disk full")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_an_exception_before_the_first_write_creates_nothing(tmp_path):
    target = tmp_path / "new" / "out.bin"
    with pytest.raises(KeyError), atomic_path(target):
        raise KeyError("no data")
    assert not target.exists() and list(target.parent.iterdir()) == []
