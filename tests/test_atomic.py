"""Atomic outputs: a write that fails leaves the previous file intact and no temporary behind."""

import pytest

from rdmm_pipelines.atomic import atomic_output, copy_atomic, write_text_atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "table.csv"
    write_text_atomic(target, "old\n")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_writes_replace_and_copies_are_readable(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    assert write_text_atomic(target, "a\r\nb") == target and target.read_bytes() == b"a\r\nb"
    copied = copy_atomic(target, tmp_path / "copy.txt")
    assert copied.read_bytes() == b"a\r\nb" and (copied.stat().st_mode & 0o777) == 0o644
    assert copy_atomic(None, tmp_path / "x") is None and copy_atomic(tmp_path / "missing", tmp_path / "x") is None
    assert not (tmp_path / "x").exists()
