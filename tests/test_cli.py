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


# Interruption (issue 26) -------------------------------------------------------------------


def _send_sigterm(*args, **kwargs):
    import os
    import signal
    import time

    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # the handler interrupts this
    raise AssertionError("SIGTERM was not handled")


def _press_ctrl_c(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    "target, args, signal_, line",
    [
        (
            "liposome_bench.deploy.predict",
            ["predict", "MODEL", "--data", "DATA"],
            _send_sigterm,
            "Terminated. No predictions were written; run the command again.",
        ),
        (
            "liposome_bench.importers.import_coco",
            [
                "dataset",
                "import",
                "coco",
                "DATA/particles.json",
                "--images",
                "DATA",
                "--out",
                "OUT",
            ],
            _press_ctrl_c,
            (
                "Interrupted. Nothing was written (the export appears whole or not at all); run the "
                "command again."
            ),
        ),
        (
            "liposome_bench.export.export_onnx",
            ["export", "MODEL", "--out", "OUT.onnx"],
            _send_sigterm,
            "Terminated. No ONNX file was written; run the command again.",
        ),
    ],
)
def test_interruption_says_what_each_command_kept(
    tmp_path, monkeypatch, tiny_export_copy, target, args, signal_, line
):
    import importlib
    import signal

    module, name = target.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), name, signal_)
    (tmp_path / "MODEL").mkdir()
    args = [
        str(tiny_export_copy)
        if a == "DATA"
        else a.replace("DATA", str(tiny_export_copy))
        .replace("MODEL", str(tmp_path / "MODEL"))
        .replace("OUT", str(tmp_path / "OUT"))
        for a in args
    ]
    before = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == (143 if signal_ is _send_sigterm else 130), result.output
    assert line in result.output
    assert "Finished folds" not in result.output
    assert signal.getsignal(signal.SIGTERM) is before  # restored after the command
