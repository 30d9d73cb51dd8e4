"""Network inputs from particles (thesis section 8.5).

Each particle is cut out as a square window (its whole image, or the square
around its mask), standardised, and either resized to the network's input
size (``input_scale=resize``, the thesis) or scaled by one factor for the
whole dataset onto a canvas, so relative particle size is kept
(``input_scale=keep``; :func:`keep_size_scale` is that one factor).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from liposome_bench.errors import ConfigError, DatasetError
from liposome_bench.models import INPUT_SIZES, is_fully_convolutional
from liposome_bench.progress import NullReporter
from liposome_bench.settings import INPUT_MODES, INPUT_SCALES, CNNSettings

KEEP_SIZE_QUANTILE = 95  # input_scale keep: this percentile of particles fills the canvas
RESIZE_STACK = 512  # windows resized in one call by prepare_images


def check_choice(value, choices, option):
    """``value`` if it is one of ``choices``, else a ``ConfigError`` naming
    ``option`` and the choices."""
    if value not in choices:
        raise ConfigError(f"Unknown {option} {value!r}; expected one of {', '.join(choices)}.")
    return value


def keeps_size(model: str, input_scale: str | None = None) -> bool:
    """Whether ``model`` with ``input_scale`` (``CNNSettings.input_scale``;
    None: the model's default) keeps relative particle size: ``keep``, or
    unset for a fully convolutional model (``models.is_fully_convolutional``);
    ``resize`` (the thesis) otherwise.

    >>> keeps_size("lipnet-4"), keeps_size("lipnet-4", "keep"), keeps_size("lipnet-4", "resize")
    (False, True, False)
    """
    if input_scale is None:
        return is_fully_convolutional(model)
    return check_choice(input_scale, INPUT_SCALES, "input scale") == "keep"


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
        True (``input_scale=keep``; a fully convolutional model's default):
        every window is scaled by one factor for the whole dataset
        (:func:`keep_size_scale`: nm to canvas pixels when every particle
        has a pixel size, else px; the 95th percentile of window sides fills
        the canvas) and centred on a ``size`` x ``size`` canvas of background
        0; larger windows are shrunk to fit. Relative particle size is kept. The factor depends on
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

    check_choice(mode, INPUT_MODES, "input mode")
    if int(size) != size or size < 4:
        raise ConfigError(f"The input size must be an integer of at least 4 px; got {size}.")
    size = int(size)
    reporter = reporter or NullReporter()
    windows = [particle_window(p, mode) for p in dataset.particles]
    targets = None
    if keep_size and windows:
        if scale is not None and unit is None:
            unit = "px"
        fit = keep_size_scale(dataset, mode, size, scale=scale, unit=unit)
        targets = window_lengths(dataset, mode, fit.unit) * fit.scale
    out = np.zeros((len(windows), size, size, 1), dtype=np.float32)
    if targets is None:
        sides = np.full(len(windows), size, dtype=np.int64)
    else:
        sides = np.clip(np.round(targets), 1, size).astype(np.int64)
    reporter.stage("images", total=len(windows))
    # Windows of one size going to one side are resized as one stack (of at
    # most RESIZE_STACK): the same numbers as one resize per window (the
    # stack's axis 0 is neither scaled nor smoothed), in about 60 % of the
    # time (docs/performance.md).
    groups = {}
    for i, window in enumerate(windows):
        groups.setdefault((window.shape[0], int(sides[i])), []).append(i)
    for (length, side), members in groups.items():
        for start in range(0, len(members), RESIZE_STACK):
            chunk = members[start : start + RESIZE_STACK]
            stack = np.stack([windows[i] for i in chunk])
            if length != side:
                stack = resize(
                    stack,
                    (len(chunk), side, side),
                    order=1,
                    mode="edge",
                    anti_aliasing=length > side,
                    preserve_range=True,
                )
            top = (size - side) // 2
            out[chunk, top : top + side, top : top + side, 0] = stack
            reporter.advance(len(chunk))
    return out


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


def particle_window(particle, mode: str) -> np.ndarray:
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
