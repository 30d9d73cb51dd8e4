"""From verdict to production: train one final model on all particles, keep
it as a model bundle, and classify new particles with it (abstaining when
unsure).

A model bundle is a folder::

    MODEL_DIR/
      model.json          the model card (schema ``BUNDLE_SCHEMA_VERSION``):
                          problem and classes, input, feature set, pixel-size
                          policy, training data fingerprint and size,
                          cross-validated metrics with intervals,
                          hyperparameters and how they were chosen, the SVM's
                          probability calibration, library versions, command
      model.keras         a CNN (Keras 3; loaded with safe_mode on)
      svm.model           the SVM: LIBSVM model file (svm-predict),
      svm.range           its svm-scale range file (svm-scale -r),
      svm.json            and the scaling, feature names and class labels
      cv-predictions.csv  the cross-validated out-of-fold predictions the
                          card's metrics come from: id, label, fold,
                          predicted, p_<class>; ``predict --target-precision``
                          picks its thresholds from them

Nothing is pickled. The bundle is written to a temporary folder beside
MODEL_DIR and renamed into place, so it is whole or absent.

Hyperparameters come from cross-validation on the training dataset only:
the SVM's C and gamma from the grid search on all particles (the
cross-validation's own grid and inner folds), the CNN's epoch count from its
folds' early stopping (the median best epoch). docs/deploy.md has the details.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liposome_bench.cnn import import_keras
from liposome_bench.io import atomic_write_json, atomic_write_text
from liposome_bench.errors import BundleError, ConfigError, DatasetError, ResultsError
from liposome_bench.progress import NullReporter

BUNDLE_SCHEMA_VERSION = 1
BUNDLE_KIND = "liposome-bench model bundle"
CARD = "model.json"
KERAS_FILE = "model.keras"
SVM_STEM = "svm"
CV_PREDICTIONS = "cv-predictions.csv"

CNN_PREPROCESSING = {
    "surrounding": "the whole particle image (with its surround), padded to a square by "
                   "repeating edge pixels",
    "cropped": "the smallest square around the mask's bounding box, centred on it "
               "(edge pixels repeated beyond the image)",
    "masked": "the smallest square around the mask's bounding box, centred on it",
}


# Training ----------------------------------------------------------------------


def train_from_results(results, model: str, out, *, data=None, problem=None, cache_dir=None,
                       reader_options=None, jobs: int = 1, n_resamples: int = 1000,
                       reporter=None, command: str | None = None) -> dict:
    """Train ``model`` on all particles with the settings of a finished run.

    Parameters
    ----------
    results : path
        A ``benchmark``, ``svm`` or ``cnn`` results folder (its run.json,
        and summary.json when there is one) in which ``model`` finished every
        fold.
    model : str
        "svm" or a LipNet name.
    out : path
        The bundle folder to write (replaced if it holds a bundle).
    data : path, optional
        The dataset; default the one the run used (its ``--data``, or the
        built-in set; a ``--quick`` run's subsample is drawn again). Its
        fingerprint must be the run's.
    problem, cache_dir, reader_options
        As for ``sources.resolve_dataset``.
    jobs : int
        SVM workers (features, grid search).
    n_resamples : int
        Bootstrap resamples of the card's metric intervals.
    reporter : progress reporter, optional
    command : str, optional
        The command line recorded in the card.

    Returns
    -------
    dict
        The model card written to ``out/model.json``.

    Raises
    ------
    ResultsError, DatasetError, BundleError, ConfigError
    """
    reporter = reporter or NullReporter()
    results_dir = _results_dir(results)
    run = results_dir.read_run()
    _check_model_in(run, results_dir, model)
    summary = _read_summary(results_dir)
    dataset = _dataset_of_run(run, summary, data, problem, cache_dir, reader_options or {},
                              reporter)
    return _train_final(dataset, results_dir, model, out, jobs=jobs, n_resamples=n_resamples,
                        reporter=reporter, command=command)


def train_model(model: str, out, *, data=None, problem=None, cache_dir=None,
                reader_options=None, config=None, options=None, folds: int = 5,
                fold_seed: int = 0, seed: int = 0, jobs: int = 1, cv_out=None,
                n_resamples: int = 1000, reporter=None, command: str | None = None) -> dict:
    """Cross-validate ``model`` on a dataset, then train it on all particles.

    The cross-validation (``run_svm`` or ``run_cnn``, into ``cv_out``,
    default ``<out>-cv``; resumable) gives the metrics on the card, the
    out-of-fold predictions for abstention, and the CNN's epoch count; then
    :func:`train_from_results` trains the final model.

    Parameters
    ----------
    config : settings.BenchmarkConfig or path, optional
        Settings file ([svm], [cnn], [cnn.<model>] tables).
    options : dict, optional
        Single settings over the config's (None values ignored).
    folds, fold_seed, seed, jobs
        As for ``benchmark``.

    Other parameters and the return value are those of
    :func:`train_from_results`.
    """
    from liposome_bench.cnn import run_cnn
    from liposome_bench.sources import resolve_dataset
    from liposome_bench.folds import load_or_make_folds
    from liposome_bench.results import ResultsDir
    from liposome_bench.settings import BenchmarkConfig, load_config
    from liposome_bench.svm import run_svm

    reporter = reporter or NullReporter()
    options = {k: v for k, v in (options or {}).items() if v is not None}
    if config is None:
        config = BenchmarkConfig()
    elif not isinstance(config, BenchmarkConfig):
        config = load_config(config)
    if model == "svm":
        settings = config.svm.replace(**options)
    else:
        settings = config.cnn_settings(model, **options)
    _check_out(out)
    dataset = resolve_dataset(data, problem, cache_dir=cache_dir, reporter=reporter,
                              **(reader_options or {}))
    fold_assignment = load_or_make_folds(dataset, k=folds, seed=fold_seed)
    cv_out = Path(cv_out) if cv_out is not None else Path(f"{Path(out)}-cv")
    results_dir = ResultsDir(cv_out)
    reporter.message(f"{model}: cross-validating on {folds} folds into {cv_out}")
    if model == "svm":
        run_svm(dataset, fold_assignment, results_dir, settings, jobs=jobs, seed=seed,
                reporter=reporter)
    else:
        run_cnn(dataset, fold_assignment, results_dir, settings, seed=seed,
                save_models=False, reporter=reporter)
    return _train_final(dataset, results_dir, model, out, jobs=jobs, n_resamples=n_resamples,
                        reporter=reporter, command=command)


def _results_dir(path):
    from liposome_bench.results import ResultsDir

    path = Path(path)
    if not (path / "run.json").is_file() and (path / "repeat-0" / "run.json").is_file():
        raise ResultsError(
            f"{path} holds a run with --repeats; pass one repeat's folder, e.g. "
            f"--from-results {path / 'repeat-0'}."
        )
    if not (path / "run.json").is_file():
        raise ResultsError(
            f"{path} is not a results folder (no run.json). Pass the --out folder of a "
            "finished benchmark, svm or cnn run."
        )
    return ResultsDir(path)


def _check_model_in(run, results_dir, model):
    models = list(run.get("models", {}))
    if model not in models:
        raise ResultsError(
            f"{results_dir.path} holds no {model} results (it has {', '.join(models) or 'none'}). "
            f"Pass --model {models[0] if models else 'svm'}, or run {model} first."
        )


def _read_summary(results_dir) -> dict:
    path = results_dir.path / "summary.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ResultsError(f"{path} is not valid JSON ({exc}). Run the benchmark again.") from None


def _dataset_of_run(run, summary, data, problem, cache_dir, reader_options, reporter):
    """The dataset a results folder was made from, checked by fingerprint."""
    from liposome_bench.comparison import quick_subset
    from liposome_bench.dataset import PROBLEMS
    from liposome_bench.sources import resolve_dataset

    recorded = run.get("dataset", {})
    settings = summary.get("settings", {})
    problem = problem or settings.get("problem") or (
        recorded.get("problem") if recorded.get("problem") in PROBLEMS else None)
    if data is None:
        data = settings.get("data")
    if data is None:
        source = recorded.get("source")
        if source and Path(source).exists():
            data = source
    if data is None and problem is None:
        raise ResultsError(
            f"The run used {recorded.get('source')!r}, which is not here. Pass it with --data."
        )
    dataset = resolve_dataset(data, problem if data is None else None, cache_dir=cache_dir,
                              reporter=reporter, **reader_options)
    if settings.get("quick"):
        dataset = quick_subset(dataset, settings.get("seed", 0))
    if dataset.fingerprint() != recorded.get("fingerprint"):
        where = data if data is not None else f"the built-in {problem} dataset"
        raise DatasetError(
            f"{where} is not the dataset the results were made from (fingerprint "
            f"{dataset.fingerprint()}, the run's {recorded.get('fingerprint')}). "
            "Pass the run's dataset with --data."
        )
    return dataset


def _check_out(out) -> None:
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir())
                                              and not (out / CARD).is_file())):
        raise BundleError(
            f"{out} exists and is not a model bundle; it would be replaced. "
            "Pass a new folder to --out."
        )


def _train_final(dataset, results_dir, model, out, *, jobs, n_resamples, reporter,
                 command) -> dict:
    from liposome_bench import __version__, stats
    from liposome_bench.abstention import out_of_fold
    from liposome_bench.comparison import library_versions

    out = Path(out)
    _check_out(out)
    run = results_dir.read_run()
    _check_model_in(run, results_dir, model)
    classes = list(run["dataset"]["classes"])
    if list(dataset.problem.classes) != classes:
        raise DatasetError(
            f"The dataset's classes ({', '.join(dataset.problem.classes)}) are not the run's "
            f"({', '.join(classes)}). Pass the run's dataset with --data."
        )
    settings = run["models"][model]
    fold_results = results_dir.load_model(model)
    k = (run.get("folds") or {}).get("k", len(fold_results))
    if len(fold_results) < k or not fold_results:
        raise ResultsError(
            f"{results_dir.path} has {len(fold_results)} of {k} {model} folds finished. "
            "Finish the run (the same command again) first."
        )
    oof = out_of_fold(fold_results, len(classes))
    cv = stats.summarise_model(fold_results, classes, n_resamples=n_resamples,
                               seed=int(settings.get("seed", 0)))
    staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        t0 = time.perf_counter()
        if model == "svm":
            part = _train_svm(dataset, settings, oof, staging, classes, jobs, reporter,
                              group_by=(run.get("folds") or {}).get("group_by"),
                              k=k)
        else:
            part = _train_cnn(dataset, model, settings, fold_results, staging, reporter)
        train_s = time.perf_counter() - t0
        _write_cv_predictions(staging / CV_PREDICTIONS, oof, classes)
        card = {
            "schema_version": BUNDLE_SCHEMA_VERSION,
            "kind": BUNDLE_KIND,
            "model": model,
            "family": "svm" if model == "svm" else "cnn",
            "problem": {
                "name": dataset.problem.name,
                "classes": classes,
                "codes": ({str(c): n for c, n in dataset.problem.codes.items()}
                          if dataset.problem.codes else None),
            },
            **part["card"],
            "training": {
                "dataset": {
                    "fingerprint": dataset.fingerprint(),
                    "n_particles": len(dataset),
                    "class_counts": dataset.class_counts(),
                    "source": str(dataset.root) if dataset.root else dataset.description,
                    "synthetic": bool(dataset.synthetic),
                },
                "results": str(results_dir.path),
                "folds": run.get("folds"),
                "settings": settings,
                "hyperparameters": part["hyperparameters"],
                "differences_from_cross_validation": part.get("differences", []),
                "train_s": round(train_s, 1),
            },
            "cross_validation": {
                "note": "out-of-fold metrics of the run in training.results (the final model "
                        "is trained on all particles and has no held-out test of its own)"
                        + ("; synthetic data, not the thesis's results"
                           if dataset.synthetic else ""),
                "n_particles": cv["n_particles"],
                "per_class": cv["per_class"],
                "overall": cv["overall"],
                "predictions": CV_PREDICTIONS,
            },
            "tool_version": __version__,
            "versions": library_versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": command,
        }
        atomic_write_json(staging / CARD, card)
        _install(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return card


def _install(staging: Path, out: Path) -> None:
    """Rename the finished bundle into place; an old bundle there is
    replaced only once the new one is complete."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_cv_predictions(path, oof, classes):
    import pandas as pd

    table = pd.DataFrame({
        "id": oof["ids"],
        "label": [classes[i] for i in oof["y_true"]],
        "fold": oof["fold"],
        "predicted": [classes[i] for i in oof["y_pred"]],
    })
    for j, name in enumerate(classes):
        table[f"p_{name}"] = oof["probabilities"][:, j]
    atomic_write_text(path, table.to_csv(index=False))


def _pixel_sizes(dataset) -> dict:
    px = np.array([p.pixel_size_nm for p in dataset.particles], dtype=np.float64)
    known = px[np.isfinite(px)]
    return {
        "min": float(known.min()) if known.size else None,
        "median": float(np.median(known)) if known.size else None,
        "max": float(known.max()) if known.size else None,
        "unknown": int((~np.isfinite(px)).sum()),
    }


def _train_svm(dataset, settings, oof, staging, classes, jobs, reporter, *, group_by=None,
               k=None) -> dict:
    from liposome_bench.abstention import (
        apply_calibrator,
        confidence_of,
        fit_calibrator,
    )
    from liposome_bench.features import extract_features
    from liposome_bench.svm import GRIDS, LibSVMClassifier, _feature_matrix, search_grid

    feature_set, source = settings["feature_set"], settings["source"]
    units = settings.get("units", "nm")  # runs before --units measured in nm
    features = extract_features(dataset, feature_set, source=source, reporter=reporter,
                                jobs=jobs, units=units)
    X, names, dropped = _feature_matrix(features, dataset, reporter)
    y = dataset.y
    C, gamma, grid = settings.get("C"), settings.get("gamma"), settings.get("grid") or "coarse"
    seed = int(settings.get("seed", 0))
    best, how = {"C": C, "gamma": gamma, "score": None}, "fixed by the settings"
    groups = None
    if group_by and (C is None or gamma is None):
        from liposome_bench.folds import group_labels

        groups = group_labels(dataset, group_by)  # as the run's folds were grouped
    if C is None or gamma is None:
        spec = GRIDS[grid]
        reporter.stage(f"svm grid search ({grid}) on all {len(y)} particles")
        best, _table = search_grid(
            X, y, C_values=[C] if C is not None else spec["C"],
            gamma_values=[gamma] if gamma is not None else spec["gamma"],
            inner_folds=spec["inner_folds"], max_samples=spec["max_samples"], seed=seed,
            jobs=jobs, groups=groups,
        )
        kind = f"stratified inner folds grouped by {group_by}" if groups is not None \
            else "stratified inner folds"
        how = (f"{grid} grid search, {best['inner_folds']} {kind} on "
               f"{best['n_samples']} of the {len(y)} training particles, macro F1")
    reporter.stage("svm: final fit on all particles")
    clf = LibSVMClassifier(C=best["C"], gamma=best["gamma"]).fit(X, y)
    clf.save(staging / SVM_STEM, feature_names=names,
             class_names=[classes[c] for c in clf.classes_])
    if len(clf.classes_) != len(classes):
        raise DatasetError("Every class needs training particles; "
                           f"the dataset has {dataset.class_counts()}.")
    calibrator = fit_calibrator(oof["decision_values"], oof["y_true"], len(classes))
    # Thresholds are chosen on the cross-fitted probabilities (fold i calibrated
    # on the other folds); the final model uses this one calibrator. Record how
    # far apart the two put the same out-of-fold decision values.
    shift = float(np.max(np.abs(
        confidence_of(apply_calibrator(calibrator, oof["decision_values"]), oof["y_pred"])
        - confidence_of(oof["probabilities"], oof["y_pred"])), initial=0.0))
    return {
        "card": {
            "input": {
                "kind": "features",
                "feature_set": feature_set,
                "feature_source": source,
                "units": units,
                "features": names,
                "dropped_features": dropped,
                "scaling": "svm-scale to [-1, 1] with the training particles' minimum and "
                           "maximum (svm.range); features constant in training become 0",
                "preprocessing": "liposome-bench features (docs/features.md) from each "
                                 "particle's image and mask, then the scaling",
            },
            "pixel_size": {
                "policy": ("features are measured in nm: every particle needs its pixel "
                           "size (PixelSize, pixel_size_nm, or --pixel-size)"
                           if units == "nm" else
                           "features are measured in px (--units px, as the run): new "
                           "particles must be imaged at the training pixel size"),
                "training_nm": _pixel_sizes(dataset),
            },
            "probabilities": {
                "kind": "calibrated",
                "calibration": {**calibrator,
                                "fitted_on": "the cross-validated (out-of-fold) decision values "
                                             "of the run"},
                "calibration_shift": shift,
                "calibration_shift_means": "largest difference in confidence, on the "
                                           "out-of-fold decision values, between the "
                                           "cross-fitted calibration that --target-precision "
                                           "thresholds are chosen on and this calibration",
                "predicted_class": "LIBSVM's one-vs-one vote (as svm-predict); the "
                                   "confidence is the calibrated probability of that class",
            },
            "files": {"libsvm_model": f"{SVM_STEM}.model", "svm_scale_range": f"{SVM_STEM}.range",
                      "scaling_json": f"{SVM_STEM}.json"},
        },
        "hyperparameters": {"C": float(best["C"]), "gamma": float(best["gamma"]),
                            "inner_score_macro_f1": best.get("score"), "chosen_by": how,
                            "n_support": [int(v) for v in clf.n_support_]},
        "differences": [
            (f"fitted on all {len(y)} particles; in cross-validation each fold's model was "
             f"fitted on the other {(k or 0) - 1} folds (there is no held-out test left)"),
            "C and gamma: " + ("the same fixed values" if C is not None and gamma is not None
                               else "one grid search on all particles, as each fold ran its "
                               "own on its training part"),
            ("probability calibration: one calibrator fitted on all out-of-fold decision "
             "values; in cross-validation fold i was calibrated on the other folds "
             f"(largest confidence shift {shift:.3f}, probabilities.calibration_shift)"),
        ],
    }


def fcn_scale(dataset, mode: str, size: int) -> float:
    """lipnet-fcn's one scale factor: the 95th percentile of the particles'
    window sides fills the canvas (as ``cnn.prepare_images`` computes it)."""
    from liposome_bench.cnn import KEEP_SIZE_QUANTILE, _window

    sides = np.array([_window(p, mode).shape[0] for p in dataset.particles], dtype=np.float64)
    return float(size / np.percentile(sides, KEEP_SIZE_QUANTILE))


def _train_cnn(dataset, model, settings, fold_results, staging, reporter) -> dict:
    from liposome_bench.cnn import _save_model, prepare_images, train_fold

    best_epochs = [int(r.params["epochs"]) for r in fold_results]
    epochs = max(1, int(round(float(np.median(best_epochs)))))
    mode, size = settings["input_mode"], int(settings["input_size"])
    keep_size = model == "lipnet-fcn"
    scale = fcn_scale(dataset, mode, size) if keep_size else None
    images = prepare_images(dataset, mode, size, keep_size=keep_size, scale=scale,
                            reporter=reporter)
    fill_mode = "constant" if mode == "masked" or keep_size else "nearest"
    dtype_policy = None
    if settings.get("mixed_precision"):
        from liposome_bench.cnn import describe_device

        device = describe_device()[0]
        dtype_policy = "mixed_float16" if device == "gpu" else "mixed_bfloat16"
    reporter.stage(f"{model}: final training on all {len(dataset)} particles, {epochs} epochs")
    y = dataset.y
    empty = images[:0]
    net, info = train_fold(
        images, y, empty, y[:0], model=model, n_classes=len(dataset.problem.classes),
        augment=tuple(settings.get("augment", ())), fill_mode=fill_mode,
        balance=settings["balance"], epochs=epochs, patience=None,
        batch_size=int(settings["batch_size"]), optimizer=settings["optimizer"],
        learning_rate=settings.get("learning_rate"),
        # runs saved before weight averaging existed trained without it
        weight_averaging=float(settings.get("weight_averaging") or 0.0),
        samples_per_epoch=settings.get("samples_per_epoch"),
        model_options=settings.get("model_options") or {}, dtype_policy=dtype_policy,
        seed=int(settings.get("seed", 0)), class_names=list(dataset.problem.classes),
        reporter=reporter,
    )
    _save_model(net, staging / KERAS_FILE)
    what = CNN_PREPROCESSING[mode]
    mask_note = (", pixels outside the mask set to 0" if mode == "masked" else "")
    standardise = ("over the particle's own (mask) pixels" if mode == "masked"
                   else "over the window")
    resize = (f"scaled by {scale:.6g} (one factor for all particles, from training) and "
              f"centred on a {size}x{size} canvas of 0" if keep_size
              else f"resized to {size}x{size} (bilinear, anti-aliased when shrinking)")
    return {
        "card": {
            "input": {
                "kind": "image",
                "mode": mode,
                "size": size,
                "shape": [size, size, 1],
                "layout": "NHWC float32 (batch, height, width, 1)",
                "keep_size_scale": scale,
                "preprocessing": (f"{what}; intensities standardised to mean 0 and standard "
                                  f"deviation 1 {standardise}{mask_note}; {resize} "
                                  "(cnn.prepare_images, docs/cnn.md)"),
            },
            "pixel_size": {
                "policy": ("not used: every particle's window is resized to the input, so "
                           "the network sees shape, not absolute size" if not keep_size else
                           "not used directly: one scale factor in pixels, so particles "
                           "should come at the training pixel size"),
                "training_nm": _pixel_sizes(dataset),
            },
            "probabilities": {"kind": "softmax",
                              "predicted_class": "the most probable class"},
            "files": {"keras_model": KERAS_FILE},
        },
        "hyperparameters": {
            "epochs": epochs,
            "chosen_by": "median best epoch of the cross-validation folds' early stopping "
                         "(validation part of the training folds)",
            "fold_best_epochs": best_epochs,
            "epochs_run": info["epochs_run"],
        },
    }


# Loading and checking a bundle ----------------------------------------------------------


@dataclass
class Bundle:
    """A model bundle read from disk: its folder and model card."""

    path: Path
    card: dict

    @property
    def model(self) -> str:
        return self.card["model"]

    @property
    def classes(self) -> list[str]:
        return list(self.card["problem"]["classes"])

    @property
    def is_svm(self) -> bool:
        return self.card["family"] == "svm"

    def problem(self):
        """The bundle's problem as a ``dataset.Problem``."""
        from liposome_bench.dataset import PROBLEMS, custom_problem

        name = self.card["problem"]["name"]
        if name in PROBLEMS and list(PROBLEMS[name].classes) == self.classes:
            return PROBLEMS[name]
        return custom_problem(self.classes)


def load_bundle(path) -> Bundle:
    """Read and check a model bundle's card (JSON only; nothing is unpickled).

    Raises
    ------
    BundleError
        If the folder or its files are missing, the card is not a bundle's,
        or its schema is newer than this liposome-bench reads.
    """
    from liposome_bench import __version__

    path = Path(path)
    card_path = path / CARD
    if not card_path.is_file():
        raise BundleError(
            f"{path} is not a model bundle (no {CARD}). Make one with `liposome-bench train`."
        )
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{card_path} cannot be read ({exc}). Train the bundle again.") from None
    if not isinstance(card, dict) or card.get("kind") != BUNDLE_KIND:
        raise BundleError(f"{card_path} is not a liposome-bench model card. "
                          "Make a bundle with `liposome-bench train`.")
    version = card.get("schema_version")
    if not isinstance(version, int) or version > BUNDLE_SCHEMA_VERSION:
        raise BundleError(
            f"{path} is a model bundle of schema version {version}; this liposome-bench "
            f"({__version__}) reads up to version {BUNDLE_SCHEMA_VERSION}. Upgrade liposome-bench."
        )
    bundle = Bundle(path, card)
    files = card.get("files", {})
    for name in files.values():
        if not (path / name).is_file():
            raise BundleError(f"{path} lacks {name}, part of the bundle. Train the bundle again.")
    return bundle


def check_bundle(bundle: Bundle, *, problem=None, classes=None, input_size=None,
                 input_mode=None, feature_set=None) -> None:
    """Refuse a bundle made for another problem, input or feature set.

    Each given expectation is compared with the card; the first difference
    is a one-line ``BundleError`` naming it.
    """
    card = bundle.card
    inp = card.get("input", {})
    name = card["problem"]["name"]
    if problem is not None and problem != name:
        raise BundleError(f"{bundle.path} was trained for {name} "
                          f"({', '.join(bundle.classes)}), not {problem}.")
    if classes is not None and list(classes) != bundle.classes:
        raise BundleError(
            f"{bundle.path} classifies {', '.join(bundle.classes)} ({name}); the data's "
            f"classes are {', '.join(classes)}. Use a bundle trained for them."
        )
    if input_size is not None:
        if bundle.is_svm:
            raise BundleError(f"{bundle.path} is an SVM on features, not a CNN with input "
                              f"size {input_size}.")
        if int(input_size) != int(inp["size"]):
            raise BundleError(f"{bundle.path} takes {inp['size']}x{inp['size']} px inputs, "
                              f"not {input_size}x{input_size}.")
    if input_mode is not None and not bundle.is_svm and input_mode != inp["mode"]:
        raise BundleError(f"{bundle.path} takes input mode {inp['mode']}, not {input_mode}.")
    if feature_set is not None:
        if not bundle.is_svm:
            raise BundleError(f"{bundle.path} is a CNN on images, not an SVM on feature set "
                              f"{feature_set}.")
        if feature_set != inp["feature_set"]:
            raise BundleError(f"{bundle.path} uses feature set {inp['feature_set']}, "
                              f"not {feature_set}.")


def load_keras_model(bundle: Bundle):
    """The bundle's network, loaded with Keras' safe_mode on (no Python code
    from the file is run), checked against the card's input size."""
    keras = import_keras()

    net = keras.models.load_model(bundle.path / KERAS_FILE, compile=False, safe_mode=True)
    shape = tuple(net.input_shape[1:3])
    size = int(bundle.card["input"]["size"])
    if bundle.model != "lipnet-fcn" and shape != (size, size):
        raise BundleError(
            f"{bundle.path / KERAS_FILE} takes {shape[0]}x{shape[1]} px inputs but its card "
            f"says {size}x{size}. Train the bundle again."
        )
    return net


def load_svm(bundle: Bundle):
    """The bundle's LibSVMClassifier (from LIBSVM's model file and JSON),
    checked against the card's feature list."""
    from liposome_bench.svm import LibSVMClassifier

    try:
        clf = LibSVMClassifier.load(bundle.path / SVM_STEM)
        names = json.loads((bundle.path / f"{SVM_STEM}.json").read_text("utf-8"))["feature_names"]
    except (ValueError, OSError, KeyError) as exc:
        raise BundleError(f"{bundle.path}: the SVM files cannot be read ({exc}). "
                          "Train the bundle again.") from None
    if names != bundle.card["input"]["features"]:
        raise BundleError(f"{bundle.path}: {SVM_STEM}.json's features differ from the card's. "
                          "Train the bundle again.")
    return clf


def read_cv_predictions(bundle: Bundle) -> dict:
    """The bundle's out-of-fold predictions: y_true, y_pred, probabilities, fold."""
    import pandas as pd

    path = bundle.path / CV_PREDICTIONS
    try:
        table = pd.read_csv(path, dtype={"id": str})
        index = {c: i for i, c in enumerate(bundle.classes)}
        return {
            "y_true": table["label"].map(index).to_numpy(np.int64),
            "y_pred": table["predicted"].map(index).to_numpy(np.int64),
            "probabilities": table[[f"p_{c}" for c in bundle.classes]].to_numpy(np.float64),
            "fold": table["fold"].to_numpy(np.int64),
        }
    except (OSError, ValueError, KeyError) as exc:
        raise BundleError(f"{path} cannot be read ({exc}). Train the bundle again.") from None


# Predicting ----------------------------------------------------------------------------


@dataclass
class Predictions:
    """What :func:`predict` returns."""

    table: "object"  # pandas.DataFrame: id, [label], predicted, p_<class>..., confidence, abstained
    y_pred: np.ndarray
    probabilities: np.ndarray
    abstained: np.ndarray
    thresholds: dict  # class -> threshold_for_precision result (+ "target", "held_out")
    dataset: "object"


def parse_targets(specs, classes) -> dict:
    """``["uncertain=0.9", ...]`` as {class index: precision}."""
    targets = {}
    for spec in specs or ():
        name, sep, value = str(spec).partition("=")
        name = name.strip()
        try:
            target = float(value)
        except ValueError:
            target = None
        if not sep or target is None or not 0 < target <= 1:
            raise ConfigError(f"--target-precision {spec!r}: expected CLASS=P with P in (0, 1], "
                              "e.g. uncertain=0.9.")
        if name not in classes:
            raise ConfigError(f"--target-precision {spec!r}: {name!r} is not a class of this "
                              f"model ({', '.join(classes)}).")
        targets[classes.index(name)] = target
    return targets


def predict_probabilities(bundle: Bundle, dataset, *, jobs: int = 1, reporter=None):
    """(predicted class indices, class probabilities) of every particle."""
    reporter = reporter or NullReporter()
    if bundle.is_svm:
        from liposome_bench.abstention import apply_calibrator
        from liposome_bench.features import extract_features

        clf = load_svm(bundle)
        inp = bundle.card["input"]
        features = extract_features(dataset, inp["feature_set"], source=inp["feature_source"],
                                    reporter=reporter, jobs=jobs,
                                    units=inp.get("units", "nm"))
        X = features[inp["features"]].to_numpy(np.float64)
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
        if bad.size:
            raise DatasetError(
                f"Particle {dataset.ids[bad[0]]} has features that are not finite numbers "
                f"({bad.size} particle(s)); the SVM needs every feature. Fix those particles."
            )
        labels, values = clf._predict_raw(X)
        y_pred = np.asarray(clf.classes_[labels], dtype=np.int64)
        calibration = bundle.card["probabilities"]["calibration"]
        return y_pred, apply_calibrator(calibration, values)
    from liposome_bench.cnn import prepare_images

    net = load_keras_model(bundle)
    inp = bundle.card["input"]
    images = prepare_images(dataset, inp["mode"], int(inp["size"]),
                            keep_size=bundle.model == "lipnet-fcn",
                            scale=inp.get("keep_size_scale"), reporter=reporter)
    probabilities = np.asarray(net.predict(images, batch_size=256, verbose=0), np.float64)
    return probabilities.argmax(axis=1), probabilities


def read_particles(bundle: Bundle, data, *, problem=None, reader_options=None, reporter=None):
    """Read ``data`` with labels optional and check it fits the bundle."""
    from liposome_bench.dataset import load_dataset

    if problem is not None:
        check_bundle(bundle, problem=problem)
    dataset = load_dataset(data, None, reporter=reporter, labels="optional",
                           **(reader_options or {}))
    labels = {p.label for p in dataset.particles if p.label is not None}
    if labels and not labels <= set(bundle.classes):
        # Labels of classes the model does not know: another problem's data.
        check_bundle(bundle, classes=dataset.problem.classes)
    dataset.problem = bundle.problem()
    return dataset


def predict(bundle_path, data, *, min_confidence: float | None = None, target_precision=(),
            problem=None, input_size=None, input_mode=None, feature_set=None,
            reader_options=None, jobs: int = 1, reporter=None) -> Predictions:
    """Classify the particles of ``data`` with a bundle, abstaining when unsure.

    Parameters
    ----------
    bundle_path : path
        A model bundle (:func:`train_from_results`).
    data : path
        Particles, labelled or not (any reader; see docs/data-formats.md).
    min_confidence : float, optional
        Abstain where the predicted class's probability is below it.
    target_precision : sequence of "CLASS=P"
        Per class, abstain below the lowest confidence at which that class's
        cross-validated predictions (the bundle's out-of-fold predictions)
        reach precision P. The precision and coverage to expect are
        estimated out of sample by nested cross-fitting
        (:func:`liposome_bench.abstention.held_out_threshold`), in
        ``thresholds[CLASS]["held_out"]``.
    problem, input_size, input_mode, feature_set : optional
        Expectations; a bundle that differs is refused (:func:`check_bundle`).
    reader_options : dict, optional
    jobs : int
    reporter : progress reporter, optional

    Returns
    -------
    Predictions
    """
    import pandas as pd

    from liposome_bench.abstention import (
        confidence_of,
        held_out_threshold,
        threshold_for_precision,
    )

    if min_confidence is not None and not 0 <= min_confidence <= 1:
        raise ConfigError(f"--min-confidence must be in [0, 1]; got {min_confidence}.")
    bundle = load_bundle(bundle_path)
    check_bundle(bundle, problem=problem, input_size=input_size, input_mode=input_mode,
                 feature_set=feature_set)
    classes = bundle.classes
    targets = parse_targets(target_precision, classes)
    dataset = read_particles(bundle, data, reader_options=reader_options, reporter=reporter)
    _warn_pixel_size(bundle, dataset, reporter or NullReporter())
    y_pred, probabilities = predict_probabilities(bundle, dataset, jobs=jobs, reporter=reporter)
    confidence = confidence_of(probabilities, y_pred)
    abstained = np.zeros(len(y_pred), dtype=bool)
    if min_confidence is not None:
        abstained |= confidence < min_confidence
    thresholds = {}
    if targets:
        cv = read_cv_predictions(bundle)
        cv_conf = confidence_of(cv["probabilities"], cv["y_pred"])
        for cls, target in targets.items():
            found = threshold_for_precision(cv["y_true"], cv["y_pred"], cv_conf, cls, target)
            # The precision at ``found``'s threshold is reached on the very
            # predictions it was chosen on; the expectation is out of sample.
            held_out = held_out_threshold(cv["y_true"], cv["y_pred"], cv_conf, cv["fold"],
                                          cls, target)
            thresholds[classes[cls]] = {**found, "target": target, "held_out": held_out,
                                        "calibration_shift": _calibration_shift(bundle)}
            limit = found["threshold"] if found["threshold"] is not None else np.inf
            abstained |= (y_pred == cls) & (confidence < limit)
    table = pd.DataFrame({"id": dataset.ids})
    if any(p.label is not None for p in dataset.particles):
        table["label"] = [p.label if p.label is not None else "" for p in dataset.particles]
    table["predicted"] = [classes[i] for i in y_pred]
    for j, name in enumerate(classes):
        table[f"p_{name}"] = probabilities[:, j]
    table["confidence"] = confidence
    table["abstained"] = abstained
    return Predictions(table, y_pred, probabilities, abstained, thresholds, dataset)


def _calibration_shift(bundle) -> float | None:
    """The SVM's largest confidence difference between the cross-fitted
    calibration (the thresholds' scale) and the final model's, on the
    out-of-fold decision values; 0 for a CNN (softmax, no calibration);
    None for a bundle trained before it was recorded."""
    if not bundle.is_svm:
        return 0.0
    return bundle.card["probabilities"].get("calibration_shift")


def _warn_pixel_size(bundle, dataset, reporter) -> None:
    trained = bundle.card.get("pixel_size", {}).get("training_nm", {}).get("median")
    now = _pixel_sizes(dataset)["median"]
    if trained and now and abs(now / trained - 1) > 0.05:
        reporter.message(
            f"Warning: these particles' median pixel size is {now:g} nm/px; the model was "
            f"trained at {trained:g} nm/px."
        )


def write_predictions(predictions: Predictions, out) -> Path:
    """Write the predictions table as CSV, atomically."""
    out = Path(out)
    if out.exists() and out.is_dir():
        raise ConfigError(f"--out {out} is a folder; pass a CSV file name.")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, predictions.table.to_csv(index=False, float_format="%.6g"))
    return out


def group_fractions(predictions: Predictions, bundle_path, key: str, *, n_resamples: int = 200,
                    seed: int = 0):
    """Per group of ``Particle.meta[key]`` (micrograph, session, grid), the
    class fractions of :func:`predict`'s predictions three ways (raw counts,
    adjusted classify and count, probabilistic adjusted count; see
    :mod:`liposome_bench.quantify`), corrected with the bundle's
    cross-validated rates, with bootstrap intervals.

    Abstentions are ignored here: every particle's predicted class counts.

    Returns
    -------
    pandas.DataFrame
        As :func:`liposome_bench.quantify.fractions_by_group` (with a
        ``true`` column when the particles have labels).
    """
    from liposome_bench.folds import group_labels
    from liposome_bench.quantify import cv_rates, fractions_by_group

    bundle = load_bundle(bundle_path)
    cv = read_cv_predictions(bundle)
    rates = cv_rates(cv["y_true"], cv["y_pred"], cv["probabilities"])
    dataset = predictions.dataset
    groups = group_labels(dataset, key)
    y_true = None
    if all(p.label is not None for p in dataset.particles):
        index = {c: i for i, c in enumerate(bundle.classes)}
        y_true = np.array([index[p.label] for p in dataset.particles], dtype=np.int64)
    return fractions_by_group(groups, predictions.y_pred, predictions.probabilities, rates,
                              bundle.classes, y_true=y_true, n_resamples=n_resamples,
                              seed=seed)


def write_fractions(table, out) -> Path:
    """Write :func:`group_fractions`' table as CSV, atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, table.to_csv(index=False, float_format="%.6g"))
    return out
