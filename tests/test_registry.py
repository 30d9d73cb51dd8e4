"""The model registry (issue 21 step 2): a new model family is one module
plus one ``registry.register`` call.

This file is that module: a nearest-centroid classifier on the particle
features (scikit-learn's ``NearestCentroid`` on standardised features,
probabilities a softmax of minus the distance to each centroid), registered
by the ``nearest_centroid`` fixture. ``benchmark``, ``report``, ``train`` and
``predict`` then run on it through the CLI; any entry point that still
branches on "svm" / LipNet names fails here.
"""

import dataclasses
import json
import shutil
import time

import numpy as np
import pytest
from click.testing import CliRunner

from liposome_bench import registry
from liposome_bench.cli import cli
from liposome_bench.errors import ConfigError
from liposome_bench.settings import FEATURE_SETS

NAME = "nearest-centroid"
CENTROIDS = "centroids.json"


# The family ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CentroidSettings:
    feature_set: str = "vironova"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes):
        if changes.get("feature_set", self.feature_set) not in FEATURE_SETS:
            raise ConfigError(f"feature_set must be one of {', '.join(FEATURE_SETS)}.")
        return dataclasses.replace(self, **changes)


def _features(dataset, feature_set, jobs=1, reporter=None):
    from liposome_bench.features import extract_features

    return extract_features(dataset, feature_set, reporter=reporter, jobs=jobs)


def _fit(X, y):
    """Standardise on X, then one centroid per class."""
    from sklearn.neighbors import NearestCentroid

    mean, std = X.mean(axis=0), X.std(axis=0)
    std[std == 0] = 1.0
    clf = NearestCentroid().fit((X - mean) / std, y)
    return {"mean": mean.tolist(), "std": std.tolist(), "centroids": clf.centroids_.tolist()}


def _probabilities(model, X):
    Z = (X - np.asarray(model["mean"])) / np.asarray(model["std"])
    d = np.linalg.norm(Z[:, None, :] - np.asarray(model["centroids"])[None], axis=2)
    e = np.exp(-(d - d.min(axis=1, keepdims=True)))
    return e / e.sum(axis=1, keepdims=True)


def run_cv(
    dataset,
    folds,
    results,
    settings,
    *,
    name,
    seed,
    jobs,
    reporter,
    inputs,
    save_models=True,
    only_folds=None,
):
    from liposome_bench.progress import NullReporter
    from liposome_bench.results import FoldResult
    from liposome_bench.svm import feature_matrix

    reporter = reporter or NullReporter()
    classes = list(dataset.problem.classes)
    results.prepare(dataset, folds, name, settings.to_dict())
    features = inputs if inputs is not None else _features(dataset, settings.feature_set, jobs)
    X, _, _ = feature_matrix(features, dataset, reporter)
    y = dataset.y
    done = []
    for f in range(folds.k) if only_folds is None else only_folds:
        saved = results.load_fold(name, f, classes)
        if saved is None:
            t0 = time.perf_counter()
            train, test = folds.train_indices(f), folds.test_indices(f)
            p = _probabilities(_fit(X[train], y[train]), X[test])
            saved = FoldResult(
                model=name,
                fold=f,
                ids=[dataset.ids[i] for i in test],
                y_true=y[test],
                y_pred=p.argmax(axis=1),
                scores=p,
                score_names=classes,
                score_kind="probability",
                timings={"fit_s": time.perf_counter() - t0},
            )
            results.save_fold(saved, classes)
        done.append(saved)
    return done


def train_final(dataset, model, settings, fold_results, oof, staging, classes, **context):
    from liposome_bench.svm import feature_matrix

    features = _features(dataset, settings["feature_set"], context["jobs"])
    X, names, _ = feature_matrix(features, dataset, context["reporter"])
    (staging / CENTROIDS).write_text(json.dumps({**_fit(X, dataset.y), "features": names}))
    return {
        "card": {
            "input": {
                "kind": "features",
                "feature_set": settings["feature_set"],
                "features": names,
            },
            "pixel_size": {"training_nm": {"median": None}},
            "probabilities": {"kind": "softmax of minus the distance to each class centroid"},
            "files": {"centroids": CENTROIDS},
        },
        "hyperparameters": {"n_centroids": len(classes), "chosen_by": "no search"},
    }


def predict(bundle, dataset, *, jobs=1, reporter=None):
    model = json.loads((bundle.path / CENTROIDS).read_text())
    features = _features(dataset, bundle.card["input"]["feature_set"], jobs, reporter)
    p = _probabilities(model, features[model["features"]].to_numpy(np.float64))
    return p.argmax(axis=1), p


def check_card(card, need, classes):
    need("input.feature_set", lambda v: v in FEATURE_SETS, "a feature set")


SPEC = registry.ModelSpec(
    family="centroid",
    names=(NAME,),
    settings_class=CentroidSettings,
    settings_of=lambda config, name, options: CentroidSettings().replace(**options),
    run_cv=run_cv,
    score_kind="probability",
    description="a nearest-centroid classifier on the particle features",
    prepare_inputs=lambda dataset, settings, *, jobs, reporter: _features(
        dataset, settings.feature_set, jobs, reporter
    ),
    bundle=registry.BundleHooks(
        files={"centroids": CENTROIDS}, train=train_final, predict=predict, check_card=check_card
    ),
)


# The tests -------------------------------------------------------------------


@pytest.fixture
def nearest_centroid():
    registry.register(SPEC)
    yield SPEC
    registry.unregister(SPEC.family)


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_the_built_in_families_are_registered():
    assert registry.baseline() is registry.SVM
    assert registry.model_names(baseline=True) == ("svm",)
    assert registry.get("lipnet-fcn") is registry.LIPNET
    assert registry.get("cnn") is registry.LIPNET
    assert [s.family for s in registry.families()] == ["svm", "cnn"]
    with pytest.raises(ConfigError, match="Unknown model 'forest'; expected one of svm, lipnet-1"):
        registry.get("forest")


def test_a_family_cannot_take_another_familys_name_or_a_second_baseline():
    with pytest.raises(ConfigError, match="model 'svm' belongs to another family"):
        registry.register(dataclasses.replace(SPEC, names=("svm",)))
    with pytest.raises(ConfigError, match="there is a baseline family already"):
        registry.register(dataclasses.replace(SPEC, baseline=True))
    with pytest.raises(ConfigError, match="score_kind 'votes' is not one of"):
        registry.register(dataclasses.replace(SPEC, score_kind="votes"))
    assert NAME not in registry.model_names()


def test_a_registered_family_runs_benchmark_report_train_and_predict(
    nearest_centroid, tiny_export_copy, tmp_path
):
    assert NAME in registry.model_names(baseline=False)
    results = tmp_path / "results"
    run = _cli(
        "benchmark",
        "--data",
        tiny_export_copy,
        "--cnn",
        NAME,
        "--folds",
        3,
        "--no-estimate",
        "--out",
        results,
    )
    assert run.exit_code == 0, run.output
    summary = json.loads((results / "summary.json").read_text())
    assert set(summary["models"]) == {"svm", NAME}
    assert summary["models"][NAME]["score_kind"] == "probability"
    assert [c["model_b"] for c in summary["comparisons"]] == [NAME]
    assert summary["settings"]["cnn"][NAME] == {"feature_set": "vironova"}

    report = _cli("report", results)
    assert report.exit_code == 0, report.output
    assert NAME in (results / "report.md").read_text()

    bundle = tmp_path / "bundle"
    train = _cli("train", "--from-results", results, "--model", NAME, "--out", bundle)
    assert train.exit_code == 0, train.output
    card = json.loads((bundle / "model.json").read_text())
    assert (card["model"], card["family"]) == (NAME, "centroid")
    assert card["files"] == {"centroids": CENTROIDS}

    unlabelled = shutil.copytree(tiny_export_copy, tmp_path / "new")
    shutil.rmtree(unlabelled / "folds", ignore_errors=True)
    out = tmp_path / "predictions.csv"
    pred = _cli("predict", bundle, "--data", unlabelled, "--out", out)
    assert pred.exit_code == 0, pred.output
    import pandas as pd

    table = pd.read_csv(out)
    assert len(table) == 45
    # The final model on all particles predicts its own training set mostly right.
    assert (table["predicted"] == table["label"]).mean() > 0.5


def test_an_unregistered_family_is_refused_in_one_line(tiny_export_copy, tmp_path):
    run = _cli("benchmark", "--data", tiny_export_copy, "--cnn", NAME, "--out", tmp_path / "r")
    assert run.exit_code == 2
    assert (
        run.output.strip()
        .splitlines()[-1]
        .startswith(f"Error: Unknown model '{NAME}'; expected one of lipnet-1")
    )
    assert not (tmp_path / "r").exists()


def test_a_family_without_dask_tasks_is_refused_on_a_scheduler(nearest_centroid, tmp_path):
    from liposome_bench.comparison import run_benchmark

    with pytest.raises(ConfigError, match=f"{NAME} cannot run on --scheduler local"):
        run_benchmark("lamellarity", cnn_models=[NAME], out=tmp_path / "r", scheduler="local")
    assert not (tmp_path / "r").exists()


def test_the_engine_runs_a_registered_familys_fold_through_its_spec(
    nearest_centroid, tiny_dataset, tmp_path
):
    """One engine task (``engine.run_fold_task``) is the family's ``run_cv``
    with ``only_folds=[fold]``: the fold a full run gives, and only it."""
    from liposome_bench import engine
    from liposome_bench.folds import load_or_make_folds
    from liposome_bench.results import ResultsDir

    folds = load_or_make_folds(tiny_dataset, 3, 0)
    settings = CentroidSettings()
    inputs = engine.inputs_task(tiny_dataset, NAME, settings)
    outcome = engine.run_fold_task(
        tiny_dataset, NAME, settings, str(tmp_path / "task"), 1, folds, 0, False, 1, inputs
    )
    assert outcome.error is None and outcome.wrote
    assert outcome.result.model == NAME and outcome.result.fold == 1
    assert outcome.record == {"feature_set": "vironova"}
    assert sorted(p.name for p in (tmp_path / "task" / NAME).glob("fold-*.json")) == ["fold-1.json"]
    full = run_cv(
        tiny_dataset,
        folds,
        ResultsDir(tmp_path / "full"),
        settings,
        name=NAME,
        seed=0,
        jobs=1,
        reporter=None,
        inputs=inputs,
    )
    np.testing.assert_array_equal(full[1].y_pred, outcome.result.y_pred)
    assert full[1].ids == outcome.result.ids


def test_export_formats_come_from_the_families():
    from liposome_bench.cli import export_command

    (fmt,) = [p for p in export_command.params if p.name == "fmt"]
    assert tuple(fmt.type.choices) == registry.export_formats() == ("onnx", "bioimageio")
    assert fmt.default == registry.SVM.export_formats[0]
