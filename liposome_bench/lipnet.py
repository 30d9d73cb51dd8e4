"""``LipNetClassifier``: a LipNet CNN as a scikit-learn estimator.

It wraps the same training path as ``liposome-bench cnn`` (``cnn.train_fold``:
class balancing, augmentation, label smoothing, early stopping on a
stratified validation split carved from the data given to ``fit``), so it
works in ``cross_validate``, ``clone`` and pipelines::

    from sklearn.model_selection import cross_validate
    from liposome_bench import LipNetClassifier, generate_dataset, make_folds

    ds = generate_dataset("lamellarity", n=600, seed=1)
    folds = make_folds(ds, k=3)
    cross_validate(LipNetClassifier(model="lipnet-1", epochs=1), ds.particles, ds.labels,
                   cv=folds, scoring="f1_macro")

``X`` is either a sequence of ``dataset.Particle`` (prepared in ``fit`` and
``predict`` with the estimator's ``input_mode`` and ``input_size``, as the
CLI does) or an array of already prepared images, shape (n, H, W) or
(n, H, W, 1) (``cnn.prepare_images``).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from liposome_bench.errors import ConfigError
from liposome_bench.settings import (
    AUGMENTATIONS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_EARLY_STOPPING,
    DEFAULT_LR_SCHEDULE,
    DEFAULT_PATIENCE,
    DEFAULT_VALIDATION_FRACTION,
    DEFAULT_WARMUP_EPOCHS,
    DEFAULT_WEIGHT_AVERAGING,
    CNNSettings,
)
from liposome_bench import cnn
from liposome_bench.dataset import Dataset, Particle
from liposome_bench.models import INPUT_SIZES


class LipNetClassifier(ClassifierMixin, BaseEstimator):
    """A LipNet CNN trained as ``liposome-bench cnn`` trains one fold.

    Parameters
    ----------
    model, input_mode, input_size, input_scale, augment, balance, epochs, patience,
    early_stopping, batch_size, optimizer, learning_rate, warmup_epochs, lr_schedule,
    weight_averaging, l2, dense_units, dropout,
    validation_fraction, samples_per_epoch, mixed_precision
        As in :class:`settings.CNNSettings` (docs/cnn.md); validated in
        ``fit``.
    random_state : int
        Seeds weights, dropout, augmentation, sampling and the validation
        split.

    Attributes
    ----------
    classes_ : array
        The class labels seen in ``fit``, sorted.
    model_ : keras.Model
        The trained network (weights of its best validation epoch).
    history_ : dict
        Per-epoch training curves.
    best_epoch_ : int
        The epoch whose weights were kept.
    keep_size_ : cnn.KeepSizeScale
        With a scale-preserving input fitted on particles: the one factor of
        the training particles, reused for every prediction.

    Examples
    --------
    >>> clf = LipNetClassifier(model="lipnet-2", epochs=3)
    >>> clf.get_params()["epochs"]
    3
    >>> clf.set_params(input_mode="cropped").input_mode
    'cropped'
    """

    def __init__(
        self,
        *,
        model="lipnet-4",
        input_mode="masked",
        input_size=None,
        input_scale=None,
        augment=AUGMENTATIONS,
        balance="oversample",
        epochs=DEFAULT_EPOCHS,
        patience=DEFAULT_PATIENCE,
        early_stopping=DEFAULT_EARLY_STOPPING,
        batch_size=DEFAULT_BATCH_SIZE,
        optimizer="adam",
        learning_rate=None,
        warmup_epochs=DEFAULT_WARMUP_EPOCHS,
        lr_schedule=DEFAULT_LR_SCHEDULE,
        weight_averaging=DEFAULT_WEIGHT_AVERAGING,
        l2=0.0,
        dense_units=None,
        dropout=None,
        validation_fraction=DEFAULT_VALIDATION_FRACTION,
        samples_per_epoch=None,
        mixed_precision=None,
        random_state=0,
    ):
        self.model = model
        self.input_mode = input_mode
        self.input_size = input_size
        self.input_scale = input_scale
        self.augment = augment
        self.balance = balance
        self.epochs = epochs
        self.patience = patience
        self.early_stopping = early_stopping
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.warmup_epochs = warmup_epochs
        self.lr_schedule = lr_schedule
        self.weight_averaging = weight_averaging
        self.l2 = l2
        self.dense_units = dense_units
        self.dropout = dropout
        self.validation_fraction = validation_fraction
        self.samples_per_epoch = samples_per_epoch
        self.mixed_precision = mixed_precision
        self.random_state = random_state

    def settings(self) -> CNNSettings:
        """These parameters as validated :class:`settings.CNNSettings`."""
        params = self.get_params()
        params.pop("random_state")
        return CNNSettings(**params)

    def _images(self, X, settings) -> np.ndarray:
        size = int(settings.input_size or INPUT_SIZES[settings.model])
        if len(X) and all(isinstance(p, Particle) for p in X):
            holder = Dataset(problem=None, particles=list(X))
            keep = cnn.keeps_size(settings.model, settings.input_scale)
            fit = getattr(self, "keep_size_", None)
            if keep and fit is None:  # fitting: the training particles set the scale
                fit = self.keep_size_ = cnn.keep_size_scale(holder, settings.input_mode, size)
            return cnn.prepare_images(
                holder,
                settings.input_mode,
                size,
                keep_size=keep,
                scale=fit.scale if keep else None,
                unit=fit.unit if keep else None,
            )
        images = np.asarray(X, dtype=np.float32)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] != 1 or images.shape[1] != images.shape[2]:
            raise ConfigError(
                "X must be particles or square images of shape (n, H, W) or (n, H, W, 1); "
                f"got an array of shape {images.shape}. Prepare images with "
                "cnn.prepare_images or pass dataset.particles."
            )
        return images

    def fit(self, X, y):
        """Train on ``X``, early-stopped on a stratified validation split of it.

        Parameters
        ----------
        X : sequence of Particle, or array (n, H, W[, 1])
        y : array-like of class labels, shape (n,)

        Returns
        -------
        self
        """
        settings = self.settings()
        y = np.asarray(y)
        if len(y) != len(X):
            raise ConfigError(f"X has {len(X)} samples but y has {len(y)}; give one label each.")
        self.classes_, y_index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ConfigError(
                f"fit needs at least 2 classes; y holds only {self.classes_.tolist()}."
            )
        self.__dict__.pop("keep_size_", None)  # a refit takes its own particles' scale
        images = self._images(X, settings)
        seed = int(self.random_state)
        fit_pos, val_pos = cnn.split_validation(
            y_index, settings.validation_fraction, np.random.default_rng(seed)
        )
        dtype_policy = cnn.resolve_dtype_policy(settings.mixed_precision, cnn.describe_device()[0])
        net, info = cnn.train_fold(
            images[fit_pos],
            y_index[fit_pos],
            images[val_pos],
            y_index[val_pos],
            settings,
            n_classes=len(self.classes_),
            dtype_policy=dtype_policy,
            seed=seed,
            class_names=[str(c) for c in self.classes_],
        )
        self.model_ = net
        self.history_ = info["history"]
        self.best_epoch_ = info["best_epoch"]
        self.n_features_in_ = int(np.prod(images.shape[1:]))
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "model_")
        images = self._images(X, self.settings())
        return np.asarray(self.model_.predict(images, batch_size=256, verbose=0), np.float64)

    def predict(self, X) -> np.ndarray:
        """The most probable class of each sample."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
