"""The random augmentation of thesis section 5.5 as one Keras layer
(``RandomAffine``: flips, rotation, shear, shift and zoom composed into one
affine map per image), and how it fills pixels moved in from outside.

Keras is imported when the layer is first built, so importing this module
loads no Keras.
"""

from __future__ import annotations

import numpy as np

from liposome_bench.settings import AUGMENTATIONS, CNNSettings, parse_augment
from liposome_bench.cnn.preprocess import keeps_size

# Section 5.5's ranges.
ROTATION_DEGREES = 180.0


SHEAR = 0.2


SHIFT = 0.1


ZOOM_IN = 0.2  # zoom factor 0.8-1.0: up to 20 % magnification


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


def fill_mode_of(settings: CNNSettings) -> str:
    """How augmentation fills pixels moved in from outside the image: 0 for
    masked inputs and a scale-preserving canvas, the nearest edge pixel otherwise.

    >>> fill_mode_of(CNNSettings()), fill_mode_of(CNNSettings(input_mode="cropped"))
    ('constant', 'nearest')
    """
    masked = settings.input_mode == "masked" or keeps_size(settings.model, settings.input_scale)
    return "constant" if masked else "nearest"


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
