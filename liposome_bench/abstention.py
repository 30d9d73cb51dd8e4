"""Abstaining when unsure: class probabilities from out-of-fold predictions,
coverage curves, and confidence thresholds that reach a target precision.

Thesis section 9: both methods call many particles "uncertain" wrongly (the
class's precision is about 0.1), so a deployed classifier should be able to
say "I don't know" instead. Every number here comes from out-of-fold
predictions, i.e. from particles the model that scored them never saw.

* A CNN's scores are its softmax probabilities, used as they are.
* The SVM's scores are LIBSVM one-vs-one decision values, not probabilities.
  They are calibrated by a multinomial logistic regression on the decision
  values (Platt scaling generalised to several classes; scikit-learn's
  ``LogisticRegression``). For the out-of-fold probabilities of test fold
  *i*, the calibrator is fitted on the out-of-fold decision values of the
  other folds only (cross-fitting), so fold *i*'s labels never enter the
  calibration applied to it. The decision values in the results folder stay
  as they are. A calibrator is plain numbers (``coef``, ``intercept``), kept
  in JSON, never pickled.

The confidence of a prediction is the probability of the predicted class.
"""

from __future__ import annotations

import numpy as np

from liposome_bench.errors import ConfigError, ResultsError
from liposome_bench.results import ResultsDir

CALIBRATION_METHOD = (
    "multinomial logistic regression on the one-vs-one decision values "
    "(Platt scaling for several classes)"
)
#: Intercept given to a class absent from the calibration data: its
#: probability is exp(-50) ~ 2e-22 times the others'.
_ABSENT = -50.0


def fit_calibrator(decision_values, y, n_classes: int) -> dict:
    """Fit the SVM's probability calibration on decision values with labels.

    Parameters
    ----------
    decision_values : array (n, n_pairs)
        One-vs-one decision values (NaN, for a pair missing from a fold's
        model, counts as 0).
    y : int array (n,)
        True class indices.
    n_classes : int

    Returns
    -------
    dict
        ``{"method", "coef": (n_classes x n_pairs), "intercept": (n_classes)}``:
        the probabilities are ``softmax(values @ coef.T + intercept)``.
    """
    from sklearn.linear_model import LogisticRegression

    X = np.nan_to_num(np.asarray(decision_values, dtype=np.float64), nan=0.0)
    y = np.asarray(y)
    present = np.unique(y)
    coef = np.zeros((n_classes, X.shape[1]))
    intercept = np.full(n_classes, _ABSENT)
    if present.size == 1:
        intercept[present[0]] = 0.0
    else:
        lr = LogisticRegression(max_iter=1000).fit(X, y)
        if present.size == 2:  # binary: one row; softmax with the first class at 0
            coef[present[1]], intercept[present[1]] = lr.coef_[0], lr.intercept_[0]
            intercept[present[0]] = 0.0
        else:
            coef[present], intercept[present] = lr.coef_, lr.intercept_
    return {"method": CALIBRATION_METHOD, "coef": coef.tolist(), "intercept": intercept.tolist()}


def apply_calibrator(calibrator: dict, decision_values) -> np.ndarray:
    """Class probabilities (n, n_classes) from decision values."""
    X = np.nan_to_num(np.asarray(decision_values, dtype=np.float64), nan=0.0)
    z = X @ np.asarray(calibrator["coef"], dtype=np.float64).T + np.asarray(
        calibrator["intercept"], dtype=np.float64
    )
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def out_of_fold(fold_results, n_classes: int) -> dict:
    """Every out-of-fold prediction of one model, with class probabilities.

    Parameters
    ----------
    fold_results : list of results.FoldResult
        All folds of one model (a CNN's scores are probabilities; the SVM's
        decision values are calibrated by cross-fitting, see the module
        docstring).
    n_classes : int

    Returns
    -------
    dict of arrays: "ids", "fold", "y_true", "y_pred", "probabilities"
    (n, n_classes), "decision_values" (SVM only, else None).
    """
    ids = [i for r in fold_results for i in r.ids]
    fold = np.concatenate([np.full(len(r.ids), r.fold) for r in fold_results])
    y_true = np.concatenate([np.asarray(r.y_true) for r in fold_results]).astype(np.int64)
    y_pred = np.concatenate([np.asarray(r.y_pred) for r in fold_results]).astype(np.int64)
    scores = np.concatenate([np.asarray(r.scores, dtype=np.float64) for r in fold_results])
    kinds = {r.score_kind for r in fold_results}
    if kinds == {"probability"}:
        return {
            "ids": ids,
            "fold": fold,
            "y_true": y_true,
            "y_pred": y_pred,
            "probabilities": scores,
            "decision_values": None,
        }
    probabilities = np.zeros((len(ids), n_classes))
    for f in np.unique(fold):
        test, train = fold == f, fold != f
        if not train.any():  # a single fold: calibrate on itself
            train = test
        calibrator = fit_calibrator(scores[train], y_true[train], n_classes)
        probabilities[test] = apply_calibrator(calibrator, scores[test])
    return {
        "ids": ids,
        "fold": fold,
        "y_true": y_true,
        "y_pred": y_pred,
        "probabilities": probabilities,
        "decision_values": scores,
    }


def confidence_of(probabilities, y_pred) -> np.ndarray:
    """The probability of each particle's predicted class."""
    p = np.asarray(probabilities, dtype=np.float64)
    return p[np.arange(len(p)), np.asarray(y_pred, dtype=np.int64)]


def coverage_curve(y_true, y_pred, confidence, n_classes: int) -> dict:
    """Accuracy and per-class precision of the predictions kept, as the
    confidence threshold rises.

    For each distinct confidence t (ascending), the particles with
    confidence >= t are kept and the rest abstained.

    Returns
    -------
    dict
        "threshold", "coverage" (share of all particles kept), "accuracy"
        (of the kept), "precision" (n_classes lists: precision of each
        class's kept predictions, NaN where none is kept), each a list.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    confidence = np.asarray(confidence, dtype=np.float64)
    order = np.argsort(-confidence, kind="stable")
    c, t, p = confidence[order], y_true[order], y_pred[order]
    correct = np.cumsum(t == p)
    kept = np.arange(1, len(c) + 1)
    # Keep only the last index of each distinct threshold (ties kept together).
    last = np.r_[c[1:] != c[:-1], True] if len(c) else np.zeros(0, bool)
    precision = []
    for k in range(n_classes):
        predicted = np.cumsum(p == k)
        right = np.cumsum((p == k) & (t == k))
        with np.errstate(invalid="ignore", divide="ignore"):
            precision.append(np.where(predicted > 0, right / predicted, np.nan)[last][::-1])
    n = max(len(c), 1)
    return {
        "threshold": c[last][::-1].tolist(),
        "coverage": (kept[last] / n)[::-1].tolist(),
        "accuracy": (correct[last] / kept[last])[::-1].tolist(),
        "precision": [q.tolist() for q in precision],
    }


def threshold_for_precision(y_true, y_pred, confidence, cls: int, target: float) -> dict:
    """The lowest confidence threshold at which the kept predictions of class
    ``cls`` reach precision ``target``.

    Returns
    -------
    dict
        "threshold" (None if no threshold reaches the target), "precision"
        reached, "kept" and "predicted" (predictions of ``cls`` kept / all),
        "class_coverage" (kept / predicted), "coverage" (share of all
        particles still predicted when only this class abstains below the
        threshold).
    """
    if not 0.0 < target <= 1.0:
        raise ConfigError(f"A target precision must be in (0, 1]; got {target}.")
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    confidence = np.asarray(confidence, dtype=np.float64)
    mine = y_pred == cls
    n_pred = int(mine.sum())
    c = confidence[mine]
    right = y_true[mine] == cls
    order = np.argsort(-c, kind="stable")
    c, right = c[order], right[order]
    reached = None
    if n_pred:
        precision = np.cumsum(right) / np.arange(1, n_pred + 1)
        last = np.r_[c[1:] != c[:-1], True]
        ok = np.flatnonzero(last & (precision >= target - 1e-12))
        if ok.size:
            i = int(ok.max())  # the most kept predictions that still reach the target
            reached = {"threshold": float(c[i]), "precision": float(precision[i]), "kept": i + 1}
    if reached is None:
        return {
            "threshold": None,
            "precision": None,
            "kept": 0,
            "predicted": n_pred,
            "class_coverage": 0.0,
            "coverage": float((len(y_pred) - n_pred) / max(len(y_pred), 1)),
        }
    dropped = n_pred - reached["kept"]
    return {
        **reached,
        "predicted": n_pred,
        "class_coverage": reached["kept"] / n_pred,
        "coverage": float((len(y_pred) - dropped) / max(len(y_pred), 1)),
    }


def coverage_curves_of_results(results_dir, models, classes) -> dict:
    """The coverage curve of every model with all folds finished in a
    results folder, from its out-of-fold predictions (SVM: cross-fitted
    calibrated probabilities)."""
    results = ResultsDir(results_dir)
    curves = {}
    for name in models:
        try:
            folds = results.load_model(name)
        except ResultsError:
            continue
        if not folds:
            continue
        oof = out_of_fold(folds, len(classes))
        confidence = confidence_of(oof["probabilities"], oof["y_pred"])
        curves[name] = coverage_curve(oof["y_true"], oof["y_pred"], confidence, len(classes))
    return curves


def accuracy_at_coverage(curve: dict, coverage: float) -> float | None:
    """Accuracy of the kept predictions at the highest threshold that still
    keeps at least ``coverage`` of the particles."""
    covered = [i for i, c in enumerate(curve["coverage"]) if c >= coverage - 1e-12]
    if not covered:
        return None
    return curve["accuracy"][covered[-1]]


def held_out_threshold(y_true, y_pred, confidence, fold, cls: int, target: float) -> dict:
    """The out-of-sample precision and coverage of :func:`threshold_for_precision`,
    by nested cross-fitting over the folds.

    For each fold *f*, the threshold is chosen on the out-of-fold predictions
    of the other folds only, and then applied to fold *f*'s predictions; the
    kept predictions of all folds are pooled. Reporting the precision at the
    threshold chosen on the same predictions is optimistic (it reaches the
    target by construction); this is the precision a user can expect of a
    threshold chosen this way.

    Parameters
    ----------
    y_true, y_pred : int arrays (n,)
    confidence : array (n,)
        Probability of the predicted class.
    fold : int array (n,)
        The test fold of each out-of-fold prediction.
    cls : int
    target : float
        Target precision in (0, 1].

    Returns
    -------
    dict
        "precision" (mean over the folds of each fold's held-out precision,
        None if no fold kept any prediction of ``cls``), "precision_se" (its
        standard error from the spread between folds, None with one fold),
        "pooled_precision" (all folds' kept predictions pooled),
        "kept", "predicted" (predictions of ``cls`` kept / all, over all
        folds), "class_coverage", "coverage" (share of all particles still
        predicted), "folds" (number of folds), "folds_without_threshold"
        (folds whose other folds reached no threshold: all their ``cls``
        predictions abstain), "fold_thresholds" (per fold, the threshold
        chosen on the other folds, None where none reached the target).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    confidence = np.asarray(confidence, dtype=np.float64)
    fold = np.asarray(fold)
    folds = np.unique(fold)
    if folds.size < 2:
        raise ConfigError(
            f"A held-out precision needs out-of-fold predictions from at least 2 folds; got "
            f"{folds.size}. Train the bundle from a cross-validated run with k >= 2."
        )
    kept = right = predicted = dropped = without = 0
    fold_thresholds, fold_precision = [], []
    for f in folds:
        test, other = fold == f, fold != f
        found = threshold_for_precision(
            y_true[other], y_pred[other], confidence[other], cls, target
        )
        mine = test & (y_pred == cls)
        limit = found["threshold"] if found["threshold"] is not None else np.inf
        keep = mine & (confidence >= limit)
        without += found["threshold"] is None
        fold_thresholds.append(found["threshold"])
        predicted += int(mine.sum())
        kept += int(keep.sum())
        right += int((keep & (y_true == cls)).sum())
        dropped += int((mine & ~keep).sum())
        if keep.any():
            fold_precision.append(float((keep & (y_true == cls)).sum() / keep.sum()))
    # The mean of the folds' held-out precisions: each fold's is unbiased for
    # the true precision of its threshold (its particles played no part in
    # choosing it). The pooled ratio would weight the low, lenient thresholds
    # by the many particles they keep and come out low (tests/test_abstention.py).
    if fold_precision:
        precision = float(np.mean(fold_precision))
        se = (
            float(np.std(fold_precision, ddof=1) / np.sqrt(len(fold_precision)))
            if len(fold_precision) > 1
            else None
        )
    else:
        precision = se = None
    return {
        "precision": precision,
        "precision_se": se,
        "pooled_precision": right / kept if kept else None,
        "kept": kept,
        "predicted": predicted,
        "class_coverage": kept / predicted if predicted else 0.0,
        "coverage": float((len(y_pred) - dropped) / max(len(y_pred), 1)),
        "folds": int(folds.size),
        "folds_without_threshold": int(without),
        "fold_thresholds": fold_thresholds,
        "fold_precision": fold_precision,
    }
