"""Adjusted vs raw class fractions on a subsample of the built-in lamellarity set
(synthetic), SVM cross-validated on folds grouped by micrograph.

For each test fold, the rates (``quantify.cv_rates``) come only from the other
folds' out-of-fold predictions, their probabilities calibrated without the test
fold (``abstention.out_of_fold`` on the other folds alone); the test fold's
probabilities are calibrated on the other folds' decision values. Three kinds of
sample are scored, each class's absolute error of its fraction:

* ``micrograph``: every test micrograph (8-40 particles), split by size too;
* ``fold``: each test fold pooled (about a quarter of the particles);
* ``shifted``: 100-particle samples drawn from a test fold by quapy's
  ``LabelledCollection.sampling`` at multilamellar shares 0, 0.05, ..., 0.6
  (uncertain at its share of the data), 5 samples per share and fold: the
  built-in micrographs all have the data's class balance, so this is the
  setting adjustment is for (a sample whose balance differs from training).

For each kind of sample it also prints the paired difference raw minus adjusted
of each sample's mean absolute error, with a 95 % bootstrap interval over the
samples (positive: the adjustment is closer to the truth).

Run: PYTHONPATH=. python benchmarks/bench_quantify.py [N_MICROGRAPHS] (default 40,
about 80 s on 2 cores; the first run generates the built-in set, a minute or two
more; ``all`` takes every micrograph of the built-in set, 601, in about the same
time). Results: docs/deploy.md.
"""

import sys
import tempfile
import time

import numpy as np
from quapy.data import LabelledCollection
from scipy.stats import bootstrap

from liposome_bench import quantify
from liposome_bench.abstention import out_of_fold
from liposome_bench.dataset import Dataset
from liposome_bench.folds import load_or_make_folds
from liposome_bench.results import ResultsDir
from liposome_bench.sources import resolve_dataset
from liposome_bench.svm import run_svm

N_MICROGRAPHS = sys.argv[1] if len(sys.argv) > 1 else "40"
SHIFT_SHARES = np.linspace(0.0, 0.6, 13)
SHIFT_SIZE, SHIFT_REPEATS = 100, 5

t0 = time.time()
full = resolve_dataset(None, "lamellarity")
groups_all = np.array([p.meta["micrograph"] for p in full.particles])
rng = np.random.default_rng(0)
if N_MICROGRAPHS == "all":
    mics = set(np.unique(groups_all).tolist())
else:
    mics = set(rng.choice(np.unique(groups_all), int(N_MICROGRAPHS), replace=False).tolist())
ds = Dataset(full.problem, [p for p, g in zip(full.particles, groups_all) if g in mics])
ds.synthetic = True
print("synthetic built-in lamellarity subsample:", len(ds), "particles,", len(mics), "micrographs")
print(ds.class_counts())
folds = load_or_make_folds(ds, k=4, seed=0, group_by="micrograph")
fr = run_svm(ds, folds, ResultsDir(tempfile.mkdtemp() + "/r"), grid="coarse")
micrograph_of = {p.id: p.meta["micrograph"] for p in ds.particles}
oof = out_of_fold(fr, 3)
share_uncertain = np.bincount(oof["y_true"], minlength=3)[2] / len(oof["y_true"])
errors = {}


def score(kind, y_true, y_pred, probabilities, rates):
    truth = np.bincount(y_true, minlength=3) / len(y_true)
    for m, v in quantify.estimate_fractions(y_pred, probabilities, rates).items():
        errors.setdefault(kind, {}).setdefault(m, []).append(np.abs(v - truth))


for f in sorted({r.fold for r in fr}):
    rest = out_of_fold([r for r in fr if r.fold != f], 3)
    rates = quantify.cv_rates(rest["y_true"], rest["y_pred"], rest["probabilities"])
    unidentified = {m: quantify.unidentified_classes(rates[m], ds.problem.classes) for m in rates}
    found = int(((rest["y_true"] == 2) & (rest["y_pred"] == 2)).sum())
    print(
        f"fold {f}: rates cannot tell apart {unidentified}; uncertain predicted for {found} of "
        f"{int((rest['y_true'] == 2).sum())}; cond(M) acc {np.linalg.cond(rates['acc']):.0f}, "
        f"pacc {np.linalg.cond(rates['pacc']):.0f}"
    )
    test = oof["fold"] == f
    y_true, y_pred, probs = oof["y_true"][test], oof["y_pred"][test], oof["probabilities"][test]
    g = np.array([micrograph_of[i] for i, t in zip(oof["ids"], test) if t])
    for mg in np.unique(g):
        s = g == mg
        size = "micrograph, 8-19 particles" if s.sum() < 20 else "micrograph, 20-40 particles"
        for kind in ("micrograph", size):
            score(kind, y_true[s], y_pred[s], probs[s], rates)
    score("fold pooled", y_true, y_pred, probs, rates)
    pool = LabelledCollection(np.arange(len(y_true))[:, None], y_true, classes=[0, 1, 2])
    for share in SHIFT_SHARES:
        for _ in range(SHIFT_REPEATS):
            sample = pool.sampling(
                SHIFT_SIZE,
                1 - share - share_uncertain,
                share,
                share_uncertain,
                random_state=int(rng.integers(1 << 30)),
            )
            idx = sample.instances[:, 0]
            score("shifted, 100 particles", y_true[idx], y_pred[idx], probs[idx], rates)

print("mean absolute error of each class's fraction (unilamellar, multilamellar, uncertain)")
for kind, by_method in errors.items():
    print(f"{kind} ({len(by_method['raw'])} samples)")
    for m in quantify.METHODS:
        e = np.array(by_method[m])
        print(f"  {m:5s}", np.round(e.mean(axis=0), 3), "mean", round(float(e.mean()), 3))
    # Paired difference raw - adjusted of each sample's mean error over the
    # classes, with a 95 % percentile bootstrap interval over the samples
    # (scipy.stats.bootstrap, paired): > 0 means the adjustment is closer.
    raw = np.array(by_method["raw"]).mean(axis=1)
    for m in quantify.METHODS:
        if m == "raw" or len(raw) < 3:
            continue
        diff = raw - np.array(by_method[m]).mean(axis=1)
        ci = bootstrap(
            (diff,), np.mean, confidence_level=0.95, method="percentile", random_state=0
        ).confidence_interval
        print(
            f"  raw - {m}: {diff.mean():+.4f} [{ci.low:+.4f}, {ci.high:+.4f}] "
            f"({m} closer in {int((diff > 0).sum())} of {len(diff)} samples, "
            f"farther in {int((diff < 0).sum())})"
        )
print("seconds", round(time.time() - t0, 1))
