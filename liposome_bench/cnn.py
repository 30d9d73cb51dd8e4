"""Training LipNet CNNs on the stored folds: input modes, augmentation,
class balancing, early stopping, per-fold results.

For each fold of the dataset's stored folds (the same folds the SVM uses,
thesis section 8.1):

1. the training folds are split, stratified, into a fit part and a validation
   part (``validation_fraction``); the test fold is never looked at during
   training (the thesis's original code validated on its test set);
2. each epoch draws a class-balanced sample of the fit part
   (``balance``, section 4.8); the validation part and the test fold are
   never resampled;
3. the network sees each batch through a random augmentation layer
   (``augment``, section 5.5) that is part of the Keras training model, so it
   runs on the same device as the network and does nothing at inference;
4. the loss is cross-entropy with label smoothing 0.1 (section 5.2); training
   stops when the validation macro F1 (the score the SVM's grid search
   maximises; ``early_stopping="loss"``: the class-balanced validation loss)
   has not improved for ``patience`` epochs, and the weights of the best
   epoch are kept (5.4); a fold whose best epoch is its last is flagged as
   possibly under-trained;
5. the model predicts class probabilities for the test fold, which are saved
   with the fold's training curve, timings and the model (``.keras``).

docs/cnn.md describes each option; docs/performance.md the measured speed.
Keras is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from dataclasses import dataclass

import numpy as np

from liposome_bench.io import atomic_write
from liposome_bench.errors import ConfigError, DatasetError
from liposome_bench.models import INPUT_SIZES, build_lipnet
from liposome_bench.progress import NullReporter
from liposome_bench.settings import (  # noqa: F401  (re-exported: cnn.INPUT_MODES, ...)
    AUGMENTATIONS,
    BALANCE_METHODS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LEARNING_RATES,
    DEFAULT_PATIENCE,
    DEFAULT_VALIDATION_FRACTION,
    DEFAULT_WARMUP_EPOCHS,
    INPUT_MODES,
    INPUT_SCALES,
    OPTIMIZERS,
    CNNSettings,
    parse_augment,
    scaled_learning_rate,
)

LABEL_SMOOTHING = 0.1  # section 5.2
UNDERSAMPLE_DROP = 0.2  # section 4.8.2: 20 % of the majority class per epoch

# Section 5.5's ranges.
ROTATION_DEGREES = 180.0
SHEAR = 0.2
SHIFT = 0.1
ZOOM_IN = 0.2  # zoom factor 0.8-1.0: up to 20 % magnification
KEEP_SIZE_QUANTILE = 95  # lipnet-fcn: this percentile of particles fills the canvas


# Options ----------------------------------------------------------------------


def _check_choice(value, choices, option):
    if value not in choices:
        raise ConfigError(f"Unknown {option} {value!r}; expected one of {', '.join(choices)}.")
    return value


# Input images -----------------------------------------------------------------


def keeps_size(model: str, input_scale: str | None = None) -> bool:
    """Whether ``model`` with ``input_scale`` (``CNNSettings.input_scale``;
    None: the model's default) keeps relative particle size: ``keep``, or
    unset for lipnet-fcn; ``resize`` (the thesis) otherwise.

    >>> keeps_size("lipnet-4"), keeps_size("lipnet-fcn"), keeps_size("lipnet-4", "keep")
    (False, True, True)
    """
    if input_scale is None:
        return model == "lipnet-fcn"
    return _check_choice(input_scale, INPUT_SCALES, "input scale") == "keep"


@dataclass(frozen=True)
class KeepSizeScale:
    """The one factor of a scale-preserving input (``input_scale=keep``).

    ``scale`` canvas pixels per ``unit`` (``nm`` when every particle has a
    pixel size, else ``px``); ``shrunk`` particles' windows were larger than
    the canvas and were shrunk to fit it (their size is not kept).
    """

    scale: float
    unit: str
    shrunk: int
    n: int


def window_lengths(dataset, mode: str, unit: str) -> np.ndarray:
    """Each particle's window side in ``unit`` (px, or nm by its pixel size)."""
    sides = np.array([window_box(p, mode)[2] for p in dataset.particles], dtype=np.float64)
    if unit == "px":
        return sides
    pixel = np.array([p.pixel_size_nm for p in dataset.particles], dtype=np.float64)
    bad = ~(np.isfinite(pixel) & (pixel > 0))
    if bad.any():
        first = dataset.particles[int(np.flatnonzero(bad)[0])].id
        raise DatasetError(
            f"The input scale is in nm, but {int(bad.sum())} of {len(pixel)} particles "
            f"(first: {first}) have no pixel size. Give their pixel size (e.g. "
            "--pixel-size) or use particles with one."
        )
    return sides * pixel


def keep_size_scale(
    dataset, mode: str, size: int, *, scale: float | None = None, unit: str | None = None
) -> KeepSizeScale:
    """The one scale factor of ``input_scale=keep`` for ``dataset``.

    From the particles' geometry only (never their labels): the
    95th percentile of the window sides, in nm when every particle has a
    pixel size (else px), fills the ``size`` px canvas, so the same nm (or px)
    are the same canvas pixels for every particle. ``scale`` and ``unit``
    given (a trained network's): those instead, so new particles are scaled
    as the training particles were.

    Raises
    ------
    DatasetError
        If ``unit`` is nm and a particle has no pixel size.
    """
    if unit is None:
        pixel = np.array([p.pixel_size_nm for p in dataset.particles], dtype=np.float64)
        unit = "nm" if pixel.size and bool(np.all(np.isfinite(pixel) & (pixel > 0))) else "px"
    lengths = window_lengths(dataset, mode, unit)
    if scale is None:
        scale = float(size / np.percentile(lengths, KEEP_SIZE_QUANTILE)) if lengths.size else 1.0
    shrunk = int(np.sum(np.round(lengths * scale) > size))
    return KeepSizeScale(float(scale), unit, shrunk, len(lengths))


def prepare_images(
    dataset,
    mode: str = "masked",
    size: int = 28,
    *,
    keep_size: bool = False,
    reporter=None,
    scale: float | None = None,
    unit: str | None = None,
) -> np.ndarray:
    """The particles as square network inputs (thesis section 8.5).

    Each particle is cut out as a square window, normalised, and resized:

    * ``surrounding``: the whole image, with its 50 px of surround;
    * ``cropped``: the smallest square around the particle's mask
      (its bounding box, widened to a square around the box's centre);
    * ``masked``: as ``cropped``, with every pixel outside the mask set to the
      background value 0.

    Intensities are standardised per image: mean 0 and standard deviation 1
    over the window, or over the particle's own pixels in ``masked`` mode, so
    the background value 0 is the particle's mean intensity (the value
    zero padding and the augmentation's constant fill also use). Window
    pixels beyond the image border repeat the edge pixels.

    Parameters
    ----------
    dataset : Dataset
    mode : {'surrounding', 'cropped', 'masked'}
    size : int
        Side of the output images in pixels.
    keep_size : bool
        False: every window is resized to fill ``size`` x ``size``, so size
        differences between particles are lost (lipnet-1 to lipnet-6).
        True (``input_scale=keep``; lipnet-fcn's default): every window is
        scaled by one factor for the whole dataset (:func:`keep_size_scale`:
        nm to canvas pixels when every particle has a pixel size, else px;
        the 95th percentile of window sides fills the canvas) and centred on
        a ``size`` x ``size`` canvas of background 0; larger windows are
        shrunk to fit. Relative particle size is kept. The factor depends on
        the particles' geometry only, not their labels.
    reporter : progress reporter, optional
    scale, unit : float and {'nm', 'px'}, optional
        With ``keep_size``: this factor (canvas px per ``unit``) instead of
        the dataset's own (a trained network's, so new particles are scaled
        as its training particles were). ``unit`` unset: nm if every
        particle has a pixel size, else px (px for a bare ``scale``).

    Returns
    -------
    images : float32 array, shape (n_particles, size, size, 1)

    Raises
    ------
    ConfigError
        If ``mode`` or ``size`` is invalid.
    DatasetError
        If a particle's mask is empty.
    """
    from skimage.transform import resize

    _check_choice(mode, INPUT_MODES, "input mode")
    if int(size) != size or size < 4:
        raise ConfigError(f"The input size must be an integer of at least 4 px; got {size}.")
    size = int(size)
    reporter = reporter or NullReporter()
    windows = [_window(p, mode) for p in dataset.particles]
    targets = None
    if keep_size and windows:
        if scale is not None and unit is None:
            unit = "px"
        fit = keep_size_scale(dataset, mode, size, scale=scale, unit=unit)
        targets = window_lengths(dataset, mode, fit.unit) * fit.scale
    out = np.zeros((len(windows), size, size, 1), dtype=np.float32)
    reporter.stage("images", total=len(windows))
    step = max(1, len(windows) // 100)
    for i, window in enumerate(windows):
        side = size if targets is None else int(np.clip(round(targets[i]), 1, size))
        if window.shape[0] != side:
            window = resize(
                window,
                (side, side),
                order=1,
                mode="edge",
                anti_aliasing=window.shape[0] > side,
                preserve_range=True,
            )
        top = (size - side) // 2
        out[i, top : top + side, top : top + side, 0] = window
        if (i + 1) % step == 0 or i + 1 == len(windows):
            reporter.advance((i % step) + 1)
    return out


def window_box(particle, mode: str) -> tuple[int, int, int]:
    """(top, left, side) of the particle's square window in its image: the
    whole image (``surrounding``) or the square around its mask's bounding
    box (``cropped``, ``masked``); it may reach past the image's border."""
    mask = np.asarray(particle.mask, dtype=bool)
    h, w = mask.shape
    if mode == "surrounding":
        side = max(h, w)
        return (h - side) // 2, (w - side) // 2, side
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise DatasetError(
            f"Particle {particle.id}: its mask is empty, so it cannot be cropped. "
            "Fix the mask or use --input-mode surrounding."
        )
    bh, bw = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    side = max(bh, bw)
    return rows[0] - (side - bh) // 2, cols[0] - (side - bw) // 2, side


def mask_window(particle, mode: str) -> np.ndarray:
    """The particle's mask cut to its square window (:func:`window_box`)."""
    top, left, side = window_box(particle, mode)
    return _cut(np.asarray(particle.mask, dtype=bool), top, left, side, pad_mode="constant")


def _window(particle, mode: str) -> np.ndarray:
    """The particle's square window, standardised, as float32."""
    image = np.asarray(particle.image, dtype=np.float32)
    top, left, side = window_box(particle, mode)
    window = _cut(image, top, left, side)
    if mode == "masked":
        inside = mask_window(particle, mode)
        values = window[inside]
        window = (window - values.mean()) / _spread(values)
        window[~inside] = 0.0
    else:
        window = (window - window.mean()) / _spread(window)
    return window


def _spread(values) -> float:
    sd = float(values.std())
    return sd if sd > 1e-6 else 1.0


def _cut(array, top, left, side, pad_mode="edge"):
    """``array[top:top+side, left:left+side]``, padded where it leaves the array."""
    h, w = array.shape
    pads = (
        (max(0, -top), max(0, top + side - h)),
        (max(0, -left), max(0, left + side - w)),
    )
    if any(p for pair in pads for p in pair):
        array = np.pad(array, pads, mode=pad_mode)
        top, left = top + pads[0][0], left + pads[1][0]
    return array[top : top + side, left : left + side].copy()


# Augmentation -----------------------------------------------------------------


def build_augmentation(
    augment, *, fill_mode: str = "constant", interpolation: str = "nearest", seed: int = 0
):
    """The random augmentation of section 5.5 as one Keras layer.

    Every augmentation named in ``augment`` is drawn independently per image
    and all are composed into a single affine map, so each training image is
    resampled once, with nearest-neighbour interpolation: what Keras 1's
    ``ImageDataGenerator``, which the thesis used, did (``scipy.ndimage``
    ``affine_transform`` with ``order=0``). Both choices matter at 28x28:
    chaining Keras 3's ``RandomRotation``, ``RandomShear``,
    ``RandomTranslation`` and ``RandomZoom`` layers resamples four times with
    bilinear interpolation, and the blur wipes out the lamellae that tell
    multilamellar from unilamellar liposomes (docs/cnn.md has the
    measurement).

    * flip: horizontal and vertical, each with probability 0.5;
    * rotation: uniform in [-180, 180] degrees;
    * shear: uniform in [-0.2, 0.2] (x shifted by 0.2 y at most);
    * shift: uniform up to 10 % of width and of height;
    * zoom: factor uniform in [0.8, 1.0] (up to 20 % magnification).

    The layer is active only when called with ``training=True``; pixels that
    come from outside the image are filled per ``fill_mode`` (``"constant"``:
    the background value 0; ``"nearest"``: the nearest edge pixel).

    Parameters
    ----------
    augment : str or sequence of str
        See :func:`parse_augment`.
    fill_mode : {'constant', 'nearest', 'reflect', 'wrap'}
    interpolation : {'nearest', 'bilinear'}
    seed : int

    Returns
    -------
    keras.layers.Layer or None
        None when ``augment`` is empty.
    """
    names = parse_augment(augment)
    if not names:
        return None
    return _random_affine_class()(
        names, fill_mode=fill_mode, interpolation=interpolation, seed=seed, name="augmentation"
    )


_RANDOM_AFFINE = None


def _random_affine_class():
    """The ``RandomAffine`` layer class, defined on first use so that Keras is
    imported only when a model is built."""
    global _RANDOM_AFFINE
    if _RANDOM_AFFINE is not None:
        return _RANDOM_AFFINE
    import keras
    from keras import ops

    class RandomAffine(keras.layers.Layer):
        """Random flips, rotation, shear, shift and zoom as one affine map."""

        def __init__(
            self,
            augment=AUGMENTATIONS,
            fill_mode="constant",
            interpolation="nearest",
            seed=None,
            **kwargs,
        ):
            super().__init__(**kwargs)
            self.augment = tuple(augment)
            self.fill_mode = fill_mode
            self.interpolation = interpolation
            self.seed = seed
            self.seed_generator = keras.random.SeedGenerator(seed)

        def _uniform(self, n, low, high):
            return keras.random.uniform((n,), low, high, seed=self.seed_generator)

        def call(self, images, training=False):
            if not training:
                return images
            images = ops.convert_to_tensor(images)
            n = ops.shape(images)[0]
            height = ops.cast(ops.shape(images)[1], "float32")
            width = ops.cast(ops.shape(images)[2], "float32")
            zero, one = ops.zeros((n,)), ops.ones((n,))
            # The map from output to input coordinates (x: column, y: row),
            # about the image centre: M = rotation . shear . zoom . flip.
            m00, m01, m10, m11 = one, zero, zero, one
            tx, ty = zero, zero
            if "flip" in self.augment:
                fx = ops.where(self._uniform(n, 0.0, 1.0) < 0.5, -1.0, 1.0)
                fy = ops.where(self._uniform(n, 0.0, 1.0) < 0.5, -1.0, 1.0)
                m00, m11 = m00 * fx, m11 * fy
            if "zoom" in self.augment:
                # Section 5.5: factor 0.8-1.0 (input = factor x output: magnifies).
                z = self._uniform(n, 1.0 - ZOOM_IN, 1.0)
                m00, m01, m10, m11 = m00 * z, m01 * z, m10 * z, m11 * z
            if "shear" in self.augment:
                k = self._uniform(n, -SHEAR, SHEAR)
                m00, m01 = m00 + k * m10, m01 + k * m11
            if "rotation" in self.augment:
                a = self._uniform(n, -np.pi, np.pi) * (ROTATION_DEGREES / 180.0)
                c, s = ops.cos(a), ops.sin(a)
                m00, m01, m10, m11 = (
                    c * m00 - s * m10,
                    c * m01 - s * m11,
                    s * m00 + c * m10,
                    s * m01 + c * m11,
                )
            if "shift" in self.augment:
                tx = self._uniform(n, -SHIFT, SHIFT) * width
                ty = self._uniform(n, -SHIFT, SHIFT) * height
            cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
            transform = ops.stack(
                [
                    m00,
                    m01,
                    cx + tx - m00 * cx - m01 * cy,
                    m10,
                    m11,
                    cy + ty - m10 * cx - m11 * cy,
                    zero,
                    zero,
                ],
                axis=1,
            )
            out = ops.image.affine_transform(
                ops.cast(images, "float32"),
                transform,
                interpolation=self.interpolation,
                fill_mode=self.fill_mode,
                fill_value=0.0,
            )
            return ops.cast(out, images.dtype)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {
                **super().get_config(),
                "augment": list(self.augment),
                "fill_mode": self.fill_mode,
                "interpolation": self.interpolation,
                "seed": self.seed,
            }

    _RANDOM_AFFINE = RandomAffine
    return RandomAffine


# Class balancing (section 4.8) --------------------------------------------------


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


# Devices ----------------------------------------------------------------------


def describe_device() -> tuple[str, str]:
    """("gpu" or "cpu", a line saying what the Keras backend will train on:
    the GPUs, or the CPU by model and instruction sets)."""
    from liposome_bench.machine import describe_cpu

    try:
        devices = [str(d) for d in list_devices_quietly()]
    except (NotImplementedError, AttributeError, RuntimeError, ValueError):
        devices = []
    import keras

    backend = keras.backend.backend()
    gpus = [d for d in devices if d.lower().startswith(("gpu", "cuda"))]
    if not gpus and backend == "torch":
        import torch

        if torch.cuda.is_available():
            gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if gpus:
        return "gpu", f"Training on GPU ({', '.join(gpus)}) with the {backend} backend."
    return "cpu", (
        f"Training on CPU: {describe_cpu()}; Keras backend {backend}; no GPU is visible to it."
    )


#: What TensorFlow logs when it finds the CUDA libraries but no GPU
#: (``cuda_platform.cc``); on a machine without an NVIDIA device it is noise.
_NO_GPU_NOISE = ("failed call to cuInit",)
#: TensorFlow 2.21 logs its start-up INFO lines before it reads
#: TF_CPP_MIN_LOG_LEVEL ("I0000 ..." lines after this one).
_EARLY_INFO = "WARNING: All log messages before absl::InitializeLog() is called"


def import_keras():
    """Import Keras, its backend started through :func:`list_devices_quietly`
    (once per process), so that its start-up noise stays off stderr."""
    global _DEVICES
    if _DEVICES is None:
        _DEVICES = list_devices_quietly()
    import keras

    return keras


_DEVICES = None


def list_devices_quietly():
    """Import Keras and return ``keras.distribution.list_devices()`` (which
    starts the backend's devices) without the backend's start-up noise on
    stderr.

    Dropped: TensorFlow's ``failed call to cuInit`` error, only when Linux
    shows no NVIDIA device (no ``/dev/nvidia*``: on a GPU machine a failing
    ``cuInit`` is a real error and is printed); and, when
    ``TF_CPP_MIN_LOG_LEVEL`` asks for no INFO lines (liposome-bench sets 2
    unless it is set), the INFO lines TensorFlow 2.21 prints before reading
    that variable. Every other line written to stderr meanwhile (warnings,
    errors) is passed on unchanged.
    """
    import glob
    import sys
    import tempfile

    from liposome_bench.models import quiet_tensorflow

    quiet_tensorflow()
    if not sys.platform.startswith("linux"):
        import keras

        return keras.distribution.list_devices()
    no_gpu = not glob.glob("/dev/nvidia*")
    quiet_info = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip() not in ("", "0")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras

            devices = keras.distribution.list_devices()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        text = captured.read().decode("utf-8", errors="replace")
    kept = filter_backend_noise(text, no_gpu=no_gpu, quiet_info=quiet_info)
    if kept:
        sys.stderr.write(kept)
        sys.stderr.flush()
    return devices


def filter_backend_noise(text: str, *, no_gpu: bool, quiet_info: bool) -> str:
    """``text`` (what the backend wrote to stderr while starting) without the
    lines :func:`list_devices_quietly` drops: ``failed call to cuInit`` when
    ``no_gpu``; TensorFlow's early INFO lines (``I0000 ...`` and the absl
    notice before them) when ``quiet_info``. Every other line is kept."""
    kept = []
    for line in text.splitlines(keepends=True):
        if no_gpu and any(noise in line for noise in _NO_GPU_NOISE):
            continue
        if quiet_info and (line.startswith(_EARLY_INFO) or line.startswith("I0000 ")):
            continue
        kept.append(line)
    return "".join(kept)


# Training ---------------------------------------------------------------------


def _validation_metrics(probabilities, y, n_classes):
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


def monitor_key(record: dict, epoch: int, metric: str = "macro_f1") -> tuple:
    """The early-stopping ranking of one epoch's validation ``record``:
    smaller is better. "macro_f1": higher macro F1 first, then lower loss;
    "loss": lower loss. Without validation scores, later epochs rank better
    (the last one is kept)."""
    if "val_loss" not in record:
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
    validation part, reports progress, keeps the best weights and says when
    ``patience`` epochs have passed without improvement. It keeps its state
    across the one-epoch ``fit`` calls of a fold.

    ``metric="macro_f1"``: an epoch improves on the best when its validation
    macro F1 is higher, or equal with a lower validation loss (macro F1 on a
    small validation part moves in steps, and ties are common); "loss": when
    its class-balanced validation loss is lower.

    ``averaged``: the optimizer keeps an exponential moving average of the
    weights (``use_ema``), which Keras writes into the network when a
    ``fit`` call ends. The epoch is then scored (and kept) with those
    averaged weights, after which training resumes from the raw weights,
    saved when the epoch ended."""
    import keras

    class EpochMonitor(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.history: dict[str, list[float]] = {}
            self.best_key = None
            self.best_epoch = 0
            self.best_weights = None
            self.wait = 0
            self._epoch = None

        @property
        def should_stop(self):
            return patience is not None and self.wait >= patience

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            self._epoch = (
                epoch,
                float(logs.get("loss", np.nan)),
                net.get_weights() if averaged else None,
            )

        def on_train_end(self, logs=None):
            # Called after Keras' finalize_variable_values: with ``averaged``
            # the network holds the moving average now.
            if self._epoch is None:
                return
            epoch, loss, raw = self._epoch
            self._epoch = None
            record = {"loss": loss}
            if len(x_val):
                p = net.predict(x_val, batch_size=256, verbose=0)
                record.update(_validation_metrics(p, y_val, n_classes))
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
        None if model == "lipnet-fcn" else image_shape,
        n_classes,
        dtype=dtype_policy,
        **_model_options(settings),
    )
    inputs = keras.Input(shape=image_shape, name="image")
    augmentation = build_augmentation(settings.augment, fill_mode=fill_mode, seed=seed)
    x = augmentation(inputs) if augmentation is not None else inputs
    trainer = keras.Model(inputs, net(x), name=f"{model}_training")
    lr = settings.resolved_learning_rate
    sampler = EpochSampler(y_pool, balance, rng, samples_per_epoch)
    first_draw = sampler.draw()
    steps_per_epoch = -(-len(first_draw) // batch_size)
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
        settings.patience if len(x_val) else None,
        epochs,
        reporter,
        metric=settings.early_stopping,
        averaged=bool(averaging),
    )
    onehot = np.eye(n_classes, dtype=np.float32)
    epoch_counts = None
    seen, train_s = 0, 0.0
    for epoch in range(epochs):
        idx = first_draw if epoch == 0 else sampler.draw()
        if epoch_counts is None:
            epoch_counts = np.bincount(y_pool[idx], minlength=n_classes).tolist()
        start = time.perf_counter()
        trainer.fit(
            x_pool[idx],
            onehot[y_pool[idx]],
            batch_size=batch_size,
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,  # the sampler's draw is shuffled
            class_weight=weights,
            callbacks=[monitor],
            verbose=0,
        )
        train_s += time.perf_counter() - start
        seen += len(idx)
        if monitor.should_stop:
            break
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


def _seed_keras_default_seeds(seed: int) -> None:
    """Give Keras a private Python RNG, seeded with ``seed``, for the seeds of
    layers and initializers made without one.

    Keras draws those from Python's global ``random``, which other threads of
    the process also draw from: a Dask worker's communication thread did
    (``distributed.protocol.compression``), so the same fold trained with
    other initial weights now and then. A private ``random.Random(seed)``
    gives the same sequence as ``random.seed(seed)`` without the race.
    """
    import random

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

    _check_choice(schedule, ("constant", "cosine"), "learning-rate schedule")
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


def _fold_seed(seed: int, fold: int) -> int:
    """An independent seed per fold, so a resumed run trains each remaining
    fold exactly as an uninterrupted one would."""
    return int(np.random.SeedSequence((int(seed), int(fold))).generate_state(1)[0] % (2**31))


def run_cnn(
    dataset,
    folds,
    results,
    settings: CNNSettings | None = None,
    *,
    seed: int = 0,
    save_models: bool = True,
    reporter=None,
    only_folds=None,
    images=None,
    **options,
):
    """Train and test one LipNet on every fold of ``folds``; save each fold.

    Folds already saved in ``results`` (by an interrupted run with the same
    settings) are loaded instead of retrained.

    Parameters
    ----------
    dataset : Dataset
    folds : Folds
        The dataset's stored folds (``folds.load_or_make_folds``).
    results : ResultsDir
        Fold results go to ``<results>/<model>/``, models to its ``models/``.
    settings : settings.CNNSettings, optional
        Model, input mode, augmentation, balancing, epochs, ... (default
        ``CNNSettings()``; docs/cnn.md explains each).
    seed : int
        Seeds weights, dropout, augmentation, sampling and the validation
        split; fold ``i`` uses a seed derived from (seed, i).
    save_models : bool
        Save each fold's trained network as ``fold-<i>.keras``.
    reporter : progress reporter, optional
    only_folds : iterable of int, optional
        Train only these folds (``sweep`` runs one fold per task); each fold
        gets the same seed as in a run of all folds.
    images : array, optional
        The network inputs, :func:`prepare_cnn_images` of ``dataset`` and
        these settings, made once for many calls (``benchmark``'s repeats);
        made here when None.
    **options
        Single settings to change (any ``CNNSettings`` field, e.g.
        ``model="lipnet-2", epochs=20``).

    Returns
    -------
    list of results.FoldResult, one per fold, in fold order (with
    ``only_folds``: those folds only).

    Raises
    ------
    ConfigError
        If an option is invalid.
    ResultsError
        If ``results`` holds results of another dataset, folds or settings.
    """
    reporter = reporter or NullReporter()
    settings = make_cnn_settings(settings, **options)
    model = settings.model
    size = int(settings.input_size or INPUT_SIZES[model])
    model_options = _model_options(settings)
    classes = list(dataset.problem.classes)
    mixed_precision = settings.mixed_precision
    validation_fraction = settings.validation_fraction

    recorded = settings.to_dict()
    del recorded["model"], recorded["l2"], recorded["dense_units"], recorded["dropout"]
    settings_record = {
        "kind": "cnn",
        **recorded,
        "input_size": size,
        "learning_rate": settings.resolved_learning_rate,
        "label_smoothing": LABEL_SMOOTHING,
        "model_options": model_options,
        "seed": int(seed),
    }
    results.prepare(dataset, folds, model, settings_record)

    wanted = range(folds.k) if only_folds is None else sorted(set(only_folds))
    done = {}
    for fold in wanted:
        saved = results.load_fold(model, fold, classes)
        if saved is not None:
            done[fold] = saved
    todo = [f for f in wanted if f not in done]
    if done:
        reporter.message(
            f"{model}: {len(done)} of {folds.k} folds already saved in {results.path}; "
            + (
                f"training folds {', '.join(str(f) for f in todo)}."
                if todo
                else "nothing to train."
            )
        )
    if not todo:
        return [done[f] for f in wanted]

    device, line = describe_device()
    reporter.message(line)
    dtype_policy = resolve_dtype_policy(mixed_precision, device)
    reporter.message(
        f"{model}: batch {settings.batch_size}, learning rate "
        f"{settings.resolved_learning_rate:g} ({settings.lr_schedule}, "
        f"{settings.warmup_epochs:g} warm-up epochs"
        + (
            f", weights averaged with momentum {settings.weight_averaging:g}"
            if settings.weight_averaging
            else ""
        )
        + "), "
        + (
            f"computing in {dtype_policy.split('_')[1]} (mixed precision)."
            if dtype_policy
            else "computing in float32."
        )
    )
    t0 = time.perf_counter()
    if images is None:
        images = prepare_cnn_images(dataset, settings, reporter=reporter)
    elif images.shape[:3] != (len(dataset), size, size):
        raise ConfigError(
            f"The prepared images are {'x'.join(map(str, images.shape[:3]))}, not "
            f"{len(dataset)}x{size}x{size} for {model}; pass prepare_cnn_images(dataset, "
            "settings) of these settings."
        )
    prepare_s = time.perf_counter() - t0
    if keeps_size(model, settings.input_scale):
        fit = keep_size_scale(dataset, settings.input_mode, size)
        reporter.message(
            f"{model}: input scale keep, {1 / fit.scale:.4g} {fit.unit} per canvas pixel; "
            f"{fit.shrunk} of {fit.n} particles larger than the {size} px canvas, "
            "shrunk to fit."
        )
    reporter.stage(model, total=folds.k)
    reporter.advance(len(done))
    for fold in todo:
        reporter.fold(fold, folds.k)
        result = _run_fold(
            dataset,
            folds,
            fold,
            images,
            results,
            model=model,
            seed=_fold_seed(seed, fold),
            device=device,
            validation_fraction=validation_fraction,
            save_models=save_models,
            timings={"prepare_s": round(prepare_s, 3)},
            reporter=reporter,
            settings=settings,
            dtype_policy=dtype_policy,
        )
        results.save_fold(result, classes)
        done[fold] = result
        reporter.advance()
        reporter.message(
            f"{model} fold {fold} (of 0-{folds.k - 1}): best epoch {result.params['epochs']} "
            f"of {result.params['epochs_run']}, train {result.timings['train_s']:.0f}s "
            f"({result.timings['samples_per_s'] or 0:.0f} samples/s)"
            + (
                "; best epoch is the last: possibly under-trained (raise --epochs)"
                if result.params["under_trained"]
                else ""
            )
        )
    return [done[f] for f in wanted]


def prepare_cnn_images(dataset, settings: CNNSettings, *, reporter=None) -> np.ndarray:
    """:func:`prepare_images` of ``dataset`` as the network of ``settings``
    takes them: its input mode and size, resized or keeping relative sizes
    (:func:`keeps_size`)."""
    size = int(settings.input_size or INPUT_SIZES[settings.model])
    return prepare_images(
        dataset,
        settings.input_mode,
        size,
        keep_size=keeps_size(settings.model, settings.input_scale),
        reporter=reporter,
    )


def _model_options(settings: CNNSettings) -> dict:
    """The ``build_lipnet`` options of ``settings``."""
    model_options = {"l2": float(settings.l2)}
    if settings.dense_units is not None:
        model_options["dense_units"] = int(settings.dense_units)
    if settings.dropout is not None:
        model_options["dropout"] = settings.dropout
    return model_options


def fill_mode_of(settings: CNNSettings) -> str:
    """How augmentation fills pixels moved in from outside the image: 0 for
    masked inputs and a scale-preserving canvas, the nearest edge pixel otherwise.

    >>> fill_mode_of(CNNSettings()), fill_mode_of(CNNSettings(input_mode="cropped"))
    ('constant', 'nearest')
    """
    masked = settings.input_mode == "masked" or keeps_size(settings.model, settings.input_scale)
    return "constant" if masked else "nearest"


def as_float32(net, settings: CNNSettings, n_classes: int):
    """``net`` rebuilt with float32 compute and the same weights.

    Mixed precision keeps the weights in float32 and only computes in
    bfloat16 / float16, so this changes no weight; it makes a bundle that
    every consumer runs (onnxruntime refuses bfloat16 convolutions).
    """
    image_shape = tuple(net.input_shape[1:])
    plain = build_lipnet(
        settings.model,
        None if settings.model == "lipnet-fcn" else image_shape,
        n_classes,
        dtype=None,
        **_model_options(settings),
    )
    plain.set_weights(net.get_weights())
    return plain


def settings_from_record(record: dict, model: str) -> CNNSettings:
    """The :class:`CNNSettings` a run recorded in its ``run.json`` (see
    ``run_cnn``): the fields it stores, with ``model_options`` back as
    ``l2``, ``dense_units`` and ``dropout``. Deployment trains with these,
    so the final network is trained as the cross-validated ones were.
    """
    import dataclasses

    names = {f.name for f in dataclasses.fields(CNNSettings)}
    values = {k: v for k, v in record.items() if k in names}
    options = record.get("model_options") or {}
    values.update({k: options[k] for k in ("l2", "dense_units", "dropout") if k in options})
    values["model"] = model
    return CNNSettings.from_mapping(values, where=f"the recorded settings of {model}")


def resolve_dtype_policy(mixed_precision, device: str, backend: str | None = None):
    """The Keras dtype policy for ``mixed_precision`` (True, False or None:
    automatic) on ``device`` ("cpu" or "gpu"): ``"mixed_float16"`` on a GPU,
    ``"mixed_bfloat16"`` on a CPU, or None (float32).

    Automatic is bfloat16 with the TensorFlow backend on a CPU that
    multiplies bfloat16 natively (``machine.native_bfloat16``: AVX512-BF16
    or AMX), where it trains lipnet-4 about 1.7 times faster per CPU second
    than float32 with the same validation scores (docs/performance.md);
    float32 elsewhere: bfloat16 is emulated, and slower, on AVX2-only CPUs,
    JAX on the CPU was not faster with it, and GPUs were not measured.
    ``backend`` defaults to Keras' backend.
    """
    from liposome_bench.machine import native_bfloat16

    if mixed_precision is None:
        if backend is None:
            import keras

            backend = keras.backend.backend()
        mixed_precision = device == "cpu" and backend == "tensorflow" and native_bfloat16()
    if not mixed_precision:
        return None
    return "mixed_float16" if device == "gpu" else "mixed_bfloat16"


def make_cnn_settings(settings: CNNSettings | None = None, **options) -> CNNSettings:
    """``CNNSettings.make`` (kept for callers of 0.2.0)."""
    return CNNSettings.make(settings, **options)


def _run_fold(
    dataset,
    folds,
    fold,
    images,
    results,
    *,
    model,
    seed,
    device,
    validation_fraction,
    save_models,
    timings,
    reporter,
    settings,
    dtype_policy,
):
    """Train on fold ``fold``'s training folds, predict its test fold."""
    import keras

    from liposome_bench.results import FoldResult

    classes = list(dataset.problem.classes)
    y, ids = dataset.y, dataset.ids
    train_idx, test_idx = folds.train_indices(fold), folds.test_indices(fold)
    _check_training_classes(y[train_idx], classes, fold)
    fit_pos, val_pos = split_validation(
        y[train_idx],
        validation_fraction,
        np.random.default_rng(seed),
        groups=None if getattr(folds, "groups", None) is None else folds.groups[train_idx],
    )
    fit_idx, val_idx = train_idx[fit_pos], train_idx[val_pos]
    net, info = train_fold(
        images[fit_idx],
        y[fit_idx],
        images[val_idx],
        y[val_idx],
        settings,
        n_classes=len(classes),
        dtype_policy=dtype_policy,
        seed=seed,
        class_names=classes,
        reporter=reporter,
    )
    t0 = time.perf_counter()
    scores = np.asarray(net.predict(images[test_idx], batch_size=256, verbose=0), np.float64)
    predict_s = time.perf_counter() - t0
    if save_models:
        _save_model(net, results.models_subdir(model) / f"fold-{fold}.keras")

    def counts(idx):
        return dict(zip(classes, np.bincount(y[idx], minlength=len(classes)).tolist()))

    epochs = settings.epochs
    precision = (dtype_policy or "float32").replace("mixed_", "")
    return FoldResult(
        model=model,
        fold=fold,
        ids=[ids[i] for i in test_idx],
        y_true=y[test_idx],
        y_pred=scores.argmax(axis=1),
        scores=scores,
        score_names=classes,
        score_kind="probability",
        params={
            "epochs": info["best_epoch"],
            "epochs_run": info["epochs_run"],
            "max_epochs": epochs,
            "stopped_early": info["epochs_run"] < epochs,
            # The best epoch was the last one trained: the validation score was
            # still improving when the epoch budget ran out.
            "under_trained": bool(
                info["best_epoch"] == info["epochs_run"] == epochs and len(val_idx) > 0
            ),
            "n_fit": len(fit_idx),
            "n_validation": len(val_idx),
            "n_test": len(test_idx),
            "fit_counts": counts(fit_idx),
            "epoch_counts": dict(zip(classes, info["epoch_counts"])),
            "validation_counts": counts(val_idx),
            "test_counts": counts(test_idx),
            "seed": seed,
        },
        timings=dict(
            timings,
            train_s=round(info["train_s"], 3),
            predict_s=round(predict_s, 3),
            samples_per_s=round(info["samples_per_s"], 1) if info["samples_per_s"] else None,
        ),
        history=info["history"],
        device=f"{device} ({keras.backend.backend()}, {precision})",
    )


def _check_training_classes(y_train, classes, fold):
    counts = np.bincount(y_train, minlength=len(classes))
    if (counts > 0).sum() < 2:
        raise DatasetError(
            f"Fold {fold}'s training folds hold only class "
            f"{classes[int(np.argmax(counts))]!r}; a classifier needs at least 2 classes. "
            "Use a dataset with particles of more classes."
        )


def _save_model(net, path: Path) -> None:
    """Save ``net`` as a .keras file, atomically."""
    atomic_write(path, net.save, suffix=".keras")


#: Public names of the particle window and the atomic model save, for other
#: modules (``deploy`` and ``gallery`` show and save exactly what training does).
particle_window = _window
save_model = _save_model
