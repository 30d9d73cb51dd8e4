"""Class fractions per sample (micrograph, session, grid), corrected for the
classifier's errors (issue 22).

A lab reports the share of each class in a sample, not an F1. Counting the
predictions ("classify and count", raw) is biased whenever the classifier
errs: a model that calls 5 % of unilamellar particles "uncertain" inflates
the uncertain share by that much. Two corrections use the rates that
cross-validation measured (the bundle's out-of-fold predictions):

* ``acc``: adjusted classify and count (Forman 2008): solve q = M p for the
  true fractions p, with q the raw fractions and M[i, j] = P(predicted i |
  true j) from the out-of-fold predictions.
* ``pacc``: probabilistic adjusted count (Bella et al. 2010): the same with
  the mean predicted probabilities instead of counts.

Both solve the system with ``quapy``'s constrained solver (fractions in the
simplex). Intervals are percentile bootstraps over the group's particles
and, given the out-of-fold predictions, over those too (within each true
class), so that they include the rates' own uncertainty.

:func:`prevalence_error` is the ``benchmark``'s secondary row: each model's
error of the raw fractions over the test folds' groups, with the paired
corrected resampled t-test between models.
"""

from __future__ import annotations

import numpy as np

from liposome_bench.errors import ConfigError
from liposome_bench.metrics import to_jsonable
from liposome_bench.stats import NO_DIFFERENCE, corrected_interval, corrected_resampled_ttest

METHODS = ("raw", "acc", "pacc")


def class_rates(y_true, scores, n_classes: int) -> np.ndarray:
    """M[i, j]: the mean score of class i among particles of true class j.

    ``scores`` is (n, n_classes): one-hot predictions give the confusion
    rates P(predicted i | true j) of ``acc``; probabilities give ``pacc``'s.
    A class with no particle gets the identity column.
    """
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=np.float64)
    rates = np.eye(n_classes)
    for j in range(n_classes):
        mine = y_true == j
        if mine.any():
            rates[:, j] = scores[mine].mean(axis=0)
    return rates


def _solve(rates, unadjusted) -> np.ndarray:
    try:
        from quapy.method.aggregative import ACC
    except ImportError:
        raise ConfigError(
            "Adjusted class fractions need the quapy package, which is not installed. "
            "Install it: pip install 'liposome-bench[quantify]'."
        ) from None

    estimate = ACC.solve_adjustment(
        class_conditional_rates=rates,
        unadjusted_counts=np.asarray(unadjusted, np.float64),
        method="inversion",
        solver="minimize",
    )
    estimate = np.clip(np.asarray(estimate, dtype=np.float64), 0.0, None)
    total = estimate.sum()
    return estimate / total if total > 0 else np.full(len(estimate), 1 / len(estimate))


def unidentified_classes(rates, classes) -> list:
    """Classes the rates cannot tell apart: class j's own particles get no
    more of its score than another class's (M[j, j] <= max over i != j of
    M[j, i], the several-class form of Forman's tpr <= fpr). Its column of
    M then lies among the others', so the adjustment can move any share
    into or out of it (on the built-in lamellarity data, 'uncertain')."""
    rates = np.asarray(rates, dtype=np.float64)
    out = []
    for j, name in enumerate(classes):
        others = np.delete(rates[j], j)
        if others.size and rates[j, j] <= others.max() + 1e-9:  # ties within rounding
            out.append(name)
    return out


def one_hot(y_pred, n_classes: int) -> np.ndarray:
    """(n, n_classes) indicator matrix of class indices."""
    return np.eye(n_classes)[np.asarray(y_pred, dtype=np.int64)]


def estimate_fractions(y_pred, probabilities, rates: dict) -> dict:
    """The class fractions of one sample, three ways.

    Parameters
    ----------
    y_pred : int array (n,)
    probabilities : array (n, n_classes)
    rates : dict
        ``{"acc": M_hard, "pacc": M_soft}`` from :func:`class_rates` on the
        out-of-fold predictions.

    Returns
    -------
    dict
        method ("raw", "acc", "pacc") -> fractions (n_classes,), summing to 1.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n_classes = probabilities.shape[1]
    raw = one_hot(y_pred, n_classes).mean(axis=0)
    return {
        "raw": raw,
        "acc": _solve(rates["acc"], raw),
        "pacc": _solve(rates["pacc"], probabilities.mean(axis=0)),
    }


def cv_rates(y_true, y_pred, probabilities) -> dict:
    """``{"acc", "pacc"}`` rate matrices from out-of-fold predictions."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n_classes = probabilities.shape[1]
    return {
        "acc": class_rates(y_true, one_hot(y_pred, n_classes), n_classes),
        "pacc": class_rates(y_true, probabilities, n_classes),
    }


def fractions_by_group(
    groups,
    y_pred,
    probabilities,
    rates: dict,
    classes,
    *,
    y_true=None,
    cv: dict | None = None,
    n_resamples: int = 200,
    seed: int = 0,
    level: float = 0.95,
):
    """Per group, each class's fraction by each method with a bootstrap interval.

    Parameters
    ----------
    groups : array (n,)
        The group of each particle (e.g. its micrograph).
    y_pred, probabilities : the predictions
    rates : dict
        From :func:`cv_rates`.
    classes : list of str
    y_true : int array (n,), optional
        Labels; adds the true fraction of each class.
    cv : dict, optional
        The out-of-fold predictions ``rates`` came from ("y_true", "y_pred",
        "probabilities"). Each resample then also resamples them within
        each true class and recomputes the rates, so the intervals of
        ``acc`` and ``pacc`` include the rates' own uncertainty; without,
        the rates are held fixed.
    n_resamples : int
        Bootstrap resamples of each group's particles.
    seed : int
    level : float

    Returns
    -------
    pandas.DataFrame
        One row per group, method and class: group, n, method, class,
        fraction, low, high (and true, with labels); ``attrs["unidentified"]``
        is ``{"acc": [...], "pacc": [...]}``, the classes each method's rates
        cannot tell apart (:func:`unidentified_classes`).
    """
    import pandas as pd

    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be >= 1; got {n_resamples}. Pass a positive count.")
    groups = np.asarray(groups).astype(str)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    rng = np.random.default_rng(seed)
    alpha = (1 - level) / 2
    rows = []
    unidentified = {m: unidentified_classes(rates[m], classes) for m in ("acc", "pacc")}
    boot_rates = [rates] * n_resamples
    if cv is not None:
        cv_true = np.asarray(cv["y_true"], dtype=np.int64)
        members = [np.flatnonzero(cv_true == j) for j in np.unique(cv_true)]
        # Its own stream: the groups' resamples are the same with or without cv.
        cv_rng = np.random.default_rng([seed, 1])
        boot_rates = []
        for _ in range(n_resamples):
            pick = np.concatenate([cv_rng.choice(m, size=m.size, replace=True) for m in members])
            boot_rates.append(
                cv_rates(
                    cv_true[pick],
                    np.asarray(cv["y_pred"])[pick],
                    np.asarray(cv["probabilities"])[pick],
                )
            )
    for g in sorted(set(groups.tolist())):
        idx = np.flatnonzero(groups == g)
        point = estimate_fractions(y_pred[idx], probabilities[idx], rates)
        boot = {m: [] for m in METHODS}
        for b in range(n_resamples):
            pick = rng.choice(idx, size=idx.size, replace=True)
            estimates = estimate_fractions(y_pred[pick], probabilities[pick], boot_rates[b])
            for m, v in estimates.items():
                boot[m].append(v)
        truth = (
            np.bincount(np.asarray(y_true)[idx], minlength=len(classes)) / idx.size
            if y_true is not None
            else None
        )
        for m in METHODS:
            low, high = np.quantile(np.array(boot[m]), [alpha, 1 - alpha], axis=0)
            for j, name in enumerate(classes):
                row = {
                    "group": g,
                    "n": int(idx.size),
                    "method": m,
                    "class": name,
                    "fraction": float(point[m][j]),
                    "low": float(low[j]),
                    "high": float(high[j]),
                }
                if truth is not None:
                    row["true"] = float(truth[j])
                rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["unidentified"] = unidentified
    return table


# The benchmark's prevalence-error row ---------------------------------------------------

#: How the row estimates a group's fractions.
PREVALENCE_METHOD = "raw (classify and count)"


def group_fraction_errors(y_true, y_pred, groups, n_classes: int) -> np.ndarray:
    """|raw fraction - true fraction| of each class in each group.

    Returns
    -------
    array (n_groups, n_classes), groups in sorted order.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    groups = np.asarray(groups).astype(str)
    rows = []
    for g in np.unique(groups):
        mine = groups == g
        truth = np.bincount(y_true[mine], minlength=n_classes) / mine.sum()
        rows.append(np.abs(one_hot(y_pred[mine], n_classes).mean(axis=0) - truth))
    return np.array(rows).reshape(-1, n_classes)


def _fold_errors(fold_results, group_of: dict, n_classes: int):
    """Per fold: the mean over its groups of each class's error; and every
    group's errors stacked."""
    per_fold, every = [], []
    for r in fold_results:
        e = group_fraction_errors(r.y_true, r.y_pred, [group_of[i] for i in r.ids], n_classes)
        per_fold.append(e.mean(axis=0))
        every.append(e)
    return np.array(per_fold).reshape(-1, n_classes), np.concatenate(every, axis=0)


def prevalence_error(
    runs: dict, reference: str, classes, group_of: dict, n_particles: int, *, alpha=0.05
) -> dict:
    """The benchmark's prevalence-error row (issue 22): per model, the mean
    absolute error of each class's raw fraction over the test folds' groups,
    and each model against ``reference`` by the corrected resampled t-test
    on the paired per-fold errors.

    Grouped folds keep every group in one test fold, so each group's true
    fractions are its labels' and the model's fractions are its out-of-fold
    predictions'. A fold's score is the mean of its groups' errors.

    Parameters
    ----------
    runs : dict
        model -> list (one per repeat) of its finished folds.
    reference : str
    classes : sequence of str
    group_of : dict
        Particle id -> its group.
    n_particles : int
        Particles of the dataset (a fold trains on this minus its test fold).
    alpha : float

    Returns
    -------
    dict (JSON-ready)
        "method", "models": model -> {"per_class": class -> MAE, "mean",
        "fold_sd" (class -> sd of the fold scores), "n_groups", "n_scores"},
        "comparisons": list of {"model_a", "model_b", "n_scores", "per_class":
        class -> entry, "mean": entry}, an entry holding "difference" (B - A,
        negative: B's fractions closer), "ci" (95 %), "t", "df", "p", "n",
        "significant" and "verdict". Not adjusted for multiple tests (a
        secondary row).
    """
    k = len(classes)
    fold_scores, models, sizes = {}, {}, []
    for name, model_runs in runs.items():
        scores, every = [], []
        for folds in model_runs:
            folds = sorted(folds, key=lambda r: r.fold)
            s, e = _fold_errors(folds, group_of, k)
            scores.append(s)
            every.append(e)
            if name == reference:
                sizes.extend(len(r.ids) for r in folds)
        scores, every = np.concatenate(scores), np.concatenate(every)
        fold_scores[name] = scores
        models[name] = {
            "per_class": dict(zip(classes, every.mean(axis=0))),
            "mean": float(every.mean()),
            "fold_sd": dict(
                zip(classes, scores.std(axis=0, ddof=1) if len(scores) > 1 else [None] * k)
            ),
            "n_groups": int(len(every)),
            "n_scores": int(len(scores)),
        }
    n_test = float(np.mean(sizes)) if sizes else float("nan")
    n_train = float(n_particles - n_test)

    def entry(d, name_a, name_b):
        out = corrected_resampled_ttest(d, n_train, n_test)
        out["ci"] = corrected_interval(out, n_train, n_test, d)
        out["difference"] = out.pop("mean")
        out["significant"] = bool(
            np.isfinite(out["p"]) and out["p"] < alpha and out["difference"] != 0
        )
        out["verdict"] = (
            (f"{name_b} closer" if out["difference"] < 0 else f"{name_a} closer")
            if out["significant"]
            else NO_DIFFERENCE
        )
        return out

    comparisons = []
    ref = fold_scores.get(reference)
    for name, scores in fold_scores.items():
        if name == reference or ref is None or len(scores) != len(ref):
            continue
        d = scores - ref
        comparisons.append(
            {
                "model_a": reference,
                "model_b": name,
                "n_scores": int(len(d)),
                "per_class": {c: entry(d[:, j], reference, name) for j, c in enumerate(classes)},
                "mean": entry(d.mean(axis=1), reference, name),
            }
        )
    return to_jsonable({"method": PREVALENCE_METHOD, "models": models, "comparisons": comparisons})
