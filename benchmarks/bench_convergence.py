"""Do the default CNN settings train lipnet-4 to convergence?

For each set and each chosen outer fold, trains lipnet-4 twice exactly as
``run_cnn`` would (``cnn.train_fold`` with the same ``CNNSettings``, the same
validation part carved from the training folds, the same fold seed), and
scores both on the fold's **test** part:

1. **defaults**: ``liposome_bench.settings.CNNSettings()`` as they are when
   this script runs (maximum epochs, patience, stopping rule, schedule);
2. **long**: the same settings with ``--long-epochs`` epochs and no early
   stopping (a cosine schedule is stretched over the longer budget, as
   ``make_learning_rate`` does); the weights kept are its best validation
   epoch, as for the defaults.

Target (issue 25): on every set the defaults' mean test macro F1 is within
``--tolerance`` (0.01) of the long run's, and no fold of the defaults ended
at its epoch cap while still improving (best epoch = last epoch = cap).

Sets: the built-in lamellarity and encapsulation sets and a balanced
3-class set from the same generator (``generate_dataset("lamellarity",
counts={class: n/3})``, seed 7). All synthetic. ``--n`` takes a stratified
subsample of each (default: the full built-in sizes, 14,169 and 24,918, and
3,000 balanced); ``--folds`` picks outer folds (default all 5). Folds are
grouped by micrograph, as ``benchmark`` does by default.

Test-fold scores are reported, never used to choose anything: the kept
epoch comes from the validation part only.

``--set KEY=VALUE`` measures a candidate default instead of the library's.
``--candidate "KEY=VALUE,KEY=VALUE"`` (repeatable) adds further candidates,
each on top of the ``--set`` ones; every candidate of a fold is compared with
the same long run, which is the ``--set`` settings with ``--long-epochs``, a
cosine schedule (``--long-schedule``) and no early stopping.

Usage::

    python benchmarks/bench_convergence.py [--sets lamellarity,encapsulation,balanced]
        [--n 3000] [--folds 1,2,3,4,5] [--long-epochs 100] [--tolerance 0.01]
        [--set epochs=60 --set lr_schedule=cosine ...]
        [--candidate "lr_schedule=cosine,early_stopping=loss,patience=10" ...]
"""

from __future__ import annotations

import argparse
import ast
import os
import platform
import sys
import time

import numpy as np

SETS = ("lamellarity", "encapsulation", "balanced")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def print_machine():
    """Print the training device, the CPU and the load; return the device."""
    from liposome_bench.cnn import describe_device

    device, line = describe_device()
    print(line)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores")
    print(f"load average at start {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return device


def assignments(items) -> dict:
    """{KEY: VALUE} of ``KEY=VALUE`` texts; a value is a Python literal, or a
    word (a choice such as cosine or loss)."""

    def value(text):
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text

    return {k: value(v) for k, v in (item.split("=", 1) for item in items)}


def load_set(name, n, cache_dir):
    from liposome_bench.sources import resolve_dataset
    from liposome_bench.svm import stratified_subsample
    from liposome_bench.synth import generate_dataset

    if name == "balanced":
        from liposome_bench.dataset import LAMELLARITY

        n = n or 3000
        counts = {c: n // 3 for c in LAMELLARITY.classes}
        dataset = generate_dataset("lamellarity", seed=7, counts=counts)
        dataset.root = None
        return dataset
    dataset = resolve_dataset(None, name, cache_dir=cache_dir)
    if n is not None and n < len(dataset):
        dataset = dataset.subset(stratified_subsample(dataset.y, n, seed=0))
        dataset.root = None  # a subsample: folds are made in memory, not stored
    return dataset


def macro_f1(y_true, y_pred, n_classes):
    from sklearn.metrics import f1_score

    return float(
        f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro", zero_division=0)
    )


def per_class_f1(y_true, y_pred, n_classes):
    from sklearn.metrics import f1_score

    per_class = f1_score(
        y_true, y_pred, labels=list(range(n_classes)), average=None, zero_division=0
    )
    return [float(v) for v in per_class]


def run_fold(dataset, folds, fold, images, settings, device):
    from liposome_bench.cnn import fold_seed, resolve_dtype_policy, split_validation, train_fold

    classes = list(dataset.problem.classes)
    y = dataset.y
    seed = fold_seed(0, fold)
    train_idx, test_idx = folds.train_indices(fold), folds.test_indices(fold)
    fit_pos, val_pos = split_validation(
        y[train_idx],
        settings.validation_fraction,
        np.random.default_rng(seed),
        groups=None if folds.groups is None else folds.groups[train_idx],
    )
    fit, val = train_idx[fit_pos], train_idx[val_pos]
    t0 = time.perf_counter()
    net, info = train_fold(
        images[fit],
        y[fit],
        images[val],
        y[val],
        settings,
        n_classes=len(classes),
        dtype_policy=resolve_dtype_policy(settings.mixed_precision, device),
        seed=seed,
        class_names=classes,
    )
    scores = net.predict(images[test_idx], batch_size=256, verbose=0)
    info["wall_s"] = time.perf_counter() - t0
    info["test_macro_f1"] = macro_f1(y[test_idx], scores.argmax(1), len(classes))
    info["test_per_class_f1"] = per_class_f1(y[test_idx], scores.argmax(1), len(classes))
    # A fixed budget (early_stopping "none") keeps its last epoch by design: not a flag.
    info["at_cap_improving"] = (
        settings.early_stopping != "none"
        and info["best_epoch"] == info["epochs_run"] == settings.epochs
    )
    info["n_val"] = np.bincount(y[val], minlength=len(classes)).tolist()
    return info


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--n", type=int, default=None, help="particles per set (subsample)")
    parser.add_argument("--folds", default="1,2,3,4,5", help="outer folds to run (1-5)")
    parser.add_argument("--long-epochs", type=int, default=100)
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--cache-dir", default=None, help="built-in dataset cache")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a candidate default instead of the library's (repeatable), e.g. "
        "--set epochs=60 --set lr_schedule=cosine --set early_stopping=loss --set patience=15",
    )
    parser.add_argument(
        "--candidate",
        action="append",
        default=[],
        metavar="KEY=VALUE,...",
        help="a further candidate on top of --set (repeatable), compared with the same long run",
    )
    parser.add_argument(
        "--long-schedule",
        default="cosine",
        help="the long run's learning-rate schedule (default cosine, stretched over --long-epochs)",
    )
    args = parser.parse_args()

    from liposome_bench import settings as library_settings
    from liposome_bench.cnn import prepare_cnn_images
    from liposome_bench.folds import load_or_make_folds

    device = print_machine()
    candidate = assignments(args.set)
    defaults = library_settings.CNNSettings.from_mapping(candidate, where="--set")
    if candidate:
        print(f"candidate defaults (--set): {candidate}")
    # The long run keeps its best validation macro F1 epoch, whatever the defaults' rule.
    long_settings = defaults.replace(
        epochs=args.long_epochs,
        patience=args.long_epochs,
        lr_schedule=args.long_schedule,
        early_stopping="macro_f1",
    )
    candidates = [("defaults", defaults)]
    for text in args.candidate:
        extra = assignments(item for item in text.split(",") if item)
        settings = library_settings.CNNSettings.from_mapping(
            {**candidate, **extra}, where="--candidate"
        )
        candidates.append((text, settings))
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
            "validation_fraction",
        )
    }
    print(
        f"settings measured as the defaults: {shown}, learning rate {defaults.resolved_learning_rate:g}"
    )
    folds_wanted = [int(f) - 1 for f in args.folds.split(",") if f.strip()]
    verdicts = []
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        dataset = load_set(name, args.n, args.cache_dir)
        folds = load_or_make_folds(dataset, 5, 0, "auto")
        images = prepare_cnn_images(dataset, defaults)  # as run_cnn prepares them
        print(
            f"\n== {name} (synthetic): {len(dataset)} particles "
            f"{dataset.class_counts()}, folds grouped by {folds.group_by}"
        )
        rows = {label: [] for label, _ in candidates}
        for fold in folds_wanted:
            lg = run_fold(dataset, folds, fold, images, long_settings, device)
            print(
                f"fold {fold + 1}: validation part {lg['n_val']}; long ({args.long_epochs} "
                f"epochs, {args.long_schedule}): kept epoch {lg['best_epoch']} of "
                f"{lg['epochs_run']}, test macro F1 {lg['test_macro_f1']:.4f}, "
                f"{lg['wall_s']:.0f} s",
                flush=True,
            )
            for label, settings in candidates:
                d = run_fold(dataset, folds, fold, images, settings, device)
                rows[label].append((d, lg))
                print(
                    f"  {label}: kept epoch {d['best_epoch']} of {d['epochs_run']}, test macro "
                    f"F1 {d['test_macro_f1']:.4f}, {d['wall_s']:.0f} s"
                    + (" (AT CAP, STILL IMPROVING)" if d["at_cap_improving"] else "")
                    + f"; gap {lg['test_macro_f1'] - d['test_macro_f1']:+.4f}",
                    flush=True,
                )
        for label, _ in candidates:
            mean_d = float(np.mean([d["test_macro_f1"] for d, _ in rows[label]]))
            mean_l = float(np.mean([lg["test_macro_f1"] for _, lg in rows[label]]))
            capped = sum(d["at_cap_improving"] for d, _ in rows[label])
            ok = mean_l - mean_d <= args.tolerance and capped == 0
            verdicts.append(ok)
            print(
                f"{name} / {label}: mean test macro F1 {mean_d:.4f}, long {mean_l:.4f}, gap "
                f"{mean_l - mean_d:+.4f} over {len(rows[label])} fold(s); folds at cap still "
                f"improving: {capped}: {'PASS' if ok else 'FAIL'} (tolerance {args.tolerance})"
            )
    print(f"\nload average at the end {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("ALL PASS" if all(verdicts) else "NOT ALL PASS")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
