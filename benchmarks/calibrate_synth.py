"""Calibrate the built-in synthetic data against the thesis's SVM (Tables 7-8).

    python benchmarks/calibrate_synth.py --problem lamellarity
    python benchmarks/calibrate_synth.py --problem encapsulation --n 6000 --min-per-class 300
    python benchmarks/calibrate_synth.py --problem lamellarity --search --no-cnn

Generates the synthetic data set (default: the thesis-sized built-in set,
seed 0, difficulty 0.5) and runs, on 5 stratified folds (fold seed 0):

1. **The lab's SVM with the thesis protocol** (section 8.4): the tool's
   LIBSVM classifier on the 'vironova' feature set (area, circularity,
   moments, edge density profile, histogram), class weights inversely
   proportional to the class frequencies of the training folds, RBF kernel.
   C and gamma: by default the tool's own choice, the 'coarse' grid search
   (C = 2^-1..2^11, gamma = 2^-11..2^1, macro F1, 3 inner folds on a
   stratified subsample of the training folds only); ``--C``/``--gamma``
   fix them instead. It prints, per cell of the row-normalised 5-fold
   average confusion matrix (true class in rows), the thesis's value
   (Table 8 lamellarity, Table 7 encapsulation), the measured value and the
   difference, with the per-class sample sizes. The calibration target is
   every cell within +-0.03.
2. **The CNN as an untuned check** (``--no-cnn`` skips it): the tool's
   default CNN settings with lipnet-4 (lamellarity) or lipnet-2
   (encapsulation), against Tables 9 and 10 with their rows normalised.
   The generator is never tuned to these tables.
3. **A size check**: the AUC of mask area for each pair of classes, and the
   balanced accuracy of the same SVM protocol on mask geometry only (area,
   diameter, circularity, aspect ratio) against the full SVM's. Target: the
   geometry-only SVM at least 0.10 lower.

``--search`` re-tunes the generator's annotator-ambiguity shares
(``synth.AMBIGUITY``) on a reduced set (default 3,000 particles with at
least 250 per class): each round generates the set, cross-validates the SVM
with C and gamma fixed (from one grid search in the first round), and
solves, per true class, for the shares that move the measured row onto
the thesis's row (non-negative least squares on the measured predictions
of plain and borderline particles). It prints the new table to paste into
``liposome_bench/synth.py``. Only the SVM is used.

Numbers printed are measured on synthetic data; the thesis values are the
thesis's, on the lab's real particles.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from liposome_bench.dataset import get_problem  # noqa: E402
from liposome_bench.features import extract_features  # noqa: E402
from liposome_bench.folds import make_folds  # noqa: E402
from liposome_bench.machine import usable_cores  # noqa: E402
from liposome_bench.svm import GRIDS, LibSVMClassifier, search_grid  # noqa: E402
from liposome_bench.synth import (  # noqa: E402
    AMBIGUITY,
    THESIS_COUNTS,
    allocate_counts,
    generate_dataset,
    plan_appearance,
)

#: Thesis Tables 7-8 (SVM, row-normalised 5-fold average) by true class.
THESIS_SVM = {
    "lamellarity": {  # Table 8
        "unilamellar": {"unilamellar": 0.94, "multilamellar": 0.04, "uncertain": 0.02},
        "multilamellar": {"unilamellar": 0.00, "multilamellar": 0.98, "uncertain": 0.02},
        "uncertain": {"unilamellar": 0.03, "multilamellar": 0.11, "uncertain": 0.86},
    },
    "encapsulation": {  # Table 7
        "empty": {"empty": 0.89, "full": 0.01, "uncertain": 0.10},
        "full": {"empty": 0.04, "full": 0.87, "uncertain": 0.09},
        "uncertain": {"empty": 0.18, "full": 0.10, "uncertain": 0.72},
    },
}

#: Thesis Tables 9-10 (CNN, unnormalised 5-fold average counts).
THESIS_CNN = {
    "lamellarity": (
        "lipnet-4",
        {  # Table 9, LipNet-4
            "unilamellar": {"unilamellar": 2325, "multilamellar": 15, "uncertain": 124},
            "multilamellar": {"unilamellar": 4, "multilamellar": 323, "uncertain": 16},
            "uncertain": {"unilamellar": 2, "multilamellar": 3, "uncertain": 11},
        },
    ),
    "encapsulation": (
        "lipnet-2",
        {  # Table 10 (captioned LipNet-4; section 9 selects LipNet-2)
            "empty": {"empty": 24, "full": 1, "uncertain": 7},
            "full": {"empty": 272, "full": 3929, "uncertain": 660},
            "uncertain": {"empty": 30, "full": 9, "uncertain": 61},
        },
    ),
}

GEOMETRY = ("area_nm2", "length_nm", "circularity", "aspect_ratio")
BAND = 0.03
#: Workers for the features and grid searches: at most 2, within the
#: cores this process may use (its affinity, not the machine's count).
JOBS = min(2, usable_cores())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def class_counts(problem, n, min_per_class):
    counts = allocate_counts(problem, n)
    return {c: max(v, min_per_class) for c, v in counts.items()}


def make_data(problem, counts, seed, difficulty, ambiguity=None):
    start = time.perf_counter()
    dataset = generate_dataset(
        problem, seed=seed, counts=counts, difficulty=difficulty, ambiguity=ambiguity
    )
    _, labels, appearance, borderline = plan_appearance(
        problem, counts, seed, difficulty=difficulty, ambiguity=ambiguity
    )
    return dataset, appearance, borderline, time.perf_counter() - start


def aspect_ratios(dataset):
    """Major/minor axis ratio of each mask's second moments."""
    out = np.empty(len(dataset))
    for i, p in enumerate(dataset.particles):
        yy, xx = np.nonzero(p.mask)
        cov = np.cov(np.stack([yy, xx]).astype(float))
        lo, hi = np.linalg.eigvalsh(cov)
        out[i] = np.sqrt(hi / max(lo, 1e-9))
    return out


def feature_tables(dataset):
    start = time.perf_counter()
    table = extract_features(dataset, "all", jobs=JOBS)
    table["aspect_ratio"] = aspect_ratios(dataset)
    from liposome_bench.features import FEATURE_SETS

    vironova = table[list(FEATURE_SETS["vironova"])].to_numpy(dtype=float)
    geometry = table[list(GEOMETRY)].to_numpy(dtype=float)
    return vironova, geometry, table["area_nm2"].to_numpy(dtype=float), time.perf_counter() - start


def cross_validate(X, y, fold_of, k, *, C=None, gamma=None, seed=0):
    """Per-particle predictions of the class-weighted SVM over the folds, and
    the C/gamma of each fold (grid-searched on its training folds unless
    fixed)."""
    y_pred = np.empty_like(y)
    chosen = []
    spec = GRIDS["coarse"]
    for fold in range(k):
        train, test = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
        c, g = C, gamma
        if c is None or g is None:
            best, _ = search_grid(
                X[train],
                y[train],
                C_values=[c] if c is not None else spec["C"],
                gamma_values=[g] if g is not None else spec["gamma"],
                inner_folds=spec["inner_folds"],
                max_samples=spec["max_samples"],
                seed=seed + 1000 * fold,
                jobs=JOBS,
            )
            c, g = best["C"], best["gamma"]
        est = LibSVMClassifier(C=c, gamma=g, class_weight="balanced").fit(X[train], y[train])
        y_pred[test] = est.predict(X[test])
        chosen.append((c, g))
    return y_pred, chosen


def fold_average_confusion(y, y_pred, fold_of, k, n_classes):
    """Row-normalised confusion of each fold, averaged over the folds."""
    total = np.zeros((n_classes, n_classes))
    for fold in range(k):
        sel = fold_of == fold
        cm = np.zeros((n_classes, n_classes))
        np.add.at(cm, (y[sel], y_pred[sel]), 1)
        total += cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    return total / k


def balanced_accuracy(y, y_pred, n_classes):
    return float(
        np.mean([np.mean(y_pred[y == c] == c) for c in range(n_classes) if (y == c).any()])
    )


def print_table(title, classes, target, measured, sizes):
    print(f"\n{title}")
    print("true class      n      " + "  ".join(f"{c[:12]:>22}" for c in classes))
    print("                       " + "  ".join(f"{'thesis/ours/diff':>22}" for _ in classes))
    worst = 0.0
    outside = 0
    for i, row in enumerate(classes):
        cells = []
        for j, col in enumerate(classes):
            t, m = target[row][col], measured[i, j]
            diff = m - t
            worst = max(worst, abs(diff))
            flag = " " if abs(diff) <= BAND + 1e-9 else "*"
            outside += flag == "*"
            cells.append(f"{t:5.2f} {m:5.2f} {diff:+6.3f}{flag}")
        print(f"{row[:13]:<13} {sizes[i]:>6}  " + "  ".join(f"{c:>22}" for c in cells))
    print(f"largest |difference| {worst:.3f}; cells outside +-{BAND}: {outside} (marked *)")
    return worst, outside


def normalised(table, classes):
    return {r: {c: table[r][c] / sum(table[r].values()) for c in classes} for r in classes}


def run_svm_check(problem, classes, X, y, fold_of, args):
    start = time.perf_counter()
    y_pred, chosen = cross_validate(X, y, fold_of, args.folds, C=args.C, gamma=args.gamma)
    cm = fold_average_confusion(y, y_pred, fold_of, args.folds, len(classes))
    sizes = np.bincount(y, minlength=len(classes))
    table = "8" if problem == "lamellarity" else "7"
    choice = ", ".join(f"C=2^{np.log2(c):g} gamma=2^{np.log2(g):g}" for c, g in chosen)
    print(
        f"\nSVM: vironova features, class weights 'balanced', {args.folds} stratified folds; "
        f"per fold {choice} ({'fixed' if args.C and args.gamma else 'coarse grid on training folds'})"
    )
    print_table(
        f"SVM vs thesis Table {table} (row-normalised 5-fold average; synthetic data)",
        classes,
        THESIS_SVM[problem],
        cm,
        sizes,
    )
    print(f"SVM time {time.perf_counter() - start:.1f} s")
    return y_pred, cm, chosen


def run_cnn_check(problem, dataset, folds_k, args):
    from liposome_bench.cnn import run_cnn
    from liposome_bench.folds import load_or_make_folds
    from liposome_bench.results import ResultsDir

    model, table = THESIS_CNN[problem]
    classes = list(dataset.problem.classes)
    folds = load_or_make_folds(dataset, folds_k, 0)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = run_cnn(dataset, folds, ResultsDir(tmp), seed=0, save_models=False, model=model)
    y = np.concatenate([r.y_true for r in results])
    y_pred = np.concatenate([r.y_pred for r in results])
    fold_of = np.concatenate([np.full(len(r.y_true), r.fold) for r in results])
    cm = fold_average_confusion(y, y_pred, fold_of, folds_k, len(classes))
    sizes = np.bincount(dataset.y, minlength=len(classes))
    number = "9" if problem == "lamellarity" else "10"
    print(f"\nCNN check ({model}, default settings, not tuned to this table)")
    worst, _ = print_table(
        f"{model} vs thesis Table {number} (rows normalised; synthetic data)",
        classes,
        normalised(table, classes),
        cm,
        sizes,
    )
    print(f"CNN time {time.perf_counter() - start:.1f} s")
    return cm


def run_size_check(classes, area, geometry, y, fold_of, full_pred, args):
    from sklearn.metrics import roc_auc_score

    print("\nSize check (synthetic data)")
    for i in range(len(classes)):
        for j in range(i + 1, len(classes)):
            sel = (y == i) | (y == j)
            auc = roc_auc_score(y[sel] == j, area[sel])
            print(
                f"  area AUC {classes[i]} vs {classes[j]}: {max(auc, 1 - auc):.3f} "
                f"({'larger' if auc >= 0.5 else 'smaller'}: {classes[j]})"
            )
    geo_pred, chosen = cross_validate(geometry, y, fold_of, args.folds, C=args.C, gamma=args.gamma)
    full = balanced_accuracy(y, full_pred, len(classes))
    geo = balanced_accuracy(y, geo_pred, len(classes))
    verdict = "met" if full - geo >= 0.10 else "NOT met"
    print(
        f"  balanced accuracy: full SVM {full:.3f}, geometry-only SVM "
        f"({', '.join(GEOMETRY)}) {geo:.3f}; gap {full - geo:.3f} (target >= 0.10: {verdict})"
    )


def search(problem, args):
    """Re-tune synth.AMBIGUITY so the SVM's rows meet Table 7/8's."""
    from scipy.optimize import nnls

    spec = get_problem(problem)
    classes = list(spec.classes)
    k = len(classes)
    target = np.array([[THESIS_SVM[problem][r][c] for c in classes] for r in classes])
    rates = np.zeros((k, k))
    for (a, b), v in AMBIGUITY[problem].items():
        rates[classes.index(a), classes.index(b)] = v
    counts = class_counts(problem, args.n or 3000, args.min_per_class or 250)
    print(f"search on {counts} (seed {args.seed}, difficulty {args.difficulty})")
    C, gamma = args.C, args.gamma
    for round_ in range(args.rounds):
        t0 = time.perf_counter()
        table = {
            (classes[i], classes[j]): float(rates[i, j])
            for i in range(k)
            for j in range(k)
            if i != j
        }
        dataset, appearance, borderline, _ = make_data(
            problem, counts, args.seed, args.difficulty, table
        )
        X, _, _, _ = feature_tables(dataset)
        y = dataset.y
        fold_of = make_folds(y, classes, args.folds, 0)
        if C is None or gamma is None:
            spec_grid = GRIDS["coarse"]
            train = fold_of != 0
            best, _ = search_grid(
                X[train],
                y[train],
                C_values=spec_grid["C"],
                gamma_values=spec_grid["gamma"],
                inner_folds=spec_grid["inner_folds"],
                max_samples=spec_grid["max_samples"],
                seed=0,
                jobs=JOBS,
            )
            C, gamma = best["C"], best["gamma"]
            print(f"  C and gamma fixed from fold 0's grid search: C={C:g} gamma={gamma:g}")
        y_pred, _ = cross_validate(X, y, fold_of, args.folds, C=C, gamma=gamma)
        cm = fold_average_confusion(y, y_pred, fold_of, args.folds, k)
        err = np.abs(cm - target).max()
        print(
            f"round {round_ + 1}: largest |difference| {err:.3f} ({time.perf_counter() - t0:.0f} s)"
        )
        for i in range(k):
            print(
                "   ", classes[i], " ".join(f"{cm[i, j]:.3f}({target[i, j]:.2f})" for j in range(k))
            )
        # Per true class: predictions of plain particles (b) and of the
        # borderline ones resembling each other class (q_j).
        new = rates.copy()
        scale = 2 * args.difficulty
        for i in range(k):
            plain = (y == i) & ~borderline
            b = np.bincount(y_pred[plain], minlength=k) / max(plain.sum(), 1)
            others = [j for j in range(k) if j != i]
            A = np.zeros((k, len(others)))
            for col, j in enumerate(others):
                sel = (y == i) & borderline & (appearance == j)
                q = (
                    np.bincount(y_pred[sel], minlength=k) / sel.sum()
                    if sel.sum() >= 5
                    else np.eye(k)[j]
                )
                A[:, col] = q - b
            share, _ = nnls(A, target[i] - b)
            for col, j in enumerate(others):
                new[i, j] = min(share[col] / scale, 0.45)
        rates = 0.5 * rates + 0.5 * new if round_ else new
    print("\nAMBIGUITY for synth.py (difficulty 0.5):")
    print(f'    "{problem}": {{')
    for i in range(k):
        for j in range(k):
            if i != j:
                print(f'        ("{classes[i]}", "{classes[j]}"): {rates[i, j]:.3f},')
    print("    },")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", choices=("lamellarity", "encapsulation"), required=True)
    parser.add_argument(
        "--n",
        type=int,
        default=None,
        help="particles in the thesis's proportions (default: thesis size)",
    )
    parser.add_argument(
        "--min-per-class",
        type=int,
        default=0,
        help="raise every class to at least this many particles (reduced runs)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficulty", type=float, default=0.5)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--C", type=float, default=None, help="fix C (default: coarse grid)")
    parser.add_argument("--gamma", type=float, default=None, help="fix gamma")
    parser.add_argument("--no-cnn", action="store_true", help="skip the CNN check")
    parser.add_argument(
        "--no-ambiguity",
        action="store_true",
        help="generate without annotator ambiguity (diagnostic)",
    )
    parser.add_argument("--search", action="store_true", help="re-tune synth.AMBIGUITY")
    parser.add_argument("--rounds", type=int, default=3, help="search rounds")
    args = parser.parse_args(argv)

    print(
        f"CPU: {cpu_name()}, {os.cpu_count()} cores; load average "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    start = time.perf_counter()
    if args.search:
        search(args.problem, args)
        print(f"\ntotal {time.perf_counter() - start:.0f} s")
        return
    counts = (
        class_counts(args.problem, args.n, args.min_per_class)
        if args.n or args.min_per_class
        else dict(THESIS_COUNTS[args.problem])
    )
    dataset, _, _, gen_s = make_data(
        args.problem, counts, args.seed, args.difficulty, {} if args.no_ambiguity else None
    )
    classes = list(dataset.problem.classes)
    print(
        f"data: synthetic {args.problem}, {len(dataset)} particles {counts}, seed {args.seed}, "
        f"difficulty {args.difficulty:g}; generated in {gen_s:.1f} s"
    )
    X, geometry, area, feat_s = feature_tables(dataset)
    print(f"features in {feat_s:.1f} s")
    y = dataset.y
    fold_of = make_folds(y, classes, args.folds, 0)
    full_pred, _, _ = run_svm_check(args.problem, classes, X, y, fold_of, args)
    run_size_check(classes, area, geometry, y, fold_of, full_pred, args)
    if not args.no_cnn:
        run_cnn_check(args.problem, dataset, args.folds, args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
