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
* the headline verdict (:func:`headline_verdict`): per class F1 and macro F1
  of each model minus the reference (the SVM), compared over the paired
  per-fold scores of all repeats x folds by the corrected resampled t-test
  of Nadeau & Bengio (2003), which counts the variance that comes from
  training on different data (the bootstrap and McNemar's test above hold
  the trained models fixed and ignore it; Dietterich 1998); the p-values of
  each comparison's per-class and macro F1 tests are Holm-adjusted (Holm
  1979). Accuracy (same t-test) and McNemar's test are secondary lines.

Bootstrap intervals are percentile intervals and are not corrected for the
number of classes and metrics looked at; the headline verdict is.

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
    format_signed,
    metric_arrays,
    summarise_folds,
    to_jsonable,
)
from liposome_bench.errors import ResultsError

#: Significance level of every verdict.
ALPHA = 0.05
#: The headline test, as tables and reports name it.
TTEST_NAME = "corrected resampled t-test (Nadeau & Bengio 2003)"
FIVE_BY_TWO_NAME = "5x2cv paired t-test (Dietterich 1998)"
CORRECTION_NAME = "Holm (1979)"
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
    y_true,
    y_pred,
    n_classes: int,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
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


def mcnemar_verdict(result, name_a: str, name_b: str, alpha: float = ALPHA) -> str:
    """Verdict on McNemar's test (a :class:`McNemarResult` or its dict):
    which model is more often right, or none."""
    if isinstance(result, dict):
        only_a, only_b, p = result["only_a"], result["only_b"], result["p_value"]
    else:
        only_a, only_b, p = result.only_a, result.only_b, result.p_value
    if p is None or p >= alpha or only_a == only_b:
        return NO_DIFFERENCE
    better = name_a if only_a > only_b else name_b
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
    y_true,
    pred_a,
    pred_b,
    classes,
    *,
    name_a: str = "A",
    name_b: str = "B",
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
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


def summarise_model(
    fold_results, classes, *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict:
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


def summarise_results(
    results,
    *,
    models=None,
    reference: str | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
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
    reference : str, optional
        The model every other one is compared with (callers pass the
        baseline, ``registry.baseline()``); None, or a model the folder
        lacks: the first finished model (of ``models`` when given).
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
    verdict = headline_verdict(
        {name: [folds] for name, folds in finished.items()},
        reference,
        classes,
        int(run["dataset"].get("n_particles") or len(ref)),
        k=k,
        mcnemar={c["model_b"]: c["mcnemar"] for c in comparisons},
    )
    return {
        "classes": classes,
        "reference": reference,
        "models": models,
        "verdict": verdict,
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
        pid: (int(t), int(p)) for r in fold_results for pid, t, p in zip(r.ids, r.y_true, r.y_pred)
    }


# Headline verdict: tests over fold scores -------------------------------------


def corrected_resampled_ttest(differences, n_train, n_test) -> dict:
    """Nadeau & Bengio's (2003) corrected resampled t-test on paired scores.

    The ``n`` differences d_j (model B's score minus model A's on the same
    training/test split j, over repeats x folds) are not independent: the
    training sets overlap, so the plain t-test's variance s^2 / n is far too
    small. The correction replaces 1/n by (1/n + n_test/n_train)::

        t = mean(d) / sqrt((1/n + n_test/n_train) * s^2),   s^2 = var(d, ddof=1)

    on n - 1 degrees of freedom, two-sided.

    Parameters
    ----------
    differences : array of float, shape (n,)
        Paired per-split score differences; NaN entries (a score undefined
        in that split) are left out.
    n_train, n_test : float
        Training and test set sizes of a split (their means, if they vary).

    Returns
    -------
    dict
        "mean", "t", "df", "p" and "n" (the differences used). With fewer
        than 2 differences t and p are NaN; with zero variance t is 0 and p
        1 when the mean is 0, else t is +-inf and p 0.
    """
    from scipy.stats import t as student_t

    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = int(d.size)
    mean = float(d.mean()) if n else float("nan")
    if n < 2:
        return {"mean": mean, "t": float("nan"), "df": max(n - 1, 0), "p": float("nan"), "n": n}
    # Identical differences have variance 0 exactly (not a rounding residue).
    variance = 0.0 if np.ptp(d) == 0 else float(d.var(ddof=1))
    scale = (1.0 / n + float(n_test) / float(n_train)) * variance
    if scale <= 0.0:
        t_value = 0.0 if mean == 0.0 else float(np.copysign(np.inf, mean))
        p = 1.0 if mean == 0.0 else 0.0
    else:
        t_value = mean / np.sqrt(scale)
        p = float(2.0 * student_t.sf(abs(t_value), n - 1))
    return {"mean": mean, "t": float(t_value), "df": n - 1, "p": min(p, 1.0), "n": n}


def corrected_interval(
    test: dict, n_train, n_test, differences, confidence: float = 0.95
) -> list[float]:
    """The confidence interval of the mean difference that matches
    :func:`corrected_resampled_ttest`: mean +- t_(df) * corrected SE."""
    from scipy.stats import t as student_t

    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return [float("nan"), float("nan")]
    se = np.sqrt((1.0 / d.size + float(n_test) / float(n_train)) * d.var(ddof=1))
    half = float(student_t.ppf(0.5 + confidence / 2.0, d.size - 1) * se)
    return [test["mean"] - half, test["mean"] + half]


def dietterich_5x2cv_ttest(differences) -> dict:
    """Dietterich's (1998) 5x2cv paired t-test.

    ``differences`` has shape (5, 2): repeat i of 2-fold cross-validation
    (each half trains on the other), fold j. With p_i the mean of repeat i's
    two differences and s_i^2 = sum_j (d_ij - p_i)^2::

        t = d_11 / sqrt(mean_i s_i^2),   5 degrees of freedom, two-sided.

    Returns
    -------
    dict
        "mean" (of all 10 differences, for display), "t", "df" (5), "p",
        "n" (10); t and p are NaN when a difference is undefined, and with
        zero variance t is 0 and p 1 when d_11 is 0, else t is +-inf and p 0.
    """
    from scipy.stats import t as student_t

    d = np.asarray(differences, dtype=np.float64)
    if d.shape != (5, 2):
        raise ValueError(f"5x2cv needs differences of shape (5, 2); got {d.shape}.")
    mean = float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")
    out = {"mean": mean, "t": float("nan"), "df": 5, "p": float("nan"), "n": 10}
    if not np.isfinite(d).all():
        return out
    variance = float(((d - d.mean(axis=1, keepdims=True)) ** 2).sum(axis=1).mean())
    if variance <= 0.0:
        out["t"] = 0.0 if d[0, 0] == 0 else float(np.copysign(np.inf, d[0, 0]))
        out["p"] = 1.0 if d[0, 0] == 0 else 0.0
        return out
    out["t"] = float(d[0, 0] / np.sqrt(variance))
    out["p"] = float(min(1.0, 2.0 * student_t.sf(abs(out["t"]), 5)))
    return out


def _detectable(sd: float, n: int, n_train, n_test, level: float) -> float:
    """t_(1 - level/2, n - 1) times the corrected standard error of n paired
    differences of standard deviation ``sd``."""
    from scipy.stats import t as student_t

    se = np.sqrt((1.0 / n + float(n_test) / float(n_train))) * sd
    return float(student_t.ppf(1.0 - level / 2.0, n - 1) * se)


def detectable_difference(differences, n_train, n_test, level: float) -> float | None:
    """The smallest mean difference the corrected resampled t-test could call
    significant at ``level`` (two-sided): t_(1 - level/2, n - 1) times the
    corrected standard error, from the observed variance of ``differences``.

    Returns None with fewer than 2 finite differences.
    """
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return None
    return _detectable(float(d.std(ddof=1)), int(d.size), n_train, n_test, level)


def repeats_suggestion(
    comparison: dict, repeats: int, k: int, total_s: float | None, alpha: float = ALPHA
) -> dict | None:
    """What ``--repeats R`` (R = 3, or 2 more than now) would detect on macro
    F1, at its Holm rank, with this run's spread of the paired differences
    (``sd``), and about how long it would take from this run's own wall time
    (repeats cost alike). The overlap term n_test / n_train does not shrink
    with repeats, so the gain flattens."""
    entry = comparison.get("macro_f1") or {}
    if entry.get("sd") is None or not entry.get("holm_rank"):
        return None
    target = 3 if repeats < 3 else repeats + 2
    m = len(comparison.get("per_class", {})) + 1
    level = alpha / (m - entry["holm_rank"] + 1)
    detect = _detectable(
        entry["sd"], target * k, comparison["n_train"], comparison["n_test"], level
    )
    return {
        "repeats": target,
        "detectable": detect,
        "estimated_s": None if not total_s else float(total_s * target / max(repeats, 1)),
    }


def verdict_text(entry: dict) -> str:
    """An entry's verdict as display and report print it: on a "no
    significant difference" row, also the smallest difference this run
    could have detected at its Holm rank."""
    said = entry["verdict"]
    if said == NO_DIFFERENCE and entry.get("detectable") is not None:
        said += f"; cannot tell differences smaller than ±{entry['detectable']:.2f}"
    return said


def suggestion_text(suggestion: dict | None) -> str | None:
    """:func:`repeats_suggestion` as one sentence, or None."""
    if not suggestion:
        return None
    when = ""
    if suggestion.get("estimated_s"):
        when = f" would take about {suggestion['estimated_s'] / 60:.0f} min here and"
    return (
        f"`--repeats {suggestion['repeats']}`{when} detect macro F1 differences of about "
        f"±{suggestion['detectable']:.2f} (this run's variance; the training-set "
        "overlap term does not shrink with repeats)."
    )


def holm(p_values) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values, in input order.

    The m p-values sorted ascending, p_(1) <= ... <= p_(m), are adjusted to
    max over j <= i of min(1, (m - j + 1) p_(j)); a hypothesis is rejected at
    level alpha when its adjusted p-value is below alpha. This controls the
    chance of any false "significant" among the m at alpha. NaN p-values are
    not part of the family and stay NaN.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adjusted)
    return out


def fold_scores(fold_results, n_classes: int) -> dict:
    """Per-fold scores of one model's folds: "f1" (k, K), "macro_f1",
    "accuracy" and "n_test" (k,), in the order given."""
    stack = (
        np.stack([confusion_counts(r.y_true, r.y_pred, n_classes) for r in fold_results])
        if fold_results
        else np.zeros((0, n_classes, n_classes))
    )
    values = metric_arrays(stack)
    return {
        "f1": values["f1"],
        "macro_f1": values["macro_f1"],
        "accuracy": values["accuracy"],
        "n_test": np.array([len(r.y_true) for r in fold_results], dtype=np.float64),
    }


def verdict_word(mean, p_adjusted, name_a, name_b, alpha=ALPHA) -> str:
    """The verdict on a mean difference B - A with its (adjusted) p-value:
    "<name_b> better", "<name_a> better" or "no significant difference"
    (also when p is None or NaN, or the mean is 0)."""
    if p_adjusted is None or not (np.isfinite(p_adjusted) and p_adjusted < alpha) or mean == 0:
        return NO_DIFFERENCE
    return f"{name_b} better" if mean > 0 else f"{name_a} better"


def compare_fold_scores(
    runs_a,
    runs_b,
    classes,
    n_particles: int,
    *,
    n_train: float | None = None,
    name_a="A",
    name_b="B",
    alpha: float = ALPHA,
    test: str = "corrected",
) -> dict:
    """Model B against model A over paired fold scores (the headline verdict).

    The one statistics path of the benchmark, the sweep and the learning
    curve. The t-test's sizes are measured: the test size is the mean test
    fold of the paired folds (their predictions), the training size
    ``n_particles`` minus it unless ``n_train`` is given.

    Parameters
    ----------
    runs_a, runs_b : list of list of FoldResult
        Per repeat, each model's folds, in fold order (the same folds).
    classes : sequence of str
    n_particles : int
        Particles of the dataset (a fold's training size is this minus its
        test fold).
    n_train : float, optional
        The measured mean training size, where a fold does not train on
        every particle outside its test fold (a learning-curve point trains
        on a subsample).
    name_a, name_b : str
    alpha : float
    test : {"corrected", "5x2cv"}
        The corrected resampled t-test, or Dietterich's 5x2cv test (needs
        exactly 5 repeats of 2 folds; its entries have no interval).

    Returns
    -------
    dict (JSON-ready)
        "model_a", "model_b", "n_scores", "n_train", "n_test" (mean sizes),
        "per_class": class -> entry, "macro_f1": entry (both Holm-adjusted
        together), "accuracy": entry (secondary, unadjusted: "p_holm" None).
        An entry: "difference" (mean of B - A), "ci" (95 % corrected), "t",
        "df", "p", "p_holm", "n", "significant", "verdict".
    """
    k = len(classes)
    diffs = {"f1": [], "macro_f1": [], "accuracy": []}
    n_test = []
    for folds_a, folds_b in zip(runs_a, runs_b):
        by_fold_b = {r.fold: r for r in folds_b}
        paired = [(r, by_fold_b[r.fold]) for r in folds_a if r.fold in by_fold_b]
        sa = fold_scores([a for a, _ in paired], k)
        sb = fold_scores([b for _, b in paired], k)
        for key in diffs:
            diffs[key].append(sb[key] - sa[key])
        n_test.append(sa["n_test"])
    f1 = np.concatenate(diffs["f1"], axis=0) if diffs["f1"] else np.zeros((0, k))
    macro = np.concatenate(diffs["macro_f1"]) if diffs["macro_f1"] else np.zeros(0)
    accuracy = np.concatenate(diffs["accuracy"]) if diffs["accuracy"] else np.zeros(0)
    sizes = np.concatenate(n_test) if n_test else np.zeros(0)
    mean_test = float(sizes.mean()) if sizes.size else float("nan")
    mean_train = float(n_particles - mean_test) if n_train is None else float(n_train)

    def entry(d):
        if test == "5x2cv":
            out = dietterich_5x2cv_ttest(np.asarray(d).reshape(5, 2))
            out["ci"] = [None, None]
            return out
        out = corrected_resampled_ttest(d, mean_train, mean_test)
        out["ci"] = corrected_interval(out, mean_train, mean_test, d)
        return out

    per_class = {cls: entry(f1[:, j]) for j, cls in enumerate(classes)}
    macro_entry = entry(macro)
    family = [*per_class.values(), macro_entry]
    columns = [*(f1[:, j] for j in range(k)), macro]
    p_values = [e["p"] for e in family]
    order = np.argsort([p if np.isfinite(p) else np.inf for p in p_values], kind="stable")
    ranks = np.empty(len(family), dtype=int)
    ranks[order] = np.arange(len(family))
    for e, adjusted, d, rank in zip(family, holm(p_values), columns, ranks):
        e["p_holm"] = float(adjusted)
        e["significant"] = bool(np.isfinite(adjusted) and adjusted < alpha and e["mean"] != 0)
        e["verdict"] = verdict_word(e["mean"], adjusted, name_a, name_b, alpha)
        if test == "corrected":
            # The interval printed beside the Holm verdict: at the level
            # alpha * p / p_holm it excludes 0 exactly when p_holm < alpha.
            e["ci_unadjusted"] = e["ci"]
            level = (
                alpha * e["p"] / adjusted
                if np.isfinite(adjusted) and adjusted > 0 and e["p"] > 0
                else alpha
            )
            e["ci"] = corrected_interval(e, mean_train, mean_test, d, 1.0 - level)
            e["ci_level"] = float(1.0 - level)
            e["holm_rank"] = int(rank) + 1
            finite = np.asarray(d, dtype=np.float64)[np.isfinite(d)]
            e["sd"] = float(finite.std(ddof=1)) if finite.size >= 2 else None
            e["detectable"] = (
                None
                if e["sd"] is None
                else _detectable(
                    e["sd"],
                    int(finite.size),
                    mean_train,
                    mean_test,
                    alpha / (len(family) - int(rank)),
                )
            )
    acc = entry(accuracy)
    acc["p_holm"] = None
    acc["significant"] = bool(np.isfinite(acc["p"]) and acc["p"] < alpha and acc["mean"] != 0)
    acc["verdict"] = verdict_word(acc["mean"], acc["p"], name_a, name_b, alpha)
    for e in [*family, acc]:
        e["difference"] = e.pop("mean")
    return to_jsonable(
        {
            "model_a": name_a,
            "model_b": name_b,
            "n_scores": int(len(macro)),
            "n_train": mean_train,
            "n_test": mean_test,
            "per_class": per_class,
            "macro_f1": macro_entry,
            "accuracy": acc,
        }
    )


def headline_verdict(
    runs: dict,
    reference: str,
    classes,
    n_particles: int,
    *,
    k: int,
    mcnemar: dict | None = None,
    alpha: float = ALPHA,
) -> dict:
    """The headline verdict of every model against ``reference``.

    Parameters
    ----------
    runs : dict
        model -> list (one per repeat) of its finished folds.
    reference : str
        The model every other one is compared with (the SVM).
    classes : sequence of str
    n_particles : int
    k : int
        Folds per repeat.
    mcnemar : dict, optional
        model -> McNemar result (dict) against the reference on the first
        repeat, shown as a secondary line.
    alpha : float

    Returns
    -------
    dict (JSON-ready)
        "test", "correction", "alpha", "repeats", "k", "n_scores", "note"
        (what the training variance rests on) and "comparisons" (a list of
        :func:`compare_fold_scores` results, each with "mcnemar").
    """
    repeats = len(runs.get(reference, []))
    # 5 repeats of 2 folds is Dietterich's 5x2cv design: use his test.
    five_by_two = (
        repeats == 5
        and k == 2
        and all(len(folds) == 2 for model_runs in runs.values() for folds in model_runs)
    )
    comparisons = []
    for name, model_runs in runs.items():
        if name == reference:
            continue
        comp = compare_fold_scores(
            runs[reference],
            model_runs,
            classes,
            n_particles,
            name_a=reference,
            name_b=name,
            alpha=alpha,
            test="5x2cv" if five_by_two else "corrected",
        )
        comp["mcnemar"] = (mcnemar or {}).get(name)
        comparisons.append(comp)
    if five_by_two:
        note = (
            "5 repeats x 2 folds: Dietterich's 5x2cv test (the first fold's difference "
            "over the variance within each repeat, 5 degrees of freedom); no interval."
        )
    elif repeats <= 1:
        note = (
            f"One repeat: the t-test's training variance comes from the {k} folds "
            "only; --repeats 3 or more gives it more fold scores."
        )
    else:
        note = (
            f"{repeats} repeats x {k} folds = {repeats * k} paired fold scores per "
            "test; the variance correction counts the overlap of their training sets."
        )
    return {
        "test": FIVE_BY_TWO_NAME if five_by_two else TTEST_NAME,
        "correction": (
            f"{CORRECTION_NAME} across the per-class F1 and macro F1 tests of each comparison"
        ),
        "alpha": alpha,
        "repeats": repeats,
        "k": k,
        "n_scores": repeats * k,
        "note": note,
        "comparisons": comparisons,
    }


def significant_cells(verdict: dict) -> set:
    """(model, class or "overall", metric) of every CNN score that differs
    from the reference's significantly after Holm's adjustment."""
    marked = set()
    for comp in verdict.get("comparisons", []):
        for cls, e in comp["per_class"].items():
            if e.get("significant"):
                marked.add((comp["model_b"], cls, "f1"))
        if comp["macro_f1"].get("significant"):
            marked.add((comp["model_b"], "overall", "macro_f1"))
    return marked


# The verdict as rows: display and report render these ------------------------

#: The Holm p cell of a secondary row, outside the adjusted family.
NOT_ADJUSTED = "not adjusted"


@dataclass(frozen=True)
class VerdictRow:
    """One row of a comparison's verdict table (:func:`verdict_rows`).

    ``display.verdict_table`` (a rich table) and the report's verdict
    section (markdown) both render these rows; only the formatting of the
    p-values and of the headline row differs.

    ``difference`` and ``interval`` are the texts shown: the mean
    difference B - A, signed, with " *" when it is significant after Holm's
    adjustment (McNemar's row: the counts "only B vs only A"), and the
    Holm-matched interval "[low, high]" (empty for McNemar). ``p_holm`` is
    None where the row is outside the Holm family (``adjusted`` False).
    ``verdict`` is the verdict as printed: on a "no significant difference"
    row of the family it names the smallest difference the run could detect
    (``detectable``; None elsewhere). ``headline`` marks macro F1.
    """

    label: str
    difference: str
    interval: str
    p: float | None
    p_holm: float | None
    adjusted: bool
    verdict: str
    significant: bool
    detectable: float | None = None
    headline: bool = False


def _entry_row(label: str, e: dict, *, adjusted: bool = True, headline: bool = False):
    ci = e.get("ci") or [None, None]
    said = verdict_text(e) if adjusted else e["verdict"]
    return VerdictRow(
        label=label,
        difference=format_signed(e.get("difference")) + (" *" if e.get("significant") else ""),
        interval=f"[{format_signed(ci[0])}, {format_signed(ci[1])}]",
        p=e.get("p"),
        p_holm=e.get("p_holm") if adjusted else None,
        adjusted=adjusted,
        verdict=said,
        significant=bool(e.get("significant")),
        detectable=e.get("detectable") if said != e["verdict"] else None,
        headline=headline,
    )


def verdict_rows(verdict: dict, comparison: dict, classes, prevalence=None) -> list[VerdictRow]:
    """The rows of one comparison's headline verdict.

    Parameters
    ----------
    verdict : dict
        :func:`headline_verdict`'s result (for its ``alpha``).
    comparison : dict
        One of its ``comparisons`` (:func:`compare_fold_scores`, with
        ``mcnemar``).
    classes : sequence of str
    prevalence : dict, optional
        The matching comparison of ``quantify.prevalence_error`` (its
        ``mean`` entry becomes a secondary row).

    Returns
    -------
    list of VerdictRow
        F1 per class and macro F1 (Holm-adjusted together), then the
        secondary rows: accuracy, McNemar (when the comparison has it) and
        the fraction MAE (with ``prevalence``).
    """
    rows = [_entry_row(f"F1 {cls}", comparison["per_class"][cls]) for cls in classes]
    rows.append(_entry_row("macro F1", comparison["macro_f1"], headline=True))
    rows.append(_entry_row("accuracy (secondary)", comparison["accuracy"], adjusted=False))
    test = comparison.get("mcnemar")
    if test:
        said = mcnemar_verdict(
            test, comparison["model_a"], comparison["model_b"], verdict.get("alpha", ALPHA)
        )
        rows.append(
            VerdictRow(
                label="McNemar (secondary)",
                difference=f"{test['only_b']} vs {test['only_a']}",
                interval="",
                p=test["p_value"],
                p_holm=None,
                adjusted=False,
                verdict=said,
                significant=said != NO_DIFFERENCE,
            )
        )
    if prevalence:
        rows.append(_entry_row("fraction MAE (secondary)", prevalence["mean"], adjusted=False))
    return rows
