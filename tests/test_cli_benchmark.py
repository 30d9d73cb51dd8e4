"""The ``benchmark`` and ``report`` commands through click's CliRunner."""

import json
import shutil

import pytest
from click.testing import CliRunner
from test_report import make_results

from liposome_bench.cli import EXIT_REGRESSION, cli


@pytest.fixture
def results_folder(tmp_path):
    return make_results(tmp_path / "results")


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_report_writes_markdown_and_plots(results_folder, tmp_path):
    out = tmp_path / "r" / "report.md"
    result = _invoke("report", results_folder, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"Report written to {out}" in result.output
    assert out.read_text().startswith("# liposome-bench report: lamellarity")
    assert (tmp_path / "r" / "report-figures" / "metrics.png").exists()


def test_report_gate_passes_then_fails_when_baseline_is_raised(results_folder, tmp_path):
    baseline = tmp_path / "baseline.json"
    result = _invoke("report", results_folder, "--write-baseline", baseline)
    assert result.exit_code == 0, result.output
    result = _invoke("report", results_folder, "--baseline", baseline)
    assert result.exit_code == 0, result.output
    assert "No metric fell by more than its tolerance" in result.output

    data = json.loads(baseline.read_text())
    f1 = data["models"]["lipnet-4"]["per_class"]["multilamellar"]["f1"]
    data["models"]["lipnet-4"]["per_class"]["multilamellar"]["f1"] = f1 + 0.1
    baseline.write_text(json.dumps(data))
    result = _invoke("report", results_folder, "--baseline", baseline)
    assert result.exit_code == EXIT_REGRESSION == 1
    assert (
        f"Regression: lipnet-4/multilamellar/f1 fell from {f1 + 0.1:.3f} to {f1:.3f} "
        "(-0.100, tolerance 0.02)"
    ) in result.output
    # A tolerance wider than the drop lets it pass.
    result = _invoke("report", results_folder, "--baseline", baseline, "--tolerance", "0.2")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--baseline", "{tmp}/missing.json"],
            "Error: Baseline {tmp}/missing.json does not exist. Write one with "
            "`liposome-bench report RESULTS --write-baseline FILE`.",
        ),
        (["--tolerance", "-1"], "Invalid value for '--tolerance'"),
    ],
)
def test_report_bad_input_exits_2(results_folder, tmp_path, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    result = _invoke("report", results_folder, *args)
    assert result.exit_code == 2
    assert message.format(tmp=tmp_path) in result.output
    assert not (results_folder / "report.md").exists()


def test_report_of_a_folder_without_results(tmp_path):
    result = _invoke("report", tmp_path)
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"Error: {tmp_path} is not a results folder (no run.json). "
        "Pass the --out folder of a benchmark, svm or cnn run."
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--cnn", "lipnet-5"],
            "Error: Unknown model 'lipnet-5'; expected one of lipnet-1, lipnet-2, lipnet-4, "
            "lipnet-4c, lipnet-6, lipnet-fcn.",
        ),
        (
            ["--cnn", "lipnet-4,lipnet-4"],
            "Error: --cnn lists a model twice (lipnet-4,lipnet-4); list each once.",
        ),
        (["--jobs", "0"], "Error: --jobs must be a positive number of workers or -1; got 0."),
        (["--repeats", "0"], "Invalid value for '--repeats'"),
        (
            ["--scheduler", "tcp://head"],
            "Error: --scheduler 'tcp://head': no port; expected 'serial', 'local' or "
            "tcp://HOST:PORT with PORT in 1-65535 (e.g. tcp://10.0.0.5:8786).",
        ),
        (
            ["--scheduler", "dask"],
            "Error: --scheduler 'dask': no protocol; expected 'serial', 'local' or tcp://",
        ),
    ],
)
def test_benchmark_bad_options_exit_2(tmp_path, args, message):
    result = _invoke("benchmark", "--problem", "lamellarity", "--out", tmp_path / "r", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "r").exists()


def test_benchmark_refuses_an_unreachable_scheduler_before_writing(tmp_path, tiny_export):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path / "data"
    shutil.copytree(tiny_export, data)
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    result = _invoke(
        "benchmark",
        "--data",
        data,
        "--out",
        tmp_path / "r",
        "--scheduler",
        f"tcp://127.0.0.1:{port}",
        "--connect-timeout",
        "2",
    )
    assert result.exit_code == 2, result.output
    assert (
        f"Error: Cannot reach the Dask scheduler at tcp://127.0.0.1:{port} within 2 s"
        in result.output
    )
    assert "nothing was written" in result.output
    assert not (tmp_path / "r").exists()
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before  # no folds stored


def test_the_closing_line_gives_a_one_figure_estimate_as_one_figure():
    """A fixed budget's estimate is one figure: "estimated 768 s", not "768 to 768 s"."""
    from liposome_bench.cli import _seconds_range

    assert _seconds_range(768.2, 767.9) == "768 s"
    assert _seconds_range(600, 900) == "600 to 900 s"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--no-mixed-precision"], {"mixed_precision": False}),
        (["--mixed-precision", "--epochs", "7"], {"mixed_precision": True, "epochs": 7}),
        ([], {}),
    ],
)
def test_benchmark_cnn_flags_reach_every_cnn(monkeypatch, tmp_path, args, expected):
    """`benchmark --no-mixed-precision` (issue 25 item 4's float32 run) sets
    every CNN's setting, as --epochs does; unset flags leave --config's."""
    from liposome_bench import comparison, registry
    from liposome_bench.settings import load_config

    seen = {}

    def fake_run_benchmark(*_, cnn_options, **__):
        seen.update({k: v for k, v in cnn_options.items() if v is not None})
        raise SystemExit(0)

    monkeypatch.setattr(comparison, "run_benchmark", fake_run_benchmark)
    monkeypatch.setattr("liposome_bench.cli._announce_device", lambda reporter: None)
    config = tmp_path / "c.toml"
    config.write_text("[cnn]\nmixed_precision = true\nepochs = 3\n")
    result = CliRunner().invoke(cli, ["benchmark", "--problem", "lamellarity", *args])
    assert result.exit_code == 0, result.output
    assert seen == expected
    settings = registry.get("lipnet-4").settings_for(load_config(config), "lipnet-4", seen)
    assert settings.mixed_precision is expected.get("mixed_precision", True)
    assert settings.epochs == expected.get("epochs", 3)
