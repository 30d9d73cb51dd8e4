"""Per-class metrics and confusion matrices shared by every model.

Definitions follow thesis section 4.6 and are computed one-vs-rest for each
class from the confusion matrix (rows: true class, columns: predicted class):

- TPR = TP / (TP + FN)  (sensitivity, recall)
- TNR = TN / (TN + FP)  (specificity)
- PPV = TP / (TP + FP)  (precision)
- NPV = TN / (TN + FN)
- F1 (standard) = 2 PPV TPR / (PPV + TPR), computed as 2 TP / (2 TP + FP + FN)
- F1 (thesis)   = 2 / (1/TPR + 1/TNR), the harmonic mean of TPR and TNR that
  the thesis calls F1 (section 4.6); it is *not* the usual F1.

Overall: accuracy, balanced accuracy (mean TPR over classes that occur),
macro F1 (mean standard F1 over classes where it is defined) and Matthews'
correlation coefficient (multi-class form, Gorodkin 2004).

Undefined values (0/0) are NaN, never an exception: TPR of a class with no
true particles, PPV of a class that is never predicted, MCC when all true or
all predicted labels are one class. The standard F1 is NaN only when the
class neither occurs nor is predicted (2 TP + FP + FN = 0); it is 0 when the
class occurs but is never predicted. The thesis F1 is 0 when TPR or TNR is
0 and NaN when either is undefined. Tables show NaN as "—"; averages over
folds skip NaN and record in how many folds the value was defined.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

#: Per-class metric names, in table order.
CLASS_METRICS = ("tpr", "tnr", "ppv", "npv", "f1", "f1_thesis")
#: Column headings for :data:`CLASS_METRICS`.
#: How an undefined value (0/0) is shown in tables, reports and figures.
UNDEFINED = "—"


def format_signed(value, digits: int = 3) -> str:
    """A difference with its sign ("+0.012"), or UNDEFINED for None."""
    return UNDEFINED if value is None else f"{value:+.{digits}f}"


CLASS_METRIC_LABELS = {
    "tpr": "TPR",
    "tnr": "TNR",
    "ppv": "PPV",
    "npv": "NPV",
    "f1": "F1",
    "f1_thesis": "F1 (thesis)",
}
#: Overall metric names, in table order.
OVERALL_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "mcc")
OVERALL_METRIC_LABELS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "macro_f1": "macro F1",
    "mcc": "MCC",
}


def to_jsonable(value):
    """A JSON-safe copy: numpy scalars and arrays become plain Python, dict
    keys strings, and NaN (undefined, 0/0) or infinite floats None (null)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class ClassMetrics:
    """One-vs-rest metrics of one class (see the module docstring)."""

    name: str
    support: int
    tp: int
    fp: int
    fn: int
    tn: int
    tpr: float
    tnr: float
    ppv: float
    npv: float
    f1: float
    f1_thesis: float

    def to_dict(self) -> dict:
        return to_jsonable(dict(self.__dict__))


@dataclass
class ModelMetrics:
    """Metrics of one set of predictions (one fold, or pooled folds)."""

    classes: list[str]
    n: int
    per_class: list[ClassMetrics]
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    mcc: float
    confusion: np.ndarray
    confusion_normalised: np.ndarray

    def __getitem__(self, name: str) -> ClassMetrics:
        return self.per_class[self.classes.index(name)]

    def to_dict(self) -> dict:
        return {
            "classes": list(self.classes),
            "n": int(self.n),
            "per_class": {c.name: c.to_dict() for c in self.per_class},
            **{m: to_jsonable(getattr(self, m)) for m in OVERALL_METRICS},
            "confusion": to_jsonable(self.confusion),
            "confusion_normalised": to_jsonable(self.confusion_normalised),
        }


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Counts of (true, predicted) class-index pairs: rows true, columns predicted.

    Raises
    ------
    ValueError
        If the arrays differ in length or hold an index outside 0..n_classes-1.
    """
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true has {y_true.size} labels but y_pred has {y_pred.size}; "
            "pass one prediction per particle."
        )
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(
                f"{name} holds class index {int(y.min() if y.min() < 0 else y.max())}; "
                f"expected indices 0..{n_classes - 1} into the class list."
            )
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes**2).reshape(
        n_classes, n_classes
    )


def normalise_rows(confusion: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the share of each true class predicted
    as each class); rows of classes with no particles are NaN."""
    confusion = np.asarray(confusion, dtype=np.float64)
    sums = confusion.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums > 0, confusion / np.where(sums > 0, sums, 1), np.nan)


def _divide(num, den):
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def metric_arrays(cm) -> dict[str, np.ndarray]:
    """Per-class and overall metrics of one or a stack of confusion matrices:
    the one implementation of this module's formulas (``metrics_from_confusion``
    for one matrix, ``stats`` for bootstrap stacks).

    A metric whose denominator is zero (e.g. PPV of a class never predicted)
    is NaN, not 0: the data say nothing about it.

    Parameters
    ----------
    cm : array, shape (..., K, K)
        Counts, rows true class, columns predicted class.

    Returns
    -------
    dict
        ``CLASS_METRICS`` names -> array (..., K); ``OVERALL_METRICS`` names
        -> array (...).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    true_count = cm.sum(axis=-1)
    pred_count = cm.sum(axis=-2)
    total = cm.sum(axis=(-2, -1))
    fn = true_count - tp
    fp = pred_count - tp
    tn = total[..., None] - tp - fn - fp
    out = {
        "tpr": _divide(tp, tp + fn),
        "tnr": _divide(tn, tn + fp),
        "ppv": _divide(tp, tp + fp),
        "npv": _divide(tn, tn + fn),
        "f1": _divide(2 * tp, 2 * tp + fp + fn),
    }
    # Section 4.6: F1 = 2 / (1/TPR + 1/TNR) = 2 TPR TNR / (TPR + TNR); 0 when
    # either rate is 0 (its limit), NaN when either is undefined.
    tpr, tnr = out["tpr"], out["tnr"]
    out["f1_thesis"] = np.where((tpr == 0) | (tnr == 0), 0.0, _divide(2 * tpr * tnr, tpr + tnr))
    out["f1_thesis"][np.isnan(tpr) | np.isnan(tnr)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out["accuracy"] = _divide(tp.sum(axis=-1), total)
        out["balanced_accuracy"] = np.nanmean(tpr, axis=-1)
        out["macro_f1"] = np.nanmean(out["f1"], axis=-1)
    # Multi-class Matthews correlation (Gorodkin 2004); NaN when 0/0.
    correct = tp.sum(axis=-1)
    cov_tp = correct * total - (pred_count * true_count).sum(axis=-1)
    cov_pp = total**2 - (pred_count**2).sum(axis=-1)
    cov_tt = total**2 - (true_count**2).sum(axis=-1)
    out["mcc"] = _divide(cov_tp, np.sqrt(np.maximum(cov_pp * cov_tt, 0.0)))
    return out


def metrics_from_confusion(confusion, classes) -> ModelMetrics:
    """All metrics of this module from a confusion matrix (rows true)."""
    confusion = np.asarray(confusion, dtype=np.int64)
    classes = [str(c) for c in classes]
    k = len(classes)
    if confusion.shape != (k, k):
        raise ValueError(
            f"confusion matrix is {confusion.shape[0]}x{confusion.shape[1]} "
            f"but there are {k} classes."
        )
    values = metric_arrays(confusion)
    n = int(confusion.sum())
    per_class = []
    for i, name in enumerate(classes):
        tp = int(confusion[i, i])
        fn = int(confusion[i].sum()) - tp
        fp = int(confusion[:, i].sum()) - tp
        per_class.append(
            ClassMetrics(
                name=name,
                support=tp + fn,
                tp=tp,
                fp=fp,
                fn=fn,
                tn=n - tp - fn - fp,
                **{metric: float(values[metric][i]) for metric in CLASS_METRICS},
            )
        )
    return ModelMetrics(
        classes=classes,
        n=n,
        per_class=per_class,
        **{metric: float(values[metric]) for metric in OVERALL_METRICS},
        confusion=confusion,
        confusion_normalised=normalise_rows(confusion),
    )


def compute_metrics(y_true, y_pred, classes) -> ModelMetrics:
    """Per-class and overall metrics of one set of predictions.

    Parameters
    ----------
    y_true, y_pred : array of int, shape (n_samples,)
        Class indices into ``classes``.
    classes : sequence of str
        Class names, in index order.

    Returns
    -------
    ModelMetrics
        Undefined ratios (0/0) are NaN; see the module docstring.

    Raises
    ------
    ValueError
        If the arrays differ in length or hold an index outside ``classes``.
    """
    classes = [str(c) for c in classes]
    return metrics_from_confusion(confusion_matrix(y_true, y_pred, len(classes)), classes)


@dataclass
class MeanStd:
    """Mean and sample standard deviation (ddof=1) over folds of one value,
    skipping folds where it is undefined; ``n`` folds contributed."""

    mean: float
    std: float
    n: int

    def to_dict(self) -> dict:
        return to_jsonable({"mean": self.mean, "std": self.std, "n": self.n})


def _mean_std(values) -> MeanStd:
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return MeanStd(math.nan, math.nan, 0)
    std = float(np.std(v, ddof=1)) if v.size > 1 else math.nan
    return MeanStd(float(np.mean(v)), std, int(v.size))


@dataclass
class FoldSummary:
    """Metrics of a model over its cross-validation folds.

    Attributes
    ----------
    classes : list of str
    folds : list of int
        The fold numbers summarised.
    per_fold : list of ModelMetrics
        Metrics of each fold's test set.
    per_class : dict
        ``per_class[class][metric]`` is a :class:`MeanStd` over folds, for
        every metric in :data:`CLASS_METRICS`.
    overall : dict
        ``overall[metric]`` is a :class:`MeanStd` over folds, for every metric
        in :data:`OVERALL_METRICS`.
    confusion_sum : ndarray of int
        Confusion matrices summed over folds (rows true, columns predicted).
    confusion_mean : ndarray of float
        Raw confusion matrices averaged over folds (thesis Tables 9-10).
    confusion_normalised_mean : ndarray of float
        Row-normalised confusion matrices averaged over folds (thesis Tables
        7-8); a fold without particles of a class does not count for its row.
    pooled : ModelMetrics
        Metrics of all out-of-fold predictions taken together.
    """

    classes: list[str]
    folds: list[int]
    per_fold: list[ModelMetrics]
    per_class: dict
    overall: dict
    confusion_sum: np.ndarray
    confusion_mean: np.ndarray
    confusion_normalised_mean: np.ndarray
    pooled: ModelMetrics
    support: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "classes": list(self.classes),
            "folds": [int(f) for f in self.folds],
            "support": [int(s) for s in self.support],
            "per_class": {
                c: {m: ms.to_dict() for m, ms in metrics.items()}
                for c, metrics in self.per_class.items()
            },
            "overall": {m: ms.to_dict() for m, ms in self.overall.items()},
            "confusion_sum": to_jsonable(self.confusion_sum),
            "confusion_mean": to_jsonable(self.confusion_mean),
            "confusion_normalised_mean": to_jsonable(self.confusion_normalised_mean),
            "pooled": self.pooled.to_dict(),
            "per_fold": [m.to_dict() for m in self.per_fold],
        }


def summarise_folds(fold_results, classes) -> FoldSummary:
    """Mean ± std over folds of every metric, and the averaged confusion matrices.

    Parameters
    ----------
    fold_results : sequence of results.FoldResult
        One finished fold each (``y_true`` and ``y_pred`` are class indices).
    classes : sequence of str
        Class names, in index order.

    Returns
    -------
    FoldSummary

    Raises
    ------
    ValueError
        If ``fold_results`` is empty.
    """
    fold_results = list(fold_results)
    if not fold_results:
        raise ValueError("No finished folds to summarise; run the model first.")
    classes = [str(c) for c in classes]
    k = len(classes)
    per_fold = [compute_metrics(r.y_true, r.y_pred, classes) for r in fold_results]
    per_class = {
        name: {m: _mean_std([getattr(f.per_class[i], m) for f in per_fold]) for m in CLASS_METRICS}
        for i, name in enumerate(classes)
    }
    overall = {m: _mean_std([getattr(f, m) for f in per_fold]) for m in OVERALL_METRICS}
    stack = np.stack([f.confusion for f in per_fold])
    normalised = np.stack([f.confusion_normalised for f in per_fold])
    defined = ~np.isnan(normalised)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised_mean = np.where(
            defined.any(axis=0),
            np.nansum(normalised, axis=0) / np.maximum(defined.sum(axis=0), 1),
            np.nan,
        )
    pooled = compute_metrics(
        np.concatenate([np.asarray(r.y_true) for r in fold_results]),
        np.concatenate([np.asarray(r.y_pred) for r in fold_results]),
        classes,
    )
    return FoldSummary(
        classes=classes,
        folds=[int(r.fold) for r in fold_results],
        per_fold=per_fold,
        per_class=per_class,
        overall=overall,
        confusion_sum=stack.sum(axis=0),
        confusion_mean=stack.mean(axis=0),
        confusion_normalised_mean=normalised_mean.reshape(k, k),
        pooled=pooled,
        support=[int(s) for s in stack.sum(axis=(0, 2))],
    )


def metrics_by_size_quartile(sizes, y_true, y_pred, classes, edges=None) -> list[dict]:
    """Accuracy, balanced accuracy and macro F1 within each quartile of
    particle size.

    Parameters
    ----------
    sizes : array of float, shape (n,)
        Each particle's size (any unit; only its order matters).
    y_true, y_pred : array of int, shape (n,)
    classes : sequence of str
    edges : sequence of 3 float, optional
        Quartile boundaries; default: ``np.quantile(sizes, [.25, .5, .75])``
        (pass the whole dataset's so every model shares them).

    Returns
    -------
    list of 4 dicts
        ``quartile`` (1-4), ``size_min``, ``size_max`` (of the particles in
        it; None when empty), ``n``, ``accuracy``, ``balanced_accuracy``,
        ``macro_f1`` (NaN when empty). A particle on a boundary goes to the
        lower quartile.
    """
    sizes = np.asarray(sizes, dtype=float)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if edges is None:
        edges = np.quantile(sizes, [0.25, 0.5, 0.75])
    which = np.searchsorted(np.asarray(edges, dtype=float), sizes, side="left")
    out = []
    for q in range(4):
        keep = which == q
        row = {
            "quartile": q + 1,
            "n": int(keep.sum()),
            "size_min": float(sizes[keep].min()) if keep.any() else None,
            "size_max": float(sizes[keep].max()) if keep.any() else None,
        }
        if keep.any():
            m = compute_metrics(y_true[keep], y_pred[keep], classes)
            row.update(
                accuracy=float(m.accuracy),
                balanced_accuracy=float(m.balanced_accuracy),
                macro_f1=float(m.macro_f1),
            )
        else:
            row.update(accuracy=math.nan, balanced_accuracy=math.nan, macro_f1=math.nan)
        out.append(row)
    return out
