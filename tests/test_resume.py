"""Runs that survive interruption: a benchmark killed after its first CNN
fold resumes to exactly the predictions of an uninterrupted run, and a
results folder of another dataset or other settings is refused."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import TINY_COUNTS
from test_comparison import QUICK_FOLDS, run_quick_once

from liposome_bench import comparison
from liposome_bench.cli import cli
from liposome_bench.errors import ResultsError

CNN = "lipnet-4"


@pytest.fixture
def quick_run(tmp_path_factory, tiny_export):
    """The uninterrupted run (shared with test_comparison.py)."""
    return run_quick_once(tmp_path_factory, tiny_export)


def _command(data, out, *extra):
    # float32, as the reference run (run_quick_once), on any CPU.
    config = Path(out).parent / "float32.toml"
    config.write_text("[cnn]\nmixed_precision = false\n")
    return [
        sys.executable,
        "-m",
        "liposome_bench",
        "benchmark",
        "--problem",
        "lamellarity",
        "--data",
        str(data),
        "--quick",
        "--folds",
        str(QUICK_FOLDS),
        "--out",
        str(out),
        "--config",
        str(config),
        *extra,
    ]


def _environment():
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("MPLBACKEND", "Agg")
    return env


def test_killed_benchmark_resumes_to_identical_predictions(quick_run, tiny_export, tmp_path):
    reference, _ = quick_run
    out = tmp_path / "interrupted"
    marker = out / CNN / "fold-0.json"
    log = tmp_path / "first-run.log"
    with open(log, "w") as output:
        proc = subprocess.Popen(
            _command(tiny_export, out), stdout=output, stderr=output, env=_environment()
        )
        try:
            deadline = time.monotonic() + 300
            while proc.poll() is None and not marker.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert marker.exists(), f"no {marker} appeared:\n{log.read_text()}"
            proc.kill()  # SIGKILL: no chance to clean up, like a crash
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    last = out / CNN / f"fold-{QUICK_FOLDS - 1}.json"
    assert not last.exists(), "the run finished before it could be killed; nothing resumed"
    assert not (out / "summary.json").exists()
    first_fold_written = marker.stat().st_mtime_ns
    # The SVM trains beside the CNN (2+ cores) or before it (1 core): its
    # folds saved by then are read back, the rest trained.
    svm_saved = {f: f.stat().st_mtime_ns for f in (out / "svm").glob("fold-*.json")}

    # The resumed run in this process (a fresh process would only add a
    # TensorFlow import): the command as the killed one ran it.
    resumed = CliRunner().invoke(cli, _command(tiny_export, out)[3:])
    assert resumed.exit_code == 0, resumed.output
    assert f"{CNN}: " in resumed.stderr and "already saved" in resumed.stderr
    if svm_saved:
        assert f"svm: {len(svm_saved)} of 3 folds already in" in resumed.stderr
    assert {f: f.stat().st_mtime_ns for f in svm_saved} == svm_saved
    # The command's own output: the side-by-side tables and where results went.
    for needle in (
        "uncertain (9 particles)",
        "verdict: lipnet-4 − svm",
        f"Results in {out}: summary.json, predictions.csv",
    ):
        assert needle in resumed.stdout, needle
    # The finished fold was read back, not trained again.
    assert marker.stat().st_mtime_ns == first_fold_written

    expected = pd.read_csv(reference / "predictions.csv", dtype={"id": str})
    got = pd.read_csv(out / "predictions.csv", dtype={"id": str})
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


@pytest.fixture
def other_export(tmp_path):
    from liposome_bench.dataset import write_export
    from liposome_bench.synth import generate_dataset

    other = generate_dataset("lamellarity", seed=2, counts=TINY_COUNTS)
    return write_export(other, tmp_path / "other"), other


def test_results_of_another_dataset_are_refused(quick_run, other_export):
    out, summary = quick_run
    path, other = other_export
    before = (out / "run.json").read_bytes()
    with pytest.raises(ResultsError) as caught:
        comparison.run_benchmark("lamellarity", path, quick=True, k=QUICK_FOLDS, out=out)
    assert str(caught.value) == (
        f"{out} holds results for another dataset (fingerprint "
        f"{summary['dataset']['fingerprint']}, this one {other.fingerprint()}). "
        "Use another --out or delete that folder."
    )
    assert (out / "run.json").read_bytes() == before


def test_results_of_other_settings_are_refused(quick_run, tiny_export):
    out, _ = quick_run
    before = (out / "run.json").read_bytes()
    result = CliRunner().invoke(
        cli,
        [
            "benchmark",
            "--problem",
            "lamellarity",
            "--data",
            str(tiny_export),
            "--quick",
            "--folds",
            str(QUICK_FOLDS),
            "--seed",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 2
    assert (
        f"Error: {out} holds svm results made with other settings (seed differ). "
        f"Use another --out or delete {out / 'svm'}."
    ) in result.output
    assert (out / "run.json").read_bytes() == before


def test_other_folds_are_refused(quick_run, tiny_export):
    out, _ = quick_run
    with pytest.raises(ResultsError) as caught:
        comparison.run_benchmark(
            "lamellarity", tiny_export, quick=True, k=QUICK_FOLDS, fold_seed=5, out=out
        )
    assert str(caught.value) == (
        f"{out} holds results made with folds {{'k': 3, 'seed': 0}}, not "
        "{'k': 3, 'seed': 5}. Use another --out or delete that folder."
    )
