"""Training one network (thesis chapter 5): :func:`train_fold` with its
balanced epoch draws, augmentation, label smoothing, optimizer, learning-rate
warm-up and schedule, weight averaging and early stopping on the validation
part, keeping the best epoch's weights.

Keras is imported inside the functions: importing this module loads no Keras.
"""

from __future__ import annotations

import random
import time

import numpy as np

from liposome_bench.models import build_lipnet, is_fully_convolutional
from liposome_bench.progress import NullReporter
from liposome_bench.settings import (
    DEFAULT_WARMUP_EPOCHS,
    NO_EARLY_STOPPING,
    CNNSettings,
    is_fixed_budget,
)
from liposome_bench.cnn.preprocess import check_choice
from liposome_bench.cnn.augment import build_augmentation, fill_mode_of
from liposome_bench.cnn.balance import EpochSampler, class_weights, smote_pool

LABEL_SMOOTHING = 0.1  # section 5.2


def validation_metrics(probabilities, y, n_classes):
    """Class-balanced cross-entropy, balanced accuracy and macro F1."""
    from sklearn.metrics import f1_score

    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1.0)
    losses, recalls = [], []
    predicted = p.argmax(axis=1)
    for c in range(n_classes):
        members = y == c
        if members.any():
            losses.append(float(-np.log(p[members, c]).mean()))
            recalls.append(float((predicted[members] == c).mean()))
    f1 = f1_score(y, predicted, labels=np.unique(y), average="macro", zero_division=0)
    return {
        "val_loss": float(np.mean(losses)),
        "val_balanced_accuracy": float(np.mean(recalls)),
        "val_macro_f1": float(f1),
    }


def predict_batches(net, x, batch_size: int = 256) -> np.ndarray:
    """``net.predict(x, batch_size=batch_size)``, the same numbers, through
    ``predict_on_batch`` one batch at a time: it skips the data iterator
    and callbacks that ``predict`` sets up on every call, which made up
    about two thirds of each epoch's validation pass of 1,134 images (106
    against 38 ms, docs/performance.md)."""
    if not len(x):
        return np.zeros((0, *net.output_shape[1:]), np.float32)
    return np.concatenate(
        [
            np.asarray(net.predict_on_batch(x[i : i + batch_size]))
            for i in range(0, len(x), batch_size)
        ]
    )


def monitor_key(record: dict, epoch: int, metric: str = "macro_f1") -> tuple:
    """The early-stopping ranking of one epoch's validation ``record``:
    smaller is better. "macro_f1": higher macro F1 first, then lower loss;
    "loss": lower loss. Without validation scores, later epochs rank better
    (the last one is kept), as with "none" (a fixed budget)."""
    if "val_loss" not in record or metric == NO_EARLY_STOPPING:
        return (-epoch,)
    if metric == "loss":
        return (record["val_loss"],)
    return (-record["val_macro_f1"], record["val_loss"])


def _make_monitor_callback(
    net,
    x_val,
    y_val,
    n_classes,
    patience,
    epochs,
    reporter,
    metric: str = "macro_f1",
    averaged: bool = False,
):
    """A Keras callback that, at the end of each epoch, scores the
    validation part, reports progress, keeps the best weights and stops the
    fold's one ``fit`` call when ``patience`` epochs have passed without
    improvement.

    ``metric="macro_f1"``: an epoch improves on the best when its validation
    macro F1 is higher, or equal with a lower validation loss (macro F1 on a
    small validation part moves in steps, and ties are common); "loss": when
    its class-balanced validation loss is lower.

    ``averaged``: the optimizer keeps an exponential moving average of the
    weights (``use_ema``). Each epoch is scored (and kept) with those
    averaged weights, written into the network as Keras writes them when
    ``fit`` ends, after which training resumes from the raw weights, saved
    when the epoch ended."""
    import keras

    class EpochMonitor(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.history: dict[str, list[float]] = {}
            self.best_key = None
            self.best_epoch = 0
            self.best_weights = None
            self.wait = 0

        @property
        def should_stop(self):
            return patience is not None and self.wait >= patience

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            raw = None
            if averaged:
                # Score the moving average: write it into the network, as
                # Keras does when fit ends (finalize_variable_values), and
                # put the raw weights back afterwards for the next epoch.
                raw = net.get_weights()
                self.model.optimizer.finalize_variable_values(self.model.trainable_weights)
                # On JAX the optimizer's arrays are donated by the next
                # train step, so the network gets copies of them.
                net.set_weights(net.get_weights())
            record = {"loss": float(logs.get("loss", np.nan))}
            if len(x_val):
                p = predict_batches(net, x_val)
                record.update(validation_metrics(p, y_val, n_classes))
            for key, value in record.items():
                self.history.setdefault(key, []).append(value)
            key = monitor_key(record, epoch, metric)
            if self.best_key is None or key < self.best_key:
                self.best_key, self.best_epoch, self.wait = key, epoch + 1, 0
                self.best_weights = net.get_weights()
            else:
                self.wait += 1
            if raw is not None:
                net.set_weights(raw)
            reporter.epoch(
                epoch + 1,
                epochs,
                loss=record["loss"],
                val_loss=record.get("val_loss"),
                val_f1=record.get("val_macro_f1"),
            )
            if self.should_stop:
                self.model.stop_training = True

    return EpochMonitor()


def train_fold(
    x_fit,
    y_fit,
    x_val,
    y_val,
    settings: CNNSettings,
    *,
    n_classes: int,
    dtype_policy=None,
    seed: int = 0,
    class_names=(),
    reporter=None,
):
    """Train one network on (x_fit, y_fit), early-stopped on (x_val, y_val).

    Parameters
    ----------
    x_fit, x_val : float32 arrays, shape (n, H, W, 1)
        Prepared images (:func:`prepare_images`); ``x_val`` may be empty,
        which trains exactly ``epochs`` epochs.
    y_fit, y_val : int arrays
        Class indices.
    settings : settings.CNNSettings
        Everything about the training (model, augmentation, balancing,
        epochs, patience, early-stopping metric, batch size, optimizer,
        learning rate and its warm-up and schedule, weight averaging, model
        options); the same object cross-validation, ``LipNetClassifier`` and
        deployment pass, so they cannot drift apart. ``x_val`` empty trains
        exactly ``settings.epochs`` epochs.
    n_classes, dtype_policy
        Passed to :func:`models.build_lipnet` (``dtype_policy`` from
        :func:`resolve_dtype_policy`).
    seed : int
        Seeds Keras (weights, dropout, augmentation) and the sampler.
    class_names : sequence of str
        For error messages.
    reporter : progress reporter, optional
        Gets ``epoch(...)`` after every epoch.

    Returns
    -------
    net : keras.Model
        The network with the weights of its best epoch (no augmentation
        layer).
    info : dict
        ``best_epoch``, ``epochs_run``, ``history`` (per-epoch lists),
        ``epoch_counts`` (class counts of the first epoch's draw), ``train_s``
        (time in ``fit``, the validation passes included) and
        ``samples_per_s``.
    """
    import keras

    reporter = reporter or NullReporter()
    model, balance, epochs = settings.model, settings.balance, settings.epochs
    batch_size, optimizer = settings.batch_size, settings.optimizer
    samples_per_epoch, weight_averaging = settings.samples_per_epoch, settings.weight_averaging
    fill_mode = fill_mode_of(settings)
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    _seed_keras_default_seeds(seed)
    rng = np.random.default_rng(seed)
    x_pool, y_pool = x_fit, y_fit
    if balance == "smote":
        x_pool, y_pool = smote_pool(x_fit, y_fit, seed, class_names)
        if samples_per_epoch is None:
            samples_per_epoch = len(y_fit)
    weights = class_weights(y_fit, n_classes) if balance == "class-weight" else None

    image_shape = tuple(x_fit.shape[1:])
    net = build_lipnet(
        model,
        None if is_fully_convolutional(model) else image_shape,
        n_classes,
        dtype=dtype_policy,
        **lipnet_options(settings),
    )
    inputs = keras.Input(shape=image_shape, name="image")
    augmentation = build_augmentation(settings.augment, fill_mode=fill_mode, seed=seed)
    x = augmentation(inputs) if augmentation is not None else inputs
    trainer = keras.Model(inputs, net(x), name=f"{model}_training")
    lr = settings.resolved_learning_rate
    sampler = EpochSampler(y_pool, balance, rng, samples_per_epoch)
    first_draw = sampler.draw()
    # One fit call for the whole fold, over one endless data iterator
    # (_epoch_draws): no per-call iterator to release, which stalled about
    # 0.5 s in one epoch of three (docs/performance.md).
    onehot = np.eye(n_classes, dtype=np.float32)
    draws = _epoch_draws(x_pool, onehot[y_pool], first_draw, sampler, batch_size)
    steps_per_epoch = draws.steps
    lr = make_learning_rate(
        lr, steps_per_epoch, epochs, settings.warmup_epochs, settings.lr_schedule
    )
    averaging = (
        {"use_ema": True, "ema_momentum": float(weight_averaging)} if weight_averaging > 0 else {}
    )
    if optimizer == "sgd":
        opt = keras.optimizers.SGD(learning_rate=lr, momentum=0.9, nesterov=True, **averaging)
    else:
        opt = keras.optimizers.Adam(learning_rate=lr, **averaging)
    if dtype_policy == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    trainer.compile(
        optimizer=opt,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=LABEL_SMOOTHING),
    )
    monitor = _make_monitor_callback(
        net,
        x_val,
        np.asarray(y_val),
        n_classes,
        settings.patience if len(x_val) and not is_fixed_budget(settings) else None,
        epochs,
        reporter,
        metric=settings.early_stopping,
        averaged=bool(averaging),
    )
    epoch_counts = np.bincount(y_pool[first_draw], minlength=n_classes).tolist()
    start = time.perf_counter()
    trainer.fit(
        draws,
        epochs=epochs,
        shuffle=False,  # the sampler's draws are shuffled
        steps_per_epoch=steps_per_epoch,
        class_weight=weights,
        callbacks=[monitor],
        verbose=0,
    )
    train_s = time.perf_counter() - start
    seen = len(first_draw) * len(monitor.history.get("loss", []))
    if monitor.best_weights is not None:
        net.set_weights(monitor.best_weights)
    return net, {
        "best_epoch": monitor.best_epoch,
        "epochs_run": len(monitor.history.get("loss", [])),
        "history": monitor.history,
        "epoch_counts": epoch_counts,
        "train_s": train_s,
        "samples_per_s": seen / train_s if train_s > 0 else None,
    }


def _epoch_draws(x_pool, y_pool, first_draw, sampler, batch_size):
    """One fold's training batches for a single ``fit`` call, as an endless
    ``keras.utils.PyDataset``: batch ``i`` is batch ``i % steps`` of epoch
    ``i // steps``, whose draw is ``first_draw`` for the first epoch and
    the next ``sampler.draw()`` for each later one (each draw is shuffled
    and equally long). ``fit`` must be given ``steps_per_epoch`` equal to
    the dataset's ``steps``, the batches in one draw.

    Endless, because ``fit`` then keeps one data iterator for all epochs: a
    finite one is made and released every epoch, and its release stalled
    for about 0.5 s in one epoch of three (docs/performance.md). Batches are
    cut from the pool as they are asked for, so no epoch's images are copied
    whole. Draws are made in epoch order whatever order the batches are
    asked for in (Keras reads two batches ahead of training to learn their
    shapes), and each is kept until two later epochs are drawn.
    """
    import keras

    steps = -(-len(first_draw) // batch_size)

    class EpochDraws(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()  # no workers: batches are made in fit's thread
            self.steps = steps
            self.draws = {0: first_draw}

        @property
        def num_batches(self):
            return None  # endless

        def __getitem__(self, i):
            epoch, batch = divmod(int(i), steps)
            while max(self.draws) < epoch:
                newest = max(self.draws) + 1
                self.draws[newest] = sampler.draw()
                self.draws.pop(newest - 3, None)
            take = self.draws[epoch][batch * batch_size : (batch + 1) * batch_size]
            return x_pool[take], y_pool[take]

    return EpochDraws()


def _seed_keras_default_seeds(seed: int) -> None:
    """Give Keras a private Python RNG, seeded with ``seed``, for the seeds of
    layers and initializers made without one.

    Keras draws those from Python's global ``random``, which other threads of
    the process also draw from: a Dask worker's communication thread did
    (``distributed.protocol.compression``), so the same fold trained with
    other initial weights now and then. A private ``random.Random(seed)``
    gives the same sequence as ``random.seed(seed)`` without the race.
    """
    try:
        from keras.src.random import seed_generator
    except ImportError:  # another Keras layout: keep its global-random seeds
        return
    if hasattr(seed_generator, "python_random"):
        seed_generator.python_random = random.Random(seed)


def make_learning_rate(
    learning_rate: float,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float = DEFAULT_WARMUP_EPOCHS,
    schedule: str = "constant",
):
    """The learning rate of one fold's training, per optimizer step.

    Rises linearly from ``learning_rate / 10`` to ``learning_rate`` over the
    first ``warmup_epochs`` epochs, then stays there (``"constant"``) or
    follows a cosine down to 0 at the end of epoch ``epochs`` (``"cosine"``).

    Returns
    -------
    float or keras.optimizers.schedules.LearningRateSchedule
        A plain float when the rate is constant throughout.
    """
    import keras

    check_choice(schedule, ("constant", "cosine"), "learning-rate schedule")
    warmup_steps = int(round(max(0.0, warmup_epochs) * steps_per_epoch))
    total_steps = max(1, int(epochs) * int(steps_per_epoch))
    warmup_steps = min(warmup_steps, total_steps)
    if warmup_steps == 0 and schedule == "constant":
        return float(learning_rate)
    cosine = schedule == "cosine"
    return keras.optimizers.schedules.CosineDecay(
        learning_rate / 10.0 if warmup_steps else learning_rate,
        decay_steps=max(1, total_steps - warmup_steps) if cosine else 1,
        alpha=0.0 if cosine else 1.0,  # alpha 1: no decay after the warm-up
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def lipnet_options(settings: CNNSettings) -> dict:
    """The ``build_lipnet`` options of ``settings``."""
    model_options = {"l2": float(settings.l2)}
    if settings.dense_units is not None:
        model_options["dense_units"] = int(settings.dense_units)
    if settings.dropout is not None:
        model_options["dropout"] = settings.dropout
    return model_options


def as_float32(net, settings: CNNSettings, n_classes: int):
    """``net`` rebuilt with float32 compute and the same weights.

    Mixed precision keeps the weights in float32 and only computes in
    bfloat16 / float16, so this changes no weight; it makes a bundle that
    every consumer runs (onnxruntime refuses bfloat16 convolutions).
    """
    image_shape = tuple(net.input_shape[1:])
    plain = build_lipnet(
        settings.model,
        None if is_fully_convolutional(settings.model) else image_shape,
        n_classes,
        dtype=None,
        **lipnet_options(settings),
    )
    plain.set_weights(net.get_weights())
    return plain
