"""train / predict / export: model bundles made from a finished tiny run."""

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from liposome_bench import abstention, deploy
from liposome_bench.errors import BundleError, DatasetError, OutputError

SVM_PREDICT = shutil.which("svm-predict")
SVM_SCALE = shutil.which("svm-scale")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_cross_validation):
    """An SVM and a one-epoch lipnet-1 cross-validated on 3 folds of the tiny
    export (shared, read-only); "root" is this module's own folder."""
    return {**tiny_cross_validation, "root": tmp_path_factory.mktemp("deploy")}


@pytest.fixture(scope="module")
def svm_bundle(tiny_run):
    out = tiny_run["root"] / "m-svm"
    deploy.train_from_results(tiny_run["results"], "svm", out, data=tiny_run["data"])
    return out


@pytest.fixture(scope="module")
def cnn_bundle(tiny_run):
    out = tiny_run["root"] / "m-cnn"
    deploy.train_from_results(tiny_run["results"], "lipnet-1", out, data=tiny_run["data"])
    return out


@pytest.fixture(scope="module")
def unlabelled(tiny_run):
    """The tiny export with every Class removed."""
    out = shutil.copytree(tiny_run["data"], tiny_run["root"] / "unlabelled")
    path = out / "particles.json"
    objects = json.loads(path.read_text())
    for obj in objects:
        obj.pop("Class", None)
        obj.pop("Label", None)
    path.write_text(json.dumps(objects))
    shutil.rmtree(out / "folds", ignore_errors=True)
    return out


# The bundle ------------------------------------------------------------------------------


def test_svm_card_records_what_the_final_model_is(svm_bundle, tiny_run):
    card = json.loads((svm_bundle / "model.json").read_text())
    dataset = tiny_run["dataset"]
    assert card["schema_version"] == deploy.BUNDLE_SCHEMA_VERSION
    assert card["problem"]["classes"] == ["unilamellar", "multilamellar", "uncertain"]
    assert card["training"]["dataset"]["fingerprint"] == dataset.fingerprint()
    assert card["training"]["dataset"]["n_particles"] == len(dataset) == 45
    assert card["input"]["feature_set"] == "vironova" and len(card["input"]["features"]) > 10
    hp = card["training"]["hyperparameters"]
    # The grid search ran on all 45 particles (no test fold left out).
    assert "45 of the 45" in hp["chosen_by"]
    svm_json = json.loads((svm_bundle / "svm.json").read_text())
    assert svm_json["params"]["C"] == hp["C"] and svm_json["gamma"] == hp["gamma"]
    assert sum(hp["n_support"]) <= 45
    overall = card["cross_validation"]["overall"]["macro_f1"]
    assert overall["ci"][0] <= overall["pooled"] <= overall["ci"][1]
    assert "scikit-learn" in card["versions"] and card["pixel_size"]["training_nm"]["median"] > 0
    assert sorted(p.name for p in svm_bundle.iterdir()) == [
        "cv-predictions.csv",
        "feature-schema.json",
        "model.json",
        "svm.json",
        "svm.model",
        "svm.range",
    ]
    schema = json.loads((svm_bundle / "feature-schema.json").read_text())
    assert schema["schema_version"] == 1 and schema["units"] == "nm"
    assert [f["name"] for f in schema["features"]] == card["input"]["features"]
    assert schema["features"][0] == {"index": 1, "name": "area_nm2", "unit": "nm^2"}


def test_cnn_epochs_are_the_median_best_epoch_of_the_folds(cnn_bundle, tiny_run):
    card = json.loads((cnn_bundle / "model.json").read_text())
    best = [
        json.loads((tiny_run["results"] / "lipnet-1" / f"fold-{f}.json").read_text())["params"][
            "epochs"
        ]
        for f in range(3)
    ]
    hp = card["training"]["hyperparameters"]
    assert hp["fold_best_epochs"] == best
    assert hp["epochs"] == int(round(float(np.median(best)))) == hp["epochs_run"]
    assert card["input"]["size"] == 16 and card["input"]["mode"] == "masked"
    assert "standardised" in card["input"]["preprocessing"]
    assert (cnn_bundle / "model.keras").is_file()


def test_cv_predictions_are_the_runs_out_of_fold_predictions(svm_bundle, tiny_run):
    table = pd.read_csv(svm_bundle / "cv-predictions.csv", dtype={"id": str})
    folds = pd.concat(
        pd.read_csv(tiny_run["results"] / "svm" / f"fold-{f}.csv", dtype={"id": str})
        for f in range(3)
    )
    assert list(table["id"]) == list(folds["id"])
    assert list(table["predicted"]) == list(folds["predicted"])
    p = table[["p_unilamellar", "p_multilamellar", "p_uncertain"]].to_numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_a_folder_that_is_not_a_bundle_is_not_replaced(tiny_run, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="not a model bundle"):
        deploy.train_from_results(tiny_run["results"], "svm", out, data=tiny_run["data"])
    assert (out / "notes.txt").read_text() == "keep me"


def test_other_data_than_the_runs_is_refused(tiny_run, unlabelled, tmp_path):
    from liposome_bench.synth import generate_export

    generate_export("lamellarity", tmp_path / "other", n=60, seed=7)
    with pytest.raises(DatasetError, match="not the dataset the results were made from"):
        deploy.train_from_results(
            tiny_run["results"], "svm", tmp_path / "m", data=tmp_path / "other"
        )


def test_a_model_not_in_the_run_is_refused(tiny_run, tmp_path):
    with pytest.raises(Exception, match="holds no lipnet-4 results"):
        deploy.train_from_results(
            tiny_run["results"], "lipnet-4", tmp_path / "m", data=tiny_run["data"]
        )


# Safety ------------------------------------------------------------------------------------


def test_newer_schema_is_refused_with_its_version(svm_bundle, tmp_path):
    copy = shutil.copytree(svm_bundle, tmp_path / "b")
    card = json.loads((copy / "model.json").read_text())
    card["schema_version"] = 99
    (copy / "model.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="schema version 99; .* reads up to version 2"):
        deploy.load_bundle(copy)


@pytest.mark.parametrize(
    "expect, message",
    [
        ({"problem": "encapsulation"}, "trained for lamellarity .*, not encapsulation"),
        ({"feature_set": "all"}, "uses feature set vironova, not all"),
        ({"input_size": 28}, "is the LIBSVM baseline on the particle features, not a CNN"),
        ({"classes": ["full", "empty", "uncertain"]}, "the data's classes are full, empty"),
    ],
)
def test_a_bundle_for_other_data_is_refused_in_one_line(svm_bundle, expect, message):
    bundle = deploy.load_bundle(svm_bundle)
    with pytest.raises(BundleError, match=message) as info:
        deploy.check_bundle(bundle, **expect)
    assert "\n" not in str(info.value)


def test_cnn_bundle_for_another_input_size_is_refused(cnn_bundle):
    with pytest.raises(BundleError, match="takes 16x16 px inputs, not 28x28"):
        deploy.check_bundle(deploy.load_bundle(cnn_bundle), input_size=28)


def test_keras_model_is_loaded_with_safe_mode(cnn_bundle, monkeypatch):
    import keras

    seen = {}
    real = keras.models.load_model

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(keras.models, "load_model", spy)
    deploy.load_keras_model(deploy.load_bundle(cnn_bundle))
    assert seen.get("safe_mode") is True


def test_bundle_files_hold_no_pickle(svm_bundle, cnn_bundle):
    for bundle in (svm_bundle, cnn_bundle):
        for path in bundle.iterdir():
            assert not path.read_bytes().startswith(b"\x80"), path


def test_encapsulation_labels_are_refused_by_a_lamellarity_bundle(svm_bundle, tmp_path):
    from liposome_bench.synth import generate_export

    generate_export("encapsulation", tmp_path / "enc", n=40, seed=3)
    with pytest.raises(BundleError, match="the data's classes are full, empty, uncertain"):
        deploy.predict(svm_bundle, tmp_path / "enc")


# Predicting ------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["svm", "cnn"])
def test_predict_unlabelled_particles_as_the_labelled_ones(
    which, svm_bundle, cnn_bundle, unlabelled, tiny_run
):
    bundle = svm_bundle if which == "svm" else cnn_bundle
    blind = deploy.predict(bundle, unlabelled)
    seen = deploy.predict(bundle, tiny_run["data"])
    assert len(blind.table) == 45 and "label" not in blind.table
    assert list(seen.table["label"]) == [p.label for p in tiny_run["dataset"].particles]
    np.testing.assert_allclose(blind.probabilities, seen.probabilities)
    assert list(blind.table.columns) == [
        "id",
        "predicted",
        "p_unilamellar",
        "p_multilamellar",
        "p_uncertain",
        "confidence",
        "abstained",
    ]
    np.testing.assert_allclose(blind.probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert not blind.abstained.any()


def test_min_confidence_abstains_below_it(svm_bundle, unlabelled):
    result = deploy.predict(svm_bundle, unlabelled, min_confidence=0.9)
    confidence = result.table["confidence"].to_numpy()
    assert list(result.abstained) == list(confidence < 0.9)
    assert result.abstained.any() or (confidence >= 0.9).all()


def test_target_precision_uses_the_cv_predictions_threshold(cnn_bundle, unlabelled):
    result = deploy.predict(cnn_bundle, unlabelled, target_precision=["unilamellar=0.9"])
    cv = pd.read_csv(cnn_bundle / "cv-predictions.csv")
    classes = ["unilamellar", "multilamellar", "uncertain"]
    p = cv[[f"p_{c}" for c in classes]].to_numpy()
    y_pred = cv["predicted"].map(classes.index).to_numpy()
    y_true = cv["label"].map(classes.index).to_numpy()
    expected = abstention.threshold_for_precision(
        y_true, y_pred, p[np.arange(len(p)), y_pred], 0, 0.9
    )
    found = result.thresholds["unilamellar"]
    assert found["threshold"] == expected["threshold"] and found["target"] == 0.9
    held = abstention.held_out_threshold(
        y_true, y_pred, p[np.arange(len(p)), y_pred], cv["fold"].to_numpy(), 0, 0.9
    )
    assert found["held_out"] == held and found["calibration_shift"] == 0.0
    limit = np.inf if expected["threshold"] is None else expected["threshold"]
    conf = result.table["confidence"].to_numpy()
    assert list(result.abstained) == list((result.y_pred == 0) & (conf < limit))


def test_svm_bundle_records_its_calibration_shift(svm_bundle, unlabelled):
    card = json.loads((svm_bundle / "model.json").read_text())
    shift = card["probabilities"]["calibration_shift"]
    assert 0.0 <= shift <= 1.0
    result = deploy.predict(svm_bundle, unlabelled, target_precision=["uncertain=0.9"])
    assert result.thresholds["uncertain"]["calibration_shift"] == shift
    held = result.thresholds["uncertain"]["held_out"]
    assert held["folds"] >= 2 and held["predicted"] >= held["kept"]


def test_bad_target_precision_is_one_line(svm_bundle, unlabelled):
    from liposome_bench.errors import ConfigError

    with pytest.raises(ConfigError, match="'ghost' is not a class of this model"):
        deploy.predict(svm_bundle, unlabelled, target_precision=["ghost=0.9"])
    with pytest.raises(ConfigError, match="expected CLASS=P"):
        deploy.predict(svm_bundle, unlabelled, target_precision=["uncertain"])


# Abstention maths ----------------------------------------------------------------------------


def test_threshold_for_precision_keeps_the_most_predictions_that_reach_it():
    # class 0 predictions by falling confidence: right, right, wrong, right, wrong
    y_pred = np.array([0, 0, 0, 0, 0, 1])
    y_true = np.array([0, 0, 1, 0, 1, 1])
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.99])
    found = abstention.threshold_for_precision(y_true, y_pred, conf, 0, 0.75)
    assert found["threshold"] == 0.6 and found["kept"] == 4 and found["precision"] == 0.75
    assert found["coverage"] == pytest.approx(5 / 6)
    none = abstention.threshold_for_precision(y_true, y_pred, conf * 0 + 0.5, 0, 0.9)
    assert none["threshold"] is None


def test_coverage_curve_accuracy_rises_as_uncertain_ones_are_dropped():
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 1, 1, 0])
    conf = np.array([0.9, 0.6, 0.8, 0.55])
    curve = abstention.coverage_curve(y_true, y_pred, conf, 2)
    assert curve["coverage"] == [1.0, 0.75, 0.5, 0.25]
    assert curve["accuracy"] == [0.5, 2 / 3, 1.0, 1.0]
    assert curve["precision"][0] == [0.5, 1.0, 1.0, 1.0]
    assert curve["precision"][1][:3] == [0.5, 0.5, 1.0] and np.isnan(curve["precision"][1][3])


def test_svm_calibration_is_cross_fitted(tiny_run):
    """Fold i's probabilities do not depend on fold i's labels."""
    from liposome_bench.results import ResultsDir

    folds = ResultsDir(tiny_run["results"]).load_model("svm")
    before = abstention.out_of_fold(folds, 3)["probabilities"]
    folds[0].y_true = (folds[0].y_true + 1) % 3  # scramble fold 0's labels
    after = abstention.out_of_fold(folds, 3)["probabilities"]
    n0 = len(folds[0].ids)
    np.testing.assert_allclose(after[:n0], before[:n0])
    assert not np.allclose(after[n0:], before[n0:])


# Export ----------------------------------------------------------------------------------------


def test_svm_onnx_matches_the_tool(svm_bundle, unlabelled, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from liposome_bench.export import export_onnx
    from liposome_bench.features import extract_features

    path = export_onnx(svm_bundle, tmp_path / "svm.onnx")
    bundle = deploy.load_bundle(svm_bundle)
    clf = deploy.load_svm(bundle)
    result = deploy.predict(svm_bundle, unlabelled)
    X = extract_features(result.dataset, "vironova")[bundle.card["input"]["features"]]
    labels, values = clf._predict_raw(X.to_numpy())
    session = ort.InferenceSession(str(path))
    label, decision, probabilities = session.run(None, {"features": X.to_numpy()})
    assert list(label) == list(result.y_pred)
    np.testing.assert_allclose(decision, values, atol=1e-5, rtol=0)
    np.testing.assert_allclose(probabilities, result.probabilities, atol=1e-6, rtol=0)


def test_cnn_onnx_matches_the_tool(cnn_bundle, unlabelled, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    from liposome_bench.cnn import prepare_images
    from liposome_bench.export import export_onnx

    path = export_onnx(cnn_bundle, tmp_path / "cnn.onnx")
    result = deploy.predict(cnn_bundle, unlabelled)
    images = prepare_images(result.dataset, "masked", 16)
    session = ort.InferenceSession(str(path))
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    (probabilities,) = session.run(None, {session.get_inputs()[0].name: images})
    assert list(probabilities.argmax(axis=1)) == list(result.y_pred)
    np.testing.assert_allclose(probabilities, result.probabilities, atol=1e-4, rtol=0)


@pytest.mark.skipif(
    SVM_PREDICT is None or SVM_SCALE is None,
    reason="LIBSVM's svm-predict/svm-scale are not installed "
    "(Debian/Ubuntu: apt-get install libsvm-tools)",
)
def test_bundle_files_work_with_svm_scale_and_svm_predict(svm_bundle, unlabelled, tmp_path):
    from sklearn.datasets import dump_svmlight_file

    from liposome_bench.features import extract_features

    bundle = deploy.load_bundle(svm_bundle)
    result = deploy.predict(svm_bundle, unlabelled)
    X = extract_features(result.dataset, "vironova")[bundle.card["input"]["features"]]
    dump_svmlight_file(X.to_numpy(), np.zeros(len(X)), str(tmp_path / "raw.txt"), zero_based=False)
    scaled = subprocess.run(
        [SVM_SCALE, "-r", str(svm_bundle / "svm.range"), str(tmp_path / "raw.txt")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (tmp_path / "scaled.txt").write_text(scaled)
    subprocess.run(
        [
            SVM_PREDICT,
            str(tmp_path / "scaled.txt"),
            str(svm_bundle / "svm.model"),
            str(tmp_path / "out.txt"),
        ],
        capture_output=True,
        check=True,
    )
    predicted = [int(float(v)) for v in (tmp_path / "out.txt").read_text().split()]
    # svm-scale prints 6 significant digits: allow a particle on a boundary to differ.
    agree = np.mean(np.array(predicted) == result.y_pred)
    assert agree >= 0.97, agree


# Report and command line -----------------------------------------------------------------------


def test_report_shows_coverage_curves_of_every_model(tiny_run, tmp_path):
    from liposome_bench.report import render_report

    path = render_report(tiny_run["results"], tmp_path / "report.md")
    text = path.read_text()
    assert "## Abstention: coverage against accuracy" in text
    row = next(line for line in text.splitlines() if line.startswith("| svm |"))
    assert len(row.split("|")) == 7  # model + 4 coverages
    assert "![coverage curves](report-figures/coverage.png)" in text
    assert (tmp_path / "report-figures" / "coverage.png").stat().st_size > 1000
    assert "| lipnet-1 |" in text


def _cli(*args):
    from click.testing import CliRunner

    from liposome_bench.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_train_predict_export_as_a_user(tiny_run, unlabelled, tmp_path):
    out = tmp_path / "m"
    result = _cli(
        "train",
        "--from-results",
        tiny_run["results"],
        "--model",
        "svm",
        "--data",
        tiny_run["data"],
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "svm trained on all 45 particles (lamellarity): C=" in result.output
    assert "(synthetic data)" in result.output
    result = _cli(
        "predict",
        out,
        "--data",
        unlabelled,
        "--target-precision",
        "unilamellar=0.8",
        "--out",
        tmp_path / "p.csv",
    )
    assert result.exit_code == 0, result.output
    assert "unilamellar: precision 0.8 needs confidence >=" in result.output
    assert (
        "unilamellar: expect (out of sample: each fold's threshold chosen on the other"
        in result.output
    )
    assert "45 particles:" in result.output and "per-class metrics" not in result.output
    table = pd.read_csv(tmp_path / "p.csv")
    assert len(table) == 45 and "abstained" in table
    result = _cli("predict", out, "--data", tiny_run["data"], "--out", tmp_path / "q.csv")
    assert result.exit_code == 0 and "per-class metrics" in result.output
    pytest.importorskip("onnx")
    result = _cli("export", out, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.onnx").stat().st_size > 1000


def test_cli_train_cross_validates_first_without_results(tiny_export_copy, tmp_path):
    out = tmp_path / "m"
    result = _cli(
        "train",
        "--model",
        "svm",
        "--data",
        tiny_export_copy,
        "--folds",
        3,
        "--grid",
        "coarse",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m-cv" / "svm" / "fold-2.json").is_file()
    card = json.loads((out / "model.json").read_text())
    assert card["training"]["results"] == str(tmp_path / "m-cv")


@pytest.mark.parametrize(
    "args, line",
    [
        (("--config", "x.toml"), "Error: Invalid value for '--config'"),
        (("--grid", "full"), "Error: --grid cannot be combined with --from-results"),
    ],
)
def test_cli_train_refuses_settings_beside_from_results(tiny_run, tmp_path, args, line):
    result = _cli(
        "train",
        "--from-results",
        tiny_run["results"],
        "--model",
        "svm",
        *args,
        "--out",
        tmp_path / "m",
    )
    assert result.exit_code == 2 and line in result.output


def test_cli_predict_with_a_newer_bundle_is_one_error_line(svm_bundle, unlabelled, tmp_path):
    copy = shutil.copytree(svm_bundle, tmp_path / "b")
    card = json.loads((copy / "model.json").read_text())
    card["schema_version"] = 7
    (copy / "model.json").write_text(json.dumps(card))
    result = _cli("predict", copy, "--data", unlabelled, "--out", tmp_path / "p.csv")
    assert result.exit_code == 2
    assert (
        result.output.strip()
        .splitlines()[-1]
        .startswith(f"Error: {copy} is a model bundle of schema version 7;")
    )
    assert not (tmp_path / "p.csv").exists()


def test_labelled_data_of_some_classes_only_is_accepted(svm_bundle, tiny_run, tmp_path):
    data = shutil.copytree(tiny_run["data"], tmp_path / "uni")
    objects = [o for o in json.loads((data / "particles.json").read_text()) if o["Class"] == 3]
    (data / "particles.json").write_text(json.dumps(objects[:6]))
    shutil.rmtree(data / "folds", ignore_errors=True)
    result = deploy.predict(svm_bundle, data)
    assert list(result.table["label"]) == ["unilamellar"] * 6


@pytest.mark.parametrize("early_stopping", ["none", "macro_f1"])
def test_final_cnn_trains_with_the_cross_validated_settings(
    tiny_export, tmp_path, monkeypatch, early_stopping
):
    """Issue 22 item 1 / issue 21 step 1: the final training receives the run's
    own CNNSettings (cosine schedule, two warm-up epochs, weight averaging,
    balancing, precision policy); only the epochs may differ: with early stopping
    they are the folds' median best epoch, with a fixed budget (issue 25) the
    same budget."""
    import dataclasses

    from liposome_bench import cnn
    from liposome_bench.dataset import load_dataset
    from liposome_bench.folds import load_or_make_folds
    from liposome_bench.results import ResultsDir
    from liposome_bench.settings import CNNSettings

    data = shutil.copytree(tiny_export, tmp_path / "data")
    dataset = load_dataset(data)
    folds = load_or_make_folds(dataset, k=3, seed=0)
    results = ResultsDir(tmp_path / "results")
    cv = CNNSettings(
        model="lipnet-1",
        epochs=2,
        input_size=16,
        augment="flip",
        lr_schedule="cosine",
        warmup_epochs=2,
        weight_averaging=0.5,
        balance="undersample",
        mixed_precision=False,
        l2=1e-4,
        early_stopping=early_stopping,
    )
    run_cnn_calls, final_calls = [], []
    real = cnn.train_fold

    def spy(x_fit, y_fit, x_val, y_val, settings, **kwargs):
        (run_cnn_calls if len(x_val) else final_calls).append((settings, kwargs))
        return real(x_fit, y_fit, x_val, y_val, settings, **kwargs)

    monkeypatch.setattr(cnn.runner, "train_fold", spy)  # the cross-validation's (run_cnn)
    monkeypatch.setattr(deploy, "train_fold", spy)  # the final training's
    cnn.run_cnn(dataset, folds, results, cv, save_models=False)
    deploy.train_from_results(results.path, "lipnet-1", tmp_path / "m", data=data)
    assert len(run_cnn_calls) == 3 and len(final_calls) == 1
    cv_used, cv_kwargs = run_cnn_calls[0]
    final, final_kwargs = final_calls[0]
    assert cv_used == cv
    assert final.lr_schedule == "cosine" and final.warmup_epochs == 2
    # everything else is the same (the record keeps the resolved learning rate)
    assert final.resolved_learning_rate == cv.resolved_learning_rate
    assert dataclasses.replace(final, epochs=cv.epochs, learning_rate=None) == cv
    assert final_kwargs["dtype_policy"] == cv_kwargs["dtype_policy"]
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    differs = card["training"]["hyperparameters"]["trained_as_cross_validated"]["differs"]
    if early_stopping == "none":
        assert final.epochs == cv.epochs and "epochs" not in differs
    else:
        assert "epochs" in differs


# A bundle verifies itself (issue 26) -------------------------------------------------------


def _edited(bundle, tmp_path, edit=None, *, reseal=False, name="b"):
    """A copy of ``bundle`` with ``edit(card, folder)`` applied; with ``reseal`` the
    card's sha256 entries are recomputed afterwards (an editor who knows the format)."""
    copy = shutil.copytree(bundle, tmp_path / name)
    card = json.loads((copy / "model.json").read_text())
    if edit is not None:
        edit(card, copy)
    if reseal:
        card["sha256"] = {n: deploy.file_sha256(copy / n) for n in card["sha256"]}
        card["contract_sha256"] = deploy.contract_sha256(card)
    (copy / "model.json").write_text(json.dumps(card))
    return copy


def _swap_classes(card, folder):
    classes = card["problem"]["classes"]
    classes[0], classes[1] = classes[1], classes[0]


def _swap_custom(card, folder):
    # A problem name that is not built in, so only the model files can tell.
    card["problem"]["name"] = "mine"
    _swap_classes(card, folder)


def _two_classes(card, folder):
    card["problem"]["name"] = "mine"
    card["problem"]["classes"] = ["unilamellar", "multilamellar"]


def _problem(card, folder):
    card["problem"]["name"] = "encapsulation"


def _family(card, folder):
    card["family"] = "cnn" if card["family"] == "svm" else "svm"


def _nan_calibration(card, folder):
    card["probabilities"]["calibration"]["coef"][0][0] = float("nan")


def _missing_input(card, folder):
    del card["input"]


def _outside(card, folder):
    key = next(iter(card["files"]))
    card["files"][key] = "../elsewhere/" + card["files"][key]


def _edit_range(card, folder):
    with open(folder / "svm.range", "a") as handle:
        handle.write("99 0 1\n")


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            _swap_classes,
            (
                "problem.name is 'lamellarity', whose classes are unilamellar, "
                "multilamellar, uncertain, but problem.classes is multilamellar"
            ),
        ),
        (
            _swap_custom,
            (
                "lists the classes multilamellar, unilamellar, uncertain but the model's "
                "cross-validated predictions"
            ),
        ),
        (_two_classes, "probabilities.calibration.coef is .*; a 2 x 1 matrix of finite numbers"),
        (_problem, "problem.name is 'encapsulation', whose classes are full, empty, uncertain"),
        (_family, "family is 'cnn' but model is 'svm'"),
        (
            lambda card, folder: card["problem"].update(name="mine"),
            "problem.name is 'mine' but problem.classes are those of the built-in problem "
            "'lamellarity'",
        ),
        (_nan_calibration, "probabilities.calibration.coef is .*; a 3 x 3 matrix of finite"),
        (_missing_input, "input.feature_set is missing"),
        (_outside, "files.libsvm_model is '../elsewhere/svm.model', which is not a file inside"),
        (_edit_range, "svm.range changed since the bundle was trained"),
    ],
)
def test_an_edited_svm_bundle_is_refused_in_one_line(svm_bundle, tmp_path, edit, message):
    copy = _edited(svm_bundle, tmp_path, edit)
    with pytest.raises(BundleError, match=message) as info:
        deploy.load_bundle(copy)
    assert "\n" not in str(info.value)


def _schema_edit(change):
    def edit(card, folder):
        path = folder / "feature-schema.json"
        schema = json.loads(path.read_text())
        change(schema)
        path.write_text(json.dumps(schema))

    return edit


def _swap_first_two(schema):
    first, second = schema["features"][:2]
    first["name"], second["name"] = second["name"], first["name"]


def _drop_schema(card, folder):
    # A bundle trained before the feature schema existed.
    (folder / "feature-schema.json").unlink()
    del card["files"]["feature_schema"]
    del card["sha256"]["feature-schema.json"]


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda s: s["features"][0].update(unit="px^2"),
            "feature 'area_nm2' is in 'px\\^2'; this liposome-bench .* computes it in 'nm\\^2'",
        ),
        (_swap_first_two, "its features are not the model card's input.features"),
        (lambda s: s.update(units="px"), "units is 'px' but the model card's is 'nm'"),
        (
            lambda s: s.update(schema_version=2),
            "a feature schema of version 2; this liposome-bench .* reads up to version 1",
        ),
        (
            lambda s: s["features"][1].update(name="volume_nm3"),
            "its features are not the model card's",
        ),
    ],
)
def test_the_feature_schema_is_checked_against_what_the_tool_computes(
    svm_bundle, tmp_path, change, message
):
    # Resealed: the hashes match, so only the schema check can tell.
    copy = _edited(svm_bundle, tmp_path, _schema_edit(change), reseal=True)
    with pytest.raises(BundleError, match=message) as info:
        deploy.load_bundle(copy)
    assert "\n" not in str(info.value) and "feature-schema.json" in str(info.value)


def test_a_feature_the_tool_does_not_compute_is_refused(svm_bundle, tmp_path):
    def rename(card, folder):
        _schema_edit(lambda s: s["features"][0].update(name="volume_nm3"))(card, folder)
        card["input"]["features"][0] = "volume_nm3"

    copy = _edited(svm_bundle, tmp_path, rename, reseal=True)
    svm_json = json.loads((copy / "svm.json").read_text())
    svm_json["feature_names"][0] = "volume_nm3"
    (copy / "svm.json").write_text(json.dumps(svm_json))
    copy = _edited(copy, tmp_path, reseal=True, name="c")
    with pytest.raises(BundleError, match="feature 'volume_nm3' is not one this liposome-bench"):
        deploy.load_bundle(copy)


def test_an_svm_bundle_from_before_the_feature_schema_still_predicts(
    svm_bundle, unlabelled, tmp_path
):
    copy = _edited(svm_bundle, tmp_path, _drop_schema, reseal=True)
    assert "feature_schema" not in deploy.load_bundle(copy).card["files"]
    ours = deploy.predict(svm_bundle, unlabelled)
    theirs = deploy.predict(copy, unlabelled)
    np.testing.assert_array_equal(ours.probabilities, theirs.probabilities)


def test_svm_classes_are_checked_against_svm_json_and_the_libsvm_header(svm_bundle, tmp_path):
    # An editor who also rewrites cv-predictions.csv and the hashes: svm.json disagrees.
    def swap_everywhere(card, folder):
        _swap_custom(card, folder)
        table = pd.read_csv(folder / "cv-predictions.csv", dtype={"id": str})
        table = table.rename(
            columns={"p_unilamellar": "p_multilamellar", "p_multilamellar": "p_unilamellar"}
        )
        table = table[
            ["id", "label", "fold", "predicted", "p_multilamellar", "p_unilamellar", "p_uncertain"]
        ]
        table.to_csv(folder / "cv-predictions.csv", index=False)

    copy = _edited(svm_bundle, tmp_path, swap_everywhere, reseal=True)
    with pytest.raises(BundleError, match="but svm.json has unilamellar, multilamellar"):
        deploy.load_bundle(copy)

    def three_labels(card, folder):
        text = (folder / "svm.model").read_text()
        (folder / "svm.model").write_text(text.replace("\nlabel 0 1 2\n", "\nlabel 0 2 1\n"))

    copy = _edited(svm_bundle, tmp_path, three_labels, reseal=True, name="c")
    with pytest.raises(BundleError, match=r"svm.model has nr_class 3 and labels 0 2 1"):
        deploy.load_bundle(copy)


@pytest.mark.parametrize("cut", [0.05, 0.3, 0.7, "last line"])
def test_a_truncated_libsvm_file_is_refused_before_libsvm_reads_it(svm_bundle, tmp_path, cut):
    def truncate(card, folder):
        data = (folder / "svm.model").read_bytes()
        end = (
            data.rindex(b"\n", 0, len(data) - 1) + 1 if cut == "last line" else int(len(data) * cut)
        )
        (folder / "svm.model").write_bytes(data[:end])

    copy = _edited(svm_bundle, tmp_path, truncate, reseal=True)
    with pytest.raises(BundleError, match="svm.model is not a whole LIBSVM model file"):
        deploy.load_bundle(copy)
    # Without the hashes rewritten, the changed file is named first.
    copy = _edited(svm_bundle, tmp_path, truncate, name="c")
    with pytest.raises(BundleError, match="svm.model changed since the bundle was trained"):
        deploy.load_bundle(copy)


def _symlinked_out(card, folder):
    """svm.model moved out of the bundle and linked back: same bytes, same hash."""
    elsewhere = folder.parent / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    shutil.move(folder / "svm.model", elsewhere / "svm.model")
    (folder / "svm.model").symlink_to(elsewhere / "svm.model")


def test_a_file_symlinked_out_of_the_bundle_is_refused(svm_bundle, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def link(card, folder):
        shutil.move(folder / "svm.model", elsewhere / "svm.model")
        (folder / "svm.model").symlink_to(elsewhere / "svm.model")

    copy = _edited(svm_bundle, tmp_path, link)
    # Same bytes, so the hash matches: the path check refuses it.
    with pytest.raises(BundleError, match="'svm.model', which is not a file inside the bundle"):
        deploy.load_bundle(copy)


def test_a_garbage_keras_file_is_one_line_naming_it(cnn_bundle, tmp_path):
    def garbage(card, folder):
        (folder / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")

    copy = _edited(cnn_bundle, tmp_path, garbage, reseal=True)
    bundle = deploy.load_bundle(copy)
    with pytest.raises(BundleError, match=r"model.keras cannot be loaded by Keras") as info:
        deploy.load_keras_model(bundle)
    assert "\n" not in str(info.value)


def test_cnn_output_width_is_checked_against_the_card(cnn_bundle, tmp_path):
    def two(card, folder):
        _two_classes(card, folder)
        table = pd.read_csv(folder / "cv-predictions.csv", dtype={"id": str})
        table.drop(columns=["p_uncertain"]).to_csv(folder / "cv-predictions.csv", index=False)

    copy = _edited(cnn_bundle, tmp_path, two, reseal=True)
    with pytest.raises(BundleError, match="model.keras has 3 outputs but its card lists 2"):
        deploy.load_keras_model(deploy.load_bundle(copy))


def test_cnn_swapped_classes_are_refused(cnn_bundle, tmp_path):
    copy = _edited(cnn_bundle, tmp_path, _swap_custom)
    with pytest.raises(BundleError, match="lists the classes multilamellar, unilamellar"):
        deploy.load_bundle(copy)


def test_a_finite_calibration_edit_is_refused_by_the_contract_hash(svm_bundle, tmp_path):
    def zero(card, folder):
        card["probabilities"]["calibration"]["intercept"] = [0, 0, 0]

    copy = _edited(svm_bundle, tmp_path, zero)
    with pytest.raises(BundleError, match="probabilities, files entries changed since"):
        deploy.load_bundle(copy)


def test_card_records_a_sha256_of_every_file(svm_bundle, cnn_bundle):
    import hashlib

    for bundle in (svm_bundle, cnn_bundle):
        card = json.loads((bundle / "model.json").read_text())
        listed = set(card["files"].values()) | {"cv-predictions.csv"}
        assert set(card["sha256"]) == listed
        for name, digest in card["sha256"].items():
            assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == digest
        assert deploy.card_problems(card) == []


@pytest.mark.parametrize("command", ["predict", "export"])
@pytest.mark.parametrize(
    "edit, message",
    [
        (_swap_custom, "lists the classes multilamellar, unilamellar, uncertain"),
        (_problem, "problem.name is 'encapsulation', whose classes are full, empty, uncertain"),
        (_family, "fails the model-card schema: family is 'cnn' but model is 'svm'"),
        (_nan_calibration, "probabilities.calibration.coef is .*; a 3 x 3 matrix of finite"),
        (_edit_range, "svm.range changed since the bundle was trained"),
        (_outside, "files.libsvm_model is '../elsewhere/svm.model', which is not a file inside"),
        (_symlinked_out, "'svm.model', which is not a file inside the bundle"),
    ],
)
def test_cli_refuses_an_edited_bundle_in_one_line(
    svm_bundle, unlabelled, tmp_path, command, edit, message
):
    import re

    copy = _edited(svm_bundle, tmp_path, edit)
    args = (
        ["--data", unlabelled, "--out", tmp_path / "p.csv"]
        if command == "predict"
        else ["--out", tmp_path / "p.csv"]
    )
    result = _cli(command, copy, *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len([line for line in lines if line.startswith("Error:")]) == 1
    assert re.search(message, lines[-1]), lines[-1]
    assert not (tmp_path / "p.csv").exists()


# Outputs never overwrite inputs (issue 26) -----------------------------------------------


@pytest.mark.parametrize("where", ["card", "symlink to card", "symlinked folder"])
@pytest.mark.parametrize("command", ["predict", "export"])
def test_cli_never_writes_onto_the_bundle(svm_bundle, unlabelled, tmp_path, command, where):
    copy = shutil.copytree(svm_bundle, tmp_path / "b")
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    if where == "card":
        out = copy / "model.json"
    elif where == "symlink to card":
        out = tmp_path / "out.csv"
        out.symlink_to(copy / "model.json")
    else:
        (tmp_path / "alias").symlink_to(copy)
        out = tmp_path / "alias" / "svm.range"
    args = ["--data", unlabelled] if command == "predict" else []
    result = _cli(command, copy, *args, "--out", out)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith(f"Error: --out {out} ")
    assert "the model bundle" in result.output
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before


def test_cli_predict_never_writes_into_the_data(svm_bundle, unlabelled, tmp_path):
    result = _cli(
        "predict", svm_bundle, "--data", unlabelled, "--out", unlabelled / "particles.json"
    )
    assert result.exit_code == 2
    assert "lies inside the data" in result.output


def test_train_into_another_models_bundle_deletes_nothing(tiny_run, svm_bundle, tmp_path):
    other = shutil.copytree(svm_bundle, tmp_path / "other")
    with pytest.raises(BundleError, match="holds a bundle of 'svm', not lipnet-1"):
        deploy.train_from_results(tiny_run["results"], "lipnet-1", other, data=tiny_run["data"])
    (other / "data.csv").write_text("mine")
    with pytest.raises(BundleError, match="holds data.csv, which train did not write"):
        deploy.train_from_results(tiny_run["results"], "svm", other, data=tiny_run["data"])
    assert (other / "data.csv").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("through", ["folder", "symlink"])
def test_cli_train_into_a_folder_it_did_not_write_deletes_nothing(tiny_run, tmp_path, through):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "mine.txt").write_text("mine")
    out = folder
    if through == "symlink":
        out = tmp_path / "m"
        out.symlink_to(folder, target_is_directory=True)
    result = _cli("train", "--from-results", tiny_run["results"], "--model", "svm", "--out", out)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {out} exists and is not a model bundle; it would be replaced. "
        "Pass a new folder to --out."
    )
    assert [p.name for p in folder.iterdir()] == ["mine.txt"]
    assert (folder / "mine.txt").read_text() == "mine"
    assert out.is_symlink() == (through == "symlink")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"notes", out.name})


def test_train_through_a_symlink_replaces_the_bundle_it_points_to(tiny_run, svm_bundle, tmp_path):
    target = shutil.copytree(svm_bundle, tmp_path / "disk" / "m")
    link = tmp_path / "m"
    link.symlink_to(target, target_is_directory=True)
    card = deploy.train_from_results(tiny_run["results"], "svm", link, data=tiny_run["data"])
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert json.loads((target / "model.json").read_text()) == card
    assert deploy.load_bundle(link).model == "svm"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "m"]
    assert [p.name for p in (tmp_path / "disk").iterdir()] == ["m"]  # no staging left


def test_train_replaces_a_bundle_of_the_same_model(tiny_run, svm_bundle, tmp_path):
    same = shutil.copytree(svm_bundle, tmp_path / "same")
    deploy.train_from_results(tiny_run["results"], "svm", same, data=tiny_run["data"])
    assert deploy.load_bundle(same).model == "svm"


def test_train_from_results_never_writes_into_the_runs_own_dataset(tiny_run):
    """Without --data, the dataset run.json recorded is the input."""
    out = tiny_run["data"] / "bundle"
    with pytest.raises(OutputError, match="lies inside the run's dataset"):
        deploy.train_from_results(tiny_run["results"], "svm", out)
    assert not out.exists()


def test_cli_predict_fractions_file_never_lands_on_an_input(svm_bundle, unlabelled, tmp_path):
    data = shutil.copytree(unlabelled, tmp_path / "p-fractions.csv")
    result = _cli(
        "predict",
        svm_bundle,
        "--data",
        data,
        "--group-by",
        "micrograph",
        "--out",
        tmp_path / "p.csv",
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: --out {data} is the data {data}, an input of this command; writing there "
        "could overwrite it. Choose an --out outside the inputs."
    )
    assert not (tmp_path / "p.csv").exists()


def test_train_out_onto_its_inputs_is_refused(tiny_run, tmp_path):
    link = tmp_path / "results-link"
    link.symlink_to(tiny_run["results"])
    for out in (tiny_run["results"], link, tiny_run["data"] / "bundle"):
        with pytest.raises(OutputError, match="an input of this command"):
            deploy.train_from_results(tiny_run["results"], "svm", out, data=tiny_run["data"])
    with pytest.raises(OutputError, match="--out .* is the cross-validation folder"):
        deploy.train_model("svm", tmp_path / "m", data=tiny_run["data"], cv_out=tmp_path / "m")


# The final SVM is trained as the run cross-validated it (issue 22 item 1) ------------------


def test_final_svm_keeps_the_runs_grouping_and_units(
    tmp_path, tiny_dataset, unlabelled, monkeypatch
):
    from liposome_bench import svm as svm_module
    from liposome_bench.dataset import Dataset, Particle, load_dataset, write_export
    from liposome_bench.folds import load_or_make_folds
    from liposome_bench.results import ResultsDir
    from liposome_bench.svm import run_svm

    particles = [
        Particle(
            p.id,
            p.label,
            p.image,
            p.mask,
            pixel_size_nm=p.pixel_size_nm,
            meta={**p.meta, "micrograph": f"m{i % 9}"},
        )
        for i, p in enumerate(tiny_dataset.particles)
    ]
    data = write_export(Dataset(tiny_dataset.problem, particles), tmp_path / "data")
    dataset = load_dataset(data)
    folds = load_or_make_folds(dataset, k=3, seed=0, group_by="micrograph")
    run_svm(dataset, folds, ResultsDir(tmp_path / "results"), units="px")

    seen = {}
    real = svm_module.search_grid

    def recording(X, y, **kwargs):
        seen["groups"] = kwargs.get("groups")
        seen["n_features"] = X.shape[1]
        return real(X, y, **kwargs)

    monkeypatch.setattr(deploy, "search_grid", recording)  # where deploy looks it up
    out = tmp_path / "m"
    deploy.train_from_results(tmp_path / "results", "svm", out, data=data)
    card = json.loads((out / "model.json").read_text())
    groups = np.array([p.meta["micrograph"] for p in dataset.particles])
    assert seen["groups"] is not None and list(seen["groups"]) == list(groups)
    assert "grouped by micrograph" in card["training"]["hyperparameters"]["chosen_by"]
    assert card["input"]["units"] == "px"
    px_names = [c for c in card["input"]["features"] if c.endswith("_px")]
    assert px_names and not [c for c in card["input"]["features"] if c.endswith("_nm")]
    differences = card["training"]["differences_from_cross_validation"]
    assert any("calibrat" in d for d in differences) and any("all 45" in d for d in differences)
    result = deploy.predict(out, unlabelled)  # the bundle's units are used again
    assert len(result.y_pred) == 45


def test_cli_predict_group_by_micrograph_writes_fractions(svm_bundle, tiny_run, tmp_path):
    result = _cli(
        "predict",
        svm_bundle,
        "--data",
        tiny_run["data"],
        "--group-by",
        "micrograph",
        "--out",
        tmp_path / "p.csv",
    )
    assert result.exit_code == 0, result.output
    assert "Class fractions per micrograph" in result.output
    table = pd.read_csv(tmp_path / "p-fractions.csv", dtype={"group": str})
    assert set(table["method"]) == {"raw", "acc", "pacc"} and "true" in table
    groups = {p.meta["micrograph"] for p in tiny_run["dataset"].particles}
    assert set(table["group"]) == groups
    sums = table.groupby(["group", "method"])["fraction"].sum()
    assert np.allclose(sums, 1.0)
    bad = _cli(
        "predict",
        svm_bundle,
        "--data",
        tiny_run["data"],
        "--group-by",
        "nosuchkey",
        "--out",
        tmp_path / "q.csv",
    )
    assert bad.exit_code == 2 and "Error: --group-by nosuchkey" in bad.output
