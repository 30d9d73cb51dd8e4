"""Stratified k-fold assignment, made once per dataset and stored with it.

The SVM and every CNN are compared on identical splits (thesis section 8.1),
so folds are assigned once, written to ``DIR/folds/k{k}-seed{seed}.json``
beside the dataset, and reused by every later command. The file is keyed by
the particle ids and the dataset fingerprint; folds that do not match the
dataset are refused.

Grouped folds (``--group-by KEY``): particles that share ``Particle.meta[KEY]``
(a micrograph, session or grid id) always land in the same fold, by
scikit-learn's ``StratifiedGroupKFold``. Particles of one micrograph share
its ice, defocus and dose and are often near-duplicates; splitting them
across folds lets a model be tested on the micrograph it was trained on and
flatters every score. Grouped folds are stored as
``k{k}-seed{seed}-by-{KEY}.json``, record their key, and are refused under
another key (or ungrouped). The same groups are kept apart in the SVM's
inner grid-search folds (:func:`inner_splitter`) and in the CNN's validation
split (:func:`liposome_bench.cnn.split_validation`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liposome_bench.data.types import FOLDS_DIR, Dataset
from liposome_bench.io import atomic_write_json
from liposome_bench.errors import FoldError

#: Meta keys that name a shared acquisition unit; data holding one while its
#: folds are not grouped gets a warning (:func:`ungrouped_warning`).
GROUP_LIKE_KEYS = (
    "micrograph",
    "session",
    "grid",
    "image",
    "exposure",
    "movie",
    "stack",
    "acquisition",
    "tile",
    "group",
)


@dataclass
class Folds:
    """Fold number of every particle, aligned with the dataset's order."""

    k: int
    seed: int
    fingerprint: str
    fold_of: np.ndarray
    path: Path | None = None
    #: The ``Particle.meta`` key folds are grouped by, or None.
    group_by: str | None = None
    #: The group of every particle (aligned with the dataset), or None.
    groups: np.ndarray | None = None

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


def make_folds(
    y, class_names, k: int = 5, seed: int = 0, groups=None, group_by: str = "group"
) -> np.ndarray:
    """Assign each sample to one of ``k`` stratified folds.

    With ``groups``, samples of one group always share a fold
    (``StratifiedGroupKFold``: whole groups are dealt to folds so that each
    fold's class shares stay as close to the data's as the groups allow).

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
    groups : array of str, shape (n_samples,), optional
        Group of each sample (e.g. its micrograph).
    group_by : str
        Name of the grouping key, for error messages.

    Returns
    -------
    fold_of : array of int, shape (n_samples,)

    Raises
    ------
    FoldError
        If ``k`` < 2, a class has fewer than ``k`` particles, or there are
        fewer than ``k`` groups.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

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
    if groups is None:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        groups = np.asarray(groups)
        n_groups = len(np.unique(groups))
        if n_groups < k:
            raise FoldError(
                f"{k} folds grouped by {group_by!r} need at least {k} groups; the data has "
                f"{n_groups}. Use --folds {n_groups}."
                if n_groups >= 2
                else f"{k} folds grouped by {group_by!r} need at least {k} groups; the data "
                f"has {n_groups}. Group by another key, or drop --group-by."
            )
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
        fold_of[test] = fold
    sizes = np.bincount(fold_of, minlength=k)
    if (sizes == 0).any():
        raise FoldError(
            f"{k} folds grouped by {group_by!r} leave fold {int(np.argmin(sizes))} empty "
            f"(the groups are too uneven). Use --folds {k - 1}."
        )
    return fold_of


def group_labels(dataset: Dataset, key: str) -> np.ndarray:
    """The value of ``Particle.meta[key]`` of every particle, as strings.

    Raises
    ------
    FoldError
        If a particle lacks the key; the message names the key and the meta
        keys the data has.
    """
    key = str(key).strip().lower()
    values = []
    for p in dataset.particles:
        value = p.meta.get(key)
        if value is None or str(value).strip() == "":
            available = sorted({k for q in dataset.particles for k in q.meta})
            raise FoldError(
                f"--group-by {key}: particle {p.id} has no {key!r} value; "
                + (
                    f"the data's meta keys are {', '.join(available)}."
                    if available
                    else "the data has no meta keys (manifest columns or "
                    "export keys beyond the standard ones) to group by."
                )
            )
        values.append(str(value))
    return np.array(values, dtype=object)


def inner_splitter(y, groups, n_splits: int, seed: int):
    """The splitter of an inner cross-validation (grid search) on training
    data: ``StratifiedGroupKFold`` with groups, else ``StratifiedKFold``.
    Its ``split(X, y, groups)`` keeps each group inside one inner fold."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if groups is None:
        return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)


def group_like_keys(dataset: Dataset) -> list[str]:
    """Meta keys that look like an acquisition unit (micrograph, session,
    grid, image, ...) and are shared by several particles."""
    keys = sorted({k for p in dataset.particles for k in p.meta})
    found = []
    for key in keys:
        if not any(word in key for word in GROUP_LIKE_KEYS):
            continue
        values = [p.meta.get(key) for p in dataset.particles]
        if len(set(values)) < len(values):
            found.append(key)
    return found


#: ``group_by`` value meaning "the data's acquisition key, if it has one"
#: (:func:`resolve_group_by`); the command-line default of ``--group-by``.
AUTO_GROUP = "auto"


def default_group_key(dataset: Dataset, k: int = 5) -> str | None:
    """The meta key folds are grouped by when none is named: the first of
    :data:`GROUP_LIKE_KEYS`' order (micrograph first) that the data carries,
    that several particles share, that every particle has and that has at
    least ``2 k`` distinct values (so that every fold's training part keeps
    enough groups for its grouped validation split); None when no key
    qualifies.

    >>> from liposome_bench.dataset import Dataset, Particle, PROBLEMS
    >>> import numpy as np
    >>> ps = [Particle(str(i), "unilamellar", np.zeros((8, 8)), np.ones((8, 8), bool),
    ...                meta={"micrograph": f"m{i // 2}"}) for i in range(12)]
    >>> default_group_key(Dataset(PROBLEMS["lamellarity"], ps), k=3)
    'micrograph'
    >>> default_group_key(Dataset(PROBLEMS["lamellarity"], ps), k=4) is None
    True
    """
    found = group_like_keys(dataset)

    def rank(key):
        return next((i for i, word in enumerate(GROUP_LIKE_KEYS) if word in key), 99), key

    for key in sorted(found, key=rank):
        values = [p.meta.get(key) for p in dataset.particles]
        if any(v is None or str(v).strip() == "" for v in values):
            continue
        if len({str(v) for v in values}) >= 2 * k:
            return key
    return None


def resolve_group_by(dataset: Dataset, group_by: str | None, k: int = 5) -> str | None:
    """The grouping key to use: ``group_by`` itself, None for ungrouped
    folds, or for :data:`AUTO_GROUP` the data's own acquisition key
    (:func:`default_group_key`), None where it has none."""
    if group_by is None:
        return None
    group_by = str(group_by).strip().lower()
    if group_by == AUTO_GROUP:
        return default_group_key(dataset, k)
    return group_by


def ungrouped_warning(dataset: Dataset, group_by: str | None, k: int | None = None) -> str | None:
    """A warning when the data has a group-like meta key but folds are not
    grouped; None otherwise. With ``k``, a key with fewer than ``k`` values
    is named as too coarse for ``k`` grouped folds instead of suggested."""
    if group_by is not None:
        return None
    keys = group_like_keys(dataset)
    if not keys:
        return None
    key = keys[0]
    flatter = (
        f"The particles have a {key!r} key shared by several particles, but the folds "
        f"are not grouped: particles of one {key} can land in both training and test "
        "folds, which flatters every score."
    )
    n_values = len({str(p.meta.get(key)) for p in dataset.particles})
    if k is not None and n_values < k:
        return (
            f"{flatter} It has only {n_values} values, too few for {k} grouped folds: "
            f"use --folds {n_values} --group-by {key} where {n_values} folds are enough, "
            "or read the scores as optimistic."
            if n_values >= 2
            else f"{flatter} It has a single value, so it cannot group folds."
        )
    return f"{flatter} Pass --group-by {key} to keep each {key} in one fold."


def describe_groups(dataset: Dataset) -> dict:
    """Groups per class for every group-like meta key (``dataset info``).

    Returns
    -------
    dict
        key -> {"n_groups": int, "per_class": {class: groups holding that
        class}, "particles_per_group": {"min", "median", "max"}}.
    """
    out = {}
    labels = np.array([p.label for p in dataset.particles], dtype=object)
    for key in group_like_keys(dataset):
        values = np.array([str(p.meta.get(key)) for p in dataset.particles], dtype=object)
        _, sizes = np.unique(values, return_counts=True)
        out[key] = {
            "n_groups": int(len(sizes)),
            "per_class": {c: int(len(set(values[labels == c]))) for c in dataset.problem.classes},
            "particles_per_group": {
                "min": int(sizes.min()),
                "median": float(np.median(sizes)),
                "max": int(sizes.max()),
            },
        }
    return out


def folds_path(root: Path, k: int, seed: int, group_by: str | None = None) -> Path:
    """``folds/k5-seed0.json``; grouped folds ``folds/k5-seed0-by-micrograph.json``."""
    suffix = f"-by-{re.sub(r'[^a-z0-9_.]+', '_', group_by)}" if group_by else ""
    return Path(root) / FOLDS_DIR / f"k{k}-seed{seed}{suffix}.json"


def load_or_make_folds(
    dataset: Dataset, k: int = 5, seed: int = 0, group_by: str | None = None, reporter=None
) -> Folds:
    """Return the dataset's stored folds, making and storing them if absent.

    Folds of a dataset without a folder on disk are made in memory only.

    Parameters
    ----------
    dataset : Dataset
    k, seed : int
        Number of folds and the seed of their assignment.
    group_by : str, optional
        Keep particles sharing ``Particle.meta[group_by]`` in one fold;
        :data:`AUTO_GROUP` ("auto") groups by the data's own acquisition key
        (:func:`default_group_key`, micrograph first) where it has one.
    reporter : progress reporter, optional
        Gets :func:`ungrouped_warning` when folds are ungrouped but the data
        has a group-like key.

    Raises
    ------
    FoldError
        If stored folds were made for another dataset or another grouping,
        or cannot be made (too few particles or groups, a missing key).
    """
    group_by = resolve_group_by(dataset, group_by, k)
    groups = group_labels(dataset, group_by) if group_by else None
    warning = ungrouped_warning(dataset, group_by, k)
    if warning and reporter is not None:
        reporter.message(f"Warning: {warning}")
    fingerprint = dataset.fingerprint()
    path = folds_path(dataset.root, k, seed, group_by) if dataset.root is not None else None
    if path is not None and path.exists():
        folds = _read_folds(path, dataset, fingerprint, group_by)
        folds.groups = groups
        if groups is not None:
            _check_grouped(folds, path)
        return folds
    fold_of = make_folds(dataset.y, dataset.problem.classes, k, seed, groups, group_by or "group")
    folds = Folds(k, seed, fingerprint, fold_of, path, group_by, groups)
    if path is not None:
        try:
            atomic_write_json(
                path,
                {
                    "k": k,
                    "seed": seed,
                    "fingerprint": fingerprint,
                    **({"group_by": group_by} if group_by else {}),
                    "folds": {pid: int(f) for pid, f in zip(dataset.ids, fold_of)},
                },
            )
        except OSError as exc:
            raise FoldError(
                f"{path}: cannot store folds ({exc.strerror}). "
                "Copy the dataset to a writable folder."
            ) from None
    return folds


def _read_folds(
    path: Path, dataset: Dataset, fingerprint: str, group_by: str | None = None
) -> Folds:
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
            f'{path} is not a folds file ("folds" must map particle ids to fold numbers). '
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
    stored_key = stored.get("group_by")
    if stored_key != group_by:
        made = f"grouped by {stored_key!r}" if stored_key else "without grouping"
        asked = f"--group-by {group_by}" if group_by else "no --group-by"
        raise FoldError(
            f"{path} holds folds made {made}, but this run has {asked}. Pass "
            + (f"--group-by {stored_key}" if stored_key else "the same grouping")
            + ", or delete the file to make new folds."
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
    return Folds(k, seed, fingerprint, fold_of, path, group_by)


def _check_grouped(folds: Folds, path: Path) -> None:
    """Refuse a stored grouped folds file that splits a group (hand-edited)."""
    for group in np.unique(folds.groups):
        spread = np.unique(folds.fold_of[folds.groups == group])
        if len(spread) > 1:
            raise FoldError(
                f"{path} puts {folds.group_by} {group!r} in folds "
                f"{', '.join(str(int(f)) for f in spread)}; grouped folds keep each group in "
                "one fold. Delete the file to make new folds."
            )


def _k_seed_of(path: Path) -> tuple[int, int]:
    """(k, seed) from a name written by ``folds_path``: k5-seed0.json or
    k5-seed0-by-micrograph.json."""
    k, rest = path.stem.split("-seed", 1)
    return int(k[1:]), int(rest.split("-by-", 1)[0])


def describe_stored_folds(dataset: Dataset) -> list[dict]:
    """The fold files stored beside ``dataset``: file, k, seed, group key,
    and whether each matches the dataset (``dataset info``)."""
    root, fingerprint = dataset.root, dataset.fingerprint()
    if root is None or not (Path(root) / FOLDS_DIR).is_dir():
        return []
    found = []
    for f in sorted((Path(root) / FOLDS_DIR).glob("*.json")):
        entry = {"file": f"{FOLDS_DIR}/{f.name}", "k": None, "seed": None, "matches": False}
        try:
            stored = json.loads(f.read_text(encoding="utf-8"))
            entry.update(
                k=int(stored["k"]),
                seed=int(stored["seed"]),
                matches=stored.get("fingerprint") == fingerprint,
            )
            if stored.get("group_by"):
                entry["group_by"] = str(stored["group_by"])
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            entry["unreadable"] = True
        found.append(entry)
    return found
