"""Does a scale-preserving input help lipnet-4? (issue 25 item 7)

For each set and each chosen outer fold, trains lipnet-4 once per
``input_scale`` exactly as ``run_cnn`` would (``cnn.train_fold`` with the
same ``CNNSettings``, the same validation part carved from the training
folds, the same fold seed; inputs from ``cnn.prepare_cnn_images``) and scores
each on the fold's **test** part: macro F1, per-class F1 and the paired
difference keep - resize.

* **resize**: the thesis's input; every window is resized to fill 28x28 px,
  so the network cannot see particle size.
* **keep**: one factor for all particles (nm to canvas pixels; the 95th
  percentile of window sides fills the canvas), centred on a background
  canvas; relative size is kept.

Sets: the built-in lamellarity and encapsulation sets (synthetic).
``--n`` takes a stratified subsample (``svm.stratified_subsample``, seed 0) of
each set; default the full sets. Folds: 5, grouped by micrograph
(``folds.load_or_make_folds(dataset, 5, 0, "auto")``). Test-fold scores are
reported, never used to choose anything (the kept epoch comes from the
validation part).

Usage::

    python benchmarks/bench_input_scale.py [--sets lamellarity,encapsulation]
        [--n 6000] [--folds 1,2] [--set epochs=30 ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from bench_convergence import assignments, load_set, print_machine
from bench_convergence import run_fold as convergence_fold

SCALES = ("resize", "keep")


def run_fold(dataset, folds, fold, images, settings, device):
    """Train and test one outer fold as ``run_cnn`` does (``bench_convergence``'s
    fold runner); test F1 scores."""
    info = convergence_fold(dataset, folds, fold, images, settings, device)
    return {
        "macro_f1": info["test_macro_f1"],
        "per_class": info["test_per_class_f1"],
        "best_epoch": info["best_epoch"],
        "epochs_run": info["epochs_run"],
        "wall_s": info["wall_s"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="lamellarity,encapsulation")
    parser.add_argument("--n", type=int, default=None, help="particles per set (subsample)")
    parser.add_argument("--folds", default="1,2", help="outer folds to run (1-5)")
    parser.add_argument("--model", default="lipnet-4")
    parser.add_argument("--cache-dir", default=None, help="built-in dataset cache")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    from liposome_bench.cnn import keep_size_scale, prepare_cnn_images
    from liposome_bench.folds import load_or_make_folds
    from liposome_bench.models import INPUT_SIZES
    from liposome_bench.settings import CNNSettings

    device = print_machine()
    extra = assignments(args.set)
    base = CNNSettings.from_mapping({"model": args.model, **extra}, where="--set")
    folds_wanted = [int(f) - 1 for f in args.folds.split(",") if f.strip()]
    t_start = time.perf_counter()
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        dataset = load_set(name, args.n, args.cache_dir)
        folds = load_or_make_folds(dataset, 5, 0, "auto")
        classes = list(dataset.problem.classes)
        size = int(base.input_size or INPUT_SIZES[base.model])
        fit = keep_size_scale(dataset, base.input_mode, size)
        print(
            f"\n== {name} (synthetic): {len(dataset)} particles {dataset.class_counts()}"
            + (" (stratified subsample)" if args.n else "")
            + f", folds grouped by {folds.group_by}; keep: {1 / fit.scale:.4g} {fit.unit} "
            f"per canvas pixel, {fit.shrunk} of {fit.n} particles shrunk to fit {size} px",
            flush=True,
        )
        images = {
            scale: prepare_cnn_images(dataset, base.replace(input_scale=scale)) for scale in SCALES
        }
        rows = {scale: [] for scale in SCALES}
        for fold in folds_wanted:
            for scale in SCALES:
                settings = base.replace(input_scale=scale)
                r = run_fold(dataset, folds, fold, images[scale], settings, device)
                rows[scale].append(r)
                per = ", ".join(f"{c} {v:.3f}" for c, v in zip(classes, r["per_class"]))
                print(
                    f"fold {fold + 1} {scale}: test macro F1 {r['macro_f1']:.4f} ({per}); "
                    f"kept epoch {r['best_epoch']} of {r['epochs_run']}, {r['wall_s']:.0f} s",
                    flush=True,
                )
            d = rows["keep"][-1]["macro_f1"] - rows["resize"][-1]["macro_f1"]
            print(f"fold {fold + 1} keep - resize: {d:+.4f}", flush=True)
        diffs = [k["macro_f1"] - r["macro_f1"] for k, r in zip(rows["keep"], rows["resize"])]
        for scale in SCALES:
            mean = np.mean([r["per_class"] for r in rows[scale]], axis=0)
            print(
                f"{name} {scale}: mean test macro F1 "
                f"{np.mean([r['macro_f1'] for r in rows[scale]]):.4f}; per class "
                + ", ".join(f"{c} {v:.3f}" for c, v in zip(classes, mean))
            )
        print(
            f"{name}: keep - resize macro F1 per fold {', '.join(f'{d:+.4f}' for d in diffs)}; "
            f"mean {np.mean(diffs):+.4f} over {len(diffs)} fold(s)"
        )
    print(f"\nwall time {time.perf_counter() - t_start:.0f} s")
    print(f"load average at the end {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
