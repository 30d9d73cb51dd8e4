"""What a trained LipNet looks at: Grad-CAM saliency maps, first-layer
filters and per-block activation maps (thesis section 4.4, Figures 14-15).

The thesis proposed deconvolutional networks (Zeiler et al.) to see which
image parts drive a CNN's decision but ran no such experiment (section 9).
This module uses Grad-CAM (Selvaraju et al. 2017) instead: the gradient of
the predicted class's score (the logit, before the softmax) with respect to
the last convolutional layer's feature maps, averaged over space, weights
those maps; their weighted sum, rectified and resized to the input, shows
where the evidence for the class lies.

Everything is computed with ``keras.ops``; only the gradient itself comes
from the backend (:func:`gradient`: ``tf.GradientTape`` on TensorFlow,
``jax.grad`` on JAX), so it runs wherever the models were trained.
Keras is imported inside the functions.
"""

from __future__ import annotations

import numpy as np

from liposome_bench.cnn import import_keras
from liposome_bench.errors import ConfigError, ResultsError

#: At most this many particles get a saliency map per report (issue 16: "at
#: most a few hundred").
MAX_SALIENCY_PARTICLES = 300


def gradient(function, x):
    """The gradient of ``sum(function(x))`` with respect to ``x``.

    The one place with backend-specific code: ``tf.GradientTape`` on
    TensorFlow, ``jax.grad`` on JAX.

    Raises
    ------
    ConfigError
        On another Keras backend.
    """
    keras = import_keras()

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(function(x))
        return tape.gradient(total, x)
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        return jax.grad(lambda a: jnp.sum(function(a)))(jnp.asarray(x))
    raise ConfigError(
        f"Saliency maps need the tensorflow or jax Keras backend; this one is {backend!r}. "
        "Set KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax."
    )


def conv_layers(net) -> list:
    """The network's 2-D convolution layers, input to output."""
    keras = import_keras()

    return [layer for layer in net.layers if isinstance(layer, keras.layers.Conv2D)]


def _chain(net) -> list:
    """The layers after the input, in order, checked to form one chain (every
    LipNet does): each layer's input is the previous layer's output."""
    layers = [layer for layer in net.layers if layer.__class__.__name__ != "InputLayer"]
    for before, after in zip(layers, layers[1:]):
        try:
            linked = after.input is before.output
        except (AttributeError, ValueError):
            linked = False
        if not linked:
            raise ResultsError(
                f"Model {net.name!r} is not a chain of layers ({before.name} -> {after.name}); "
                "saliency maps support the LipNet architectures only."
            )
    return layers


def _logits(layer, x):
    """The class scores before the softmax of the final layer ``layer`` applied to
    ``x`` (a Dense layer with softmax, or a bare softmax Activation)."""
    from keras import ops

    if hasattr(layer, "kernel"):  # Dense(activation="softmax")
        x = ops.matmul(x, layer.kernel)
        return x + layer.bias if getattr(layer, "bias", None) is not None else x
    return x  # Activation("softmax"): its input are the logits


def grad_cam(
    net, images, classes=None, *, layer: str | None = None, batch_size: int = 64
) -> np.ndarray:
    """Grad-CAM saliency maps of ``images`` (Selvaraju et al. 2017).

    Parameters
    ----------
    net : keras.Model
        A trained LipNet (a chain of layers ending in a softmax).
    images : array, shape (n, H, W, 1)
        Network inputs (``cnn.prepare_images``).
    classes : int array, shape (n,), optional
        The class whose evidence to show per image; default the predicted one.
    layer : str, optional
        The convolution layer to explain; default the last one.
    batch_size : int

    Returns
    -------
    maps : float32 array, shape (n, H, W)
        Each map rectified and divided by its maximum (values in [0, 1]); an
        all-zero map means no location raised the class score.
    """
    keras = import_keras()
    from keras import ops

    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ConfigError(f"Grad-CAM takes images of shape (n, H, W, 1); got {images.shape}.")
    layers = _chain(net)
    convs = [lay.name for lay in layers if isinstance(lay, keras.layers.Conv2D)]
    # The last 3x3 block convolution, not a 1x1 classifier convolution.
    blocks = [name for name in convs if name.startswith("block")] or convs
    if not convs:
        raise ResultsError(f"Model {net.name!r} has no convolution layer to explain.")
    target = layer or blocks[-1]
    if target not in convs:
        raise ConfigError(
            f"{target!r} is not a convolution layer of {net.name}; "
            f"expected one of {', '.join(convs)}."
        )
    split = [lay.name for lay in layers].index(target) + 1
    body, head = layers[:split], layers[split:]

    def run(x, part):
        for lay in part:
            x = lay(x, training=False)
        return x

    n, height, width = images.shape[:3]
    maps = np.zeros((n, height, width), dtype=np.float32)
    for start in range(0, n, batch_size):
        x = ops.convert_to_tensor(images[start : start + batch_size])
        features = run(x, body)
        if classes is None:
            chosen = np.asarray(ops.argmax(run(features, head), axis=-1))
        else:
            chosen = np.asarray(classes[start : start + batch_size], dtype=np.int64)
        n_classes = int(net.outputs[0].shape[-1])
        onehot = ops.convert_to_tensor(np.eye(n_classes, dtype=np.float32)[chosen])

        def score(a, onehot=onehot):
            # The chosen class's logit per image; images are independent at
            # inference, so the gradient of the sum is each image's own.
            return ops.sum(_logits(head[-1], run(a, head[:-1])) * onehot, axis=-1)

        grads = gradient(score, features)
        weights = ops.mean(grads, axis=(1, 2), keepdims=True)
        cam = ops.relu(ops.sum(weights * features, axis=-1, keepdims=True))
        cam = ops.image.resize(cam, (height, width), interpolation="bilinear")
        cam = np.asarray(ops.convert_to_numpy(cam), dtype=np.float32)[..., 0]
        peak = cam.reshape(len(cam), -1).max(axis=1)
        cam /= np.where(peak > 0, peak, 1.0)[:, None, None]
        maps[start : start + len(cam)] = np.clip(cam, 0.0, 1.0)
    return maps


def first_layer_filters(net) -> np.ndarray:
    """The first convolution layer's kernels, shape (n_filters, kh, kw) for a
    grayscale input (thesis Figure 14)."""
    convs = conv_layers(net)
    if not convs:
        raise ResultsError(f"Model {net.name!r} has no convolution layer.")
    from keras import ops

    kernel = np.asarray(ops.convert_to_numpy(convs[0].kernel), dtype=np.float32)
    # (kh, kw, in, out): one 2-D kernel per output filter, input channel 0.
    return np.transpose(kernel[:, :, 0, :], (2, 0, 1))


def block_activations(net, image) -> dict:
    """The output of each convolutional block's last convolution for one
    input image (thesis Figure 15).

    Returns
    -------
    dict
        layer name -> float32 array (h, w, filters), in network order
        (``block1_conv2``, ``block2_conv2``, ... for LipNet-4).
    """
    keras = import_keras()
    from keras import ops

    layers = _chain(net)
    last_of_block = {}
    for lay in layers:
        if isinstance(lay, keras.layers.Conv2D) and lay.name.startswith("block"):
            last_of_block[lay.name.split("_")[0]] = lay.name
    wanted = set(last_of_block.values())
    x = ops.convert_to_tensor(np.asarray(image, dtype=np.float32)[None])
    out = {}
    for lay in layers:
        x = lay(x, training=False)
        if lay.name in wanted:
            out[lay.name] = np.asarray(ops.convert_to_numpy(x), dtype=np.float32)[0]
        if len(out) == len(wanted):
            break
    return out


def load_fold_model(results_dir, model: str, fold: int):
    """The saved network of ``model``'s fold ``fold``
    (``RESULTS/<model>/models/fold-<fold>.keras``).

    Raises
    ------
    ResultsError
        If the file is missing or cannot be loaded.
    """
    from pathlib import Path

    path = Path(results_dir) / model / "models" / f"fold-{fold}.keras"
    if not path.exists():
        raise ResultsError(
            f"{path} does not exist, so {model}'s fold {fold + 1} has no saved network "
            "(was it run with save_models=False?). Re-run that model to save it."
        )
    keras = import_keras()

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001  (Keras raises many kinds on a bad file)
        raise ResultsError(
            f"{path} cannot be loaded ({type(exc).__name__}: {exc}). "
            f"Delete {model}'s fold-{fold}.json to train that fold again."
        ) from None
