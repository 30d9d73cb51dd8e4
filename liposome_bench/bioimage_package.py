"""``export --format bioimageio``: a CNN bundle as a bioimage.io model
package (resource description format 0.5), for bioimage.io tools
(bioimageio.core, deepImageJ, ilastik, the bioimage.io model zoo).

The package folder holds::

    rdf.yaml               the description (format_version 0.5.x)
    model.onnx             ONNX weights (export.export_onnx), the format runners read
    model.keras            the bundle's Keras 3 file, as keras_v3 weights (the
                           ONNX weights' parent)
    test-input.npy         prepared particle windows (batch, y, x, channel), float32
    test-output.npy        the class probabilities liposome-bench's own predict
                           path gives for them (batch, class), float32
    evaluation.csv         the cross-validated per-class table of the bundle's card
    README.md              what the model is, its input, the evaluation, Validation
    LICENSE, CITATION.cff  the license and how to cite the thesis
    cv-predictions.csv     the out-of-fold predictions behind the evaluation

The package is checked with ``bioimageio.spec`` before it is written (its
file checks, which are local, are on), and the ONNX weights are run with
onnxruntime on the test input: they must give the test output within
:data:`TOLERANCE`, else nothing is written. A ``.zip`` ``--out`` is the
same package zipped by ``bioimageio.spec.save_bioimageio_package``.
"""

from __future__ import annotations

import csv
import getpass
import io
import shutil
from pathlib import Path

import numpy as np

from liposome_bench.deploy import (
    CV_PREDICTIONS,
    KERAS_FILE,
    bundle_keeps_size,
    load_bundle,
    predict_probabilities,
    read_particles,
)
from liposome_bench.errors import BundleError, ConfigError
from liposome_bench.io import atomic_write, atomic_write_text, make_staging
from liposome_bench.outputs import check_apart
from liposome_bench.cnn import import_keras, prepare_images
from liposome_bench.export import export_onnx

#: ONNX against the tool's probabilities on the test input (max abs difference).
TOLERANCE = 1e-4
#: Particles in the test tensors.
TEST_PARTICLES = 4
THESIS = (
    "Sergii Gryshkevych, Convolutional neural networks for classification of transmission "
    "electron microscopy imagery, master's thesis, Uppsala University, 2016."
)
#: bioimage.io wants a DOI or URL with every citation; the thesis has no DOI
#: that liposome-bench knows, so this is a search for it in DiVA, Uppsala
#: University's publication archive. It is not fetched at export (no
#: network is assumed); the text above is the citation.
THESIS_URL = "https://uu.diva-portal.org/smash/search.jsf?searchType=SIMPLE&query=Gryshkevych"
ONNX_FILE = "model.onnx"
TEST_INPUT = "test-input.npy"
TEST_OUTPUT = "test-output.npy"
EVALUATION = "evaluation.csv"
METRICS = ("tpr", "tnr", "ppv", "npv", "f1")


def _spec():
    """bioimageio.spec, after checking that the package's other needs are
    installed (onnxruntime runs the weights; onnx and tf2onnx export them)."""
    import importlib.util

    for module in ("bioimageio.spec", "onnx", "onnxruntime", "tf2onnx"):
        top = module.split(".")[0]
        if importlib.util.find_spec(top) is None or importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"export --format bioimageio needs the Python package {module}, which is "
                "not installed. Install it with: pip install 'liposome-bench[bioimageio]'"
            )
    import bioimageio.spec as spec

    return spec


def export_bioimageio(
    bundle_path,
    out,
    *,
    data=None,
    author: str | None = None,
    license: str = "MIT",
    reader_options=None,
    reporter=None,
) -> dict:
    """Write a CNN bundle as a bioimage.io model package.

    Parameters
    ----------
    bundle_path : path
        A CNN model bundle (``liposome-bench train``).
    out : path
        The package folder to write (must not exist, or be empty), or a
        ``.zip`` file.
    data : path, optional
        Particles for the test tensors (the first :data:`TEST_PARTICLES`);
        default the bundle's training data, where it still is.
    author : str, optional
        The package's author (default: the user's login name).
    license : str
        SPDX license identifier of the package (default MIT, liposome-bench's).
    reader_options : dict, optional
    reporter : progress reporter, optional

    Returns
    -------
    dict
        "path" (the folder or zip), "max_difference" (ONNX against the tool
        on the test input), "status" (bioimage.io validation).

    Raises
    ------
    BundleError
        For an SVM bundle, or when the ONNX weights do not reproduce the tool.
    ConfigError, DatasetError
        Missing packages or test data.
    """
    out = Path(out)
    check_apart(out, {"the model bundle": bundle_path, "the data": data})
    bundle = load_bundle(bundle_path)
    if bundle.is_svm:
        raise BundleError(
            f"{bundle.path} is an SVM on handcrafted features; bioimage.io packages are for "
            "networks on images. Export the SVM with --format onnx (its feature schema is "
            "feature-schema.json in the bundle)."
        )
    zipped = out.suffix.lower() == ".zip"
    if zipped and out.is_dir():
        raise ConfigError(f"--out {out} is a folder; a .zip --out is a file.")
    if not zipped and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"--out {out} exists and is not an empty folder. Pass a new folder, or a .zip file."
        )
    spec = _spec()
    if data is None:
        data = _training_data(bundle)
    dataset = read_particles(bundle, data, reader_options=reader_options, reporter=reporter)
    dataset = dataset.subset(range(min(TEST_PARTICLES, len(dataset))))
    images = _prepared(bundle, dataset, reporter)
    _, probabilities = predict_probabilities(bundle, dataset, reporter=reporter)
    test_output = probabilities.astype(np.float32)

    staging = make_staging(out if not zipped else out.with_suffix(""))
    try:
        export_onnx(bundle.path, staging / ONNX_FILE)
        difference = _onnx_difference(staging / ONNX_FILE, images, probabilities)
        if not difference <= TOLERANCE:
            raise BundleError(
                f"The ONNX export of {bundle.path} gives probabilities up to {difference:.2g} "
                f"away from liposome-bench's on the test particles (tolerance {TOLERANCE:g}); "
                "no package was written. Report this with the bundle."
            )
        shutil.copy2(bundle.path / KERAS_FILE, staging / KERAS_FILE)
        shutil.copy2(bundle.path / CV_PREDICTIONS, staging / CV_PREDICTIONS)
        np.save(staging / TEST_INPUT, images)
        np.save(staging / TEST_OUTPUT, test_output)
        atomic_write_text(staging / EVALUATION, _evaluation_csv(bundle))
        atomic_write_text(staging / "LICENSE", _license_text(license))
        atomic_write_text(staging / "CITATION.cff", _citation_cff())
        atomic_write_text(staging / "README.md", _readme(bundle, dataset, difference, license))
        rdf = _rdf(bundle, author or getpass.getuser(), license, _onnx_opset(staging / ONNX_FILE))
        descr = spec.build_description(
            rdf,
            context=_context(spec, staging),
        )
        summary = descr.validation_summary
        if summary.status not in ("valid-format", "passed"):
            first = next((d for d in summary.details if d.status == "failed"), None)
            errors = getattr(first, "errors", None) or []
            reason = f"{errors[0].loc}: {errors[0].msg}" if errors else summary.status
            raise BundleError(
                f"bioimageio.spec {spec.__version__} does not accept the package of "
                f"{bundle.path} ({' '.join(str(reason).split())[:200]}). Report this with "
                "the bundle."
            )
        spec.save_bioimageio_yaml_only(descr, staging / "rdf.yaml")
        if zipped:
            out.parent.mkdir(parents=True, exist_ok=True)
            with _context(spec, staging):
                packaged = spec.load_description(staging / "rdf.yaml")
            atomic_write(
                out,
                lambda tmp: spec.save_bioimageio_package(packaged, output_path=Path(tmp)),
                suffix=".zip",
            )
        else:
            if out.exists():
                out.rmdir()
            staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return {"path": out, "max_difference": difference, "status": summary.status}


def _context(spec, root):
    """bioimageio.spec's checks of the package's own files, with the one
    remote URL (the thesis search, :data:`THESIS_URL`) marked known so that
    validation needs no network."""
    return spec.ValidationContext(root=root, perform_io_checks=True, known_files={THESIS_URL: None})


def _training_data(bundle):
    source = bundle.card.get("training", {}).get("dataset", {}).get("source")
    if source and Path(source).exists():
        return source
    raise ConfigError(
        f"The package needs a few particles for its test input, and {bundle.path}'s "
        f"training data ({source}) is not here. Pass some with --data."
    )


def _prepared(bundle, dataset, reporter) -> np.ndarray:
    """The network's input for ``dataset``, exactly as ``predict`` prepares it."""
    inp = bundle.card["input"]
    images = prepare_images(
        dataset,
        inp["mode"],
        int(inp["size"]),
        keep_size=bundle_keeps_size(bundle),
        scale=inp.get("keep_size_scale"),
        unit=inp.get("keep_size_unit") or "px",
        reporter=reporter,
    )
    return np.ascontiguousarray(images, dtype=np.float32)


def _onnx_difference(path: Path, images: np.ndarray, probabilities: np.ndarray) -> float:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    (got,) = session.run(["probabilities"], {name: images})
    return float(np.max(np.abs(np.asarray(got, np.float64) - probabilities)))


def _onnx_opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _evaluation_csv(bundle) -> str:
    """The card's cross-validated per-class metrics: mean and std over
    folds, pooled estimate and its 95 % bootstrap interval."""
    per_class = bundle.card["cross_validation"]["per_class"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["class", "metric", "mean", "std", "pooled", "ci_low", "ci_high", "n_folds"])
    for name in bundle.classes:
        for metric in METRICS:
            m = per_class.get(name, {}).get(metric)
            if not m:
                continue
            low, high = (m.get("ci") or [None, None])[:2]
            writer.writerow(
                [name, metric]
                + [_g(m.get(k)) for k in ("mean", "std", "pooled")]
                + [_g(low), _g(high), m.get("n_folds", "")]
            )
    return buffer.getvalue()


def _g(value) -> str:
    return "" if value is None else f"{float(value):.4f}"


def _evaluation_markdown(bundle) -> str:
    per_class = bundle.card["cross_validation"]["per_class"]
    lines = [
        "| class | " + " | ".join(m.upper() for m in METRICS) + " |",
        "| --- |" + " ---: |" * len(METRICS),
    ]
    for name in bundle.classes:
        cells = []
        for metric in METRICS:
            m = per_class.get(name, {}).get(metric) or {}
            ci = m.get("ci") or [None, None]
            cells.append(
                f"{_g(m.get('pooled'))} [{_g(ci[0])}, {_g(ci[1])}]" if m.get("pooled") else "—"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rdf(bundle, author: str, license: str, opset: int) -> dict:
    keras = import_keras()

    card = bundle.card
    size = int(card["input"]["size"])
    versions = card.get("versions", {})
    backend = versions.get("keras backend", "tensorflow")
    backend_version = versions.get(backend) or versions.get("tensorflow") or "0"
    synthetic = card["training"]["dataset"].get("synthetic")
    return {
        "format_version": "0.5.4",
        "type": "model",
        "name": f"liposome-bench {bundle.model} {card['problem']['name']}"[:128],
        "description": (
            f"LipNet CNN ({bundle.model}) classifying TEM liposome particle windows into "
            f"{', '.join(bundle.classes)}; trained with liposome-bench "
            f"{card.get('tool_version')} on {card['training']['dataset']['n_particles']} "
            "particles" + (" of synthetic data" if synthetic else "") + "."
        )[:1024],
        "authors": [{"name": author}],
        "cite": [{"text": THESIS, "url": THESIS_URL}],
        "license": license,
        "documentation": "README.md",
        "tags": ["liposome", "transmission-electron-microscopy", "classification", "2d", "onnx"],
        "attachments": [
            {"source": EVALUATION},
            {"source": CV_PREDICTIONS},
            {"source": "LICENSE"},
            {"source": "CITATION.cff"},
        ],
        "inputs": [
            {
                "id": "image",
                "description": f"particle windows, {card['input']['mode']} mode, prepared by "
                "liposome-bench (README: Input)",
                "axes": [
                    {"type": "batch"},
                    {"type": "space", "id": "y", "size": size},
                    {"type": "space", "id": "x", "size": size},
                    {"type": "channel", "channel_names": ["intensity"]},
                ],
                "test_tensor": {"source": TEST_INPUT},
                "data": {"type": "float32"},
            }
        ],
        "outputs": [
            {
                "id": "probabilities",
                "description": "softmax class probabilities, one channel per class",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": list(bundle.classes)},
                ],
                "test_tensor": {"source": TEST_OUTPUT},
                "data": {"type": "float32", "range": [0.0, 1.0]},
            }
        ],
        "weights": {
            "keras_v3": {
                "source": KERAS_FILE,
                "keras_version": keras.__version__,
                "backend": [backend, backend_version],
            },
            "onnx": {"source": ONNX_FILE, "opset_version": opset, "parent": "keras_v3"},
        },
        "config": {
            "liposome_bench": {
                "model": bundle.model,
                "problem": card["problem"],
                "contract_sha256": card["contract_sha256"],
                "synthetic_training_data": bool(synthetic),
            }
        },
    }


def _license_text(license: str) -> str:
    return (
        f"SPDX-License-Identifier: {license}\n\n"
        f"This model package is distributed under the {license} license "
        "(https://spdx.org/licenses/" + license + ".html).\n"
    )


def _citation_cff() -> str:
    return (
        "cff-version: 1.2.0\n"
        "message: If you use this model, please cite the thesis it follows.\n"
        "title: Convolutional neural networks for classification of transmission electron "
        "microscopy imagery\n"
        "authors:\n"
        "  - family-names: Gryshkevych\n"
        "    given-names: Sergii\n"
        "preferred-citation:\n"
        "  type: thesis\n"
        "  title: Convolutional neural networks for classification of transmission electron "
        "microscopy imagery\n"
        "  authors:\n"
        "    - family-names: Gryshkevych\n"
        "      given-names: Sergii\n"
        "  thesis-type: Master's thesis\n"
        "  institution:\n"
        "    name: Uppsala University\n"
        "  year: 2016\n"
    )


def _readme(bundle, dataset, difference: float, license: str) -> str:
    card = bundle.card
    synthetic = card["training"]["dataset"].get("synthetic")
    note = (
        "\n**Trained on synthetic data**: these numbers describe generated particles, "
        "not the thesis's results.\n"
        if synthetic
        else ""
    )
    return f"""# liposome-bench {bundle.model}: {card["problem"]["name"]}

A LipNet CNN that classifies transmission electron microscopy (TEM) images of
liposome particles into {", ".join(bundle.classes)}. Made by liposome-bench
{card.get("tool_version")} (`liposome-bench export --format bioimageio`) from a
model bundle trained on {card["training"]["dataset"]["n_particles"]} particles.
{note}
## Input

`image`: float32, axes (batch, y, x, channel) = (n, {card["input"]["size"]},
{card["input"]["size"]}, 1). One particle window per batch entry, prepared as
liposome-bench does it, not by bioimage.io preprocessing: {card["input"]["preprocessing"]}.
`liposome-bench predict` does this from a particle image and its mask.

## Output

`probabilities`: float32, axes (batch, channel), one channel per class in this
order: {", ".join(bundle.classes)} (softmax, each row sums to 1).

## Weights

- `model.onnx`: ONNX, exported by Keras 3 from the bundle's network.
- `model.keras`: the bundle's Keras 3 file (`keras_v3` weights), loadable with
  `keras.models.load_model(..., safe_mode=True)`.

## Evaluation (cross-validated)

Out-of-fold metrics of the run the model was trained from
({card["cross_validation"]["n_particles"]} particles): pooled estimate and 95 %
bootstrap interval over particles; `evaluation.csv` also has the mean and
standard deviation over folds, and `cv-predictions.csv` the predictions. The
final network is trained on all particles and has no held-out test of its own.

{_evaluation_markdown(bundle)}

## Validation

- `bioimageio.spec` validated this package when it was written (format 0.5,
  with its file checks: sha256 of every file, test tensor shapes against the
  axes).
- The ONNX weights, run with onnxruntime on `test-input.npy`
  ({len(dataset)} particles), reproduce `test-output.npy`, the probabilities
  of liposome-bench's own predict path (Keras), within {difference:.1e}
  (tolerance {TOLERANCE:g}).
- Re-check with `bioimageio validate rdf.yaml` (bioimageio.core), or in Python:
  `bioimageio.spec.load_description("rdf.yaml").validation_summary.status`.

## License and citation

{license} (`LICENSE`). Please cite the thesis the model follows (`CITATION.cff`):

{THESIS}
"""
