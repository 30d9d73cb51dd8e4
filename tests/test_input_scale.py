"""Issue 25 item 7: ``input_scale=keep`` reaches the network's inputs from
``cnn``, ``benchmark --config``, the API and a deployed bundle."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from liposome_bench import cnn, deploy
from liposome_bench.cli import cli

# 2 folds: the tests are about what reaches the network, not about the scores.
QUICK = ["--epochs", "1", "--input-size", "16", "--folds", "2", "--augment", "none"]


@pytest.fixture
def keep_calls(monkeypatch):
    """Every ``cnn.prepare_images`` call's ``keep_size`` (the call goes through):
    ``cnn.prepare_cnn_images`` calls it in its own module, ``lipnet`` and
    ``deploy`` through the package."""
    calls = []
    real = cnn.prepare_images

    def spy(dataset, mode="masked", size=28, **kwargs):
        calls.append(bool(kwargs.get("keep_size")))
        return real(dataset, mode, size, **kwargs)

    monkeypatch.setattr(cnn.preprocess, "prepare_images", spy)
    monkeypatch.setattr(cnn, "prepare_images", spy)
    monkeypatch.setattr(deploy, "prepare_images", spy)  # deploy's own import of it
    return calls


def test_cnn_command_takes_input_scale(tmp_path, tiny_export_copy, keep_calls):
    args = ["cnn", "--data", tiny_export_copy, "--model", "lipnet-1", *QUICK]
    result = CliRunner().invoke(
        cli, [*map(str, args), "--input-scale", "keep", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    assert keep_calls == [True]
    assert "input scale keep, " in result.output and "nm per canvas pixel" in result.output
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["models"]["lipnet-1"]["input_scale"] == "keep"


def test_cnn_command_refuses_an_unknown_input_scale(tiny_export_copy, tmp_path):
    result = CliRunner().invoke(
        cli, ["cnn", "--data", str(tiny_export_copy), "--input-scale", "fit"]
    )
    assert result.exit_code == 2
    assert "'fit' is not one of 'resize', 'keep'" in result.output


def test_benchmark_config_takes_input_scale(tmp_path, tiny_export_copy, keep_calls):
    config = tmp_path / "b.toml"
    config.write_text(
        '[svm]\nC = 8.0\ngamma = 0.0078125\n\n[cnn]\nepochs = 1\ninput_size = 16\naugment = "none"\n'
        'mixed_precision = false\n\n[cnn.lipnet-1]\ninput_scale = "keep"\n',
        encoding="utf-8",
    )
    args = ["benchmark", "--data", tiny_export_copy, "--cnn", "lipnet-1", "--config", config]
    result = CliRunner().invoke(
        cli, [*map(str, args), "--folds", "2", "--out", str(tmp_path / "b")]
    )
    assert result.exit_code == 0, result.output
    assert keep_calls == [True]


def test_api_classifier_keeps_its_training_scale(tiny_dataset, keep_calls):
    from liposome_bench.lipnet import LipNetClassifier

    clf = LipNetClassifier(
        model="lipnet-1", input_scale="keep", input_size=16, epochs=1, augment="none"
    )
    particles = tiny_dataset.particles
    clf.fit(particles, tiny_dataset.y)
    assert keep_calls == [True]
    assert clf.keep_size_ == cnn.keep_size_scale(tiny_dataset, "masked", 16)
    # Two particles alone are scaled as the training set was, not by their own sizes.
    expected = cnn.prepare_images(tiny_dataset, "masked", 16, keep_size=True)
    np.testing.assert_allclose(clf._images(particles[:2], clf.settings()), expected[:2])
    assert clf.predict(particles[:2]).shape == (2,)


def test_bundle_of_a_keep_run_prepares_as_cross_validated(tiny_export, tmp_path, keep_calls):
    from liposome_bench import bioimage_package, deploy
    from liposome_bench.dataset import load_dataset
    from liposome_bench.folds import load_or_make_folds
    from liposome_bench.results import ResultsDir
    from liposome_bench.settings import CNNSettings

    import shutil

    data = shutil.copytree(tiny_export, tmp_path / "data")
    dataset = load_dataset(data)
    folds = load_or_make_folds(dataset, k=2, seed=0)
    results = ResultsDir(tmp_path / "results")
    settings = CNNSettings(
        model="lipnet-4",
        input_scale="keep",
        input_size=16,
        epochs=1,
        augment="none",
        mixed_precision=False,
    )
    cnn.run_cnn(dataset, folds, results, settings, save_models=False)
    deploy.train_from_results(results.path, "lipnet-4", tmp_path / "m", data=data)
    assert keep_calls == [True, True]
    bundle = deploy.load_bundle(tmp_path / "m")
    inp = bundle.card["input"]
    assert (inp["input_scale"], inp["keep_size_unit"]) == ("keep", "nm")
    assert deploy.bundle_keeps_size(bundle)
    cross_validated = cnn.prepare_cnn_images(dataset, settings)
    np.testing.assert_allclose(
        bioimage_package._prepared(bundle, dataset, None), cross_validated, atol=1e-6
    )
    labels, _ = deploy.predict_probabilities(bundle, dataset)
    assert keep_calls[-1] is True and len(labels) == len(dataset)
