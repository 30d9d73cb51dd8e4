"""The results folder: fold round trip, concurrent preparation, damaged files."""

import json
import threading

import numpy as np
import pytest

from liposome_bench.dataset import LAMELLARITY, Dataset, Particle
from liposome_bench.errors import ResultsError
from liposome_bench.folds import load_or_make_folds
from liposome_bench.results import FoldResult, ResultsDir

CLASSES = list(LAMELLARITY.classes)


@pytest.fixture
def dataset():
    particles = [
        Particle(f"{i:04d}", CLASSES[i % 3], np.full((4, 4), i, np.uint8), np.ones((4, 4), bool))
        for i in range(30)
    ]
    return Dataset(LAMELLARITY, particles, description="in memory")


def _result(fold=0, model="svm"):
    return FoldResult(
        model=model,
        fold=fold,
        ids=["0001", "0002", "0003"],
        y_true=np.array([0, 1, 2]),
        y_pred=np.array([0, 2, 2]),
        scores=np.array([[0.5, np.nan], [1.0, -2.0], [0.0, 3.0]]),
        score_names=["a_vs_b", "a_vs_c"],
        score_kind="decision",
        params={"C": 2.0},
        timings={"fit_s": 1.0},
    )


def test_saved_fold_reads_back(tmp_path, dataset):
    results = ResultsDir(tmp_path)
    results.prepare(dataset, load_or_make_folds(dataset, 3), "svm", {"C": 2.0})
    results.save_fold(_result(), CLASSES)
    back = results.load_fold("svm", 0, CLASSES)
    assert back.ids == ["0001", "0002", "0003"]  # ids stay strings
    np.testing.assert_array_equal(back.y_pred, [0, 2, 2])
    np.testing.assert_allclose(back.scores, _result().scores)  # NaN survives
    assert back.params == {"C": 2.0}
    assert [r.fold for r in results.load_model("svm")] == [0]
    assert results.load_fold("svm", 1, CLASSES) is None


def test_models_prepared_at_once_are_all_recorded(tmp_path, dataset):
    results = ResultsDir(tmp_path)
    folds = load_or_make_folds(dataset, 3)
    names = [f"model-{i}" for i in range(12)]
    threads = [
        threading.Thread(target=results.prepare, args=(dataset, folds, name, {"i": i}))
        for i, name in enumerate(names)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.model_names()) == sorted(names)


def test_models_are_put_in_the_commands_order_whichever_started_first(tmp_path, dataset):
    # Beside each other (or as Dask tasks) a CNN can register before the
    # SVM; the tables and predictions.csv follow run.json's order.
    results = ResultsDir(tmp_path)
    folds = load_or_make_folds(dataset, 3)
    for name in ("lipnet-4", "other", "svm-all", "svm"):
        results.prepare(dataset, folds, name, {"name": name})
    results.order_models(["svm", "svm-all", "lipnet-4"])
    assert results.model_names() == ["svm", "svm-all", "lipnet-4", "other"]
    run = results.read_run()
    assert run["models"]["svm-all"] == {"name": "svm-all"}
    written = (tmp_path / "run.json").stat().st_mtime_ns
    results.order_models(["svm", "svm-all", "lipnet-4"])  # already in order: not rewritten
    assert (tmp_path / "run.json").stat().st_mtime_ns == written
    ResultsDir(tmp_path / "empty").order_models(["svm"])  # no run.json: nothing to do
    assert not (tmp_path / "empty" / "run.json").exists()


def test_folder_prepared_without_folds_lists_fold_files(tmp_path, dataset):
    results = ResultsDir(tmp_path)
    results.prepare(dataset, None, "svm", {})
    results.save_fold(_result(fold=2), CLASSES)
    assert [r.fold for r in results.load_model("svm")] == [2]


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda d: (d / "fold-0.json").write_text("{not json"),
            "fold-0.json or its .csv cannot be read",
        ),
        (lambda d: (d / "fold-0.csv").unlink(), "fold-0.json or its .csv cannot be read"),
        (
            lambda d: (d / "fold-0.csv").write_text("id,label,predicted\n1,unilamellar,blob\n"),
            "lacks column(s) score_a_vs_b, score_a_vs_c",
        ),
        (
            lambda d: (d / "fold-0.csv").write_text(
                "id,label,predicted,score_a_vs_b,score_a_vs_c\n1,unilamellar,blob,0,0\n"
            ),
            "holds class(es) blob, not among unilamellar, multilamellar, uncertain",
        ),
    ],
)
def test_damaged_fold_files_are_one_line_errors(tmp_path, dataset, damage, message):
    results = ResultsDir(tmp_path)
    results.prepare(dataset, load_or_make_folds(dataset, 3), "svm", {})
    results.save_fold(_result(), CLASSES)
    damage(results.model_dir("svm"))
    with pytest.raises(ResultsError) as info:
        results.load_fold("svm", 0, CLASSES)
    text = str(info.value)
    assert message in text and text.endswith("to run that fold again.")
    assert "\n" not in text


def test_run_json_records_dataset_folds_and_settings(tmp_path, dataset):
    results = ResultsDir(tmp_path)
    folds = load_or_make_folds(dataset, 3, seed=4)
    results.prepare(dataset, folds, "svm", {"grid": "coarse", "C": None})
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["folds"] == {"k": 3, "seed": 4}
    assert run["dataset"]["classes"] == CLASSES and run["dataset"]["n_particles"] == 30
    assert run["models"]["svm"] == {"grid": "coarse", "C": None}
