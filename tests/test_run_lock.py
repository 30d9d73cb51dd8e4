"""The advisory run lock of a results folder (results.run_lock): a second
run into a busy folder refuses with one line or waits (--wait); a lock left
by a killed run is detected as stale and cleared."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from liposome_bench.cli import cli
from liposome_bench.errors import ResultsError
from liposome_bench.progress import NullReporter
from liposome_bench.results import RUN_LOCK_FILE, run_lock

pytest.importorskip("fcntl")

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
ROOT = Path(__file__).resolve().parent.parent


class Messages(NullReporter):
    def __init__(self):
        self.lines = []

    def message(self, text):
        self.lines.append(text)


def hold_lock(folder: Path, seconds: float) -> subprocess.Popen:
    """Another process holding ``folder``'s run lock for ``seconds``."""
    script = textwrap.dedent(f"""
        import sys, time
        from liposome_bench.results import run_lock
        with run_lock({str(folder)!r}, command="liposome-bench svm --out busy"):
            print("held", flush=True)
            time.sleep({seconds})
    """)
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_into_a_busy_folder_refuses_with_one_line(tmp_path):
    import shutil

    data = shutil.copytree(FIXTURES / "export", tmp_path / "d")  # its folds are written
    folder = tmp_path / "results"
    other = hold_lock(folder, 30)
    try:
        result = CliRunner().invoke(
            cli, ["svm", "--data", str(data), "--C", "1", "--gamma", "1", "--out", str(folder)]
        )
        assert result.exit_code == 2, result.output
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith(
            f"Error: {folder} is in use by another liposome-bench run "
            f"(pid {other.pid}, `liposome-bench svm --out busy`, started "
        )
        assert line.endswith(
            "Wait for it to finish, pass --wait to start when it has "
            "(finished folds are then reused), or use another --out."
        )
        assert not (folder / "svm").exists()  # no work was done
    finally:
        other.kill()
        other.wait()


def test_wait_starts_when_the_other_run_has_finished(tmp_path):
    folder = tmp_path / "results"
    other = hold_lock(folder, 1.5)
    messages = Messages()
    started = time.monotonic()
    with run_lock(folder, wait=True, reporter=messages):
        waited = time.monotonic() - started
        holder = json.loads((folder / RUN_LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid()
    other.wait()
    assert waited > 1.0  # it held the lock for 1.5 s after saying so
    assert messages.lines[0].startswith(f"{folder} is in use by another liposome-bench run")
    assert messages.lines[0].endswith("waiting for it to finish (--wait).")
    assert (folder / RUN_LOCK_FILE).read_text() == ""  # released: nobody holds it


def test_a_lock_left_by_a_killed_run_is_stale_and_cleared(tmp_path):
    folder = tmp_path / "results"
    other = hold_lock(folder, 60)
    other.kill()  # SIGKILL: no clean-up; the file still names the dead run
    other.wait()
    holder = json.loads((folder / RUN_LOCK_FILE).read_text())
    assert holder["pid"] == other.pid
    messages = Messages()
    with run_lock(folder, reporter=messages):
        pass
    assert messages.lines == [
        f"{folder}: cleared a stale lock left by another liposome-bench run (pid {other.pid}, "
        f"`liposome-bench svm --out busy`, started {holder['started']}), which ended without "
        "releasing it; its finished folds are kept."
    ]


def test_the_lock_file_fallback_clears_a_dead_pid_and_refuses_a_live_one(tmp_path, monkeypatch):
    """Where flock is unavailable the lock is an exclusively created file."""
    from liposome_bench import results

    folder = tmp_path / "results"
    folder.mkdir()
    path = folder / RUN_LOCK_FILE
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"pid": dead.pid, "host": results.socket.gethostname()}))
    messages = Messages()
    release = results._acquire_file(path, folder, False, messages, {"pid": os.getpid()})
    assert "cleared a stale lock" in messages.lines[0]
    assert json.loads(path.read_text())["pid"] == os.getpid()
    with pytest.raises(ResultsError, match="is in use by another liposome-bench run"):
        results._acquire_file(path, folder, False, messages, {"pid": 1})
    release()
    assert not path.exists()


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    folder = tmp_path / "results"
    with run_lock(folder):
        with run_lock(folder):  # the benchmark holds it while run_svm works inside
            pass
        assert json.loads((folder / RUN_LOCK_FILE).read_text())["pid"] == os.getpid()


def test_two_concurrent_runs_do_the_work_once(tmp_path):
    """Two identical svm runs into one folder at once: the second waits and
    then resumes from the first's folds."""
    data = tmp_path / "d"
    import shutil

    shutil.copytree(FIXTURES / "export", data)
    command = [
        sys.executable,
        "-m",
        "liposome_bench",
        "svm",
        "--data",
        str(data),
        "--C",
        "1",
        "--gamma",
        "1",
        "--folds",
        "3",
        "--out",
        str(tmp_path / "r"),
        "--wait",
    ]
    # Make the folds first, so both runs only race for the results folder.
    assert (
        CliRunner()
        .invoke(
            cli, ["features", "--data", str(data), "--folds", "3", "--out", str(tmp_path / "f.csv")]
        )
        .exit_code
        == 0
    )
    env = {**os.environ, "COLUMNS": "200"}
    runs = [
        subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        for _ in range(2)
    ]
    outputs = [r.communicate(timeout=300)[0] for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outputs
    resumed = [o for o in outputs if "3 of 3 folds already in" in o]
    assert len(resumed) == 1, outputs
