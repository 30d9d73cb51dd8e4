"""The LIBSVM classifier: equivalence with scikit-learn's SVC, svm-scale
scaling, class weights, model files read by LIBSVM, grid search and run_svm."""

import re
import json
import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import dump_svmlight_file, make_classification
from sklearn.svm import SVC

from liposome_bench import svm as svm_module
from liposome_bench.dataset import LAMELLARITY, Dataset, Particle
from liposome_bench.errors import ConfigError, DatasetError, ResultsError
from liposome_bench.folds import load_or_make_folds
from liposome_bench.progress import NullReporter
from liposome_bench.results import ResultsDir
from liposome_bench.svm import LibSVMClassifier, run_svm, search_grid, stratified_subsample

SVM_PREDICT = shutil.which("svm-predict")
SVM_SCALE = shutil.which("svm-scale")


def test_ci_has_libsvm_tools():
    """.ci/run installs libsvm-tools, so in CI the interop tests below run
    instead of skipping (issue 14)."""
    if not os.environ.get("CI"):
        pytest.skip("outside CI the svm-predict tests skip when libsvm-tools is missing")
    assert SVM_PREDICT and SVM_SCALE, "CI must install libsvm-tools (.ci/run)"


needs_svm_predict = pytest.mark.skipif(
    SVM_PREDICT is None,
    reason="LIBSVM's svm-predict is not installed (Debian/Ubuntu: apt-get install libsvm-tools)",
)
needs_svm_scale = pytest.mark.skipif(
    SVM_SCALE is None,
    reason="LIBSVM's svm-scale is not installed (Debian/Ubuntu: apt-get install libsvm-tools)",
)


def _data(n=600, seed=0):
    """Imbalanced 3-class data whose features have very different ranges."""
    X, y = make_classification(
        n_samples=n,
        n_features=12,
        n_informative=6,
        n_classes=3,
        weights=[0.8, 0.15, 0.05],
        class_sep=1.2,
        random_state=seed,
    )
    return X * np.geomspace(0.01, 1000, 12) + 7.0, y


# Equivalence with scikit-learn --------------------------------------------------


@pytest.mark.parametrize("class_weight", ["balanced", None, {0: 1.0, 1: 3.0, 2: 10.0}])
def test_predictions_equal_sklearn_svc_with_the_same_c_gamma_and_weights(class_weight):
    X, y = _data()
    est = LibSVMClassifier(
        C=4.0, gamma=0.1, class_weight=class_weight, decision_function_shape="ovo"
    ).fit(X, y)
    # Same scaled inputs: scikit-learn's SVC is built on (a fork of) LIBSVM.
    Xs = est.transform_features(X)
    ref = SVC(C=4.0, gamma=0.1, class_weight=class_weight, decision_function_shape="ovo")
    ref.fit(Xs, y)
    X_test, _ = _data(300, seed=1)
    Xs_test = est.transform_features(X_test)
    np.testing.assert_array_equal(est.predict(X_test), ref.predict(Xs_test))
    np.testing.assert_array_equal(est.n_support_, ref.n_support_)
    # Both solve the same dual to LIBSVM's tolerance 1e-3; measured differences
    # are ~1e-12, the bound here leaves room for other platforms.
    np.testing.assert_allclose(
        est.decision_function(X_test), ref.decision_function(Xs_test), atol=1e-6
    )


def test_ovr_decision_function_matches_sklearn_and_predict():
    X, y = _data()
    est = LibSVMClassifier(C=2.0, gamma=0.05).fit(X, y)
    ref = SVC(C=2.0, gamma=0.05, class_weight="balanced").fit(est.transform_features(X), y)
    dec = est.decision_function(X)
    assert dec.shape == (len(X), 3)
    np.testing.assert_allclose(dec, ref.decision_function(est.transform_features(X)), atol=1e-6)
    # Without a tie in the votes, the largest value is LIBSVM's prediction (on
    # a 1-1-1 tie LIBSVM takes the first class, the confidences may not).
    votes = np.round(dec)
    untied = (votes == votes.max(axis=1, keepdims=True)).sum(axis=1) == 1
    assert untied.mean() > 0.9
    np.testing.assert_array_equal(dec.argmax(axis=1)[untied], est.predict(X)[untied])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
def test_estimator_passes_scikit_learn_checks():
    from sklearn.utils.estimator_checks import check_estimator

    check_estimator(LibSVMClassifier())


def test_string_labels_and_clone():
    X, y = _data()
    names = np.array(["uni", "multi", "unc"])[y]
    est = LibSVMClassifier(C=2.0, gamma=0.1).fit(X, names)
    assert list(est.classes_) == ["multi", "unc", "uni"]
    assert set(est.predict(X)) <= set(names)
    assert clone(est).get_params() == est.get_params()
    assert est.pair_names() == ["multi_vs_unc", "multi_vs_uni", "unc_vs_uni"]


def test_fitted_estimator_survives_pickling():
    import pickle

    X, y = _data()
    est = LibSVMClassifier(C=2.0, gamma=0.1).fit(X, y)
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.predict(X), est.predict(X))


@pytest.mark.parametrize(
    "X, y, params, message",
    [
        (np.ones((4, 2)), [0, 0, 0, 0], {}, "at least 2 classes"),
        (np.array([[0.0, np.nan], [1, 2], [3, 4]]), [0, 1, 0], {}, "NaN"),
        (np.ones((4, 2)), [0, 1, 0, 1], {"C": 0}, "C must be > 0"),
        (np.ones((4, 2)), [0, 1, 0, 1], {"gamma": -1.0}, "gamma must be > 0"),
        (np.ones((4, 2)), [0, 1, 0, 1], {"class_weight": "equal"}, "class_weight must be"),
        (np.ones((4, 2)), [0, 1, 0, 1], {"class_weight": {5: 2.0}}, "names class 5"),
    ],
)
def test_fit_rejects_bad_input(X, y, params, message):
    with pytest.raises(ValueError, match=message):
        LibSVMClassifier(**params).fit(X, y)


# Scaling and weights -------------------------------------------------------------


def test_scaling_is_svm_scale_on_the_training_data():
    X = np.array([[0.0, 5.0, 2.0], [10.0, 5.0, 4.0], [5.0, 5.0, 3.0], [2.5, 5.0, 2.0]])
    est = LibSVMClassifier(C=1.0, gamma=0.5).fit(X, [0, 1, 0, 1])
    np.testing.assert_allclose(
        est.transform_features(X),
        [[-1, 0, -1], [1, 0, 1], [0, 0, 0], [-0.5, 0, -1]],  # constant column -> 0
    )
    # Test data is scaled with the training range, not its own: it may leave [-1, 1].
    np.testing.assert_allclose(est.transform_features([[20.0, 7.0, 1.0]]), [[3.0, 0.0, -2.0]])


@needs_svm_scale
def test_range_file_reproduces_our_scaling_in_svm_scale(tmp_path):
    X, y = _data(100)
    X[:, 3] = 2.5  # a constant feature
    est = LibSVMClassifier(C=1.0, gamma=0.1).fit(X, y)
    paths = est.save(tmp_path / "m")
    X_test, y_test = _data(50, seed=3)
    X_test[:, 3] = 9.0
    dump_svmlight_file(X_test, y_test, str(tmp_path / "test.txt"), zero_based=False)
    out = subprocess.run(
        [SVM_SCALE, "-r", str(paths["range"]), str(tmp_path / "test.txt")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    scaled = np.zeros_like(X_test)
    for row, line in enumerate(out.splitlines()):
        for item in line.split()[1:]:
            index, value = item.split(":")
            scaled[row, int(index) - 1] = float(value)
    # svm-scale prints 6 significant digits.
    np.testing.assert_allclose(scaled, est.transform_features(X_test), rtol=1e-5, atol=1e-5)


def test_balanced_weights_are_inverse_training_frequencies():
    X, y = _data()
    est = LibSVMClassifier(C=1.0, gamma=0.1).fit(X, y)
    counts = np.bincount(y)
    np.testing.assert_allclose(est.class_weight_, len(y) / (3 * counts))
    assert "-w2 " in est._libsvm_options()


# Model files ----------------------------------------------------------------------


def _write_libsvm_data(path, X_scaled, y):
    dump_svmlight_file(X_scaled, y, str(path), zero_based=False)


def test_saved_model_loads_in_libsvm_and_predicts_the_same(tmp_path):
    from libsvm.svmutil import svm_load_model, svm_predict

    X, y = _data()
    est = LibSVMClassifier(C=8.0, gamma=0.05).fit(X, y)
    paths = est.save(
        tmp_path / "fold-0",
        feature_names=[f"f{i}" for i in range(12)],
        class_names=["uni", "multi", "unc"],
    )
    model = svm_load_model(str(paths["model"]))
    assert model.get_labels() == [0, 1, 2]
    X_test, y_test = _data(200, seed=2)
    loaded = LibSVMClassifier.load(tmp_path / "fold-0")
    labels, _, values = svm_predict(y_test, loaded.transform_features(X_test), model, "-q")
    np.testing.assert_array_equal(np.array(labels, dtype=int), loaded.predict(X_test))
    ovo = LibSVMClassifier.load(tmp_path / "fold-0").set_params(decision_function_shape="ovo")
    np.testing.assert_allclose(values, ovo.decision_function(X_test))
    meta = json.loads(paths["json"].read_text())
    assert meta["labels"] == {"0": "uni", "1": "multi", "2": "unc"}
    assert meta["feature_names"][0] == "f0" and len(meta["scaling"]["min"]) == 12
    # The file keeps support vectors to 8 digits, so the loaded model agrees
    # with the in-memory one up to that precision.
    np.testing.assert_array_equal(loaded.predict(X_test), est.predict(X_test))


@needs_svm_predict
def test_saved_model_is_accepted_by_svm_predict(tmp_path):
    X, y = _data()
    est = LibSVMClassifier(C=8.0, gamma=0.05).fit(X, y)
    paths = est.save(tmp_path / "m")
    X_test, y_test = _data(200, seed=2)
    _write_libsvm_data(tmp_path / "test.scaled", est.transform_features(X_test), y_test)
    run = subprocess.run(
        [SVM_PREDICT, str(tmp_path / "test.scaled"), str(paths["model"]), str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    predicted = np.loadtxt(tmp_path / "out", dtype=int)
    np.testing.assert_array_equal(predicted, LibSVMClassifier.load(tmp_path / "m").predict(X_test))


def test_load_refuses_a_missing_model(tmp_path):
    with pytest.raises(ValueError, match="is not a saved LibSVMClassifier"):
        LibSVMClassifier.load(tmp_path / "nothing")


# Grid search -----------------------------------------------------------------------


def test_grid_search_returns_the_best_point_with_ties_to_smaller_values():
    X, y = _data(300)
    best, table = search_grid(
        X, y, C_values=[1.0, 16.0], gamma_values=[0.01, 1.0], seed=0, extend=False
    )
    assert len(table) == 4 and best["extended"] == []
    top = max(row["score"] for row in table)
    assert best["score"] == top
    tied = [row for row in table if row["score"] == top]
    assert (best["C"], best["gamma"]) == min((r["C"], r["gamma"]) for r in tied)
    assert best["inner_folds"] == 3 and best["n_samples"] == 300


@pytest.mark.parametrize(
    "gammas, extended, edge, best_gamma",
    [
        # best on the upper edge: one step up (the grid's ratio, 2^2), then interior
        ([2.0**-3, 2.0**-1], ["gamma up to 2^1"], [], 0.5),
        # best on the lower edge: at most EXTEND_STEPS steps down, then still an edge
        (
            [2.0**5, 2.0**7],
            ["gamma down to 2^3", "gamma down to 2^1", "gamma down to 2^-1"],
            ["gamma"],
            0.5,
        ),
    ],
)
def test_grid_is_extended_past_an_edge_holding_the_best(gammas, extended, edge, best_gamma):
    X, y = _data(300)
    best, table = search_grid(X, y, C_values=[1.0], gamma_values=gammas, seed=0)
    assert best["extended"] == extended and best["edge"] == edge
    assert best["gamma"] == best_gamma
    assert len(table) == len(gammas) + len(extended)  # one new point per step (C fixed)
    low, high = svm_module.EXTEND_LIMITS["gamma"]
    assert all(low <= row["gamma"] <= high for row in table)
    assert best["score"] == max(row["score"] for row in table)


def test_grid_extension_stops_at_the_limit():
    X, y = _data(300)
    low = svm_module.EXTEND_LIMITS["gamma"][0]
    best, table = search_grid(X, y, C_values=[1.0], gamma_values=[low, 4 * low], seed=0)
    assert all(row["gamma"] >= low for row in table)
    assert not any("down" in e for e in best["extended"])


def test_grid_search_score_is_macro_f1_of_inner_folds():
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    X, y = _data(300)
    best, table = search_grid(X, y, C_values=[4.0], gamma_values=[0.1], seed=5)
    expected = cross_val_score(
        LibSVMClassifier(C=4.0, gamma=0.1),
        X,
        y,
        scoring="f1_macro",
        cv=StratifiedKFold(3, shuffle=True, random_state=5),
    ).mean()
    assert best["score"] == pytest.approx(expected)


def test_subsample_is_stratified_and_keeps_small_classes():
    y = np.array([0] * 9000 + [1] * 1000 + [2] * 60)
    keep = stratified_subsample(y, 2000, min_per_class=50, seed=0)
    counts = np.bincount(y[keep])
    assert counts[2] == 50  # 60 * 2000/10060 = 12 would be too few
    assert abs(counts[0] / counts[1] - 9) < 0.1
    assert len(np.unique(keep)) == len(keep)
    np.testing.assert_array_equal(stratified_subsample(y, None), np.arange(len(y)))


def test_grid_search_refuses_a_class_with_one_particle():
    X, y = _data(60)
    y[:] = 0
    y[:30] = 1
    y[0] = 2
    with pytest.raises(ConfigError, match="at least 2 training particles of each class"):
        search_grid(X, y, C_values=[1.0], gamma_values=[1.0])


# run_svm ---------------------------------------------------------------------------

COUNTS = {"unilamellar": 60, "multilamellar": 24, "uncertain": 10}


@pytest.fixture
def small_dataset():
    """An in-memory lamellarity dataset; its images are never looked at
    because the feature extractor is replaced in these tests."""
    particles = []
    for label, n in COUNTS.items():
        for i in range(n):
            pid = f"{label[:3]}{i:03d}"
            particles.append(
                Particle(
                    pid,
                    label,
                    np.full((6, 6), len(particles) % 251, np.uint8),
                    np.ones((6, 6), bool),
                    1.0,
                )
            )
    return Dataset(LAMELLARITY, particles, description="test particles")


def _fake_features(dataset, feature_set="vironova", *, source="computed", reporter=None, **kwargs):
    """Class-dependent features, deterministic per particle; column 'row'
    records the particle's position so tests can see which rows a step used."""
    y = dataset.y
    rng = np.random.default_rng(7)
    X = rng.normal(size=(len(y), 5)) + y[:, None] * 1.5
    table = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    table["row"] = np.arange(len(y), dtype=float)
    return table


@pytest.fixture
def small_grid(monkeypatch):
    """A 2 x 2 "coarse" grid, to keep these tests fast."""
    grid = {"C": (1.0, 16.0), "gamma": (0.0625, 1.0), "inner_folds": 3, "max_samples": 2000}
    monkeypatch.setitem(svm_module.GRIDS, "coarse", grid)
    return grid


@pytest.fixture
def fake_features(monkeypatch):
    calls = []

    def extract(*args, **kwargs):
        calls.append((args, kwargs))
        return _fake_features(*args, **kwargs)

    monkeypatch.setattr(svm_module, "extract_features", extract)
    return calls


def test_run_svm_writes_every_fold_with_models(tmp_path, small_dataset, fake_features):
    folds = load_or_make_folds(small_dataset, k=3, seed=0)
    results = ResultsDir(tmp_path / "res")
    out = run_svm(small_dataset, folds, results, C=1.0, gamma=0.5, reporter=NullReporter())
    assert [r.fold for r in out] == [0, 1, 2]
    assert len(fake_features) == 1  # features once, not per fold
    for r in out:
        np.testing.assert_array_equal(r.y_true, small_dataset.y[folds.test_indices(r.fold)])
        assert r.score_names == [
            "unilamellar_vs_multilamellar",
            "unilamellar_vs_uncertain",
            "multilamellar_vs_uncertain",
        ]
        assert r.scores.shape == (len(r.ids), 3) and r.score_kind == "decision"
        assert r.params["C"] == 1.0 and r.params["grid_score"] is None
        assert (results.model_dir("svm") / r.params["model_file"]).is_file()
        # Saved predictions are those of the saved model.
        est = LibSVMClassifier.load(results.models_subdir("svm") / f"fold-{r.fold}")
        X = _fake_features(small_dataset).to_numpy()[folds.test_indices(r.fold)]
        np.testing.assert_array_equal(est.predict(X), r.y_pred)
        back = results.load_fold("svm", r.fold, LAMELLARITY.classes)
        np.testing.assert_allclose(back.scores, r.scores)
        assert set(r.timings) >= {"grid_s", "fit_s", "predict_s", "features_s"}
    # The decision values vote for LIBSVM's prediction.
    r = out[0]
    votes = np.zeros((len(r.ids), 3))
    for n, (i, j) in enumerate([(0, 1), (0, 2), (1, 2)]):
        votes[r.scores[:, n] > 0, i] += 1
        votes[r.scores[:, n] <= 0, j] += 1
    assert (votes.argmax(axis=1) == r.y_pred).mean() > 0.95  # ties break by class order


def test_grid_search_sees_only_the_training_folds(
    tmp_path, small_dataset, fake_features, small_grid, monkeypatch
):
    seen = []
    real = svm_module.search_grid

    def spy(X, y, **kwargs):
        seen.append(set(np.asarray(X)[:, -1].astype(int)))  # the 'row' column
        return real(X, y, **kwargs)

    monkeypatch.setattr(svm_module, "search_grid", spy)
    folds = load_or_make_folds(small_dataset, k=3, seed=0)
    out = run_svm(small_dataset, folds, ResultsDir(tmp_path / "r"), grid="coarse")
    assert len(seen) == 3
    for f, rows in enumerate(seen):
        assert rows == set(folds.train_indices(f).tolist())
    import math

    for r in out:
        extra = {
            name: {
                2.0 ** float(e.split("2^")[1])
                for e in r.params["grid_extended"]
                if e.startswith(name + " ")
            }
            for name in ("C", "gamma")
        }
        assert r.params["C"] in set(small_grid["C"]) | extra["C"]
        assert r.params["gamma"] in set(small_grid["gamma"]) | extra["gamma"]
        assert r.params["grid_score"] == max(p["score"] for p in r.params["grid_results"])
        points = {(p["C"], p["gamma"]) for p in r.params["grid_results"]}
        assert {(c, g) for c in small_grid["C"] for g in small_grid["gamma"]} <= points
        n_c = len(small_grid["C"]) + len(extra["C"])
        n_g = len(small_grid["gamma"]) + len(extra["gamma"])
        assert len(points) == n_c * n_g and not math.isnan(r.params["grid_score"])


def test_fixing_c_searches_only_gamma(tmp_path, small_dataset, fake_features, small_grid):
    folds = load_or_make_folds(small_dataset, k=3, seed=0)
    out = run_svm(small_dataset, folds, ResultsDir(tmp_path / "r"), C=2.0)
    for r in out:
        assert {p["C"] for p in r.params["grid_results"]} == {2.0}
        assert len(r.params["grid_results"]) == (
            len(small_grid["gamma"]) + len(r.params["grid_extended"])
        )
        assert all(e.startswith("gamma ") for e in r.params["grid_extended"])


def test_run_svm_resumes_and_refuses_other_settings(
    tmp_path, small_dataset, fake_features, monkeypatch
):
    folds = load_or_make_folds(small_dataset, k=3, seed=0)
    results = ResultsDir(tmp_path / "res")
    first = run_svm(small_dataset, folds, results, C=1.0, gamma=0.5)
    results.fold_json("svm", 1).unlink()  # as if interrupted during fold 1

    fitted = []
    real = svm_module._fit_fold
    monkeypatch.setattr(
        svm_module, "_fit_fold", lambda **kw: fitted.append(kw["fold"]) or real(**kw)
    )
    again = run_svm(small_dataset, folds, results, C=1.0, gamma=0.5)
    assert fitted == [1]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.y_pred, b.y_pred)

    fitted.clear()
    n_calls = len(fake_features)
    run_svm(small_dataset, folds, results, C=1.0, gamma=0.5)
    assert fitted == [] and len(fake_features) == n_calls  # nothing left to do

    with pytest.raises(ResultsError, match=r"other settings \(C differ\)"):
        run_svm(small_dataset, folds, results, C=2.0, gamma=0.5)


def test_parallel_folds_give_the_same_results(tmp_path, small_dataset, fake_features):
    folds = load_or_make_folds(small_dataset, k=3, seed=0)
    serial = run_svm(small_dataset, folds, ResultsDir(tmp_path / "a"), C=1.0, gamma=0.5)
    parallel = run_svm(small_dataset, folds, ResultsDir(tmp_path / "b"), C=1.0, gamma=0.5, jobs=2)
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a.y_pred, b.y_pred)
        np.testing.assert_allclose(a.scores, b.scores)


@needs_svm_predict
def test_svm_predict_reproduces_saved_fold_predictions(tmp_path, small_dataset, fake_features):
    folds = load_or_make_folds(small_dataset, k=3, seed=0)
    results = ResultsDir(tmp_path / "res")
    r = run_svm(small_dataset, folds, results, C=4.0, gamma=0.25)[2]
    stem = results.models_subdir("svm") / "fold-2"
    meta = json.loads(stem.with_suffix(".json").read_text())
    X = _fake_features(small_dataset).to_numpy()[folds.test_indices(2)]
    lo, hi = np.array(meta["scaling"]["min"]), np.array(meta["scaling"]["max"])
    span = np.where(hi > lo, hi - lo, 1.0)
    scaled = np.where(hi > lo, -1 + 2 * (X - lo) / span, 0.0)
    _write_libsvm_data(tmp_path / "test.scaled", scaled, r.y_true)
    subprocess.run(
        [
            SVM_PREDICT,
            str(tmp_path / "test.scaled"),
            str(stem.with_suffix(".model")),
            str(tmp_path / "out"),
        ],
        check=True,
        capture_output=True,
    )
    labels = np.loadtxt(tmp_path / "out", dtype=int)
    np.testing.assert_array_equal(labels, r.y_pred)
    assert [meta["labels"][str(i)] for i in range(3)] == list(LAMELLARITY.classes)


def test_features_with_nan_are_refused_and_empty_columns_dropped(
    tmp_path, small_dataset, monkeypatch
):
    messages = []

    class Reporter(NullReporter):
        def message(self, text):
            messages.append(text)

    def with_empty_column(dataset, *args, **kwargs):
        table = _fake_features(dataset)
        table["length_nm"] = np.nan
        return table

    monkeypatch.setattr(svm_module, "extract_features", with_empty_column)
    folds = load_or_make_folds(small_dataset, k=3, seed=0)
    out = run_svm(
        small_dataset, folds, ResultsDir(tmp_path / "a"), C=1.0, gamma=0.5, reporter=Reporter()
    )
    assert any("leaving out feature(s) length_nm" in m for m in messages)
    assert out[0].params["dropped_features"] == ["length_nm"]
    assert out[0].params["n_features"] == 6

    def with_one_nan(dataset, *args, **kwargs):
        table = _fake_features(dataset)
        table.loc[3, "f2"] = np.nan
        return table

    monkeypatch.setattr(svm_module, "extract_features", with_one_nan)
    with pytest.raises(
        DatasetError,
        match=r"Feature 'f2' is not a finite number for 1 "
        r"particle\(s\) \(first: particle uni003\)",
    ):
        run_svm(small_dataset, folds, ResultsDir(tmp_path / "b"), C=1.0, gamma=0.5)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"grid": "huge"}, "Unknown grid 'huge'; expected one of coarse, full."),
        ({"C": -1.0}, "C (--C) must be a positive number; got -1.0."),
        ({"gamma": 0.0}, "gamma (--gamma) must be a positive number; got 0.0."),
        ({"jobs": 0}, "--jobs must be a positive number of workers or -1"),
    ],
)
def test_bad_options_are_config_errors(tmp_path, small_dataset, options, message):
    folds = load_or_make_folds(small_dataset, k=3, seed=0)
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_svm(small_dataset, folds, ResultsDir(tmp_path / "r"), **options)
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_run_svm_passes_units_to_the_features_and_records_them(
    tmp_path, small_dataset, fake_features
):
    folds = load_or_make_folds(small_dataset, k=3, seed=0)
    results = ResultsDir(tmp_path / "res")
    run_svm(small_dataset, folds, results, C=1.0, gamma=0.5, units="px")
    assert fake_features[0][1]["units"] == "px"
    assert results.read_run()["models"]["svm"]["units"] == "px"


def test_a_feature_table_of_another_dataset_is_refused(tmp_path, tiny_dataset):
    """run_svm(features=...) needs one row per particle of its dataset."""
    from liposome_bench.errors import ConfigError
    from liposome_bench.features import extract_features
    from liposome_bench.folds import load_or_make_folds
    from liposome_bench.results import ResultsDir

    folds = load_or_make_folds(tiny_dataset, k=3, seed=0)
    table = extract_features(tiny_dataset).iloc[:40]
    with pytest.raises(ConfigError, match="The feature table has 40 rows, not one per particle"):
        run_svm(tiny_dataset, folds, ResultsDir(tmp_path), C=1.0, gamma=0.1, features=table)
