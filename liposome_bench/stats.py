"""How sure are we: bootstrap intervals and paired tests over particles.

The thesis (section 9) compares the SVM and the CNN by per-class metrics
averaged over 5 folds, without saying how much of a difference is noise. The
uncertain class had 84 particles in the thesis's data, a dozen or so per test
fold, so one particle more or less moves its TPR by several points. This
module adds the missing uncertainty:

* per class and model, the mean and standard deviation over folds (from
  :func:`liposome_bench.metrics.summarise_folds`) and a bootstrap 95 %
  confidence interval over particles: the out-of-fold predictions of all
  folds are resampled with replacement, within each true class (so every
  class keeps its size and TPR stays defined), ``n_resamples`` times;
* for two models on the same particles, McNemar's test on per-particle
  correctness (exact binomial when there are fewer than
  ``EXACT_BELOW`` discordant particles, the continuity-corrected chi-square
  otherwise) and the paired bootstrap interval of the per-class F1
  difference (both models resampled with the same particles);
* a verdict: "no significant difference" where the interval includes 0 or
  McNemar's p >= ``ALPHA``.

Intervals are percentile intervals and are not corrected for the number of
classes and metrics looked at.

Everything is vectorised over resamples: a resample is reduced to its
confusion matrix with one ``bincount``, and the metrics are computed on a
stack of confusion matrices.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np

# Metric definitions are liposome_bench.metrics's; ``metric_arrays`` computes
# them on a stack of confusion matrices, so 1000 resamples cost one bincount.
from liposome_bench.metrics import (
    CLASS_METRICS,
    OVERALL_METRICS,
    metric_arrays,
    summarise_folds,
    to_jsonable,
)

#: Significance level of every verdict.
ALPHA = 0.05
#: McNemar's test is exact (binomial) below this many discordant particles.
EXACT_BELOW = 25
NO_DIFFERENCE = "no significant difference"

_CHUNK = 200  # resamples per vectorised step: bounds memory to ~200 * n ints


# Confusion matrices and metrics on stacks of them ----------------------------

def confusion_counts(y_true, y_pred, n_classes: int, resamples=None) -> np.ndarray:
    """Confusion matrices (rows true, columns predicted), one per resample.

    Parameters
    ----------
    y_true, y_pred : array of int, shape (n,)
        Class indices.
    n_classes : int
    resamples : array of int, shape (B, m), optional
        Each row indexes the particles of one resample. Without it, the
        confusion matrix of the data itself is returned.

    Returns
    -------
    array of int, shape (K, K) without ``resamples``, else (B, K, K)
    """
    k = n_classes
    codes = np.asarray(y_true, dtype=np.int64) * k + np.asarray(y_pred, dtype=np.int64)
    if resamples is None:
        return np.bincount(codes, minlength=k * k).reshape(k, k)
    resamples = np.asarray(resamples)
    b = resamples.shape[0]
    offsets = (np.arange(b, dtype=np.int64) * k * k)[:, None]
    flat = (codes[resamples] + offsets).ravel()
    return np.bincount(flat, minlength=b * k * k).reshape(b, k, k)


# Resampling ------------------------------------------------------------------

def bootstrap_indices(y_true, n_resamples: int, rng) -> np.ndarray:
    """Resamples of particle indices, drawn with replacement within each true
    class so every resample keeps the class sizes of the data.

    Returns
    -------
    array of int, shape (n_resamples, n)
    """
    y_true = np.asarray(y_true)
    parts = []
    for c in np.unique(y_true):
        members = np.flatnonzero(y_true == c)
        parts.append(members[rng.integers(0, len(members), size=(n_resamples, len(members)))])
    if not parts:
        return np.zeros((n_resamples, 0), dtype=np.int64)
    return np.concatenate(parts, axis=1)


def _percentile_interval(samples: np.ndarray, confidence: float) -> np.ndarray:
    """(low, high) over axis 0, ignoring NaN resamples; shape (..., 2)."""
    tail = (1.0 - confidence) / 2.0 * 100.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(samples, [tail, 100.0 - tail], axis=0)
    return np.stack([low, high], axis=-1)


def _resampled_metrics(y_true, preds, n_classes, n_resamples, seed):
    """Metrics of every model in ``preds`` on the same bootstrap resamples:
    a list (one per model) of dicts name -> array (B, ...)."""
    rng = np.random.default_rng(seed)
    collected = [dict() for _ in preds]
    done = 0
    while done < n_resamples:
        b = min(_CHUNK, n_resamples - done)
        idx = bootstrap_indices(y_true, b, rng)
        for store, y_pred in zip(collected, preds):
            for name, values in metric_arrays(
                confusion_counts(y_true, y_pred, n_classes, idx)
            ).items():
                store.setdefault(name, []).append(values)
        done += b
    return [{name: np.concatenate(v, axis=0) for name, v in store.items()} for store in collected]


def bootstrap_metrics(
    y_true, y_pred, n_classes: int, *, n_resamples: int = 1000,
    confidence: float = 0.95, seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """Point estimates and bootstrap intervals of every metric over particles.

    Parameters
    ----------
    y_true, y_pred : array of int, shape (n,)
        Out-of-fold true and predicted class indices of all particles.
    n_classes : int
    n_resamples : int
        Bootstrap resamples (stratified by true class).
    confidence : float
        Coverage of the percentile interval.
    seed : int
        Seed of the resampling.

    Returns
    -------
    dict
        metric name -> {"estimate": array, "ci": array (..., 2)}: per-class
        metrics have shape (K,) and (K, 2), overall metrics () and (2,).
    """
    point = metric_arrays(confusion_counts(y_true, y_pred, n_classes))
    (resampled,) = _resampled_metrics(y_true, [y_pred], n_classes, n_resamples, seed)
    return {
        name: {"estimate": point[name], "ci": _percentile_interval(resampled[name], confidence)}
        for name in point
    }


# Paired comparison -----------------------------------------------------------

@dataclass
class McNemarResult:
    """McNemar's test on paired per-particle correctness of models A and B.

    ``only_a``: particles A got right and B wrong; ``only_b`` the reverse.
    """

    only_a: int
    only_b: int
    statistic: float
    p_value: float
    method: str


def mcnemar_test(correct_a, correct_b) -> McNemarResult:
    """McNemar's test: do A and B err on the same particles equally often?

    Exact two-sided binomial test on the discordant pairs when there are
    fewer than ``EXACT_BELOW`` of them, else the chi-square statistic with
    continuity correction, (|b - c| - 1)^2 / (b + c), on 1 degree of freedom.

    Parameters
    ----------
    correct_a, correct_b : array of bool, shape (n,)
        Whether each model classified each particle correctly (same order).

    Returns
    -------
    McNemarResult
    """
    from scipy.stats import binomtest, chi2

    correct_a = np.asarray(correct_a, dtype=bool)
    correct_b = np.asarray(correct_b, dtype=bool)
    b = int(np.count_nonzero(correct_a & ~correct_b))
    c = int(np.count_nonzero(~correct_a & correct_b))
    n = b + c
    if n == 0:
        return McNemarResult(b, c, 0.0, 1.0, "exact")
    if n < EXACT_BELOW:
        p = binomtest(b, n, 0.5, alternative="two-sided").pvalue
        return McNemarResult(b, c, float(min(b, c)), float(min(p, 1.0)), "exact")
    statistic = (abs(b - c) - 1.0) ** 2 / n
    return McNemarResult(b, c, float(statistic), float(chi2.sf(statistic, 1)), "chi2-cc")


def difference_verdict(low: float, high: float, name_a: str, name_b: str) -> str:
    """Verdict on an interval of (B - A): which is better, or no difference."""
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0.0 <= high:
        return NO_DIFFERENCE
    return f"{name_b} better" if low > 0 else f"{name_a} better"


def mcnemar_verdict(result: McNemarResult, name_a: str, name_b: str) -> str:
    """Verdict on McNemar's test: which model is more often right, or none."""
    if result.p_value >= ALPHA or result.only_a == result.only_b:
        return NO_DIFFERENCE
    better = name_a if result.only_a > result.only_b else name_b
    return f"{better} more often correct"


@dataclass
class PairedComparison:
    """Model B against model A on the same particles."""

    model_a: str
    model_b: str
    n_particles: int
    mcnemar: McNemarResult
    verdict: str
    #: class -> {"difference": F1_B - F1_A, "ci": [low, high], "verdict": str}
    f1_difference: dict

    def to_dict(self) -> dict:
        return to_jsonable(asdict(self))


def compare_models(
    y_true, pred_a, pred_b, classes, *, name_a: str = "A", name_b: str = "B",
    n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
) -> PairedComparison:
    """Compare two models' predictions on the same particles.

    Parameters
    ----------
    y_true, pred_a, pred_b : array of int, shape (n,)
        True classes and both models' predictions, aligned particle by particle.
    classes : sequence of str
    name_a, name_b : str
        Model names used in the verdicts.
    n_resamples, confidence, seed
        As in :func:`bootstrap_metrics`; A and B are resampled together.

    Returns
    -------
    PairedComparison
        With McNemar's test on per-particle correctness and, per class, the
        F1 difference (B minus A) with its paired bootstrap interval.
    """
    y_true = np.asarray(y_true)
    pred_a = np.asarray(pred_a)
    pred_b = np.asarray(pred_b)
    k = len(classes)
    test = mcnemar_test(pred_a == y_true, pred_b == y_true)
    f1_a = metric_arrays(confusion_counts(y_true, pred_a, k))["f1"]
    f1_b = metric_arrays(confusion_counts(y_true, pred_b, k))["f1"]
    res_a, res_b = _resampled_metrics(y_true, [pred_a, pred_b], k, n_resamples, seed)
    ci = _percentile_interval(res_b["f1"] - res_a["f1"], confidence)
    diffs = {}
    for j, cls in enumerate(classes):
        low, high = float(ci[j, 0]), float(ci[j, 1])
        diffs[cls] = {
            "difference": float(f1_b[j] - f1_a[j]),
            "ci": [low, high],
            "verdict": difference_verdict(low, high, name_a, name_b),
        }
    return PairedComparison(
        name_a, name_b, int(len(y_true)), test, mcnemar_verdict(test, name_a, name_b), diffs
    )


# Whole results folders -------------------------------------------------------

def summarise_model(fold_results, classes, *, n_resamples: int = 1000,
                    confidence: float = 0.95, seed: int = 0) -> dict:
    """Everything the tables and the report show about one model.

    Parameters
    ----------
    fold_results : list of FoldResult
        The model's finished folds.
    classes : sequence of str
    n_resamples, confidence, seed
        Bootstrap settings.

    Returns
    -------
    dict (JSON-ready; undefined values are None)
        ``per_class``: class -> metric -> {"mean", "std", "n_folds" (over
        folds where defined, from :func:`metrics.summarise_folds`),
        "pooled" (all out-of-fold particles together), "ci" [low, high]
        (bootstrap over particles)}; ``overall``: metric -> the same;
        ``confusion``: fold-averaged raw and row-normalised matrices and
        the summed counts; ``support``: particles per class; ``folds``.
    """
    classes = [str(c) for c in classes]
    over_folds = summarise_folds(fold_results, classes)
    y_true = np.concatenate([np.asarray(r.y_true) for r in fold_results])
    y_pred = np.concatenate([np.asarray(r.y_pred) for r in fold_results])
    boot = bootstrap_metrics(
        y_true, y_pred, len(classes), n_resamples=n_resamples, confidence=confidence, seed=seed
    )
    per_class = {
        cls: {
            name: _entry(
                over_folds.per_class[cls][name], boot[name]["estimate"][j], boot[name]["ci"][j]
            )
            for name in CLASS_METRICS
        }
        for j, cls in enumerate(classes)
    }
    overall = {
        name: _entry(over_folds.overall[name], boot[name]["estimate"], boot[name]["ci"])
        for name in OVERALL_METRICS
    }
    return to_jsonable(
        {
            "folds": [int(f) for f in over_folds.folds],
            "n_particles": int(len(y_true)),
            "support": over_folds.support,
            "per_class": per_class,
            "overall": overall,
            "confusion": {
                "mean": over_folds.confusion_mean,
                "normalised_mean": over_folds.confusion_normalised_mean,
                "sum": over_folds.confusion_sum,
            },
        }
    )


def _entry(mean_std, pooled, ci) -> dict:
    return {
        "mean": mean_std.mean,
        "std": mean_std.std,
        "n_folds": mean_std.n,
        "pooled": float(pooled),
        "ci": [float(ci[0]), float(ci[1])],
    }


def summarise_results(results, *, models=None, reference: str = "svm",
                      n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Summaries of every model in a results folder, and paired comparisons
    of the reference model against each other model.

    Only models with every fold finished are summarised and compared; the
    others are listed under ``incomplete`` with the folds they have.

    Parameters
    ----------
    results : results.ResultsDir
    models : sequence of str, optional
        The models to summarise, in this order; default every model of the
        folder.
    reference : str
        The model every other one is compared with (the SVM baseline); if
        the folder has no such model, the first model is the reference.
    n_resamples, confidence, seed
        Bootstrap settings, shared by every interval.

    Returns
    -------
    dict (JSON-ready)
        ``classes``, ``models`` (name -> :func:`summarise_model` plus
        ``score_kind``, ``device``, per-fold ``params`` and ``timings``),
        ``comparisons`` (list of :meth:`PairedComparison.to_dict`),
        ``incomplete`` (name -> finished folds) and ``bootstrap`` settings.

    Raises
    ------
    ResultsError
        If the folder is not a results folder or holds no finished model.
    """
    from liposome_bench.errors import ResultsError

    run = results.read_run()
    if not run:
        raise ResultsError(
            f"{results.path} is not a results folder (no run.json). "
            "Pass the --out folder of a benchmark, svm or cnn run."
        )
    classes = list(run["dataset"]["classes"])
    k = run["folds"]["k"]
    finished, incomplete = {}, {}
    for name in models if models is not None else results.model_names():
        folds = results.load_model(name)
        if len(folds) == k:
            finished[name] = folds
        else:
            incomplete[name] = [r.fold for r in folds]
    if not finished:
        raise ResultsError(
            f"{results.path} holds no model with all {k} folds finished "
            f"({', '.join(f'{m}: {len(f)}' for m, f in incomplete.items()) or 'no models'}). "
            "Re-run the same command with the same --out to finish them."
        )
    models = {}
    for name, folds in finished.items():
        summary = summarise_model(
            folds, classes, n_resamples=n_resamples, confidence=confidence, seed=seed
        )
        summary["score_kind"] = folds[0].score_kind
        summary["device"] = sorted({r.device for r in folds})
        summary["params"] = [r.params for r in folds]
        summary["timings"] = [r.timings for r in folds]
        models[name] = to_jsonable(summary)
    if reference not in finished:
        reference = next(iter(finished))
    comparisons = []
    ref = _predictions_by_id(finished[reference])
    for name, folds in finished.items():
        if name == reference:
            continue
        other = _predictions_by_id(folds)
        common = sorted(set(ref) & set(other))
        y_true = np.array([ref[i][0] for i in common], dtype=np.int64)
        comparisons.append(
            compare_models(
                y_true,
                np.array([ref[i][1] for i in common], dtype=np.int64),
                np.array([other[i][1] for i in common], dtype=np.int64),
                classes,
                name_a=reference,
                name_b=name,
                n_resamples=n_resamples,
                confidence=confidence,
                seed=seed,
            ).to_dict()
        )
    return {
        "classes": classes,
        "reference": reference,
        "models": models,
        "comparisons": comparisons,
        "incomplete": incomplete,
        "bootstrap": {
            "n_resamples": n_resamples,
            "confidence": confidence,
            "seed": seed,
            "stratified_by": "true class",
            "method": "percentile",
        },
    }


def _predictions_by_id(fold_results) -> dict:
    return {
        pid: (int(t), int(p))
        for r in fold_results
        for pid, t, p in zip(r.ids, r.y_true, r.y_pred)
    }


# Comparisons over repeated cross-validation folds -----------------------------
# Minimal implementations with the signatures agreed for issue 8 (TEAM.md),
# added by the sweep (issue 15) because issue 8's were not on main yet; the
# merge keeps issue 8's versions.

def corrected_resampled_ttest(differences, n_train, n_test) -> dict:
    """Nadeau & Bengio's (2003) corrected resampled t-test.

    The folds of a cross-validation share training particles, so their score
    differences are correlated and the plain paired t-test is too liberal;
    the variance is inflated by ``1/n + n_test/n_train``.

    Parameters
    ----------
    differences : array of float, shape (n,)
        Paired per-fold score differences (B - A) over repeats x folds;
        NaN entries (undefined scores) are dropped.
    n_train, n_test : float
        Particles in a training and in a test fold (means over folds).

    Returns
    -------
    dict
        ``mean`` (mean difference), ``t``, ``df`` (n - 1), ``p`` (two-sided)
        and ``n`` (differences used); ``t`` and ``p`` are NaN with fewer than
        2 differences.
    """
    from scipy.stats import t as t_dist

    d = np.asarray(differences, dtype=np.float64)
    d = d[~np.isnan(d)]
    n = int(d.size)
    mean = float(d.mean()) if n else float("nan")
    if n < 2:
        return {"mean": mean, "t": float("nan"), "df": max(n - 1, 0), "p": float("nan"),
                "n": n}
    variance = float(d.var(ddof=1)) * (1.0 / n + float(n_test) / float(n_train))
    if variance == 0.0:
        t = 0.0 if mean == 0.0 else float(np.copysign(np.inf, mean))
    else:
        t = mean / np.sqrt(variance)
    p = float(2.0 * t_dist.sf(abs(t), n - 1))
    return {"mean": mean, "t": float(t), "df": n - 1, "p": p, "n": n}


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of ``p_values`` (family-wise error rate),
    returned in input order; NaN stays NaN and does not count."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    if valid.size == 0:
        return adjusted
    order = valid[np.argsort(p[valid], kind="stable")]
    m = order.size
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted
