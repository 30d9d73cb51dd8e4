"""``benchmark --svm-features vironova,all`` (issue 23): two SVM rows on the
same folds, each compared with the CNN by the same paired test."""

import json

import pytest
from click.testing import CliRunner
from rich.console import Console

from liposome_bench import comparison, display
from liposome_bench.cli import cli
from liposome_bench.errors import ConfigError
from liposome_bench.results import ResultsDir

FIXED = {"C": 8.0, "gamma": 0.0078125}


@pytest.fixture(scope="module")
def two_svms(tmp_path_factory, tiny_export):
    """``benchmark --svm-features vironova,all`` through the CLI, with fixed
    C/gamma and a 1-epoch lipnet-1: (summary.json, results folder, output).
    One run for every test here (it was one library run plus one CLI run)."""
    root = tmp_path_factory.mktemp("svm-rows")
    config = root / "fixed.toml"
    config.write_text(
        "[svm]\n"
        + "".join(f"{k} = {v}\n" for k, v in FIXED.items())
        + "\n[cnn]\nmixed_precision = false\n",
        encoding="utf-8",
    )
    out = root / "bench"
    result = CliRunner().invoke(
        cli,
        [
            "benchmark",
            "--data",
            str(tiny_export),
            "--cnn",
            "lipnet-1",
            "--epochs",
            "1",
            "--folds",
            "3",
            "--svm-features",
            "vironova,all",
            "--skip-near-duplicates",
            "--config",
            str(config),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    return summary, out, result.output


def test_both_svm_rows_run_on_the_same_folds(two_svms):
    summary, out, _ = two_svms
    assert list(summary["models"]) == ["svm", "svm-all", "lipnet-1"]
    results = ResultsDir(out)
    plain, every = results.load_model("svm"), results.load_model("svm-all")
    assert [f.ids for f in plain] == [f.ids for f in every]
    assert {f.params["feature_set"] for f in plain} == {"vironova"}
    assert {f.params["feature_set"] for f in every} == {"all"}
    assert summary["settings"]["svm_models"] == ["svm", "svm-all"]
    assert "--svm-features vironova,all" in summary["equivalent_command"]


def test_each_svm_row_is_compared_with_the_cnn(two_svms):
    summary, _, _ = two_svms
    pairs = [(c["model_a"], c["model_b"]) for c in summary["verdict"]["comparisons"]]
    assert pairs == [("svm", "lipnet-1"), ("svm-all", "lipnet-1")]
    assert [(c["model_a"], c["model_b"]) for c in summary["comparisons"]] == pairs
    for comp in summary["verdict"]["comparisons"]:
        # Holm within each comparison, as with one SVM.
        assert "p_holm" in comp["macro_f1"]
        assert comp["mcnemar"] is not None
    # The two rows' differences differ: each SVM row is its own reference.
    a, b = summary["verdict"]["comparisons"]
    assert a["macro_f1"]["difference"] != b["macro_f1"]["difference"]


def test_the_terminal_shows_both_rows(two_svms):
    summary, _, output = two_svms
    assert "svm-all" in output and "lipnet-1" in output
    console = Console(record=True, width=200)
    display.print_benchmark(summary, console)
    text = console.export_text()
    assert "svm-all" in text and "lipnet-1" in text


@pytest.mark.parametrize(
    "features, options, message",
    [
        (["all", "all"], {}, "lists a feature set twice"),
        (["vironova", "bogus"], {}, "bogus"),
        (["vironova", "all"], {"feature_set": "all"}, "Give the feature set once"),
    ],
)
def test_bad_svm_features_fail_before_any_work(tmp_path, tiny_dataset, features, options, message):
    with pytest.raises(ConfigError, match=message):
        comparison.run_benchmark(
            None,
            tiny_dataset,
            cnn_models=[],
            out=tmp_path / "b",
            svm_options={**FIXED, **options},
            svm_features=features,
        )
    assert not (tmp_path / "b").exists()
