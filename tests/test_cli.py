"""Behaviour shared by every command: --problem picks the built-in data and
is inferred from the labels when --data is given."""

import json

import pytest
from click.testing import CliRunner

from liposome_bench.cli import cli


@pytest.mark.parametrize("command", ["features", "svm", "cnn", "benchmark"])
def test_without_data_or_problem_the_error_says_what_to_give(command, tmp_path):
    args = [command, "--out", str(tmp_path / "out.csv" if command == "features" else tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "Error: Without --data, --problem is needed to pick the built-in dataset."
    )


def test_with_data_the_problem_is_inferred_from_the_labels(tiny_export_copy, tmp_path):
    out = tmp_path / "res"
    result = CliRunner().invoke(
        cli, ["svm", "--data", str(tiny_export_copy), "--folds", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["dataset"]["problem"] == "lamellarity"
    assert run["dataset"]["classes"] == ["unilamellar", "multilamellar", "uncertain"]


def test_version():
    from liposome_bench import __version__

    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"liposome-bench, version {__version__}"
