"""Do the default CNN settings train lipnet-4 to convergence?

Trains lipnet-4 on one fold of the built-in lamellarity set twice, exactly as
``run_cnn`` would (``cnn.train_fold`` with the same ``CNNSettings``: same input, augmentation,
balancing, batch size, learning rate, precision and validation split):

1. **long**: 60 epochs (``--long-epochs``), no early stopping; records the
   best validation macro F1 over all epochs;
2. **defaults**: the library's default settings as they are when this script
   runs (``liposome_bench.settings.CNNSettings()``: maximum epochs,
   patience, early-stopping criterion); records the validation macro F1 of
   the epoch that early stopping keeps.

It passes when the defaults' kept epoch is within 0.01 (``--tolerance``) of
the long run's best, and prints the wall time of both, the epochs run and
the CPU. The validation part is the 10 % of the training folds that
``run_cnn`` carves out (the test fold is not used); its smallest class has
only a few particles, so its macro F1 moves in steps of several
hundredths between epochs: read the result with that in mind.

Data: built-in synthetic lamellarity set, 14,169 particles; ``--n`` takes a
stratified subsample for a quicker run (the default is the full set).

Usage::

    python benchmarks/bench_convergence.py [--n 14169] [--fold 1] [--long-epochs 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def train(images, y, fit, val, settings, classes, device, seed, label):
    from liposome_bench.cnn import resolve_dtype_policy, train_fold
    from liposome_bench.progress import NullReporter

    class Progress(NullReporter):
        def epoch(self, epoch, epochs, **metrics):
            shown = "  ".join(f"{k} {v:.3f}" for k, v in metrics.items() if v is not None)
            print(f"  {label} epoch {epoch}/{epochs}  {shown}", flush=True)

    policy = resolve_dtype_policy(settings.mixed_precision, device)
    t0 = time.perf_counter()
    _, info = train_fold(
        images[fit],
        y[fit],
        images[val],
        y[val],
        settings,
        n_classes=len(classes),
        dtype_policy=policy,
        seed=seed,
        class_names=list(classes),
        reporter=Progress(),
    )
    info["wall_s"] = time.perf_counter() - t0
    return info


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n",
        type=int,
        default=None,
        help="stratified subsample of this many particles (default: all)",
    )
    parser.add_argument("--fold", type=int, default=1, help="which of the 5 folds (1-5)")
    parser.add_argument("--long-epochs", type=int, default=60)
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--cache-dir", default=None, help="built-in dataset cache")
    args = parser.parse_args()

    from liposome_bench import settings as library_settings
    from liposome_bench.cnn import _fold_seed, describe_device, prepare_images, split_validation
    from liposome_bench.sources import resolve_dataset
    from liposome_bench.folds import load_or_make_folds
    from liposome_bench.svm import stratified_subsample

    device, line = describe_device()
    print(line)
    print(f"load average at start {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    dataset = resolve_dataset(None, "lamellarity", cache_dir=args.cache_dir)
    if args.n is not None and args.n < len(dataset):
        dataset = dataset.subset(stratified_subsample(dataset.y, args.n, seed=0))
        dataset.root = None  # a subsample: folds are made in memory, not stored
    classes = list(dataset.problem.classes)
    defaults = library_settings.CNNSettings()
    long_settings = defaults.replace(epochs=args.long_epochs)
    long_settings = long_settings.replace(patience=args.long_epochs)  # never stops early
    images = prepare_images(dataset, defaults.input_mode, 28)
    folds = load_or_make_folds(dataset, 5, 0)
    fold = args.fold - 1
    seed = _fold_seed(0, fold)
    train_idx = folds.train_indices(fold)
    fit_pos, val_pos = split_validation(
        dataset.y[train_idx], defaults.validation_fraction, np.random.default_rng(seed)
    )
    fit, val = train_idx[fit_pos], train_idx[val_pos]
    print(
        f"built-in lamellarity set (synthetic), {len(dataset)} particles; fold "
        f"{args.fold}/5: {len(fit)} fit, {len(val)} validation images "
        f"{np.bincount(dataset.y[val], minlength=len(classes)).tolist()}"
    )
    shown = {
        k: v
        for k, v in defaults.to_dict().items()
        if k
        in (
            "epochs",
            "patience",
            "early_stopping",
            "batch_size",
            "lr_schedule",
            "warmup_epochs",
            "weight_averaging",
            "mixed_precision",
        )
    }
    print(f"library defaults now: {shown}, learning rate {defaults.resolved_learning_rate:g}")

    runs = {}
    for label, settings in (("long", long_settings), ("defaults", defaults)):
        info = train(images, dataset.y, fit, val, settings, classes, device, seed, label)
        f1 = info["history"]["val_macro_f1"]
        runs[label] = info
        print(
            f"{label}: {info['epochs_run']} epochs in {info['wall_s']:.0f} s "
            f"({info['samples_per_s'] or 0:.0f} samples/s); best validation macro F1 "
            f"{max(f1):.4f} at epoch {int(np.argmax(f1)) + 1}; kept epoch "
            f"{info['best_epoch']} (macro F1 {f1[info['best_epoch'] - 1]:.4f})",
            flush=True,
        )
    long_f1 = runs["long"]["history"]["val_macro_f1"]
    best_long = max(long_f1)
    print(f"long run, validation macro F1 per epoch: {' '.join(f'{v:.3f}' for v in long_f1)}")
    within = [i + 1 for i, v in enumerate(long_f1) if v >= best_long - args.tolerance]
    print(
        f"long run: first epoch within {args.tolerance} of its best: {within[0]} "
        f"({within[0] * runs['long']['wall_s'] / len(long_f1):.0f} s of training at this "
        "run's pace)"
    )
    kept = runs["defaults"]["history"]["val_macro_f1"][runs["defaults"]["best_epoch"] - 1]
    gap = best_long - kept
    ok = gap <= args.tolerance
    print(
        f"\n{args.long_epochs}-epoch best validation macro F1 {best_long:.4f}; default "
        f"settings keep {kept:.4f} after {runs['defaults']['epochs_run']} epochs "
        f"(stopped early: {runs['defaults']['epochs_run'] < defaults.epochs}); gap "
        f"{gap:+.4f}: {'PASS' if ok else 'FAIL'} (tolerance {args.tolerance})"
    )
    print(f"load average at the end {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
