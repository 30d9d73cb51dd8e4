"""From verdict to production: train one final model on all particles, keep
it as a model bundle, and classify new particles with it (abstaining when
unsure).

A model bundle is a folder::

    MODEL_DIR/
      model.json          the model card (schema ``BUNDLE_SCHEMA_VERSION``):
                          the sha256 of every other file of the bundle,
                          problem and classes, input, feature set, pixel-size
                          policy, training data fingerprint and size,
                          cross-validated metrics with intervals,
                          hyperparameters and how they were chosen, the SVM's
                          probability calibration, library versions, command
      model.keras         a CNN (Keras 3; loaded with safe_mode on)
      svm.model           the SVM: LIBSVM model file (svm-predict),
      svm.range           its svm-scale range file (svm-scale -r),
      svm.json            and the scaling, feature names and class labels
      feature-schema.json the SVM's features: names, LIBSVM order, units and
                          the schema version (``feature_schema``); predict
                          checks it against the features it computes
      cv-predictions.csv  the cross-validated out-of-fold predictions the
                          card's metrics come from: id, label, fold,
                          predicted, p_<class>; ``predict --target-precision``
                          picks its thresholds from them

Nothing is pickled. The bundle is written to a temporary folder beside
MODEL_DIR and renamed into place, so it is whole or absent.

A bundle verifies itself when it is read (:func:`load_bundle`): the card is
checked against its schema, every file it lists must lie inside the folder
and match its recorded sha256, and the classes, problem and family must
agree with the model files (the LIBSVM header, svm.json, the CNN's output
layer, cv-predictions.csv's columns). docs/deploy.md says how to check one
by hand.

Hyperparameters come from cross-validation on the training dataset only:
the SVM's C and gamma from the grid search on all particles (the
cross-validation's own grid and inner folds), the CNN's epoch count from its
fixed budget (the default) or from its folds' early stopping (the median best
epoch). docs/deploy.md has the details.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liposome_bench import __version__, registry, stats
from liposome_bench.abstention import (
    apply_calibrator,
    confidence_of,
    fit_calibrator,
    held_out_threshold,
    out_of_fold,
    threshold_for_precision,
)
from liposome_bench.cnn import (
    as_float32,
    describe_device,
    import_keras,
    keep_size_scale,
    keeps_size,
    prepare_images,
    resolve_dtype_policy,
    save_model,
    settings_from_record,
    train_fold,
)
from liposome_bench.comparison import library_versions, quick_subset
from liposome_bench.dataset import PROBLEMS, custom_problem, load_dataset
from liposome_bench.errors import BundleError, ConfigError, DatasetError, ResultsError
from liposome_bench.feature_schema import (
    FEATURE_SCHEMA_FILE,
    check_feature_schema,
    make_feature_schema,
)
from liposome_bench.features import extract_features
from liposome_bench.folds import group_labels
from liposome_bench.io import (
    atomic_write_json,
    atomic_write_text,
    clean_stale_staging,
    make_staging,
)
from liposome_bench.outputs import check_apart
from liposome_bench.prepare import prepare_run
from liposome_bench.progress import NullReporter
from liposome_bench.quantify import cv_rates, fractions_by_group
from liposome_bench.results import ResultsDir
from liposome_bench.settings import (
    FEATURE_SETS,
    INPUT_MODES,
    BenchmarkConfig,
    is_fixed_budget,
    load_config,
)
from liposome_bench.sources import resolve_dataset
from liposome_bench.svm import GRIDS, LibSVMClassifier, feature_matrix, search_grid

BUNDLE_SCHEMA_VERSION = 2
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


def train_from_results(
    results,
    model: str,
    out,
    *,
    data=None,
    problem=None,
    cache_dir=None,
    reader_options=None,
    jobs: int = 1,
    n_resamples: int = 1000,
    reporter=None,
    command: str | None = None,
) -> dict:
    """Train ``model`` on all particles with the settings of a finished run.

    Parameters
    ----------
    results : path
        A ``benchmark``, ``svm`` or ``cnn`` results folder (its run.json,
        and summary.json when there is one) in which ``model`` finished every
        fold.
    model : str
        A registered model name (``registry.model_names()``: the SVM, a LipNet).
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
    check_apart(out, {"the results folder": results, "the dataset": data})
    _check_out(out, model)
    results_dir = _results_dir(results)
    run = results_dir.read_run()
    _check_model_in(run, results_dir, model)
    summary = _read_summary(results_dir)
    dataset = _dataset_of_run(
        run, summary, data, problem, cache_dir, reader_options or {}, reporter
    )
    if data is None:  # the dataset the run recorded, now that it is found
        check_apart(out, {"the run's dataset": dataset.root})
    return _train_final(
        dataset,
        results_dir,
        model,
        out,
        jobs=jobs,
        n_resamples=n_resamples,
        reporter=reporter,
        command=command,
    )


def train_model(
    model: str,
    out,
    *,
    data=None,
    problem=None,
    cache_dir=None,
    reader_options=None,
    config=None,
    options=None,
    folds: int = 5,
    fold_seed: int = 0,
    seed: int = 0,
    jobs: int = 1,
    cv_out=None,
    n_resamples: int = 1000,
    reporter=None,
    command: str | None = None,
) -> dict:
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

    reporter = reporter or NullReporter()
    options = {k: v for k, v in (options or {}).items() if v is not None}
    config_path = None if isinstance(config, BenchmarkConfig) else config
    if config is None:
        config = BenchmarkConfig()
    elif not isinstance(config, BenchmarkConfig):
        config = load_config(config)
    spec = registry.get(model)
    settings = spec.settings_for(config, model, options)
    cv_out = Path(cv_out) if cv_out is not None else Path(f"{Path(out)}-cv")
    inputs = {"the dataset": data, "the settings file": config_path}
    check_apart(out, {**inputs, "the cross-validation folder (--cv-out)": cv_out})
    _check_out(out, model)
    run = prepare_run(
        data,
        problem,
        out=cv_out,
        option="--cv-out",
        cache_dir=cache_dir,
        reader_options=reader_options,
        inputs={"the settings file": config_path},
        k=folds,
        fold_seed=fold_seed,
        reporter=reporter,
        fold_reporter=NullReporter(),
    )
    reporter.message(f"{model}: cross-validating on {folds} folds into {cv_out}")
    with run.session(reporter=reporter, command=command):
        spec.run_cv(
            run.dataset,
            run.folds,
            run.results,
            settings,
            name=model,
            seed=seed,
            jobs=jobs,
            reporter=reporter,
            inputs=None,
            save_models=False,
        )
    return _train_final(
        run.dataset,
        run.results,
        model,
        out,
        jobs=jobs,
        n_resamples=n_resamples,
        reporter=reporter,
        command=command,
    )


def _results_dir(path):

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
            f"Pass --model {models[0] if models else registry.baseline().names[0]}, "
            f"or run {model} first."
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

    recorded = run.get("dataset", {})
    settings = summary.get("settings", {})
    problem = (
        problem
        or settings.get("problem")
        or (recorded.get("problem") if recorded.get("problem") in PROBLEMS else None)
    )
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
    dataset = resolve_dataset(
        data,
        problem if data is None else None,
        cache_dir=cache_dir,
        reporter=reporter,
        **reader_options,
    )
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


def _check_out(out, model: str) -> None:
    """Refuse an ``--out`` that is not empty unless it is a bundle of the
    same model holding only bundle files: replacing it must never delete a
    file that ``train`` did not write."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise BundleError(
            f"{out} exists and is not a model bundle; it would be replaced. "
            "Pass a new folder to --out."
        )
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    try:
        card = json.loads((out / CARD).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        card = None
    if not isinstance(card, dict) or card.get("kind") != BUNDLE_KIND:
        raise BundleError(
            f"{out} exists and is not a model bundle; it would be replaced. "
            "Pass a new folder to --out."
        )
    if card.get("model") != model:
        raise BundleError(
            f"{out} holds a bundle of {card.get('model')!r}, not {model}; it would be "
            f"replaced. Pass a new folder to --out, or remove {out} yourself."
        )
    ours = {CARD, CV_PREDICTIONS, *bundle_hooks(registry.get(model)).files.values()}
    foreign = [name for name in entries if name not in ours]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise BundleError(
            f"{out} holds {foreign[0]}{more}, which train did not write; replacing the bundle "
            "would delete it. Move it away, or pass a new folder to --out."
        )


def _train_final(dataset, results_dir, model, out, *, jobs, n_resamples, reporter, command) -> dict:

    # A symlinked --out: the bundle replaces the folder it points to (the one
    # _check_out looked into), not the link.
    out = Path(os.path.realpath(out))
    _check_out(out, model)
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
    cv = stats.summarise_model(
        fold_results, classes, n_resamples=n_resamples, seed=int(settings.get("seed", 0))
    )
    clean_stale_staging(out)  # what a killed run left (io.clean_stale_staging)
    staging = make_staging(out)
    try:
        t0 = time.perf_counter()
        spec = registry.get(model)
        part = bundle_hooks(spec).train(
            dataset,
            model,
            settings,
            fold_results,
            oof,
            staging,
            classes,
            jobs=jobs,
            reporter=reporter,
            group_by=(run.get("folds") or {}).get("group_by"),
            k=k,
        )
        train_s = time.perf_counter() - t0
        _write_cv_predictions(staging / CV_PREDICTIONS, oof, classes)
        listed = sorted({*part["card"]["files"].values(), CV_PREDICTIONS})
        card = {
            "schema_version": BUNDLE_SCHEMA_VERSION,
            "kind": BUNDLE_KIND,
            "model": model,
            "family": spec.family,
            "problem": {
                "name": dataset.problem.name,
                "classes": classes,
                "codes": (
                    {str(c): n for c, n in dataset.problem.codes.items()}
                    if dataset.problem.codes
                    else None
                ),
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
                + ("; synthetic data, not the thesis's results" if dataset.synthetic else ""),
                "n_particles": cv["n_particles"],
                "per_class": cv["per_class"],
                "overall": cv["overall"],
                "predictions": CV_PREDICTIONS,
            },
            "tool_version": __version__,
            "versions": library_versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": command,
            "sha256": {name: file_sha256(staging / name) for name in listed},
        }
        card["contract_sha256"] = contract_sha256(card)
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

    table = pd.DataFrame(
        {
            "id": oof["ids"],
            "label": [classes[i] for i in oof["y_true"]],
            "fold": oof["fold"],
            "predicted": [classes[i] for i in oof["y_pred"]],
        }
    )
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


def _train_svm(
    dataset, settings, oof, staging, classes, jobs, reporter, *, group_by=None, k=None
) -> dict:

    feature_set, source = settings["feature_set"], settings["source"]
    units = settings.get("units", "nm")  # runs before --units measured in nm
    features = extract_features(
        dataset, feature_set, source=source, reporter=reporter, jobs=jobs, units=units
    )
    X, names, dropped = feature_matrix(features, dataset, reporter)
    y = dataset.y
    C, gamma, grid = settings.get("C"), settings.get("gamma"), settings.get("grid") or "coarse"
    seed = int(settings.get("seed", 0))
    best, how = {"C": C, "gamma": gamma, "score": None}, "fixed by the settings"
    groups = None
    if group_by and (C is None or gamma is None):
        groups = group_labels(dataset, group_by)  # as the run's folds were grouped
    if C is None or gamma is None:
        spec = GRIDS[grid]
        reporter.stage(f"svm grid search ({grid}) on all {len(y)} particles")
        best, _table = search_grid(
            X,
            y,
            C_values=[C] if C is not None else spec["C"],
            gamma_values=[gamma] if gamma is not None else spec["gamma"],
            inner_folds=spec["inner_folds"],
            max_samples=spec["max_samples"],
            seed=seed,
            jobs=jobs,
            groups=groups,
        )
        kind = (
            f"stratified inner folds grouped by {group_by}"
            if groups is not None
            else "stratified inner folds"
        )
        how = (
            f"{grid} grid search, {best['inner_folds']} {kind} on "
            f"{best['n_samples']} of the {len(y)} training particles, macro F1"
        )
    reporter.stage("svm: final fit on all particles")
    clf = LibSVMClassifier(C=best["C"], gamma=best["gamma"]).fit(X, y)
    clf.save(
        staging / SVM_STEM, feature_names=names, class_names=[classes[c] for c in clf.classes_]
    )
    atomic_write_json(
        staging / FEATURE_SCHEMA_FILE, make_feature_schema(feature_set, source, units, names)
    )
    if len(clf.classes_) != len(classes):
        raise DatasetError(
            f"Every class needs training particles; the dataset has {dataset.class_counts()}."
        )
    calibrator = fit_calibrator(oof["decision_values"], oof["y_true"], len(classes))
    # Thresholds are chosen on the cross-fitted probabilities (fold i calibrated
    # on the other folds); the final model uses this one calibrator. Record how
    # far apart the two put the same out-of-fold decision values.
    shift = float(
        np.max(
            np.abs(
                confidence_of(apply_calibrator(calibrator, oof["decision_values"]), oof["y_pred"])
                - confidence_of(oof["probabilities"], oof["y_pred"])
            ),
            initial=0.0,
        )
    )
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
                "policy": (
                    "features are measured in nm: every particle needs its pixel "
                    "size (PixelSize, pixel_size_nm, or --pixel-size)"
                    if units == "nm"
                    else "features are measured in px (--units px, as the run): new "
                    "particles must be imaged at the training pixel size"
                ),
                "training_nm": _pixel_sizes(dataset),
            },
            "probabilities": {
                "kind": "calibrated",
                "calibration": {
                    **calibrator,
                    "fitted_on": "the cross-validated (out-of-fold) decision values of the run",
                },
                "calibration_shift": shift,
                "calibration_shift_means": "largest difference in confidence, on the "
                "out-of-fold decision values, between the "
                "cross-fitted calibration that --target-precision "
                "thresholds are chosen on and this calibration",
                "predicted_class": "LIBSVM's one-vs-one vote (as svm-predict); the "
                "confidence is the calibrated probability of that class",
            },
            "files": {
                "libsvm_model": f"{SVM_STEM}.model",
                "svm_scale_range": f"{SVM_STEM}.range",
                "scaling_json": f"{SVM_STEM}.json",
                "feature_schema": FEATURE_SCHEMA_FILE,
            },
        },
        "hyperparameters": {
            "C": float(best["C"]),
            "gamma": float(best["gamma"]),
            "inner_score_macro_f1": best.get("score"),
            "chosen_by": how,
            "n_support": [int(v) for v in clf.n_support_],
        },
        "differences": [
            (
                f"fitted on all {len(y)} particles; in cross-validation each fold's model was "
                f"fitted on the other {(k or 0) - 1} folds (there is no held-out test left)"
            ),
            "C and gamma: "
            + (
                "the same fixed values"
                if C is not None and gamma is not None
                else "one grid search on all particles, as each fold ran its "
                "own on its training part"
            ),
            (
                "probability calibration: one calibrator fitted on all out-of-fold decision "
                "values; in cross-validation fold i was calibrated on the other folds "
                f"(largest confidence shift {shift:.3f}, probabilities.calibration_shift)"
            ),
        ],
    }


def bundle_keeps_size(bundle) -> bool:
    """Whether ``bundle``'s network takes scale-preserving inputs
    (``input.input_scale`` in its card; bundles saved before that field
    existed: the model's default, ``cnn.keeps_size``)."""

    return keeps_size(bundle.model, bundle.card["input"].get("input_scale"))


def _train_cnn(dataset, model, settings, fold_results, staging, reporter) -> dict:

    best_epochs = [int(r.params["epochs"]) for r in fold_results]
    epochs = max(1, int(round(float(np.median(best_epochs)))))
    fixed = is_fixed_budget(settings)  # every fold ran the whole budget
    # The cross-validation's own settings object, so the final network trains
    # through the same path (schedule, warm-up, weight averaging, precision
    # policy, balancing, augmentation); only the epochs and the validation
    # part (none: all particles train) differ. Runs saved before weight
    # averaging existed trained without it.
    record = {"weight_averaging": 0.0, **settings}
    cv_settings = settings_from_record(record, model)
    final_settings = cv_settings.replace(epochs=epochs)
    mode, size = cv_settings.input_mode, int(settings["input_size"])
    keep_size = keeps_size(model, cv_settings.input_scale)
    fit = keep_size_scale(dataset, mode, size) if keep_size else None
    scale, unit = (fit.scale, fit.unit) if fit else (None, None)
    images = prepare_images(
        dataset, mode, size, keep_size=keep_size, scale=scale, unit=unit, reporter=reporter
    )
    dtype_policy = resolve_dtype_policy(cv_settings.mixed_precision, describe_device()[0])
    reporter.stage(f"{model}: final training on all {len(dataset)} particles, {epochs} epochs")
    y = dataset.y
    empty = images[:0]
    net, info = train_fold(
        images,
        y,
        empty,
        y[:0],
        final_settings,
        n_classes=len(dataset.problem.classes),
        dtype_policy=dtype_policy,
        seed=int(settings.get("seed", 0)),
        class_names=list(dataset.problem.classes),
        reporter=reporter,
    )
    if dtype_policy is not None:  # trained as cross-validated, saved to run anywhere
        net = as_float32(net, final_settings, len(dataset.problem.classes))
    save_model(net, staging / KERAS_FILE)
    what = CNN_PREPROCESSING[mode]
    mask_note = ", pixels outside the mask set to 0" if mode == "masked" else ""
    standardise = "over the particle's own (mask) pixels" if mode == "masked" else "over the window"
    resize = (
        f"scaled by {scale:.6g} canvas px per {unit} (one factor for all particles, "
        f"from training) and centred on a {size}x{size} canvas of 0; windows larger "
        f"than the canvas shrunk to fit ({fit.shrunk} of {fit.n} training particles)"
        if keep_size
        else f"resized to {size}x{size} (bilinear, anti-aliased when shrinking)"
    )
    return {
        "card": {
            "input": {
                "kind": "image",
                "mode": mode,
                "size": size,
                "shape": [size, size, 1],
                "layout": "NHWC float32 (batch, height, width, 1)",
                "input_scale": "keep" if keep_size else "resize",
                "keep_size_scale": scale,
                "keep_size_unit": unit,
                "preprocessing": (
                    f"{what}; intensities standardised to mean 0 and standard "
                    f"deviation 1 {standardise}{mask_note}; {resize} "
                    "(cnn.prepare_images, docs/cnn.md)"
                ),
            },
            "pixel_size": {
                "policy": (
                    "not used: every particle's window is resized to the input, so "
                    "the network sees shape, not absolute size"
                    if not keep_size
                    else "one scale factor in canvas px per nm: particles of any pixel "
                    "size are scaled alike, and each needs its pixel size"
                    if unit == "nm"
                    else "not used directly: one scale factor in pixels, so particles "
                    "should come at the training pixel size"
                ),
                "training_nm": _pixel_sizes(dataset),
            },
            "probabilities": {"kind": "softmax", "predicted_class": "the most probable class"},
            "files": {"keras_model": KERAS_FILE},
        },
        "hyperparameters": {
            "epochs": epochs,
            "chosen_by": "the cross-validation's fixed budget (no early stopping; every "
            "fold trained these epochs and kept the last)"
            if fixed
            else "median best epoch of the cross-validation folds' early stopping "
            "(validation part of the training folds)",
            "fold_best_epochs": best_epochs,
            "epochs_run": info["epochs_run"],
            "trained_as_cross_validated": {
                "same": "every CNN setting of the run (cnn.settings_from_record): schedule, "
                "warm-up, weight averaging, balancing, augmentation, optimizer, "
                "learning rate, model options, and the precision policy "
                f"({(dtype_policy or 'float32').replace('mixed_', '')} here; the "
                "bundle's network computes in float32 with the same weights, "
                "which mixed precision keeps in float32)",
                "differs": {
                    **(
                        {}
                        if fixed
                        else {
                            "epochs": f"{epochs} (median best epoch) instead of at most "
                            f"{cv_settings.epochs} with early stopping"
                        }
                    ),
                    "validation_part": "none: all particles train, since the epoch "
                    "count is already chosen",
                },
            },
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
    def spec(self) -> registry.ModelSpec:
        """The bundle's model family (``registry``)."""
        return registry.get(self.card["family"])

    @property
    def is_svm(self) -> bool:
        """Whether it is the SVM baseline's bundle (``export`` builds its graph)."""
        return self.spec is registry.SVM

    def problem(self):
        """The bundle's problem as a ``dataset.Problem``."""

        name = self.card["problem"]["name"]
        if name in PROBLEMS and list(PROBLEMS[name].classes) == self.classes:
            return PROBLEMS[name]
        return custom_problem(self.classes)


#: The card entries that decide what a bundle predicts; ``contract_sha256``
#: covers them, so an edit of any of them (a calibration coefficient, a
#: feature name, the problem) is refused even where no model file tells.
CONTRACT_KEYS = ("model", "family", "problem", "input", "probabilities", "files")


def contract_sha256(card: dict) -> str:
    """The sha256 of the card's :data:`CONTRACT_KEYS` entries as canonical
    JSON (sorted keys, no spaces), as hex."""
    text = json.dumps(
        {k: card.get(k) for k in CONTRACT_KEYS},
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=True,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path) -> str:
    """The sha256 of a file's bytes, as hex (what ``sha256sum`` prints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_bundle(path) -> Bundle:
    """Read a model bundle and verify it (JSON and text only; nothing is
    unpickled and no model is loaded).

    The card must pass its schema (:func:`card_problems`); every file it
    lists must lie inside the bundle folder (symlinks followed) and match
    its recorded sha256; and the class list must agree with the model files
    (the LIBSVM header's ``nr_class`` and ``label``, read before LIBSVM
    sees the file, svm.json's class names, cv-predictions.csv's columns).
    A CNN's output layer is checked when it is loaded
    (:func:`load_keras_model`).

    Raises
    ------
    BundleError
        One line: the folder or a file is missing, the card is not a
        bundle's or fails the schema, a file leaves the folder or changed
        since training, the classes disagree with a model file, or the
        schema is not the one this liposome-bench reads.
    """

    path = Path(path)
    card_path = path / CARD
    if not card_path.is_file():
        raise BundleError(
            f"{path} is not a model bundle (no {CARD}). Make one with `liposome-bench train`."
        )
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise BundleError(
            f"{card_path} cannot be read ({_one_line(exc)}). Train the bundle again."
        ) from None
    if not isinstance(card, dict) or card.get("kind") != BUNDLE_KIND:
        raise BundleError(
            f"{card_path} is not a liposome-bench model card. "
            "Make a bundle with `liposome-bench train`."
        )
    version = card.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > BUNDLE_SCHEMA_VERSION:
        raise BundleError(
            f"{path} is a model bundle of schema version {version!r}; this liposome-bench "
            f"({__version__}) reads up to version {BUNDLE_SCHEMA_VERSION}. Upgrade liposome-bench."
        )
    if version < BUNDLE_SCHEMA_VERSION:
        raise BundleError(
            f"{path} is a model bundle of schema version {version!r}, which records no file "
            f"hashes, so it cannot be verified; this liposome-bench reads version "
            f"{BUNDLE_SCHEMA_VERSION}. Train it again with `liposome-bench train "
            "--from-results RESULTS --model MODEL`."
        )
    _check_paths(path, card)
    problems = card_problems(card)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise BundleError(
            f"{card_path} fails the model-card schema: {problems[0]}{more}. Train the bundle again."
        )
    _check_hashes(path, card)
    bundle = Bundle(path, card)
    _check_against_files(bundle)
    if card["contract_sha256"] != contract_sha256(card):
        raise BundleError(
            f"{card_path}: its {', '.join(CONTRACT_KEYS)} entries changed since the bundle "
            f"was trained (contract_sha256 differs). Restore the card, or train the bundle "
            "again."
        )
    return bundle


def _one_line(exc) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def _listed_files(card) -> dict:
    """Every file name the card refers to: {where in the card: name}."""
    listed = {}
    files = card.get("files")
    if isinstance(files, dict):
        listed.update({f"files.{key}": value for key, value in files.items()})
    cv = card.get("cross_validation")
    if isinstance(cv, dict) and "predictions" in cv:
        listed["cross_validation.predictions"] = cv["predictions"]
    hashes = card.get("sha256")
    if isinstance(hashes, dict):
        listed.update({f"sha256 key {key!r}": key for key in hashes})
    return listed


def _check_paths(path: Path, card) -> None:
    """Refuse a card that lists a file outside the bundle folder (an
    absolute path, ``..``, a subfolder, or a symlink leading out)."""
    root = path.resolve()
    for where, name in _listed_files(card).items():
        if not isinstance(name, str):
            continue  # the schema check names it
        target = path / name
        outside = (
            name in ("", ".", "..")
            or not name.isprintable()
            or Path(name).is_absolute()
            or "/" in name
            or "\\" in name
            or target.resolve().parent != root
        )
        if outside:
            raise BundleError(
                f"{path / CARD}: {where} is {name!r}, which is not a file inside the bundle "
                f"folder {path}; a bundle only refers to its own files. Train the bundle again."
            )


def _printable_name(value) -> bool:
    """A non-empty name that prints on one line (no control characters)."""
    return isinstance(value, str) and value.strip() != "" and value.isprintable()


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _matrix(value, rows: int, cols: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == rows
        and all(
            isinstance(r, list) and len(r) == cols and all(map(_finite_number, r)) for r in value
        )
    )


def card_problems(card: dict) -> list[str]:
    """Every way ``card`` (a parsed model.json) breaks the bundle schema.

    Checked: the model and family (and that they agree), the problem's name
    and class list (at least two distinct names; a built-in problem's name
    with its own classes, and a built-in problem's classes under its own
    name only), the input of the family (feature set and feature
    names; or the input mode, size and scale), the SVM's calibration (a
    finite n_classes x n_pairs matrix and n_classes intercepts), the file
    names of the family, and a sha256 for each of them and for
    cv-predictions.csv.

    Returns
    -------
    list of str
        One entry per problem, each naming the card key; empty if none.
    """

    problems = []

    def get(dotted):
        value = card
        for key in dotted.split("."):
            if not isinstance(value, dict) or key not in value:
                return _MISSING
            value = value[key]
        return value

    def need(dotted, ok, expected):
        value = get(dotted)
        if value is _MISSING:
            problems.append(f"{dotted} is missing ({expected} expected)")
            return False
        if not ok(value):
            problems.append(f"{dotted} is {_short(value)}; {expected} expected")
            return False
        return True

    known = [s.family for s in registry.families()]
    family_ok = need(
        "family", lambda v: isinstance(v, str) and v in known, f"one of {', '.join(known)}"
    )
    names = registry.model_names()
    model_ok = need(
        "model", lambda v: isinstance(v, str) and v in names, f"one of {', '.join(names)}"
    )
    family = card["family"] if family_ok else None
    if family_ok and model_ok and registry.get(card["model"]).family != family:
        problems.append(
            f"family is {family!r} but model is {card['model']!r}, which is of family "
            f"{registry.get(card['model']).family!r}"
        )
    need("problem.name", _printable_name, "a problem name")
    classes_ok = need(
        "problem.classes",
        lambda v: (
            isinstance(v, list)
            and len(v) >= 2
            and all(map(_printable_name, v))
            and len(set(v)) == len(v)
        ),
        "a list of at least 2 distinct class names (printable, on one line)",
    )
    classes = card["problem"]["classes"] if classes_ok else None
    name = get("problem.name")
    if not isinstance(name, str):
        name = None  # named above; not a key of PROBLEMS
    if classes and name in PROBLEMS and list(PROBLEMS[name].classes) != classes:
        problems.append(
            f"problem.name is {name!r}, whose classes are "
            f"{', '.join(PROBLEMS[name].classes)}, but problem.classes is "
            f"{', '.join(classes)}"
        )
    builtin = [n for n, known in PROBLEMS.items() if list(known.classes) == classes]
    if classes and builtin and name is not None and name != builtin[0]:
        # The built-in problem's classes under another name: a renamed problem.
        problems.append(
            f"problem.name is {name!r} but problem.classes are those of "
            f"the built-in problem {builtin[0]!r}"
        )
    hooks = bundle_hooks(registry.get(family)) if family is not None else None
    if hooks is not None and hooks.check_card is not None:
        hooks.check_card(card, need, classes)
    need(
        "pixel_size.training_nm.median",
        lambda v: v is None or (_finite_number(v) and v > 0),
        "null or a positive finite number",
    )
    if hooks is not None:
        # Files a family added later (the SVM's feature schema) are optional:
        # bundles trained before them have none.
        files = card.get("files") if isinstance(card.get("files"), dict) else {}
        expected = {
            key: name
            for key, name in hooks.files.items()
            if key not in hooks.optional_files or key in files
        }
        need("files", lambda v: v == expected, ", ".join(f"{k}: {v}" for k, v in expected.items()))
        need("cross_validation.predictions", lambda v: v == CV_PREDICTIONS, repr(CV_PREDICTIONS))
        need(
            "contract_sha256",
            lambda v: (
                isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)
            ),
            "a hex sha256",
        )
        names = sorted({*expected.values(), CV_PREDICTIONS})
        need(
            "sha256",
            lambda v: (
                isinstance(v, dict)
                and sorted(v) == names
                and all(
                    isinstance(h, str) and len(h) == 64 and all(c in "0123456789abcdef" for c in h)
                    for h in v.values()
                )
            ),
            f"a hex sha256 for each of {', '.join(names)}",
        )
    return problems


_MISSING = object()


def _check_svm_card(card, need, classes) -> None:
    """The SVM card's input (feature set and names) and calibration."""

    need("input.feature_set", lambda v: v in FEATURE_SETS, f"one of {', '.join(FEATURE_SETS)}")
    need("input.feature_source", lambda v: isinstance(v, str), "a string")
    need(
        "input.features",
        lambda v: isinstance(v, list) and v and all(map(_printable_name, v)),
        "a list of feature names",
    )
    if classes:
        k = len(classes)
        pairs = k * (k - 1) // 2
        need(
            "probabilities.calibration.coef",
            lambda v: _matrix(v, k, pairs),
            f"a {k} x {pairs} matrix of finite numbers",
        )
        need(
            "probabilities.calibration.intercept",
            lambda v: isinstance(v, list) and len(v) == k and all(map(_finite_number, v)),
            f"{k} finite numbers",
        )


def _check_cnn_card(card, need, classes) -> None:
    """The CNN card's input mode, size and scale."""

    need("input.mode", lambda v: v in INPUT_MODES, f"one of {', '.join(INPUT_MODES)}")
    need(
        "input.size",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 4,
        "an integer of at least 4",
    )
    need(
        "input.keep_size_scale",
        lambda v: v is None or (_finite_number(v) and v > 0),
        "null or a positive finite number",
    )
    # Optional: bundles saved before issue 25 have neither (lipnet-fcn kept size in px).
    inp = card.get("input") if isinstance(card.get("input"), dict) else {}
    for key, allowed in (
        ("input_scale", ("resize", "keep")),
        ("keep_size_unit", ("nm", "px", None)),
    ):
        if key in inp:
            need(f"input.{key}", lambda v, a=allowed: v in a, f"one of {allowed}")


def _short(value) -> str:
    text = json.dumps(value, allow_nan=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_hashes(path: Path, card) -> None:
    for name, expected in card["sha256"].items():
        target = path / name
        if not target.is_file():
            raise BundleError(f"{path} lacks {name}, part of the bundle. Train the bundle again.")
        actual = file_sha256(target)
        if actual != expected:
            raise BundleError(
                f"{target} changed since the bundle was trained (sha256 {actual[:12]}..., the "
                f"card's {expected[:12]}...). Restore the bundle's own file, or train it again."
            )


def read_libsvm_header(path) -> dict:
    """The header of a LIBSVM model file, checked before LIBSVM's loader
    (which crashes the interpreter on a truncated file) reads it.

    Checks that it is an RBF C-SVC model with ``nr_class`` classes, as many
    labels, ``nr_sv`` and ``rho`` entries, and exactly ``total_sv`` support
    vector lines of numbers after ``SV``.

    Returns
    -------
    dict
        "nr_class" (int), "labels" (list of int), "total_sv" (int).

    Raises
    ------
    BundleError
        One line naming the file and what is wrong.
    """
    path = Path(path)

    def bad(what):
        return BundleError(
            f"{path} is not a whole LIBSVM model file ({what}). Train the bundle again."
        )

    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise bad(_one_line(exc)) from None
    header, i = {}, 0
    while i < len(lines) and lines[i].strip() != "SV":
        key, _, value = lines[i].partition(" ")
        header[key] = value.split()
        i += 1
    if i == len(lines):
        raise bad("no SV line")
    if header.get("svm_type") != ["c_svc"] or header.get("kernel_type") != ["rbf"]:
        raise bad("not an RBF C-SVC model")
    try:
        k = int(header["nr_class"][0])
        total = int(header["total_sv"][0])
        labels = [int(v) for v in header["label"]]
        n_sv = [int(v) for v in header["nr_sv"]]
        rho = [float(v) for v in header["rho"]]
        float(header["gamma"][0])
    except (KeyError, IndexError, ValueError) as exc:
        raise bad(f"header entry {_one_line(exc)} missing or not a number") from None
    if (
        k < 2
        or len(labels) != k
        or len(n_sv) != k
        or sum(n_sv) != total
        or min(n_sv) < 0
        or len(rho) != k * (k - 1) // 2
    ):
        raise bad(
            f"nr_class {k}, {len(labels)} labels, nr_sv {n_sv} summing to total_sv "
            f"{total}? {len(rho)} rho values"
        )
    rows = lines[i + 1 :]
    if len(rows) != total:
        raise bad(f"{len(rows)} support vector lines, total_sv {total}")
    for row_number, row in enumerate(rows, start=i + 2):
        parts = row.split()
        try:
            [float(v) for v in parts[: k - 1]]
            for part in parts[k - 1 :]:
                index, value = part.split(":")
                if int(index) < 1:
                    raise ValueError(index)
                float(value)
        except ValueError:
            raise bad(f"line {row_number} is not a support vector") from None
        if len(parts) < k - 1:
            raise bad(f"line {row_number} is not a support vector")
    return {"nr_class": k, "labels": labels, "total_sv": total}


def _check_against_files(bundle: Bundle) -> None:
    """The card's classes against the model files (read as text)."""
    import csv

    classes = bundle.classes
    cv_path = bundle.path / CV_PREDICTIONS
    try:
        with open(cv_path, newline="", encoding="utf-8") as handle:
            columns = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BundleError(
            f"{cv_path} cannot be read ({_one_line(exc)}). Train the bundle again."
        ) from None
    found = [c[2:] for c in columns if c.startswith("p_")]
    if found != classes:
        raise BundleError(
            f"{bundle.path / CARD} lists the classes {', '.join(classes)} but the model's "
            f"cross-validated predictions ({CV_PREDICTIONS}) are of {', '.join(found)}. "
            "Restore the card's class list, or train the bundle again."
        )
    hooks = bundle_hooks(bundle.spec)
    if hooks.check_files is not None:
        hooks.check_files(bundle)


def _check_svm_files(bundle: Bundle) -> None:
    """The LIBSVM header, svm.json and the feature schema against the card."""
    classes = bundle.classes
    header = read_libsvm_header(bundle.path / f"{SVM_STEM}.model")
    k = len(classes)
    if header["nr_class"] != k or header["labels"] != list(range(k)):
        raise BundleError(
            f"{bundle.path / CARD} lists {k} classes but {SVM_STEM}.model has nr_class "
            f"{header['nr_class']} and labels {' '.join(map(str, header['labels']))} "
            f"(expected 0..{k - 1}). Train the bundle again."
        )
    json_path = bundle.path / f"{SVM_STEM}.json"
    try:
        meta = json.loads(json_path.read_text("utf-8"))
        names = meta["class_names"]
        features = meta["feature_names"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise BundleError(
            f"{json_path} cannot be read ({_one_line(exc)}). Train the bundle again."
        ) from None
    if names != classes:
        raise BundleError(
            f"{bundle.path / CARD} lists the classes {', '.join(classes)} but {SVM_STEM}.json "
            f"has {', '.join(map(str, names))}. Restore the card's class list, or train the "
            "bundle again."
        )
    if features != bundle.card["input"]["features"]:
        raise BundleError(
            f"{bundle.path}: {SVM_STEM}.json's features differ from the card's. "
            "Train the bundle again."
        )
    schema_name = bundle.card["files"].get("feature_schema")
    if schema_name is not None:
        schema_path = bundle.path / schema_name
        try:
            schema = json.loads(schema_path.read_text("utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise BundleError(
                f"{schema_path} cannot be read ({_one_line(exc)}). Train the bundle again."
            ) from None
        check_feature_schema(schema, bundle.card["input"], schema_path)


def check_bundle(
    bundle: Bundle,
    *,
    problem=None,
    classes=None,
    input_size=None,
    input_mode=None,
    feature_set=None,
) -> None:
    """Refuse a bundle made for another problem, input or feature set.

    Each given expectation is compared with the card; the first difference
    is a one-line ``BundleError`` naming it.
    """
    card = bundle.card
    inp = card.get("input", {})
    name = card["problem"]["name"]
    if problem is not None and problem != name:
        raise BundleError(
            f"{bundle.path} was trained for {name} ({', '.join(bundle.classes)}), not {problem}."
        )
    if classes is not None and list(classes) != bundle.classes:
        raise BundleError(
            f"{bundle.path} classifies {', '.join(bundle.classes)} ({name}); the data's "
            f"classes are {', '.join(classes)}. Use a bundle trained for them."
        )
    if input_size is not None:
        if "size" not in inp:
            raise BundleError(
                f"{bundle.path} is {bundle.spec.description}, not a CNN with input size "
                f"{input_size}."
            )
        if int(input_size) != int(inp["size"]):
            raise BundleError(
                f"{bundle.path} takes {inp['size']}x{inp['size']} px inputs, "
                f"not {input_size}x{input_size}."
            )
    if input_mode is not None and "mode" in inp and input_mode != inp["mode"]:
        raise BundleError(f"{bundle.path} takes input mode {inp['mode']}, not {input_mode}.")
    if feature_set is not None:
        if "feature_set" not in inp:
            raise BundleError(
                f"{bundle.path} is {bundle.spec.description}, not an SVM on feature set "
                f"{feature_set}."
            )
        if feature_set != inp["feature_set"]:
            raise BundleError(
                f"{bundle.path} uses feature set {inp['feature_set']}, not {feature_set}."
            )


def load_keras_model(bundle: Bundle):
    """The bundle's network, loaded with Keras' safe_mode on (no Python code
    from the file is run), checked against the card's input size and class
    count (the output layer's width).

    Raises
    ------
    BundleError
        One line naming the file when Keras cannot load it or it disagrees
        with the card.
    """
    keras = import_keras()

    path = bundle.path / KERAS_FILE
    try:
        net = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds; all mean "not loadable"
        raise BundleError(
            f"{path} cannot be loaded by Keras ({type(exc).__name__}: "
            f"{_one_line(exc)}). Train the bundle again."
        ) from None
    shape = tuple(net.input_shape[1:3])
    size = int(bundle.card["input"]["size"])
    # A fully convolutional net (lipnet-fcn) has no fixed size: (None, None).
    if None not in shape and shape != (size, size):
        raise BundleError(
            f"{path} takes {shape[0]}x{shape[1]} px inputs but its card "
            f"says {size}x{size}. Train the bundle again."
        )
    width = net.output_shape[-1]
    if width != len(bundle.classes):
        raise BundleError(
            f"{path} has {width} outputs but its card lists {len(bundle.classes)} classes "
            f"({', '.join(bundle.classes)}). Restore the card's class list, or train the "
            "bundle again."
        )
    return net


def load_svm(bundle: Bundle):
    """The bundle's LibSVMClassifier (from LIBSVM's model file and JSON).

    The files were verified by :func:`load_bundle` (hashes, LIBSVM header,
    features and classes), so LIBSVM's loader only sees a whole model file.
    """

    read_libsvm_header(bundle.path / f"{SVM_STEM}.model")
    try:
        return LibSVMClassifier.load(bundle.path / SVM_STEM)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise BundleError(
            f"{bundle.path}: the SVM files cannot be read ({_one_line(exc)}). "
            "Train the bundle again."
        ) from None


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
            raise ConfigError(
                f"--target-precision {spec!r}: expected CLASS=P with P in (0, 1], "
                "e.g. uncertain=0.9."
            )
        if name not in classes:
            raise ConfigError(
                f"--target-precision {spec!r}: {name!r} is not a class of this "
                f"model ({', '.join(classes)})."
            )
        targets[classes.index(name)] = target
    return targets


def predict_probabilities(bundle: Bundle, dataset, *, jobs: int = 1, reporter=None):
    """(predicted class indices, class probabilities) of every particle."""
    reporter = reporter or NullReporter()
    return bundle_hooks(bundle.spec).predict(bundle, dataset, jobs=jobs, reporter=reporter)


def _predict_svm(bundle: Bundle, dataset, *, jobs: int = 1, reporter=None):
    """The SVM bundle's vote and calibrated probabilities."""

    clf = load_svm(bundle)
    inp = bundle.card["input"]
    features = extract_features(
        dataset,
        inp["feature_set"],
        source=inp["feature_source"],
        reporter=reporter,
        jobs=jobs,
        units=inp.get("units", "nm"),
    )
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


def _predict_cnn(bundle: Bundle, dataset, *, jobs: int = 1, reporter=None):
    """The CNN bundle's softmax probabilities and their argmax."""

    net = load_keras_model(bundle)
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
    probabilities = np.asarray(net.predict(images, batch_size=256, verbose=0), np.float64)
    return probabilities.argmax(axis=1), probabilities


def read_particles(bundle: Bundle, data, *, problem=None, reader_options=None, reporter=None):
    """Read ``data`` with labels optional and check it fits the bundle."""

    if problem is not None:
        check_bundle(bundle, problem=problem)
    dataset = load_dataset(
        data, None, reporter=reporter, labels="optional", **(reader_options or {})
    )
    labels = {p.label for p in dataset.particles if p.label is not None}
    if labels and not labels <= set(bundle.classes):
        # Labels of classes the model does not know: another problem's data.
        check_bundle(bundle, classes=dataset.problem.classes)
    dataset.problem = bundle.problem()
    return dataset


def predict(
    bundle_path,
    data,
    *,
    min_confidence: float | None = None,
    target_precision=(),
    problem=None,
    input_size=None,
    input_mode=None,
    feature_set=None,
    reader_options=None,
    jobs: int = 1,
    reporter=None,
    out=None,
) -> Predictions:
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
    out : path, optional
        Where the caller will write the predictions: checked, before any
        work, not to be the bundle or the data, nor inside them
        (``outputs.check_apart``). Nothing is written here.

    Returns
    -------
    Predictions
    """
    import pandas as pd

    if min_confidence is not None and not 0 <= min_confidence <= 1:
        raise ConfigError(f"--min-confidence must be in [0, 1]; got {min_confidence}.")
    if out is not None:
        check_apart(out, {"the model bundle": bundle_path, "the data": data})
    bundle = load_bundle(bundle_path)
    check_bundle(
        bundle,
        problem=problem,
        input_size=input_size,
        input_mode=input_mode,
        feature_set=feature_set,
    )
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
            held_out = held_out_threshold(
                cv["y_true"], cv["y_pred"], cv_conf, cv["fold"], cls, target
            )
            thresholds[classes[cls]] = {
                **found,
                "target": target,
                "held_out": held_out,
                "calibration_shift": _calibration_shift(bundle),
            }
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
    if bundle.spec.score_kind == "probability":
        return 0.0  # scores are probabilities already: nothing is calibrated
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


def group_fractions(
    predictions: Predictions, bundle_path, key: str, *, n_resamples: int = 200, seed: int = 0
):
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

    bundle = load_bundle(bundle_path)
    cv = read_cv_predictions(bundle)
    rates = cv_rates(cv["y_true"], cv["y_pred"], cv["probabilities"])
    dataset = predictions.dataset
    groups = group_labels(dataset, key)
    y_true = None
    if all(p.label is not None for p in dataset.particles):
        index = {c: i for i, c in enumerate(bundle.classes)}
        y_true = np.array([index[p.label] for p in dataset.particles], dtype=np.int64)
    return fractions_by_group(
        groups,
        predictions.y_pred,
        predictions.probabilities,
        rates,
        bundle.classes,
        y_true=y_true,
        cv=cv,
        n_resamples=n_resamples,
        seed=seed,
    )


def write_fractions(table, out) -> Path:
    """Write :func:`group_fractions`' table as CSV, atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, table.to_csv(index=False, float_format="%.6g"))
    return out


# The built-in families' bundle hooks -----------------------------------------------


def _train_svm_bundle(
    dataset, model, settings, fold_results, oof, staging, classes, *, jobs, reporter, group_by, k
):
    return _train_svm(
        dataset, settings, oof, staging, classes, jobs, reporter, group_by=group_by, k=k
    )


def _train_cnn_bundle(
    dataset, model, settings, fold_results, oof, staging, classes, *, jobs, reporter, group_by, k
):
    return _train_cnn(dataset, model, settings, fold_results, staging, reporter)


_BUILTIN_HOOKS = {
    registry.SVM.family: registry.BundleHooks(
        files={
            "libsvm_model": f"{SVM_STEM}.model",
            "svm_scale_range": f"{SVM_STEM}.range",
            "scaling_json": f"{SVM_STEM}.json",
            "feature_schema": FEATURE_SCHEMA_FILE,
        },
        optional_files=("feature_schema",),
        train=_train_svm_bundle,
        predict=_predict_svm,
        check_card=_check_svm_card,
        check_files=_check_svm_files,
    ),
    registry.LIPNET.family: registry.BundleHooks(
        files={"keras_model": KERAS_FILE},
        train=_train_cnn_bundle,
        predict=_predict_cnn,
        check_card=_check_cnn_card,
    ),
}


def bundle_hooks(spec: registry.ModelSpec) -> registry.BundleHooks:
    """How ``train`` and ``predict`` handle a family's bundle: its own
    ``spec.bundle``, or this module's for the two built-in families."""
    return spec.bundle if spec.bundle is not None else _BUILTIN_HOOKS[spec.family]
