"""`export --format bioimageio` (issue 22): a CNN bundle as a bioimage.io
model package that bioimageio.spec validates and whose ONNX weights
reproduce the tool's probabilities."""

import csv
import json
import shutil
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from liposome_bench import deploy
from liposome_bench.cli import cli

spec = pytest.importorskip("bioimageio.spec")
onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

from liposome_bench.bioimage_package import THESIS, THESIS_URL, export_bioimageio  # noqa: E402


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, tiny_cross_validation):
    """A one-epoch lipnet-1 and an SVM bundle from a 3-fold run of the tiny
    export (shared, read-only), in this module's own folder."""
    root = tmp_path_factory.mktemp("bioimageio")
    data, results = tiny_cross_validation["data"], tiny_cross_validation["results"]
    deploy.train_from_results(results, "lipnet-1", root / "m-cnn", data=data)
    deploy.train_from_results(results, "svm", root / "m-svm", data=data)
    return {"root": root, "data": data, "cnn": root / "m-cnn", "svm": root / "m-svm"}


@pytest.fixture(scope="module")
def package(bundles):
    out = bundles["root"] / "pkg"
    done = export_bioimageio(bundles["cnn"], out, data=bundles["data"], author="Test Author")
    return out, done


def _validate(path):
    """bioimageio.spec's validation with its file checks on; the one remote
    URL (the thesis search) is marked known, since tests have no network."""
    with spec.ValidationContext(perform_io_checks=True, known_files={THESIS_URL: None}):
        return spec.load_description(path)


def test_the_package_passes_bioimageio_spec_validation(package):
    out, done = package
    descr = _validate(out / "rdf.yaml")
    assert descr.validation_summary.status in ("valid-format", "passed"), (
        descr.validation_summary.format()
    )
    assert type(descr).__name__ == "ModelDescr"
    assert str(descr.format_version).startswith("0.5")
    assert done["status"] == descr.validation_summary.status
    # The validator fails a broken package (it can fail): a test tensor of the wrong shape.
    broken = out.parent / "broken"
    shutil.copytree(out, broken)
    np.save(broken / "test-output.npy", np.zeros((2, 5), np.float32))
    from liposome_bench.deploy import file_sha256

    rdf = (broken / "rdf.yaml").read_text()
    old = file_sha256(out / "test-output.npy")
    (broken / "rdf.yaml").write_text(rdf.replace(old, file_sha256(broken / "test-output.npy")))
    assert _validate(broken / "rdf.yaml").validation_summary.status == "failed"


def test_the_package_describes_the_model(package, bundles):
    out, _ = package
    card = deploy.load_bundle(bundles["cnn"]).card
    descr = _validate(out / "rdf.yaml")
    (inp,) = descr.inputs
    (output,) = descr.outputs
    assert [a.type for a in inp.axes] == ["batch", "space", "space", "channel"]
    assert [a.size for a in inp.axes[1:3]] == [16, 16]
    assert [a.type for a in output.axes] == ["batch", "channel"]
    assert output.axes[1].channel_names == card["problem"]["classes"]
    assert descr.weights.onnx is not None and descr.weights.keras_v3 is not None
    assert descr.weights.onnx.parent == "keras_v3"
    assert descr.cite[0].text == THESIS
    assert "Sergii Gryshkevych" in THESIS and "Uppsala University, 2016" in THESIS
    assert str(descr.license) == "MIT" and descr.authors[0].name == "Test Author"
    readme = (out / "README.md").read_text()
    assert "## Validation" in readme and "synthetic" in readme.lower()
    assert (out / "LICENSE").read_text().startswith("SPDX-License-Identifier: MIT")
    assert "family-names: Gryshkevych" in (out / "CITATION.cff").read_text()
    rows = list(csv.DictReader((out / "evaluation.csv").open()))
    assert len(rows) == 3 * 5
    f1 = next(r for r in rows if r["class"] == "uncertain" and r["metric"] == "f1")
    pooled = card["cross_validation"]["per_class"]["uncertain"]["f1"]["pooled"]
    assert float(f1["pooled"]) == pytest.approx(pooled, abs=1e-4)


def test_test_tensors_are_the_tools_predictions_and_onnx_reproduces_them(package, bundles):
    out, done = package
    images = np.load(out / "test-input.npy")
    expected = np.load(out / "test-output.npy")
    assert images.dtype == np.float32 and images.shape == (4, 16, 16, 1)
    assert expected.shape == (4, 3)
    # The output is what `predict` gives for the same particles.
    tool = deploy.predict(bundles["cnn"], bundles["data"]).probabilities[:4]
    np.testing.assert_allclose(expected, tool, atol=1e-6)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    (got,) = session.run(["probabilities"], {session.get_inputs()[0].name: images})
    assert np.max(np.abs(got - tool)) <= 1e-4
    assert done["max_difference"] <= 1e-4
    # The Keras weights are the bundle's own file.
    assert deploy.file_sha256(out / "model.keras") == deploy.file_sha256(
        bundles["cnn"] / "model.keras"
    )


def test_a_zip_package_validates(bundles, tmp_path):
    out = tmp_path / "m.zip"
    result = CliRunner().invoke(
        cli,
        ["export", str(bundles["cnn"]), "--format", "bioimageio", "--out", str(out)]
        + ["--data", str(bundles["data"])],
    )
    assert result.exit_code == 0, result.output
    assert f"bioimage.io package written to {out}" in result.output
    names = set(zipfile.ZipFile(out).namelist())
    assert {"rdf.yaml", "model.onnx", "model.keras", "test-input.npy", "README.md"} <= names
    assert _validate(out).validation_summary.status in ("valid-format", "passed")
    assert [p.name for p in tmp_path.iterdir()] == ["m.zip"]  # no staging left


def test_an_svm_bundle_is_refused_in_one_line(bundles, tmp_path):
    result = CliRunner().invoke(
        cli,
        ["export", str(bundles["svm"]), "--format", "bioimageio", "--out", str(tmp_path / "p")],
    )
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"Error: {bundles['svm']} is an SVM on handcrafted features; bioimage.io packages "
        "are for networks on images. Export the SVM with --format onnx (its feature schema "
        "is feature-schema.json in the bundle)."
    )
    assert not (tmp_path / "p").exists()


def test_a_folder_that_is_not_empty_is_refused(bundles, tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "mine.txt").write_text("keep")
    result = CliRunner().invoke(
        cli,
        ["export", str(bundles["cnn"]), "--format", "bioimageio", "--out", str(tmp_path / "p")],
    )
    assert result.exit_code == 2
    assert "exists and is not an empty folder" in result.output
    assert json.dumps(sorted(p.name for p in (tmp_path / "p").iterdir())) == '["mine.txt"]'
