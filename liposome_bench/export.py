"""Export a model bundle to ONNX, for the lab's software (C#/.NET: thesis
section 10's production blocker) or any other ONNX runtime.

* CNN: Keras 3's own ``Model.export(path, format="onnx")`` (through tf2onnx on
  the TensorFlow backend). Input ``image``: float32 (batch, size, size, 1),
  prepared as the model card's ``input.preprocessing`` says; output: the
  softmax class probabilities, in the card's class order.
* SVM: an ONNX graph of standard operators built here from the bundle's
  LIBSVM model file and svm-scale range, in float64: the scaling, the RBF
  kernel against every support vector, the one-vs-one decision values (as
  LIBSVM computes them), LIBSVM's vote, and the calibrated probabilities
  (the card's calibration). Input ``features``: float64 (batch,
  n_features) in the card's feature order; outputs ``label`` (int64 class
  index), ``decision_values`` and ``probabilities``.

Why not a converter for the SVM: onnxmltools' LIBSVM converter (1.16) fails
to import (``cast_list`` is gone from its own utilities), and skl2onnx's
SVC converter stores support vectors and coefficients as float32 (the
ai.onnx.ml SVMClassifier attributes are floats), which with this model's
large C and class weights moves decision values by far more than 1e-5
(docs/deploy.md has the measurement). The graph here uses only the
float64 ops MatMul, Exp, ReduceSum, Softmax, ArgMax, and matches LIBSVM to
about 1e-12.
"""

from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path

import numpy as np

from liposome_bench.deploy import KERAS_FILE, SVM_STEM, load_bundle, load_keras_model
from liposome_bench.errors import BundleError, ConfigError
from liposome_bench.outputs import check_apart

#: ONNX opset of the SVM graph (Softmax over one axis, ReduceSum with axes input).
SVM_OPSET = 17


def _need(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{what} needs the Python package {module.split('.')[0]}, which is not installed. "
            "Install it with: pip install 'liposome-bench[onnx]'"
        ) from None


def export_onnx(bundle_path, out) -> Path:
    """Write the bundle's model as an ONNX file.

    Parameters
    ----------
    bundle_path : path
        A model bundle (``liposome-bench train``).
    out : path
        The .onnx file to write (atomically).

    Returns
    -------
    Path

    Raises
    ------
    BundleError
        If the bundle cannot be read.
    ConfigError
        If ``out`` is a folder, or onnx / tf2onnx is missing.
    OutputError
        If ``out`` is in the bundle folder (symlinks followed).
    """
    check_apart(out, {"the model bundle": bundle_path})
    bundle = load_bundle(bundle_path)
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; pass a file name such as model.onnx.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}.onnx")
    try:
        if bundle.is_svm:
            model = build_svm_graph(bundle)
            onnx = _need("onnx", "ONNX export")
            onnx.save(model, str(tmp))
        else:
            _export_keras(bundle, tmp)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _export_keras(bundle, path: Path) -> None:
    _need("onnx", "ONNX export")
    _need("tf2onnx", "ONNX export of a CNN")
    net = load_keras_model(bundle)
    size = int(bundle.card["input"]["size"])
    # Keras exports only a model that has been called once.
    net.predict(np.zeros((1, size, size, 1), np.float32), verbose=0)
    try:
        with warnings.catch_warnings():
            # tf2onnx's numpy-2 patch in Keras probes np.object (a FutureWarning).
            warnings.simplefilter("ignore", FutureWarning)
            net.export(str(path), format="onnx", verbose=False)
    except (ValueError, TypeError, ImportError) as exc:
        raise BundleError(
            f"Keras could not export {bundle.path / KERAS_FILE} to ONNX ({exc}). "
            "Use Keras 3.8 or later with the TensorFlow backend and tf2onnx."
        ) from None
    _name_cnn_output(path)


def _name_cnn_output(path: Path) -> None:
    """Call tf2onnx's output ("Identity:0") "probabilities", as the card says."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    graph = model.graph
    if len(graph.output) != 1 or graph.output[0].name == "probabilities":
        return
    old = graph.output[0]
    graph.node.append(
        helper.make_node("Identity", [old.name], ["probabilities"], name="probabilities")
    )
    new = onnx.ValueInfoProto()
    new.CopyFrom(old)
    new.name = "probabilities"
    graph.output.remove(old)
    graph.output.append(new)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def read_libsvm_model(path) -> dict:
    """A LIBSVM model file (RBF C-SVC) as arrays.

    Returns
    -------
    dict
        "gamma", "labels", "n_sv" (per class, in model order), "rho"
        (per pair), "sv_coef" (n_class - 1, total_sv), "sv" (total_sv,
        n_features; indices beyond the largest written are 0).
    """
    lines = Path(path).read_text(encoding="ascii").splitlines()
    header, i = {}, 0
    while i < len(lines) and lines[i].strip() != "SV":
        key, _, value = lines[i].partition(" ")
        header[key] = value.split()
        i += 1
    if header.get("svm_type") != ["c_svc"] or header.get("kernel_type") != ["rbf"]:
        raise BundleError(f"{path} is not an RBF C-SVC LIBSVM model file.")
    k = int(header["nr_class"][0])
    rows = lines[i + 1 :]
    coef = np.zeros((k - 1, len(rows)))
    entries = []
    for s, row in enumerate(rows):
        parts = row.split()
        coef[:, s] = [float(v) for v in parts[: k - 1]]
        entries.append({int(a): float(b) for a, b in (p.split(":") for p in parts[k - 1 :])})
    width = max((max(e) for e in entries if e), default=0)
    sv = np.zeros((len(rows), width))
    for s, e in enumerate(entries):
        for index, value in e.items():
            sv[s, index - 1] = value
    return {
        "gamma": float(header["gamma"][0]),
        "labels": [int(v) for v in header["label"]],
        "n_sv": [int(v) for v in header["nr_sv"]],
        "rho": np.array([float(v) for v in header["rho"]]),
        "sv_coef": coef,
        "sv": sv,
    }


def build_svm_graph(bundle):
    """The ONNX model of a bundle's SVM (see the module docstring)."""
    import json

    onnx = _need("onnx", "ONNX export")
    from onnx import TensorProto, helper, numpy_helper

    model = read_libsvm_model(bundle.path / f"{SVM_STEM}.model")
    meta = json.loads((bundle.path / f"{SVM_STEM}.json").read_text("utf-8"))
    n_features = len(meta["feature_names"])
    classes = bundle.classes
    k = len(model["labels"])
    if model["labels"] != list(range(k)) or k != len(classes):
        raise BundleError(
            f"{bundle.path}: {SVM_STEM}.model has labels {model['labels']}; "
            f"expected 0..{len(classes) - 1}. Train the bundle again."
        )
    sv = np.zeros((model["sv"].shape[0], n_features))
    width = min(n_features, model["sv"].shape[1])
    sv[:, :width] = model["sv"][:, :width]
    # svm-scale: -1 + 2 (x - min) / (max - min) = (x - mid) * 2 / span; constant -> 0.
    lo = np.asarray(meta["scaling"]["min"], dtype=np.float64)
    hi = np.asarray(meta["scaling"]["max"], dtype=np.float64)
    span = hi - lo
    varying = span != 0
    scale = np.where(varying, 2.0 / np.where(varying, span, 1.0), 0.0)
    offset = np.where(varying, lo + span / 2.0, 0.0)
    # One-vs-one weights as LIBSVM's svm_predict_values combines them.
    start = np.r_[0, np.cumsum(model["n_sv"])[:-1]]
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    W = np.zeros((sv.shape[0], len(pairs)))
    first = np.zeros((len(pairs), k))
    second = np.zeros((len(pairs), k))
    for p, (i, j) in enumerate(pairs):
        si, sj = start[i], start[j]
        W[si : si + model["n_sv"][i], p] = model["sv_coef"][j - 1, si : si + model["n_sv"][i]]
        W[sj : sj + model["n_sv"][j], p] = model["sv_coef"][i, sj : sj + model["n_sv"][j]]
        first[p, i], second[p, j] = 1.0, 1.0
    calibration = bundle.card["probabilities"]["calibration"]
    const = {
        "offset": offset,
        "scale": scale,
        "sv_t": sv.T.copy(),
        "sv_sq": (sv**2).sum(axis=1),
        "minus_two": np.array(-2.0),
        "zero": np.array(0.0),
        "minus_gamma": np.array(-model["gamma"]),
        "weights": W,
        "rho": model["rho"],
        "vote_matrix": first - second,
        "vote_base": second.sum(axis=0),
        "cal_coef_t": np.asarray(calibration["coef"], dtype=np.float64).T.copy(),
        "cal_intercept": np.asarray(calibration["intercept"], dtype=np.float64),
    }
    initializers = [
        numpy_helper.from_array(np.asarray(v, dtype=np.float64), name) for name, v in const.items()
    ]
    initializers.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"))
    node = helper.make_node
    nodes = [
        node("Sub", ["features", "offset"], ["centred"]),
        node("Mul", ["centred", "scale"], ["scaled"]),
        node("Mul", ["scaled", "scaled"], ["squared"]),
        node("ReduceSum", ["squared", "axis1"], ["x_sq"], keepdims=1),
        node("MatMul", ["scaled", "sv_t"], ["cross"]),
        node("Mul", ["cross", "minus_two"], ["cross2"]),
        node("Add", ["cross2", "x_sq"], ["d_partial"]),
        node("Add", ["d_partial", "sv_sq"], ["d_raw"]),
        node("Max", ["d_raw", "zero"], ["distance"]),
        node("Mul", ["distance", "minus_gamma"], ["exponent"]),
        node("Exp", ["exponent"], ["kernel"]),
        node("MatMul", ["kernel", "weights"], ["sums"]),
        node("Sub", ["sums", "rho"], ["decision_values"]),
        node("Greater", ["decision_values", "zero"], ["positive"]),
        node("Cast", ["positive"], ["positive_f"], to=TensorProto.DOUBLE),
        node("MatMul", ["positive_f", "vote_matrix"], ["vote_delta"]),
        node("Add", ["vote_delta", "vote_base"], ["votes"]),
        # LIBSVM: the first class with the most votes wins (ArgMax takes the first).
        node("ArgMax", ["votes"], ["label"], axis=1, keepdims=0),
        node("MatMul", ["decision_values", "cal_coef_t"], ["logits_partial"]),
        node("Add", ["logits_partial", "cal_intercept"], ["logits"]),
        node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "liposome_bench_svm",
        [helper.make_tensor_value_info("features", TensorProto.DOUBLE, ["batch", n_features])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info(
                "decision_values", TensorProto.DOUBLE, ["batch", len(pairs)]
            ),
            helper.make_tensor_value_info("probabilities", TensorProto.DOUBLE, ["batch", k]),
        ],
        initializers,
    )
    onnx_model = helper.make_model(
        graph,
        producer_name="liposome-bench",
        opset_imports=[helper.make_opsetid("", SVM_OPSET)],
        doc_string=f"{bundle.model} for {bundle.card['problem']['name']}: classes "
        f"{', '.join(classes)}; features {', '.join(meta['feature_names'])}",
    )
    onnx_model.ir_version = min(onnx_model.ir_version, 9)  # onnxruntime >= 1.16 reads IR 9
    helper.set_model_props(
        onnx_model, {"classes": ",".join(classes), "features": ",".join(meta["feature_names"])}
    )
    onnx.checker.check_model(onnx_model)
    return onnx_model
