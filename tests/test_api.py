"""The public Python API (issue 14): lazy imports, the notebook example, the
estimators in scikit-learn's tools, doctests of the public modules."""

import doctest
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import liposome_bench
from liposome_bench.cli import cli
from liposome_bench.errors import ConfigError


def test_import_is_cheap_and_names_are_public():
    code = (
        "import sys, liposome_bench as lb; "
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('keras', 'tensorflow', 'jax', 'sklearn', 'matplotlib')]; "
        "print(heavy, sorted(lb.__all__))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("[] ")
    for name in (
        "load_dataset",
        "generate_dataset",
        "make_folds",
        "LibSVMClassifier",
        "LipNetClassifier",
        "benchmark",
    ):
        assert name in out and callable(getattr(liposome_bench, name))
    with pytest.raises(AttributeError):
        liposome_bench.no_such_name  # noqa: B018


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory):
    """The 5-line notebook example of docs/api.md, run as written."""
    from liposome_bench import benchmark, generate_dataset

    ds = generate_dataset("lamellarity", n=600, seed=1)
    r = benchmark(ds, models=["svm", "lipnet-1"], k=3)
    return ds, r


def test_notebook_example_matches_the_cli(notebook_run, tmp_path):
    from liposome_bench.dataset import write_export

    ds, r = notebook_run
    table = r.table()
    assert list(table.index.get_level_values("model").unique()) == ["svm", "lipnet-1"]
    assert list(table.columns[:5]) == ["tpr", "tnr", "ppv", "npv", "f1"]
    assert r.out is None and len(r.to_frame()) == len(ds)
    verdict = r.verdict()
    assert list(verdict["class"]) == [*ds.problem.classes, "macro F1"]

    data = write_export(ds, tmp_path / "ds")
    result = CliRunner().invoke(
        cli,
        [
            "benchmark",
            "--data",
            str(data),
            "--cnn",
            "lipnet-1",
            "--folds",
            "3",
            "--out",
            str(tmp_path / "cli"),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    headline = summary["verdict"]["comparisons"][0]
    assert list(verdict["verdict"][:-1]) == [
        headline["per_class"][c]["verdict"] for c in ds.problem.classes
    ]
    assert verdict["verdict"].iloc[-1] == headline["macro_f1"]["verdict"]
    for model, entry in summary["models"].items():
        for cls, metrics in entry["per_class"].items():
            for name, value in metrics.items():
                assert table.loc[(model, cls), name] == pytest.approx(
                    value["mean"], abs=1e-9, nan_ok=True
                )


def test_benchmark_needs_the_svm_baseline(notebook_run):
    from liposome_bench import benchmark

    with pytest.raises(ConfigError, match=r"models must include 'svm'"):
        benchmark(notebook_run[0], models=["lipnet-1"])


def test_lipnet_classifier_in_cross_validate(tiny_dataset):
    from sklearn.base import clone
    from sklearn.model_selection import cross_validate

    from liposome_bench import LipNetClassifier, make_folds

    folds = make_folds(tiny_dataset, k=3)
    clf = LipNetClassifier(model="lipnet-1", epochs=1, input_size=16)
    assert clone(clf).get_params() == clf.get_params()
    scores = cross_validate(
        clf,
        tiny_dataset.particles,
        tiny_dataset.labels,
        cv=folds,
        scoring="f1_macro",
        return_estimator=True,
    )
    assert len(scores["test_score"]) == 3 and np.all(np.isfinite(scores["test_score"]))
    fitted = scores["estimator"][0]
    proba = fitted.predict_proba(tiny_dataset.particles[:5])
    assert proba.shape == (5, len(fitted.classes_))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert set(fitted.predict(tiny_dataset.particles[:5])) <= set(fitted.classes_)


def test_lipnet_classifier_params_are_the_cnn_settings():
    import dataclasses

    from liposome_bench import LipNetClassifier
    from liposome_bench.settings import CNNSettings

    params = set(LipNetClassifier().get_params())
    assert params == {f.name for f in dataclasses.fields(CNNSettings)} | {"random_state"}
    with pytest.raises(ConfigError, match=r"Unknown input mode 'full'"):
        LipNetClassifier(input_mode="full").settings()


def test_folds_split_refuses_misaligned_rows(tiny_dataset):
    from liposome_bench import make_folds
    from liposome_bench.errors import FoldError

    folds = make_folds(tiny_dataset, k=3)
    assert folds.get_n_splits() == 3
    with pytest.raises(FoldError, match=r"cover \d+ particles but X has 2 rows"):
        next(folds.split(np.zeros((2, 1))))


# cnn is a package: doctest.testmod finds only what its own module defines, so
# its modules with examples are listed.
@pytest.mark.parametrize(
    "module",
    ["settings", "folds", "lipnet", "models", "cnn.preprocess", "cnn.augment", "svm", "api"],
)
def test_docstring_examples_run(module):
    import importlib

    mod = importlib.import_module(f"liposome_bench.{module}")
    failed, attempted = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert failed == 0
