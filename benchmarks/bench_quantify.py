"""Adjusted vs raw class fractions per micrograph on a subsample of the built-in
lamellarity set (synthetic), SVM cross-validated on grouped folds; the rates used
for a test fold's micrographs come only from the other folds' out-of-fold predictions.

Run: PYTHONPATH=. python benchmarks/bench_quantify.py (about 70 s on 2 cores; the
first run generates the built-in set, a minute or two more). Results: docs/deploy.md.
"""

import tempfile
import time

import numpy as np

from liposome_bench import quantify
from liposome_bench.abstention import out_of_fold
from liposome_bench.dataset import Dataset
from liposome_bench.folds import load_or_make_folds
from liposome_bench.results import ResultsDir
from liposome_bench.sources import resolve_dataset
from liposome_bench.svm import run_svm

t0 = time.time()
full = resolve_dataset(None, "lamellarity")
groups_all = np.array([p.meta["micrograph"] for p in full.particles])
rng = np.random.default_rng(0)
mics = rng.choice(np.unique(groups_all), 40, replace=False)
keep = [p for p, g in zip(full.particles, groups_all) if g in set(mics)]
ds = Dataset(full.problem, keep)
ds.synthetic = True
print("particles", len(ds), "micrographs", len(mics), ds.class_counts())
folds = load_or_make_folds(ds, k=4, seed=0, group_by="micrograph")
res = ResultsDir(tempfile.mkdtemp() + "/r")
fr = run_svm(ds, folds, res, grid="coarse")
oof = out_of_fold(fr, 3)
ids_index = {p.id: i for i, p in enumerate(ds.particles)}
g = np.array([ds.particles[ids_index[i]].meta["micrograph"] for i in oof["ids"]])
err = {m: [] for m in quantify.METHODS}
for f in np.unique(oof["fold"]):
    tr, te = oof["fold"] != f, oof["fold"] == f
    rates = quantify.cv_rates(oof["y_true"][tr], oof["y_pred"][tr], oof["probabilities"][tr])
    for mg in np.unique(g[te]):
        s = te & (g == mg)
        truth = np.bincount(oof["y_true"][s], minlength=3) / s.sum()
        for m, v in quantify.estimate_fractions(
            oof["y_pred"][s], oof["probabilities"][s], rates
        ).items():
            err[m].append(np.abs(v - truth))
for m in quantify.METHODS:
    e = np.array(err[m])
    print(
        m,
        "MAE per class",
        np.round(e.mean(axis=0), 4),
        "mean",
        round(float(e.mean()), 4),
        "groups",
        len(e),
    )
print("seconds", round(time.time() - t0, 1))
