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
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise FoldError(
            f"{path} is not a folds file ({exc}). Delete it to make new folds."
        ) from None
    if not isinstance(assigned, dict) or not all(
        isinstance(f, int) and not isinstance(f, bool) for f in assigned.values()
    ):
        raise FoldError(
            f"{path} is not a folds file (\"folds\" must map particle ids to fold numbers). "
            "Delete it to make new folds."
        )
    if stored.get("fingerprint") == fingerprint and set(assigned) != set(dataset.ids):
        lacking = [pid for pid in dataset.ids if pid not in assigned]
        unknown = sorted(set(assigned) - set(dataset.ids))
        parts = []
        if lacking:
            parts.append(f"lacks {len(lacking)} particle(s) of this dataset (first: {lacking[0]})")
        if unknown:
            parts.append(f"holds {len(unknown)} id(s) not in it (first: {unknown[0]})")
        raise FoldError(
            f"{path} was edited: it {' and '.join(parts)}, although its fingerprint is this "
            "dataset's. Delete it to make new folds for this dataset."
        )
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
