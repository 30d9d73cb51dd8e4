"""Which training samples a fold's network sees (thesis section 4.8): the
stratified (or grouped) validation split carved from the training folds, each
epoch's class-balanced draw (oversampling, undersampling), SMOTE's synthetic
images and class weights.
"""

from __future__ import annotations

import numpy as np

from liposome_bench.errors import ConfigError

UNDERSAMPLE_DROP = 0.2  # section 4.8.2: 20 % of the majority class per epoch


def split_validation(y, fraction: float, rng, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of positions ``0..len(y)-1`` into (fit, validation).

    Each class gives ``round(fraction * count)`` particles to the validation
    part, at least one if it has two or more, and always keeps one for fitting.

    With ``groups`` (the folds' grouping), whole groups go to one part: one
    fold of a ``StratifiedGroupKFold`` into ``round(1 / fraction)`` folds
    (fewer if there are fewer groups) is the validation part, so its share
    is about ``fraction`` and its class shares as close to the data's as the
    groups allow.
    """
    y = np.asarray(y)
    if groups is not None and fraction > 0:
        return _split_validation_grouped(y, fraction, rng, np.asarray(groups))
    fit, val = [], []
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        n_val = 0
        if fraction > 0 and members.size >= 2:
            n_val = int(np.clip(round(fraction * members.size), 1, members.size - 1))
        val.append(members[:n_val])
        fit.append(members[n_val:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(val))


def _split_validation_grouped(y, fraction, rng, groups):
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ConfigError(
            "A grouped validation split needs at least 2 groups in the training folds; "
            f"they hold {n_groups}. Use fewer --folds or another --group-by key."
        )
    n_splits = int(np.clip(round(1.0 / fraction), 2, n_groups))
    splitter = StratifiedGroupKFold(
        n_splits=n_splits, shuffle=True, random_state=int(rng.integers(2**31))
    )
    fit, val = next(splitter.split(np.zeros(len(y)), y, groups))
    return np.sort(fit), np.sort(val)


class EpochSampler:
    """Draws each epoch's training samples from ``y`` (section 4.8).

    * ``oversample`` and ``smote``: a class-balanced draw of ``size`` samples
      (default ``len(y)``): each class present gets an equal share, taken
      from a shuffled queue of its samples that is refilled with a new
      shuffle when it runs out. A minority class is thus repeated, every
      sample equally often; the majority class contributes a different part
      of its samples each epoch and all of them every few epochs. Batches
      are balanced as with the thesis's oversampling to the majority count,
      at the cost of one training set's worth of samples per epoch rather
      than majority count x classes (docs/cnn.md).
    * ``undersample``: every sample except a random 20 % of the majority class,
      redrawn each epoch (section 4.8.2).
    * ``class-weight``, ``none``: every sample once.

    With ``size`` set, the last three are cut to at most ``size`` samples.
    Each draw is shuffled.
    """

    def __init__(self, y, balance: str, rng, size: int | None = None):
        self.y = np.asarray(y)
        self.balance = balance
        self.rng = rng
        self.size = size
        self.classes, self.counts = np.unique(self.y, return_counts=True)
        self._queues = {c: np.empty(0, dtype=np.int64) for c in self.classes}

    def _take(self, c, n):
        members = np.flatnonzero(self.y == c)
        queue = self._queues[c]
        while queue.size < n:
            queue = np.concatenate([queue, self.rng.permutation(members)])
        self._queues[c] = queue[n:]
        return queue[:n]

    def draw(self) -> np.ndarray:
        """Positions into ``y`` of the next epoch's samples."""
        if self.balance in ("oversample", "smote"):
            size = len(self.y) if self.size is None else int(self.size)
            shares = np.full(len(self.classes), size // len(self.classes))
            shares[: size % len(self.classes)] += 1
            chosen = np.concatenate([self._take(c, n) for c, n in zip(self.classes, shares)])
            return self.rng.permutation(chosen)
        if self.balance == "undersample":
            major = self.classes[np.argmax(self.counts)]
            members = np.flatnonzero(self.y == major)
            dropped = self.rng.choice(
                members, round(UNDERSAMPLE_DROP * members.size), replace=False
            )
            chosen = np.setdiff1d(np.arange(len(self.y)), dropped)
        else:
            chosen = np.arange(len(self.y))
        chosen = self.rng.permutation(chosen)
        return chosen if self.size is None else chosen[: int(self.size)]


def class_weights(y, n_classes: int) -> dict[int, float]:
    """Weights inversely proportional to class frequency, 1 on average."""
    counts = np.bincount(np.asarray(y), minlength=n_classes)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return {c: float(w) for c, w in enumerate(weights)}


def smote_pool(x, y, seed: int, class_names=()):
    """SMOTE (imbalanced-learn) on flattened images: every class grown to the
    majority count with synthetic images interpolated between neighbours
    (section 4.8.3).

    Raises
    ------
    ConfigError
        If a class has fewer than 2 training images.
    """
    from imblearn.over_sampling import SMOTE

    counts = np.bincount(y)
    present = counts[counts > 0]
    if present.min() < 2:
        c = int(np.flatnonzero(counts == present.min())[0])
        name = class_names[c] if c < len(class_names) else c
        raise ConfigError(
            f"SMOTE needs at least 2 training images per class; {name!r} has "
            f"{present.min()} in a fold's training part. Use --balance oversample."
        )
    sampler = SMOTE(k_neighbors=int(min(5, present.min() - 1)), random_state=seed)
    flat, y_new = sampler.fit_resample(x.reshape(len(x), -1), y)
    return flat.reshape((-1,) + x.shape[1:]).astype(np.float32), y_new
