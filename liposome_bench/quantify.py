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
simplex). Intervals are percentile bootstraps over the group's particles;
the confusion matrix is held fixed, so they leave out its own uncertainty.
"""

from __future__ import annotations

import numpy as np

from liposome_bench.errors import ConfigError

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
    n_resamples : int
        Bootstrap resamples of each group's particles.
    seed : int
    level : float

    Returns
    -------
    pandas.DataFrame
        One row per group, method and class: group, n, method, class,
        fraction, low, high (and true, with labels).
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
    for g in sorted(set(groups.tolist())):
        idx = np.flatnonzero(groups == g)
        point = estimate_fractions(y_pred[idx], probabilities[idx], rates)
        boot = {m: [] for m in METHODS}
        for _ in range(n_resamples):
            pick = rng.choice(idx, size=idx.size, replace=True)
            for m, v in estimate_fractions(y_pred[pick], probabilities[pick], rates).items():
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
    return pd.DataFrame(rows)
