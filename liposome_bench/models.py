"""The LipNet convolutional networks of the thesis (section 7, figure 13).

Every network uses 3x3 convolutions with ``same`` padding, ReLU and 32
channels, and ends in a softmax over the problem's classes (section 7).
Layers carry names (``block1_conv1``, ``block1_pool``, ``predictions``) as in
Keras' VGG16, so trained models can be inspected layer by layer.

==============  =====================================================  ========
name            layers                                                 input
==============  =====================================================  ========
``lipnet-1``    1 block (conv, max-pool, dropout), dense, softmax      28x28
``lipnet-2``    2 blocks of (conv, max-pool, dropout), dense, softmax  28x28
``lipnet-4``    2 blocks of (conv, conv, max-pool, dropout), dense,    28x28
                softmax (VGG-11 inspired)
``lipnet-4c``   lipnet-4 with stride-2 convolutions instead of         28x28
                max-pooling and a 1x1 convolution to the classes, then
                global average pooling and softmax (Springenberg et
                al., the thesis's reference [20])
``lipnet-6``    lipnet-4 plus a third block                            32x32
``lipnet-fcn``  3 blocks of lipnet-4, 1x1 convolution to the classes,  any
                global average pooling, softmax (section 12)
==============  =====================================================  ========

Where the thesis is silent the choices are those of the Keras examples the
thesis's code was built from: one hidden dense layer of 128 units, dropout
0.25 after each convolutional block and 0.5 after the dense layer. All are
parameters of :func:`build_lipnet`; docs/models.md lists the parameter counts.

Keras is imported inside the functions so that importing this module is cheap.
"""

from __future__ import annotations

import os

from liposome_bench.errors import ConfigError


def quiet_tensorflow() -> None:
    """Keep most of TensorFlow's C++ start-up lines (CPU feature notes) off
    stderr: sets ``TF_CPP_MIN_LOG_LEVEL=2`` unless it is set. Called before
    Keras is first imported (never at module import, which changes nothing)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


from liposome_bench.settings import MODEL_NAMES  # noqa: E402  (one list for every module)

# Side of the square input each model is trained on. lipnet-fcn accepts any
# size; 48 is the canvas its images are prepared on (see cnn.prepare_images).
INPUT_SIZES = {
    "lipnet-1": 28,
    "lipnet-2": 28,
    "lipnet-4": 28,
    "lipnet-4c": 28,
    "lipnet-6": 32,
    "lipnet-fcn": 48,
}

#: The models with no fixed input size (fully convolutional, input shape
#: (None, None, 1)). Nothing forces their inputs to one size, so by default
#: they keep relative particle size (``CNNSettings.input_scale`` unset: keep).
FULLY_CONVOLUTIONAL = frozenset({"lipnet-fcn"})

DEFAULT_DENSE_UNITS = 128
DEFAULT_DROPOUT = (0.25, 0.5)
FILTERS = 32


def check_model_name(name: str) -> str:
    """Return ``name`` if it is a LipNet model, else raise ``ConfigError``."""
    if name not in MODEL_NAMES:
        raise ConfigError(f"Unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}.")
    return name


def is_fully_convolutional(name: str) -> bool:
    """Whether model ``name`` takes images of any size (``FULLY_CONVOLUTIONAL``).

    >>> is_fully_convolutional("lipnet-fcn"), is_fully_convolutional("lipnet-4")
    (True, False)
    """
    return name in FULLY_CONVOLUTIONAL


def input_shape_of(name: str) -> tuple:
    """The default input shape of model ``name``: (H, W, 1), or
    (None, None, 1) for a fully convolutional one (lipnet-fcn)."""
    check_model_name(name)
    if is_fully_convolutional(name):
        return (None, None, 1)
    size = INPUT_SIZES[name]
    return (size, size, 1)


def build_lipnet(
    name: str,
    input_shape=None,
    n_classes: int = 3,
    *,
    dense_units: int = DEFAULT_DENSE_UNITS,
    dropout=DEFAULT_DROPOUT,
    l2: float = 0.0,
    dtype=None,
):
    """Build the LipNet network ``name`` (uncompiled).

    Parameters
    ----------
    name : str
        One of ``MODEL_NAMES``.
    input_shape : tuple, optional
        (H, W, 1). Default: ``input_shape_of(name)``. lipnet-fcn takes
        (None, None, 1) so it accepts images of any size.
    n_classes : int
        Number of classes of the softmax output.
    dense_units : int
        Units of the hidden dense layer (lipnet-1, -2, -4, -6).
    dropout : float or (float, float)
        Dropout rate after each convolutional block and after the dense
        layer; one float sets both.
    l2 : float
        L2 weight decay on the dense layers and the 1x1 classifier
        convolution. Convolutional filters are left alone: weight decay on
        them gave dead filters in the thesis (section 5.1).
    dtype : str or keras.DTypePolicy, optional
        Dtype policy of the hidden layers, e.g. ``"mixed_float16"``; the
        softmax output is always float32.

    Returns
    -------
    keras.Model
        Named ``name``, input images (batch, H, W, 1), output class
        probabilities (batch, n_classes).

    Raises
    ------
    ConfigError
        If ``name``, ``input_shape``, ``n_classes`` or a rate is invalid.
    """
    quiet_tensorflow()
    import keras
    from keras import layers

    check_model_name(name)
    if input_shape is None:
        input_shape = input_shape_of(name)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 1:
        raise ConfigError(
            f"{name} takes grayscale images of shape (H, W, 1); got input shape {input_shape}."
        )
    minimum = 8 if name in ("lipnet-4c", "lipnet-fcn", "lipnet-6") else 4
    if any(s is not None and s < minimum for s in input_shape[:2]):
        raise ConfigError(
            f"{name} needs inputs of at least {minimum}x{minimum} pixels; got "
            f"{input_shape[0]}x{input_shape[1]}. Use a larger input size."
        )
    if n_classes < 2:
        raise ConfigError(f"A classifier needs at least 2 classes; got {n_classes}.")
    conv_rate, dense_rate = (dropout, dropout) if isinstance(dropout, (int, float)) else dropout
    for rate in (conv_rate, dense_rate):
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"Dropout rates must be in [0, 1); got {rate}.")
    if dense_units < 1:
        raise ConfigError(f"dense_units must be at least 1; got {dense_units}.")
    if l2 < 0:
        raise ConfigError(f"L2 weight decay must be >= 0; got {l2}.")
    reg = keras.regularizers.L2(l2) if l2 > 0 else None

    def conv(x, block, i, strides=1):
        return layers.Conv2D(
            FILTERS,
            (3, 3),
            strides=strides,
            padding="same",
            activation="relu",
            name=f"block{block}_conv{i}",
            dtype=dtype,
        )(x)

    def pool_and_drop(x, block):
        x = layers.MaxPooling2D((2, 2), name=f"block{block}_pool", dtype=dtype)(x)
        return layers.Dropout(conv_rate, name=f"block{block}_dropout", dtype=dtype)(x)

    def dense_head(x):
        x = layers.Flatten(name="flatten", dtype=dtype)(x)
        x = layers.Dense(
            dense_units, activation="relu", kernel_regularizer=reg, name="fc1", dtype=dtype
        )(x)
        x = layers.Dropout(dense_rate, name="fc1_dropout", dtype=dtype)(x)
        return layers.Dense(
            n_classes,
            activation="softmax",
            kernel_regularizer=reg,
            name="predictions",
            dtype="float32",
        )(x)

    def conv_head(x):
        # Springenberg et al.: a 1x1 convolution to one map per class,
        # averaged over the image, replaces flatten and dense layers.
        x = layers.Conv2D(
            n_classes, (1, 1), kernel_regularizer=reg, name="classifier_conv", dtype=dtype
        )(x)
        x = layers.GlobalAveragePooling2D(name="global_pool", dtype=dtype)(x)
        return layers.Activation("softmax", name="predictions", dtype="float32")(x)

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if name == "lipnet-1":
        # Block 1
        x = conv(x, 1, 1)
        x = pool_and_drop(x, 1)
        outputs = dense_head(x)
    elif name == "lipnet-2":
        # Block 1
        x = conv(x, 1, 1)
        x = pool_and_drop(x, 1)
        # Block 2
        x = conv(x, 2, 1)
        x = pool_and_drop(x, 2)
        outputs = dense_head(x)
    elif name in ("lipnet-4", "lipnet-6"):
        # Block 1
        x = conv(x, 1, 1)
        x = conv(x, 1, 2)
        x = pool_and_drop(x, 1)
        # Block 2
        x = conv(x, 2, 1)
        x = conv(x, 2, 2)
        x = pool_and_drop(x, 2)
        if name == "lipnet-6":
            # Block 3
            x = conv(x, 3, 1)
            x = conv(x, 3, 2)
            x = pool_and_drop(x, 3)
        outputs = dense_head(x)
    elif name == "lipnet-4c":
        # Block 1: a stride-2 convolution replaces the max-pooling (section 4.3)
        x = conv(x, 1, 1)
        x = conv(x, 1, 2)
        x = conv(x, 1, 3, strides=2)
        x = layers.Dropout(conv_rate, name="block1_dropout", dtype=dtype)(x)
        # Block 2
        x = conv(x, 2, 1)
        x = conv(x, 2, 2)
        x = conv(x, 2, 3, strides=2)
        x = layers.Dropout(conv_rate, name="block2_dropout", dtype=dtype)(x)
        outputs = conv_head(x)
    else:  # lipnet-fcn
        for block in (1, 2, 3):
            # Blocks 1-3, as in lipnet-6; nothing fixes the input size
            x = conv(x, block, 1)
            x = conv(x, block, 2)
            x = pool_and_drop(x, block)
        outputs = conv_head(x)
    return keras.Model(inputs, outputs, name=name)
