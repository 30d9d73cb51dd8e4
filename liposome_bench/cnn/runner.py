"""Cross-validating one LipNet on the stored folds: :func:`run_cnn` trains
and tests every fold (resuming at the first unfinished one), records the
settings in ``run.json`` and saves each fold's result and model.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from liposome_bench.io import atomic_write
from liposome_bench.errors import ConfigError, DatasetError
from liposome_bench.models import INPUT_SIZES
from liposome_bench.progress import NullReporter
from liposome_bench.results import FoldResult
from liposome_bench.settings import CNNSettings, is_fixed_budget
from liposome_bench.cnn.preprocess import keep_size_scale, keeps_size, prepare_cnn_images
from liposome_bench.cnn.balance import split_validation
from liposome_bench.cnn.device import describe_device, resolve_dtype_policy
from liposome_bench.cnn.train import LABEL_SMOOTHING, lipnet_options, train_fold


def fold_seed(seed: int, fold: int) -> int:
    """An independent seed per fold, so a resumed run trains each remaining
    fold exactly as an uninterrupted one would."""
    return int(np.random.SeedSequence((int(seed), int(fold))).generate_state(1)[0] % (2**31))


def run_cnn(
    dataset,
    folds,
    results,
    settings: CNNSettings | None = None,
    *,
    seed: int = 0,
    save_models: bool = True,
    reporter=None,
    only_folds=None,
    images=None,
    **options,
):
    """Train and test one LipNet on every fold of ``folds``; save each fold.

    Folds already saved in ``results`` (by an interrupted run with the same
    settings) are loaded instead of retrained.

    Parameters
    ----------
    dataset : Dataset
    folds : Folds
        The dataset's stored folds (``folds.load_or_make_folds``).
    results : ResultsDir
        Fold results go to ``<results>/<model>/``, models to its ``models/``.
    settings : settings.CNNSettings, optional
        Model, input mode, augmentation, balancing, epochs, ... (default
        ``CNNSettings()``; docs/cnn.md explains each).
    seed : int
        Seeds weights, dropout, augmentation, sampling and the validation
        split; fold ``i`` uses a seed derived from (seed, i).
    save_models : bool
        Save each fold's trained network as ``fold-<i>.keras``.
    reporter : progress reporter, optional
    only_folds : iterable of int, optional
        Train only these folds (``sweep`` runs one fold per task); each fold
        gets the same seed as in a run of all folds.
    images : array, optional
        The network inputs, :func:`prepare_cnn_images` of ``dataset`` and
        these settings, made once for many calls (``benchmark``'s repeats);
        made here when None.
    **options
        Single settings to change (any ``CNNSettings`` field, e.g.
        ``model="lipnet-2", epochs=20``).

    Returns
    -------
    list of results.FoldResult, one per fold, in fold order (with
    ``only_folds``: those folds only).

    Raises
    ------
    ConfigError
        If an option is invalid.
    ResultsError
        If ``results`` holds results of another dataset, folds or settings.
    """
    reporter = reporter or NullReporter()
    settings = make_cnn_settings(settings, **options)
    model = settings.model
    size = int(settings.input_size or INPUT_SIZES[model])
    model_options = lipnet_options(settings)
    classes = list(dataset.problem.classes)
    mixed_precision = settings.mixed_precision
    validation_fraction = settings.validation_fraction

    recorded = settings.to_dict()
    del recorded["model"], recorded["l2"], recorded["dense_units"], recorded["dropout"]
    settings_record = {
        "kind": "cnn",
        **recorded,
        "input_size": size,
        "learning_rate": settings.resolved_learning_rate,
        "label_smoothing": LABEL_SMOOTHING,
        "model_options": model_options,
        "seed": int(seed),
    }
    results.prepare(dataset, folds, model, settings_record)

    wanted = range(folds.k) if only_folds is None else sorted(set(only_folds))
    done = {}
    for fold in wanted:
        saved = results.load_fold(model, fold, classes)
        if saved is not None:
            done[fold] = saved
    todo = [f for f in wanted if f not in done]
    if done:
        reporter.message(
            f"{model}: {len(done)} of {folds.k} folds already saved in {results.path}; "
            + (
                f"training folds {', '.join(str(f) for f in todo)}."
                if todo
                else "nothing to train."
            )
        )
    if not todo:
        return [done[f] for f in wanted]

    device, line = describe_device()
    reporter.message(line)
    dtype_policy = resolve_dtype_policy(mixed_precision, device)
    reporter.message(
        f"{model}: batch {settings.batch_size}, learning rate "
        f"{settings.resolved_learning_rate:g} ({settings.lr_schedule}, "
        f"{settings.warmup_epochs:g} warm-up epochs"
        + (
            f", weights averaged with momentum {settings.weight_averaging:g}"
            if settings.weight_averaging
            else ""
        )
        + "), "
        + (
            f"computing in {dtype_policy.split('_')[1]} (mixed precision)."
            if dtype_policy
            else "computing in float32."
        )
    )
    t0 = time.perf_counter()
    if images is None:
        images = prepare_cnn_images(dataset, settings, reporter=reporter)
    elif images.shape[:3] != (len(dataset), size, size):
        raise ConfigError(
            f"The prepared images are {'x'.join(map(str, images.shape[:3]))}, not "
            f"{len(dataset)}x{size}x{size} for {model}; pass prepare_cnn_images(dataset, "
            "settings) of these settings."
        )
    prepare_s = time.perf_counter() - t0
    if keeps_size(model, settings.input_scale):
        fit = keep_size_scale(dataset, settings.input_mode, size)
        reporter.message(
            f"{model}: input scale keep, {1 / fit.scale:.4g} {fit.unit} per canvas pixel; "
            f"{fit.shrunk} of {fit.n} particles larger than the {size} px canvas, "
            "shrunk to fit."
        )
    reporter.stage(model, total=folds.k)
    reporter.advance(len(done))
    for fold in todo:
        reporter.fold(fold, folds.k)
        result = _run_fold(
            dataset,
            folds,
            fold,
            images,
            results,
            model=model,
            seed=fold_seed(seed, fold),
            device=device,
            validation_fraction=validation_fraction,
            save_models=save_models,
            timings={"prepare_s": round(prepare_s, 3)},
            reporter=reporter,
            settings=settings,
            dtype_policy=dtype_policy,
        )
        results.save_fold(result, classes)
        done[fold] = result
        reporter.advance()
        kept = (
            f"{result.params['epochs_run']} epoch{'s' if result.params['epochs_run'] != 1 else ''}, "
            "the last kept"
            if is_fixed_budget(settings)
            else f"best epoch {result.params['epochs']} of {result.params['epochs_run']}"
        )
        reporter.message(
            f"{model} fold {fold} (of 0-{folds.k - 1}): {kept}, train {result.timings['train_s']:.0f}s "
            f"({result.timings['samples_per_s'] or 0:.0f} samples/s)"
            + (
                "; best epoch is the last: possibly under-trained (raise --epochs)"
                if result.params["under_trained"]
                else ""
            )
        )
    return [done[f] for f in wanted]


def make_cnn_settings(settings: CNNSettings | None = None, **options) -> CNNSettings:
    """``CNNSettings.make`` (kept for callers of 0.2.0)."""
    return CNNSettings.make(settings, **options)


def settings_from_record(record: dict, model: str) -> CNNSettings:
    """The :class:`CNNSettings` a run recorded in its ``run.json`` (see
    ``run_cnn``): the fields it stores, with ``model_options`` back as
    ``l2``, ``dense_units`` and ``dropout``. Deployment trains with these,
    so the final network is trained as the cross-validated ones were.
    """
    names = {f.name for f in dataclasses.fields(CNNSettings)}
    values = {k: v for k, v in record.items() if k in names}
    options = record.get("model_options") or {}
    values.update({k: options[k] for k in ("l2", "dense_units", "dropout") if k in options})
    values["model"] = model
    return CNNSettings.from_mapping(values, where=f"the recorded settings of {model}")


def _run_fold(
    dataset,
    folds,
    fold,
    images,
    results,
    *,
    model,
    seed,
    device,
    validation_fraction,
    save_models,
    timings,
    reporter,
    settings,
    dtype_policy,
):
    """Train on fold ``fold``'s training folds, predict its test fold."""
    import keras

    classes = list(dataset.problem.classes)
    y, ids = dataset.y, dataset.ids
    train_idx, test_idx = folds.train_indices(fold), folds.test_indices(fold)
    _check_training_classes(y[train_idx], classes, fold)
    fit_pos, val_pos = split_validation(
        y[train_idx],
        validation_fraction,
        np.random.default_rng(seed),
        groups=None if getattr(folds, "groups", None) is None else folds.groups[train_idx],
    )
    fit_idx, val_idx = train_idx[fit_pos], train_idx[val_pos]
    net, info = train_fold(
        images[fit_idx],
        y[fit_idx],
        images[val_idx],
        y[val_idx],
        settings,
        n_classes=len(classes),
        dtype_policy=dtype_policy,
        seed=seed,
        class_names=classes,
        reporter=reporter,
    )
    t0 = time.perf_counter()
    scores = np.asarray(net.predict(images[test_idx], batch_size=256, verbose=0), np.float64)
    predict_s = time.perf_counter() - t0
    if save_models:
        save_model(net, results.models_subdir(model) / f"fold-{fold}.keras")

    def counts(idx):
        return dict(zip(classes, np.bincount(y[idx], minlength=len(classes)).tolist()))

    epochs = settings.epochs
    precision = (dtype_policy or "float32").replace("mixed_", "")
    return FoldResult(
        model=model,
        fold=fold,
        ids=[ids[i] for i in test_idx],
        y_true=y[test_idx],
        y_pred=scores.argmax(axis=1),
        scores=scores,
        score_names=classes,
        score_kind="probability",
        params={
            "epochs": info["best_epoch"],
            "epochs_run": info["epochs_run"],
            "max_epochs": epochs,
            "stopped_early": info["epochs_run"] < epochs,
            # The best epoch was the last one trained: the validation score was
            # still improving when the epoch budget ran out.
            # A fixed budget (early stopping "none") keeps its last epoch by design.
            "under_trained": bool(
                info["best_epoch"] == info["epochs_run"] == epochs
                and len(val_idx) > 0
                and not is_fixed_budget(settings)
            ),
            "n_fit": len(fit_idx),
            "n_validation": len(val_idx),
            "n_test": len(test_idx),
            "fit_counts": counts(fit_idx),
            "epoch_counts": dict(zip(classes, info["epoch_counts"])),
            "validation_counts": counts(val_idx),
            "test_counts": counts(test_idx),
            "seed": seed,
        },
        timings=dict(
            timings,
            train_s=round(info["train_s"], 3),
            predict_s=round(predict_s, 3),
            samples_per_s=round(info["samples_per_s"], 1) if info["samples_per_s"] else None,
        ),
        history=info["history"],
        device=f"{device} ({keras.backend.backend()}, {precision})",
    )


def _check_training_classes(y_train, classes, fold):
    counts = np.bincount(y_train, minlength=len(classes))
    if (counts > 0).sum() < 2:
        raise DatasetError(
            f"Fold {fold}'s training folds hold only class "
            f"{classes[int(np.argmax(counts))]!r}; a classifier needs at least 2 classes. "
            "Use a dataset with particles of more classes."
        )


def save_model(net, path: Path) -> None:
    """Save ``net`` as a .keras file, atomically."""
    atomic_write(path, net.save, suffix=".keras")
