"""Atomic writes (liposome_bench.io)."""

import os

import pytest


def test_atomic_write_gives_files_the_umask_mode(tmp_path):
    # mkstemp makes 0600 files; results and exports must be readable by the
    # group/others like any file the user writes.
    import os

    from liposome_bench.io import UMASK, atomic_write_text

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


# Staging folders of interrupted runs (issue 26) ------------------------------------------


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_staging_folders_are_removed_and_live_ones_kept(tmp_path):
    from liposome_bench.io import clean_stale_staging, staging_prefix

    out = tmp_path / "ds"
    mine = staging_prefix(out)  # .ds.tmp-HOST-PID-
    host = mine.split(".tmp-", 1)[1].rsplit("-", 2)[0]
    stale = [
        tmp_path / ".ds.tmpk3j2h1g0",
        tmp_path / ".ds.tmp-1a2b3c4d",
        tmp_path / ".ds.old-1a2b3c4d",
        tmp_path / f".ds.tmp-{host}-{_dead_pid()}-abcd1234",
    ]
    kept = [
        tmp_path / f"{mine}abcd1234",  # this process: alive
        tmp_path / ".ds.tmp-otherhost-1-abcd1234",  # another machine's
        tmp_path / ".dsx.tmp-1a2b3c4d",  # another output's
        tmp_path / "ds",
    ]
    for folder in stale + kept:
        folder.mkdir()
        (folder / "part.png").write_bytes(b"x")
    removed = clean_stale_staging(out)
    assert sorted(removed) == sorted(stale)
    assert all(not f.exists() for f in stale) and all(f.exists() for f in kept)


def test_write_export_cleans_what_a_killed_import_left(tmp_path, tiny_dataset):
    from liposome_bench.dataset import write_export

    left = tmp_path / ".ds.tmpk3j2h1g0"
    left.mkdir()
    (left / "particles.json").write_text("[")
    write_export(tiny_dataset, tmp_path / "ds")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
