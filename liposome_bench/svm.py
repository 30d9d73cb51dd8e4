"""The lab's baseline: a LIBSVM C-SVC with an RBF kernel on handcrafted features.

Thesis sections 4.1 and 8.4: LIBSVM (through ``libsvm-official``, the
library the thesis used), one-vs-one multi-class, training folds *not*
rebalanced; instead each class's C is multiplied by a weight inversely
proportional to its frequency in the training data (LIBSVM ``-w<label>``).
Features are scaled to [-1, 1] on the training data only, exactly as
LIBSVM's ``svm-scale`` does, and the same scaling is applied at prediction.

C and gamma are chosen by a grid search with stratified inner
cross-validation on the training folds only, maximising macro F1 (the mean
over classes of the standard F1; accuracy would reward ignoring the 0.6 %
minority class). See docs/svm.md for the grids and measured run times.

Each fold's model is saved as a LIBSVM model file (readable by LIBSVM's own
``svm-predict``), an ``svm-scale`` range file and a JSON file with the
scaling, the feature names and the class of each LIBSVM label. No pickle.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from ctypes import c_double
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from liposome_bench.io import atomic_write, atomic_write_json, atomic_write_text
from liposome_bench.errors import ConfigError, DatasetError, raise_if_interrupted
from liposome_bench.settings import SVMSettings
from liposome_bench.features import extract_features
from liposome_bench.folds import inner_splitter
from liposome_bench.progress import NullReporter
from liposome_bench.results import FoldResult

MODEL_NAME = "svm"
#: What the grid search maximises: macro F1 over the inner validation folds.
GRID_SCORE = "macro_f1"
#: svm-scale's default range.
SCALE_LOWER, SCALE_UPPER = -1.0, 1.0


def _powers_of_two(start: int, stop: int, step: int) -> tuple[float, ...]:
    return tuple(2.0**e for e in range(start, stop + 1, step))


#: Grids of (C, gamma) values, inner folds, and the most training particles
#: the inner cross-validation sees (a stratified subsample; None = all).
GRIDS = {
    # LIBSVM's grid.py defaults: C = 2^-5..2^15, gamma = 2^-15..2^3, step 2^2;
    # 5-fold inner cross-validation on the whole training folds.
    "full": {
        "C": _powers_of_two(-5, 15, 2),
        "gamma": _powers_of_two(-15, 3, 2),
        "inner_folds": 5,
        "max_samples": None,
    },
    # Every other point of grid.py's range (step 2^4), 3 inner folds on a
    # stratified subsample: 16 points, fast enough for the default benchmark.
    "coarse": {
        "C": _powers_of_two(-1, 11, 4),
        "gamma": _powers_of_two(-11, 1, 4),
        "inner_folds": 3,
        "max_samples": 2000,
    },
}
#: In a subsampled grid search every class keeps at least this many training
#: particles (or all it has), so the 0.6 % minority is not reduced to a few:
#: on the built-in lamellarity set (about 68 uncertain particles in the
#: training folds) the search sees every uncertain particle.
MIN_PER_CLASS = 250
#: When the best C or gamma lies on the edge of the grid, the grid is
#: extended past that edge, one grid step at a time (the grid's own ratio,
#: 2^4 for coarse, 2^2 for full), while the best stays on the edge, at most
#: EXTEND_STEPS times and never beyond EXTEND_LIMITS (LIBSVM grid.py's range
#: widened by 2^4 on each side).
EXTEND_STEPS = 3
EXTEND_LIMITS = {"C": (2.0**-9, 2.0**19), "gamma": (2.0**-19, 2.0**7)}


# The estimator ----------------------------------------------------------------


class LibSVMClassifier(ClassifierMixin, BaseEstimator):
    """C-SVC with an RBF kernel through LIBSVM, with svm-scale scaling.

    A scikit-learn estimator: it works with ``clone``, ``GridSearchCV``,
    ``cross_val_score`` and pipelines.

    Parameters
    ----------
    C : float
        Penalty of the C-SVC (LIBSVM ``-c``).
    gamma : float or None
        RBF kernel width (``-g``); None means LIBSVM's default 1/n_features.
    class_weight : "balanced", dict or None
        "balanced": each class's C is multiplied by n / (n_classes * n_class)
        computed on the training data (thesis section 8.4); a dict maps class
        labels to weights; None weights every class 1.
    scale : bool
        Scale each feature to [-1, 1] on the training data like
        ``svm-scale``; constant features become 0.
    tol : float
        Stopping tolerance (``-e``).
    cache_size : float
        Kernel cache in MB (``-m``).
    shrinking : bool
        LIBSVM's shrinking heuristics (``-h``).
    decision_function_shape : {"ovr", "ovo"}
        What :meth:`decision_function` returns for more than two classes, as
        in ``sklearn.svm.SVC``: "ovo" the raw one-vs-one decision values,
        "ovr" per-class votes plus a tie-breaking confidence in (-1/3, 1/3).

    Attributes
    ----------
    classes_ : ndarray
        Class labels; LIBSVM label ``i`` is ``classes_[i]``.
    n_features_in_ : int
    scale_min_, scale_max_ : ndarray of shape (n_features,)
        Training minimum and maximum of each feature (svm-scale's range).
    class_weight_ : ndarray of shape (n_classes,)
        The weight multiplying C for each class.
    gamma_ : float
        The gamma used.
    model_ : libsvm.svm.svm_model
        The trained LIBSVM model.

    Notes
    -----
    One-vs-one decision values (``decision_function_shape="ovo"``) have one
    column per pair (i, j) of classes with i < j in ``classes_`` order; a
    positive value is a vote for ``classes_[i]``, as in ``sklearn.svm.SVC``.
    """

    def __init__(
        self,
        *,
        C=1.0,
        gamma=None,
        class_weight="balanced",
        scale=True,
        tol=1e-3,
        cache_size=200,
        shrinking=True,
        decision_function_shape="ovr",
    ):
        self.C = C
        self.gamma = gamma
        self.class_weight = class_weight
        self.scale = scale
        self.tol = tol
        self.cache_size = cache_size
        self.shrinking = shrinking
        self.decision_function_shape = decision_function_shape

    # fitting ---------------------------------------------------------------

    def fit(self, X, y):
        """Scale ``X`` on itself, compute class weights and train LIBSVM.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self

        Raises
        ------
        ValueError
            If X holds NaN or infinity, y has fewer than 2 classes, or a
            parameter is out of range.
        """
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import validate_data

        X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
        check_classification_targets(y)
        self.classes_, labels = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"LibSVMClassifier needs at least 2 classes in y; got {len(self.classes_)}."
            )
        if not self.C > 0:
            raise ValueError(f"C must be > 0; got {self.C}.")
        if self.gamma is not None and not self.gamma > 0:
            raise ValueError(f"gamma must be > 0 or None; got {self.gamma}.")
        self.class_weight_ = self._compute_class_weights(labels)
        if self.scale:
            self.scale_min_ = X.min(axis=0)
            self.scale_max_ = X.max(axis=0)
        else:
            self.scale_min_ = np.full(X.shape[1], np.nan)
            self.scale_max_ = np.full(X.shape[1], np.nan)
        self.gamma_ = float(self.gamma) if self.gamma is not None else 1.0 / X.shape[1]
        # Grouping the rows by label fixes LIBSVM's label order to 0, 1, ...
        # (it takes labels in order of first appearance) without changing the
        # solution: LIBSVM groups the rows by class internally anyway.
        order = np.argsort(labels, kind="stable")
        self.model_ = _train_libsvm(
            self._transform(X)[order], labels[order], self._libsvm_options()
        )
        self._check_labels()
        return self

    def _compute_class_weights(self, labels) -> np.ndarray:
        k = len(self.classes_)
        if self.class_weight is None:
            return np.ones(k)
        if isinstance(self.class_weight, str):
            if self.class_weight != "balanced":
                raise ValueError(
                    f"class_weight must be 'balanced', a dict or None; got {self.class_weight!r}."
                )
            counts = np.bincount(labels, minlength=k)
            return len(labels) / (k * counts.astype(np.float64))
        weights = np.ones(k)
        for label, w in dict(self.class_weight).items():
            where = np.flatnonzero(self.classes_ == label)
            if where.size == 0:
                raise ValueError(
                    f"class_weight names class {label!r}, which is not in y "
                    f"(classes: {list(self.classes_)})."
                )
            weights[where[0]] = float(w)
        return weights

    def _libsvm_options(self) -> str:
        options = [
            "-s 0",  # C-SVC
            "-t 2",  # RBF kernel
            f"-c {float(self.C)!r}",
            f"-g {float(self.gamma_)!r}",
            f"-e {float(self.tol)!r}",
            f"-m {float(self.cache_size)!r}",
            f"-h {int(bool(self.shrinking))}",
            "-q",
        ]
        options += [f"-w{i} {float(w)!r}" for i, w in enumerate(self.class_weight_)]
        return " ".join(options)

    def _check_labels(self):
        labels = list(self.model_.get_labels())
        if labels != list(range(len(self.classes_))):
            raise ValueError(
                f"LIBSVM model has labels {labels}; expected 0..{len(self.classes_) - 1}."
            )

    # prediction ------------------------------------------------------------

    def _transform(self, X) -> np.ndarray:
        """svm-scale's transform: lower + (upper-lower)(x-min)/(max-min);
        features constant in training become 0 (svm-scale omits them)."""
        X = np.asarray(X, dtype=np.float64)
        if not self.scale:
            return X
        lo, hi = self.scale_min_, self.scale_max_
        span = hi - lo
        varying = span != 0
        out = np.zeros_like(X)
        out[:, varying] = (
            SCALE_LOWER
            + (SCALE_UPPER - SCALE_LOWER) * (X[:, varying] - lo[varying]) / span[varying]
        )
        return out

    def transform_features(self, X) -> np.ndarray:
        """``X`` scaled as the model sees it (what svm-predict must be fed)."""
        from sklearn.utils.validation import check_is_fitted, validate_data

        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self._transform(X)

    def _predict_raw(self, X):
        Xs = self.transform_features(X)
        return _predict_libsvm(self.model_, Xs, len(self.classes_))

    def decision_function(self, X) -> np.ndarray:
        """Decision values as ``sklearn.svm.SVC`` returns them.

        Two classes: shape (n_samples,), positive meaning ``classes_[1]``.
        More: (n_samples, n_classes) for ``decision_function_shape="ovr"``,
        (n_samples, n_classes*(n_classes-1)/2) one-vs-one values for "ovo".
        """
        if self.decision_function_shape not in ("ovr", "ovo"):
            raise ValueError(
                "decision_function_shape must be 'ovr' or 'ovo'; "
                f"got {self.decision_function_shape!r}."
            )
        _, values = self._predict_raw(X)
        k = len(self.classes_)
        if k == 2:
            return -values[:, 0]
        if self.decision_function_shape == "ovo":
            return values
        return _ovr_from_ovo(values, k)

    def predict(self, X) -> np.ndarray:
        """LIBSVM's prediction (one-vs-one voting) for each row of ``X``."""
        labels, _ = self._predict_raw(X)
        return self.classes_[labels]

    def pair_names(self, class_names=None) -> list[str]:
        """Names of the decision-value columns: ``"<i>_vs_<j>"`` per pair."""
        names = [str(c) for c in (self.classes_ if class_names is None else class_names)]
        return [f"{names[i]}_vs_{names[j]}" for i, j in _pairs(len(names))]

    @property
    def n_support_(self) -> np.ndarray:
        """Number of support vectors of each class."""
        return np.array(
            [self.model_.nSV[i] for i in range(self.model_.get_nr_class())], dtype=np.int64
        )

    # persistence (no pickle) -----------------------------------------------

    def save(self, stem, *, feature_names=None, class_names=None, extra=None) -> dict:
        """Write ``<stem>.model`` (LIBSVM), ``<stem>.range`` (svm-scale -r)
        and ``<stem>.json`` (scaling, classes, parameters), each atomically.

        Returns
        -------
        dict
            The paths written, keyed "model", "range" and "json".
        """
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "model_")
        stem = Path(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        paths = {k: stem.with_name(f"{stem.name}.{k}") for k in ("model", "range", "json")}
        _save_libsvm_model(self.model_, paths["model"])
        n = self.n_features_in_
        names = (
            [str(f) for f in feature_names]
            if feature_names is not None
            else [f"x{i + 1}" for i in range(n)]
        )
        if self.scale:
            lines = ["x", f"{SCALE_LOWER:.17g} {SCALE_UPPER:.17g}"] + [
                f"{i + 1} {lo:.17g} {hi:.17g}"
                for i, (lo, hi) in enumerate(zip(self.scale_min_, self.scale_max_))
            ]
            atomic_write_text(paths["range"], "\n".join(lines) + "\n")
        classes = [c.item() if isinstance(c, np.generic) else c for c in self.classes_]
        atomic_write_json(
            paths["json"],
            {
                "format": "liposome-bench LIBSVM model",
                "libsvm_model": paths["model"].name,
                "svm_scale_range": paths["range"].name if self.scale else None,
                "params": {k: v for k, v in self.get_params().items() if k != "class_weight"},
                "class_weight_option": _json_safe(self.class_weight),
                "gamma": self.gamma_,
                "classes": classes,
                "class_names": [str(c) for c in (class_names or classes)],
                "labels": {str(i): str(c) for i, c in enumerate(class_names or classes)},
                "class_weight": [float(w) for w in self.class_weight_],
                "n_support": [int(v) for v in self.n_support_],
                "scaling": {
                    "lower": SCALE_LOWER,
                    "upper": SCALE_UPPER,
                    "min": [float(v) for v in self.scale_min_] if self.scale else None,
                    "max": [float(v) for v in self.scale_max_] if self.scale else None,
                },
                "feature_names": names,
                "decision_values": "one column per class pair (i, j), i < j; "
                "positive votes for class i",
                **(extra or {}),
            },
        )
        return paths

    @classmethod
    def load(cls, stem) -> "LibSVMClassifier":
        """A fitted classifier from files written by :meth:`save`.

        Raises
        ------
        ValueError
            If the files are missing or not a saved classifier.
        """
        stem = Path(stem)
        json_path = stem.with_name(f"{stem.name}.json")
        try:
            meta = json.loads(json_path.read_text(encoding="utf-8"))
            params = dict(meta["params"])
            classes = meta["classes"]
            scaling = meta["scaling"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{json_path} is not a saved LibSVMClassifier ({exc}).") from None
        est = cls(**params, class_weight=meta.get("class_weight_option"))
        est.classes_ = np.asarray(classes)
        est.n_features_in_ = len(meta["feature_names"])
        est.class_weight_ = np.asarray(meta["class_weight"], dtype=np.float64)
        est.gamma_ = float(meta["gamma"])
        if est.scale:
            est.scale_min_ = np.asarray(scaling["min"], dtype=np.float64)
            est.scale_max_ = np.asarray(scaling["max"], dtype=np.float64)
        else:
            est.scale_min_ = est.scale_max_ = np.full(est.n_features_in_, np.nan)
        est.model_ = _load_libsvm_model(stem.with_name(f"{stem.name}.model"))
        est._check_labels()
        return est

    def __getstate__(self):
        # LIBSVM models are C structures: carry the model file's text instead
        # (so clone/deepcopy/joblib work); SVs are kept to LIBSVM's file precision.
        state = self.__dict__.copy()
        model = state.pop("model_", None)
        if model is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "m.model"
                _save_libsvm_model(model, path)
                state["_model_text"] = path.read_text(encoding="ascii")
        return state

    def __setstate__(self, state):
        text = state.pop("_model_text", None)
        self.__dict__.update(state)
        if text is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "m.model"
                path.write_text(text, encoding="ascii")
                self.model_ = _load_libsvm_model(path)


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items()}
    return value


def _pairs(k: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(k) for j in range(i + 1, k)]


def _ovr_from_ovo(values: np.ndarray, k: int) -> np.ndarray:
    """One-vs-one decision values to scikit-learn's one-vs-rest shape: the
    votes of each class (LIBSVM's rule: a value > 0 votes for the first class
    of the pair) plus its summed confidence squashed into (-1/3, 1/3)."""
    votes = np.zeros((values.shape[0], k))
    confidence = np.zeros((values.shape[0], k))
    for n, (i, j) in enumerate(_pairs(k)):
        first = values[:, n] > 0
        votes[first, i] += 1
        votes[~first, j] += 1
        confidence[:, i] += values[:, n]
        confidence[:, j] -= values[:, n]
    return votes + confidence / (3 * (np.abs(confidence) + 1))


def _train_libsvm(X, labels, options: str):
    from scipy import sparse

    from libsvm.svm import svm_parameter, svm_problem
    from libsvm.svmutil import svm_train

    # A CSR matrix makes libsvm-official build its node arrays vectorised.
    prob = svm_problem(labels.astype(np.float64), sparse.csr_matrix(X))

    with _one_openmp_thread():
        model = svm_train(prob, svm_parameter(options))
    # Ctrl-C / SIGTERM during svm_train lands in LIBSVM's print callback,
    # where Python drops the exception; the CLI's handlers noted it.
    raise_if_interrupted()
    return model


def _one_openmp_thread():
    """libsvm-official is built with OpenMP; run it on one thread. Parallelism
    comes from --jobs (folds, grid points) instead: OpenMP threads that spin
    waiting for each other on busy cores made one fold's fit 7x slower in CPU
    time (docs/svm.md)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="openmp")


def _predict_libsvm(model, X, n_classes):
    """Labels and one-vs-one decision values of every row, calling LIBSVM's
    svm_predict_values directly (svmutil.svm_predict converts rows one
    feature at a time in Python)."""
    from scipy import sparse

    from libsvm.svm import libsvm, svm_problem

    n = X.shape[0]
    pairs = n_classes * (n_classes - 1) // 2
    labels = np.empty(n, dtype=np.int64)
    values = np.empty((n, pairs), dtype=np.float64)
    if n == 0:
        return labels, values
    prob = svm_problem(np.zeros(n), sparse.csr_matrix(X))
    buffer = (c_double * pairs)()
    view = np.ctypeslib.as_array(buffer)
    with _one_openmp_thread():
        for i in range(n):
            labels[i] = int(libsvm.svm_predict_values(model, prob.x[i], buffer))
            values[i] = view
    return labels, values


def _save_libsvm_model(model, path: Path) -> None:
    from libsvm.svm import libsvm

    def write(tmp):
        if libsvm.svm_save_model(os.fsencode(tmp), model) != 0 or not tmp.is_file():
            raise OSError(f"LIBSVM could not write {path}")

    atomic_write(path, write)


def _load_libsvm_model(path: Path):
    from libsvm.svm import libsvm, toPyModel

    if not Path(path).is_file():
        raise ValueError(f"{path}: LIBSVM model file is missing.")
    pointer = libsvm.svm_load_model(os.fsencode(path))
    if not pointer:
        raise ValueError(f"{path} is not a LIBSVM model file.")
    return toPyModel(pointer)


# Grid search ------------------------------------------------------------------


def stratified_subsample(y, max_samples, *, min_per_class=MIN_PER_CLASS, seed=0) -> np.ndarray:
    """Indices of a stratified subsample of at most about ``max_samples``.

    Each class keeps its share of ``max_samples`` but at least
    ``min(min_per_class, its count)`` particles; all indices if
    ``max_samples`` is None or not smaller than ``len(y)``.
    """
    y = np.asarray(y)
    if max_samples is None or len(y) <= max_samples:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        quota = max(round(len(members) * max_samples / len(y)), min(min_per_class, len(members)))
        chosen.append(rng.choice(members, size=min(quota, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))


def search_grid(
    X,
    y,
    *,
    C_values,
    gamma_values,
    inner_folds=3,
    max_samples=None,
    seed=0,
    jobs=1,
    class_weight="balanced",
    groups=None,
    extend=True,
):
    """Choose C and gamma by stratified inner cross-validation on (X, y).

    When the best C or gamma lies on the edge of its values (and more than
    one value was searched), the grid is extended past that edge by one grid
    step and the new points scored on the same inner folds, repeatedly, at
    most ``EXTEND_STEPS`` times per direction and within ``EXTEND_LIMITS``
    (``extend=False``: never). The extensions made are returned in ``best``.

    With ``groups`` (the outer folds' grouping, e.g. micrographs) the inner
    folds are grouped too (``StratifiedGroupKFold``), so no group is in both
    the fitting and the scoring part of an inner fold.

    Each grid point is scored by macro F1 over the inner validation folds
    (``sklearn`` scorer ``f1_macro``); ties go to the smaller C, then the
    smaller gamma.

    Parameters
    ----------
    X, y : training features and labels (the outer training folds only).
    C_values, gamma_values : sequences of float
    inner_folds : int
        Inner folds; reduced to the smallest class count if that is smaller.
    max_samples : int or None
        Run on a stratified subsample of this size (see
        :func:`stratified_subsample`).
    seed : int
        Seeds the subsample and the inner fold assignment.
    jobs : int
        Grid points x inner folds run in parallel (joblib).
    groups : array, shape (n_samples,), optional
        Group of each training particle.

    Returns
    -------
    best : dict
        "C", "gamma", "score" (mean inner macro F1), "n_samples",
        "inner_folds", "extended" (list of "gamma down to 2^-15"-like
        strings) and "edge" (the parameters whose best value still lies on
        an edge of the searched values: at a limit, or not extended).
    table : list of dict
        Every grid point: "C", "gamma", "score", "std".

    Raises
    ------
    ConfigError
        If a class has fewer than 2 training particles.
    """
    from sklearn.model_selection import GridSearchCV

    y = np.asarray(y)
    keep = stratified_subsample(y, max_samples, seed=seed)
    Xs, ys = np.asarray(X)[keep], y[keep]
    gs = None if groups is None else np.asarray(groups)[keep]
    counts = np.unique(ys, return_counts=True)[1]
    n_splits = int(min(inner_folds, counts.min()))
    if n_splits < 2:
        raise ConfigError(
            "The C/gamma grid search needs at least 2 training particles of each class; "
            f"one class has {int(counts.min())}. Fix both (svm --C and --gamma, or C and "
            "gamma in the [svm] table of --config)."
        )
    if gs is not None:
        n_groups = len(np.unique(gs))
        if n_groups < 2:
            raise ConfigError(
                "The grouped C/gamma grid search needs at least 2 groups in the training "
                f"folds; they hold {n_groups}. Fix both (svm --C and --gamma, or [svm] C and "
                "gamma in --config), or use fewer "
                "--folds."
            )
        n_splits = min(n_splits, n_groups)
    cv = inner_splitter(ys, gs, n_splits, seed)

    def evaluate(param_grid):
        search = GridSearchCV(
            LibSVMClassifier(class_weight=class_weight),
            param_grid,
            scoring="f1_macro",
            cv=cv,
            n_jobs=jobs,
            refit=False,
            error_score="raise",
        )
        search.fit(Xs, ys, groups=gs)
        res = search.cv_results_
        return [
            {"C": float(p["C"]), "gamma": float(p["gamma"]), "score": float(m), "std": float(s)}
            for p, m, s in zip(res["params"], res["mean_test_score"], res["std_test_score"])
        ]

    values = {
        "C": sorted(float(c) for c in C_values),
        "gamma": sorted(float(g) for g in gamma_values),
    }
    table = evaluate({"C": values["C"], "gamma": values["gamma"]})
    extended, steps = [], {"C": 0, "gamma": 0}
    while True:
        best = _best_row(table)
        new = {}
        for name in ("C", "gamma"):
            grid = values[name]
            if not extend or len(grid) < 2 or steps[name] >= EXTEND_STEPS:
                continue
            low, high = EXTEND_LIMITS[name]
            if best[name] == grid[-1] and grid[-1] * (grid[-1] / grid[-2]) <= high * (1 + 1e-9):
                new[name] = grid[-1] * (grid[-1] / grid[-2])
            elif best[name] == grid[0] and grid[0] / (grid[1] / grid[0]) >= low * (1 - 1e-9):
                new[name] = grid[0] / (grid[1] / grid[0])
        if not new:
            break
        param_grid = []
        for name, value in new.items():
            other = "gamma" if name == "C" else "C"
            param_grid.append({name: [value], other: values[other]})
            steps[name] += 1
            direction = "up" if value > values[name][-1] else "down"
            extended.append(f"{name} {direction} to 2^{math.log2(value):g}")
        if len(new) == 2:  # the new corner point
            param_grid.append({"C": [new["C"]], "gamma": [new["gamma"]]})
        table += evaluate(param_grid)
        for name, value in new.items():
            values[name] = sorted(values[name] + [value])
    best = _best_row(table)
    edge = [
        name
        for name in ("C", "gamma")
        if len(values[name]) > 1 and best[name] in (values[name][0], values[name][-1])
    ]
    return (
        {
            "C": best["C"],
            "gamma": best["gamma"],
            "score": best["score"],
            "n_samples": int(len(ys)),
            "inner_folds": n_splits,
            "extended": extended,
            "edge": edge,
        },
        table,
    )


def _best_row(table):
    """The best grid point; ties go to the smaller C, then the smaller gamma."""
    best_score = max(row["score"] for row in table)
    return min(
        (row for row in table if row["score"] == best_score),
        key=lambda row: (row["C"], row["gamma"]),
    )


# Cross-validation run -----------------------------------------------------------


def check_svm_options(*, jobs: int = 1, **settings) -> None:
    """Raise ConfigError for a --jobs that is neither positive nor -1, or
    invalid settings (an unknown grid, a non-positive C or gamma): call
    before any long work."""
    if jobs == 0 or jobs < -1:
        raise ConfigError(
            f"--jobs must be a positive number of workers or -1 (every core); got {jobs}."
        )
    make_svm_settings(**settings)


#: Problems whose default SVM features are the lab's ``vironova`` set: the
#: set was designed for them (thesis section 4.1). Any other (custom)
#: problem gets ``all`` features by default, so the SVM is not held to
#: features chosen for another question (issue 23, item 6).
VIRONOVA_PROBLEMS = ("lamellarity", "encapsulation")


def default_feature_set(problem) -> str:
    """The SVM's default feature set for ``problem`` (a Problem or its
    name): ``"vironova"`` for lamellarity and encapsulation, else ``"all"``."""
    name = getattr(problem, "name", problem)
    return "vironova" if name in VIRONOVA_PROBLEMS else "all"


def make_svm_settings(settings: SVMSettings | None = None, **options) -> SVMSettings:
    """``settings`` (default ``SVMSettings()``) with ``options`` replacing
    single fields; an unknown option is a ConfigError naming the valid ones.

    >>> make_svm_settings(C=2.0).C
    2.0
    """
    if settings is None:
        settings = SVMSettings()
    elif not isinstance(settings, SVMSettings):
        settings = SVMSettings.from_mapping(settings)
    if not options:
        return settings
    return SVMSettings.from_mapping({**settings.to_dict(), **options})


def _feature_matrix(features, dataset, reporter):
    """The float matrix of the feature table, refusing NaN and infinity.

    Columns that are undefined for every particle are dropped, and said so.
    """
    import pandas as pd

    if len(features) != len(dataset):
        raise DatasetError(
            f"Feature extraction returned {len(features)} rows for {len(dataset)} particles."
        )
    table = features.apply(pd.to_numeric, errors="coerce").astype(np.float64)
    finite = np.isfinite(table.to_numpy())
    dropped = [c for c, ok in zip(table.columns, finite.any(axis=0)) if not ok]
    if dropped:
        reporter.message(
            f"svm: leaving out feature(s) {', '.join(map(str, dropped))}: "
            "not defined for any particle."
        )
        table = table.drop(columns=dropped)
        finite = np.isfinite(table.to_numpy())
    if table.shape[1] == 0:
        raise DatasetError("No usable features: every feature column is empty or non-numeric.")
    bad_rows, bad_cols = np.nonzero(~finite)
    if bad_rows.size:
        col = table.columns[bad_cols[0]]
        n_bad = int((~finite[:, bad_cols[0]]).sum())
        raise DatasetError(
            f"Feature {col!r} is not a finite number for {n_bad} particle(s) (first: "
            f"particle {dataset.ids[bad_rows[0]]}); the SVM needs every feature. "
            "Fix those particles or use another --feature-set."
        )
    return table.to_numpy(), [str(c) for c in table.columns], dropped


def _fit_fold(
    X,
    y,
    train,
    test,
    *,
    fold,
    C,
    gamma,
    grid,
    seed,
    jobs,
    stem,
    feature_names,
    class_names,
    groups=None,
):
    """Grid search, fit and predict one fold; save its model. Runs in a worker."""
    spec = GRIDS[grid]
    timings = {}
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    table = []
    best = {
        "C": C,
        "gamma": gamma,
        "score": None,
        "n_samples": None,
        "inner_folds": None,
        "extended": [],
        "edge": [],
    }
    if C is None or gamma is None:
        best, table = search_grid(
            X[train],
            y[train],
            C_values=[C] if C is not None else spec["C"],
            gamma_values=[gamma] if gamma is not None else spec["gamma"],
            inner_folds=spec["inner_folds"],
            max_samples=spec["max_samples"],
            seed=seed + 1000 * fold,
            jobs=jobs,
            groups=None if groups is None else groups[train],
        )
    timings["grid_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    est = LibSVMClassifier(C=best["C"], gamma=best["gamma"]).fit(X[train], y[train])
    timings["fit_s"] = time.perf_counter() - t0
    est.save(
        stem,
        feature_names=feature_names,
        class_names=[class_names[c] for c in est.classes_],
        extra={"fold": fold},
    )
    # Predict with the model as saved (LIBSVM writes support vectors to 8
    # significant digits), so the stored predictions are svm-predict's.
    est = LibSVMClassifier.load(stem)
    t0 = time.perf_counter()
    labels, pair_values = est._predict_raw(X[test])
    timings["predict_s"] = time.perf_counter() - t0
    # CPU seconds of the whole fold (grid, fit, predict), unaffected by other
    # processes competing for the cores; unknown when grid points ran in
    # other processes.
    timings["cpu_s"] = time.process_time() - cpu0 if jobs == 1 else None
    # Decision values in the pair columns of all classes (a class missing from
    # the training folds leaves its pairs NaN).
    column = {pair: n for n, pair in enumerate(_pairs(len(class_names)))}
    values = np.full((len(test), len(column)), np.nan)
    for n, (i, j) in enumerate(_pairs(len(est.classes_))):
        values[:, column[(int(est.classes_[i]), int(est.classes_[j]))]] = pair_values[:, n]
    return {
        "fold": fold,
        "y_pred": est.classes_[labels],
        "scores": values,
        "params": {
            "C": float(best["C"]),
            "gamma": float(best["gamma"]),
            "grid_score": best["score"],
            "grid_score_name": GRID_SCORE if table else None,
            "grid": grid if table else None,
            "grid_samples": best["n_samples"],
            "inner_folds": best["inner_folds"],
            "grid_extended": best["extended"],
            "grid_edge": best["edge"],
            "grid_results": table,
            "class_weight": {
                class_names[c]: float(w) for c, w in zip(est.classes_, est.class_weight_)
            },
            "n_support": {class_names[c]: int(v) for c, v in zip(est.classes_, est.n_support_)},
            "n_train": int(len(train)),
            "n_features": int(X.shape[1]),
            "model_file": f"models/{Path(stem).name}.model",
        },
        "timings": timings,
    }


def run_svm(
    dataset,
    folds,
    results,
    settings: SVMSettings | None = None,
    *,
    jobs=1,
    seed=0,
    reporter=None,
    only_folds=None,
    name: str = MODEL_NAME,
    features=None,
    **options,
):
    """Cross-validate the LIBSVM baseline on the dataset's stored folds.

    Features are extracted once; each fold not yet saved in ``results`` is
    fitted on the other folds (grid search on those only), predicted, and
    saved with its model, so an interrupted run resumes where it stopped.

    Parameters
    ----------
    dataset : dataset.Dataset
    folds : folds.Folds
    results : results.ResultsDir
    settings : settings.SVMSettings, optional
        Feature set, feature source, grid, fixed C/gamma (default
        ``SVMSettings()``; docs/svm.md).
    jobs : int
        Parallel workers for folds and grid points (-1: every core).
    seed : int
        Seeds the grid search's subsample and inner folds.
    reporter : progress.NullReporter, optional
    only_folds : iterable of int, optional
        Run only these folds (``sweep`` runs one fold per task).
    name : str
        The model's name in ``results`` (``benchmark --svm-features``
        saves a second feature set as ``svm-<set>``).
    features : pandas.DataFrame, optional
        The feature table, ``features.extract_features`` of ``dataset`` with
        these settings' feature set, source and units, made once for many
        calls (``benchmark``'s repeats); extracted here when None.
    **options
        Single settings to change (any ``SVMSettings`` field, e.g. ``C=1.0``).

    Returns
    -------
    list of results.FoldResult
        Every fold (with ``only_folds``: those folds), in fold order
        (resumed ones read back from ``results``).

    Raises
    ------
    ConfigError, DatasetError, ResultsError
    """
    from joblib import Parallel, delayed, effective_n_jobs

    reporter = reporter or NullReporter()
    settings = make_svm_settings(settings, **options)
    check_svm_options(jobs=jobs)
    feature_set, source, grid = settings.feature_set, settings.source, settings.grid
    C, gamma = settings.C, settings.gamma
    class_names = list(dataset.problem.classes)
    settings = {
        "feature_set": feature_set,
        "source": source,
        "units": settings.units,
        "grid": None if (C is not None and gamma is not None) else grid,
        "C": C,
        "gamma": gamma,
        "seed": seed,
        "grid_score": GRID_SCORE,
        "grid_min_per_class": MIN_PER_CLASS,
        "grid_extension": {
            "steps": EXTEND_STEPS,
            "limits": {k: list(v) for k, v in EXTEND_LIMITS.items()},
        },
        "class_weight": "balanced",
        "scaling": "svm-scale [-1, 1] on the training folds",
    }
    results.prepare(dataset, folds, name, settings)
    wanted = range(folds.k) if only_folds is None else sorted(set(only_folds))
    done = {f: results.load_fold(name, f, class_names) for f in wanted}
    todo = [f for f, r in done.items() if r is None]
    if len(todo) < len(done):
        reporter.message(
            f"{name}: {len(done) - len(todo)} of {folds.k} folds already in {results.path}; resuming."
        )
    if todo:
        t0 = time.perf_counter()
        if features is None:
            features = extract_features(
                dataset,
                feature_set,
                source=source,
                reporter=reporter,
                jobs=jobs,
                units=settings["units"],
            )
        elif len(features) != len(dataset):
            raise ConfigError(
                f"The feature table has {len(features)} rows, not one per particle "
                f"({len(dataset)}); pass extract_features(dataset, ...) of this dataset."
            )
        features_s = time.perf_counter() - t0
        X, feature_names, dropped = _feature_matrix(features, dataset, reporter)
        y = dataset.y
        models_dir = results.models_subdir(name)
        n_workers = max(1, min(effective_n_jobs(jobs), len(todo)))
        inner_jobs = max(1, effective_n_jobs(jobs) // n_workers)
        ids = dataset.ids

        def arguments(f):
            return dict(
                X=X,
                y=y,
                train=folds.train_indices(f),
                test=folds.test_indices(f),
                fold=f,
                C=C,
                gamma=gamma,
                grid=grid,
                seed=seed,
                jobs=inner_jobs,
                stem=models_dir / f"fold-{f}",
                feature_names=feature_names,
                class_names=class_names,
                groups=getattr(folds, "groups", None),
            )

        def save(out):
            f = out["fold"]
            test = folds.test_indices(f)
            result = FoldResult(
                model=name,
                fold=f,
                ids=[ids[i] for i in test],
                y_true=y[test],
                y_pred=np.asarray(out["y_pred"], dtype=np.int64),
                scores=out["scores"],
                score_names=[
                    f"{class_names[i]}_vs_{class_names[j]}" for i, j in _pairs(len(class_names))
                ],
                score_kind="decision",
                params=dict(out["params"], feature_set=feature_set, dropped_features=dropped),
                timings=dict(out["timings"], features_s=features_s),
            )
            results.save_fold(result, class_names)
            done[f] = result
            reporter.advance(1)
            _report_fold(reporter, result, folds.k)

        reporter.stage(name, total=len(todo))
        if n_workers == 1:
            for f in todo:
                reporter.fold(f, folds.k)
                save(_fit_fold(**arguments(f)))
        else:
            runner = Parallel(n_jobs=n_workers, return_as="generator_unordered")
            for out in runner(delayed(_fit_fold)(**arguments(f)) for f in todo):
                save(out)
    return [done[f] for f in wanted]


def _report_fold(reporter, result, k):
    params, timings = result.params, result.timings
    score = params["grid_score"]
    reporter.message(
        f"{result.model} fold {result.fold} (of 0-{k - 1}): C={params['C']:g} gamma={params['gamma']:g}"
        + (f" (inner {GRID_SCORE} {score:.3f})" if score is not None else "")
        + (
            f"; grid extended: {', '.join(params['grid_extended'])}"
            if params.get("grid_extended")
            else ""
        )
        + (
            f"; {' and '.join(params['grid_edge'])} still on the grid's edge"
            if params.get("grid_edge")
            else ""
        )
        + f", fit {timings['fit_s']:.1f}s"
    )


#: Public names of the fold runner and the feature-matrix check, for other
#: modules (``estimate`` times one fold exactly as ``run_svm`` runs it).
fit_fold = _fit_fold
feature_matrix = _feature_matrix
