"""Atomic writes (liposome_bench.io)."""

import os

import pytest


def test_atomic_write_gives_files_the_umask_mode(tmp_path):
    # mkstemp makes 0600 files; results and exports must be readable by the
    # group/others like any file the user writes.
    import os

    from liposome_bench.io import UMASK
    from liposome_bench.io import atomic_write_text

    atomic_write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~UMASK
    assert os.listdir(tmp_path) == ["a.txt"]


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    from liposome_bench.io import atomic_write

    target = tmp_path / "table.parquet"
    target.write_text("old")

    def failing(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, failing)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["table.parquet"]
