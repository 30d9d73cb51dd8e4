"""LipNet architectures: shapes, parameter counts and layer names, under
TensorFlow here and under JAX in a subprocess (the backend is chosen once per
process)."""

import json
import os
import subprocess
import sys

import pytest

from liposome_bench.errors import ConfigError
from liposome_bench.models import (
    FULLY_CONVOLUTIONAL,
    INPUT_SIZES,
    MODEL_NAMES,
    build_lipnet,
    input_shape_of,
    is_fully_convolutional,
)

# Parameter counts with the default options and 3 classes, as documented in
# docs/models.md (measured by building each model).
DOCUMENTED = {
    "lipnet-1": 803_651,
    "lipnet-2": 210_787,
    "lipnet-4": 229_283,
    "lipnet-4c": 46_659,
    "lipnet-6": 112_611,
    "lipnet-fcn": 46_659,
}

# Output shape (without the batch axis) of the last convolutional block,
# as documented in docs/models.md.
LAST_BLOCK = {
    "lipnet-1": ("block1_dropout", (14, 14, 32)),
    "lipnet-2": ("block2_dropout", (7, 7, 32)),
    "lipnet-4": ("block2_dropout", (7, 7, 32)),
    "lipnet-4c": ("block2_dropout", (7, 7, 32)),
    "lipnet-6": ("block3_dropout", (4, 4, 32)),
    "lipnet-fcn": ("block3_dropout", (None, None, 32)),
}

SUMMARISE = """
import json, sys
try:
    import jax  # noqa: F401
except ImportError as exc:
    print(json.dumps({"skip": f"jax is not importable ({exc}); pip install 'jax[cpu]'"}))
    sys.exit(0)
from liposome_bench.models import MODEL_NAMES, build_lipnet
import keras
out = {"backend": keras.backend.backend()}
for name in MODEL_NAMES:
    m = build_lipnet(name)
    out[name] = {
        "params": m.count_params(),
        "input": list(m.input.shape[1:]),
        "output": list(m.output.shape[1:]),
        "layers": {l.name: list(l.output.shape[1:]) for l in m.layers},
    }
print(json.dumps(out))
"""


def test_names_and_sizes_agree():
    assert set(INPUT_SIZES) == set(MODEL_NAMES)
    assert input_shape_of("lipnet-4") == (28, 28, 1)
    assert input_shape_of("lipnet-6") == (32, 32, 1)
    assert input_shape_of("lipnet-fcn") == (None, None, 1)
    assert FULLY_CONVOLUTIONAL <= set(MODEL_NAMES)
    assert is_fully_convolutional("lipnet-fcn") and not is_fully_convolutional("lipnet-4c")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_builds_with_documented_shapes_and_counts(name):
    model = build_lipnet(name)
    assert model.name == name
    assert model.count_params() == DOCUMENTED[name]
    assert tuple(model.input.shape[1:]) == input_shape_of(name)
    assert tuple(model.output.shape[1:]) == (3,)
    layer, shape = LAST_BLOCK[name]
    assert tuple(model.get_layer(layer).output.shape[1:]) == shape
    assert model.get_layer("block1_conv1").kernel.shape == (3, 3, 1, 32)
    assert model.layers[-1].name == "predictions"


@pytest.mark.parametrize("name", ["lipnet-4", "lipnet-4c", "lipnet-fcn"])
def test_outputs_are_probabilities(name):
    import numpy as np

    model = build_lipnet(name, n_classes=4)
    size = 40 if name == "lipnet-fcn" else INPUT_SIZES[name]
    x = np.random.default_rng(0).normal(size=(2, size, size, 1)).astype("float32")
    p = np.asarray(model(x, training=False))
    assert p.shape == (2, 4)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert (p >= 0).all()


@pytest.mark.parametrize("name", sorted(FULLY_CONVOLUTIONAL))
def test_fully_convolutional_models_take_any_size(name):
    import numpy as np

    model = build_lipnet(name)
    for size in (24, 57):
        x = np.zeros((1, size, size + 3, 1), dtype="float32")
        assert tuple(model(x).shape) == (1, 3)


def test_options_change_the_model():
    base = build_lipnet("lipnet-4")
    wide = build_lipnet("lipnet-4", dense_units=64)
    # fc1 kernel 7*7*32 x units, bias units, then units x 3 + 3.
    assert base.count_params() - wide.count_params() == (1568 + 1 + 3) * 64
    decayed = build_lipnet("lipnet-4", l2=1e-4)
    assert decayed.get_layer("fc1").kernel_regularizer is not None
    assert decayed.get_layer("block1_conv1").kernel_regularizer is None
    dropped = build_lipnet("lipnet-4", dropout=(0.1, 0.3))
    assert dropped.get_layer("block1_dropout").rate == 0.1
    assert dropped.get_layer("fc1_dropout").rate == 0.3
    assert build_lipnet("lipnet-4", input_shape=(16, 16, 1), n_classes=2).output.shape[1] == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "lipnet-5"}, "Unknown model 'lipnet-5'; expected one of lipnet-1"),
        ({"name": "lipnet-4", "input_shape": (28, 28, 3)}, "grayscale images of shape (H, W, 1)"),
        ({"name": "lipnet-6", "input_shape": (4, 4, 1)}, "needs inputs of at least 8x8"),
        ({"name": "lipnet-4", "n_classes": 1}, "at least 2 classes; got 1"),
        ({"name": "lipnet-4", "dropout": 1.0}, "Dropout rates must be in [0, 1); got 1.0"),
        ({"name": "lipnet-4", "l2": -1.0}, "L2 weight decay must be >= 0"),
    ],
)
def test_bad_options_raise_one_line(kwargs, message):
    with pytest.raises(ConfigError) as err:
        build_lipnet(**kwargs)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def _summary_under(backend, script=SUMMARISE):
    """The last JSON line ``script`` prints under Keras ``backend``."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_same_architectures_under_jax():
    summary = _summary_under("jax")
    if "skip" in summary:
        pytest.skip(summary["skip"])
    assert summary["backend"] == "jax"
    for name in MODEL_NAMES:
        model = build_lipnet(name)  # TensorFlow, in this process
        got = summary[name]
        assert got["params"] == DOCUMENTED[name]
        assert got["output"] == [3]
        assert got["layers"] == {
            layer.name: [None if s is None else int(s) for s in layer.output.shape[1:]]
            for layer in model.layers
        }


TRAIN_UNDER_JAX = """
import json, sys
try:
    import jax  # noqa: F401
except ImportError as exc:
    print(json.dumps({"skip": f"jax is not importable ({exc}); pip install 'jax[cpu]'"}))
    sys.exit(0)
import keras
import numpy as np
from liposome_bench.cnn import train_fold
from liposome_bench.settings import CNNSettings
rng = np.random.default_rng(0)
x = rng.random((96, 28, 28, 1), dtype=np.float32)
y = np.arange(96) % 3
settings = CNNSettings(model="lipnet-1", epochs=3, batch_size=32)  # weight averaging on (the default)
net, info = train_fold(x[:72], y[:72], x[72:], y[72:], settings, n_classes=3, seed=0,
                       class_names=["a", "b", "c"])
print(json.dumps({"backend": keras.backend.backend(), "epochs_run": info["epochs_run"],
                  "averaging": settings.weight_averaging}))
"""


def test_a_fold_trains_with_weight_averaging_under_jax():
    # Keras assigns the averaged weights by aliasing the optimizer's arrays,
    # which JAX then donates in the next fit ("Buffer has been deleted or
    # donated"): every default run failed on the JAX backend.
    got = _summary_under("jax", TRAIN_UNDER_JAX)
    if "skip" in got:
        pytest.skip(got["skip"])
    assert got["backend"] == "jax" and got["epochs_run"] == 3 and got["averaging"] > 0
