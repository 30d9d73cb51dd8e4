"""Stratified k-fold assignment, made once per dataset and stored with it.

The SVM and every CNN are compared on identical splits (thesis section 8.1),
so folds are assigned once, written to ``DIR/folds/k{k}-seed{seed}.json``
beside the dataset, and reused by every later command. The file is keyed by
the particle ids and the dataset fingerprint; folds that do not match the
dataset are refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liposome_bench.dataset import Dataset, atomic_write_json
from liposome_bench.errors import FoldError

FOLDS_DIR = "folds"


@dataclass
class Folds:
    """Fold number of every particle, aligned with the dataset's order."""

    k: int
    seed: int
    fingerprint: str
    fold_of: np.ndarray
    path: Path | None = None

    def test_indices(self, fold: int) -> np.ndarray:
        return np.flatnonzero(self.fold_of == fold)

    def train_indices(self, fold: int) -> np.ndarray:
        return np.flatnonzero(self.fold_of != fold)

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        """The number of folds (scikit-learn's splitter API)."""
        return self.k

    def split(self, X=None, y=None, groups=None):
        """Yield (train indices, test indices) of each stored fold, in fold
        order: the stored folds as a scikit-learn splitter (``cv=folds``).

        ``X`` and ``y`` must be aligned with the dataset the folds were made
        for (one row per particle, in the dataset's order); ``groups`` is
        accepted for the API and ignored, since the stored folds already
        decide every particle's fold.

        Examples
        --------
        >>> import numpy as np
        >>> folds = Folds(k=2, seed=0, fingerprint="", fold_of=np.array([0, 1, 0, 1]))
        >>> [(tr.tolist(), te.tolist()) for tr, te in folds.split(np.zeros((4, 1)))]
        [([1, 3], [0, 2]), ([0, 2], [1, 3])]
        """
        if X is not None and len(X) != len(self.fold_of):
            raise FoldError(
                f"These folds cover {len(self.fold_of)} particles but X has {len(X)} rows; "
                "pass the rows of the dataset the folds were made for, in its order."
            )
        for fold in range(self.k):
            yield self.train_indices(fold), self.test_indices(fold)


def make_folds(y, class_names, k: int = 5, seed: int = 0) -> np.ndarray:
    """Assign each sample to one of ``k`` stratified folds.

    Parameters
    ----------
    y : array of int, shape (n_samples,)
        Class indices.
    class_names : sequence of str
        Names of the classes, for error messages.
    k : int
        Number of folds (at least 2).
    seed : int
        Shuffling seed.

    Returns
    -------
    fold_of : array of int, shape (n_samples,)

    Raises
    ------
    FoldError
        If ``k`` < 2 or a class has fewer than ``k`` particles.
    """
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    if k < 2:
        raise FoldError(f"--folds must be at least 2; got {k}.")
    counts = np.bincount(y, minlength=len(class_names))
    for name, count in zip(class_names, counts):
        if 0 < count < k:
            raise FoldError(
                f"{k} folds need at least {k} particles per class; "
                f"{name!r} has {count}. Use --folds {max(2, int(count))}."
                if count >= 2
                else f"{k} folds need at least {k} particles per class; "
                f"{name!r} has {count}. Add particles of that class or remove it."
            )
    fold_of = np.empty(len(y), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y)):
        fold_of[test] = fold
    return fold_of


def folds_path(root: Path, k: int, seed: int) -> Path:
    return Path(root) / FOLDS_DIR / f"k{k}-seed{seed}.json"


def load_or_make_folds(dataset: Dataset, k: int = 5, seed: int = 0) -> Folds:
    """Return the dataset's stored folds, making and storing them if absent.

    Folds of a dataset without a folder on disk are made in memory only.

    Raises
    ------
    FoldError
        If stored folds were made for another dataset, or cannot be made.
    """
    fingerprint = dataset.fingerprint()
    path = folds_path(dataset.root, k, seed) if dataset.root is not None else None
    if path is not None and path.exists():
        return _read_folds(path, dataset, fingerprint)
    fold_of = make_folds(dataset.y, dataset.problem.classes, k, seed)
    folds = Folds(k, seed, fingerprint, fold_of, path)
    if path is not None:
        try:
            atomic_write_json(
                path,
                {
                    "k": k,
                    "seed": seed,
                    "fingerprint": fingerprint,
                    "folds": {pid: int(f) for pid, f in zip(dataset.ids, fold_of)},
                },
            )
        except OSError as exc:
            raise FoldError(
                f"{path}: cannot store folds ({exc.strerror}). "
                "Copy the dataset to a writable folder."
            ) from None
    return folds


def _read_folds(path: Path, dataset: Dataset, fingerprint: str) -> Folds:
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        k, seed, assigned = int(stored["k"]), int(stored["seed"]), stored["folds"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FoldError(
            f"{path} is not a folds file ({exc}). Delete it to make new folds."
        ) from None
    if stored.get("fingerprint") != fingerprint or set(assigned) != set(dataset.ids):
        raise FoldError(
            f"{path} was made for another dataset (fingerprint "
            f"{stored.get('fingerprint')}, this dataset {fingerprint}). "
            "Delete it to make new folds for this dataset."
        )
    fold_of = np.array([assigned[pid] for pid in dataset.ids], dtype=np.int64)
    if (k, seed) != _k_seed_of(path) or fold_of.min() < 0 or fold_of.max() >= k:
        raise FoldError(
            f"{path} is not a folds file for k={_k_seed_of(path)[0]}, seed "
            f"{_k_seed_of(path)[1]} (it holds k={k}, seed {seed}, folds "
            f"{fold_of.min()}-{fold_of.max()}). Delete it to make new folds."
        )
    return Folds(k, seed, fingerprint, fold_of, path)


def _k_seed_of(path: Path) -> tuple[int, int]:
    """(k, seed) from a name written by ``folds_path``: k5-seed0.json."""
    k, seed = path.stem.split("-seed")
    return int(k[1:]), int(seed)
