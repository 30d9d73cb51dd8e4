"""Grad-CAM, filters and activations of LipNets, on TensorFlow (in this
process) and JAX (in a subprocess)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from liposome_bench import saliency
from liposome_bench.errors import ConfigError
from liposome_bench.models import build_lipnet


def _inputs(n, size, seed=0):
    """Bright discs on a dark ground, off-centre by image: inputs whose
    Grad-CAM has structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = rng.normal(0, 0.3, size=(n, size, size, 1)).astype(np.float32)
    for i in range(n):
        cy, cx = rng.uniform(size * 0.3, size * 0.7, size=2)
        out[i, ..., 0] += 2.0 * ((yy - cy) ** 2 + (xx - cx) ** 2 < (size / 5) ** 2)
    return out


@pytest.fixture(scope="module")
def net():
    import keras

    keras.utils.set_random_seed(3)
    return build_lipnet("lipnet-4")


def test_gradient_dispatch_is_the_true_gradient():
    x = np.array([[1.0, -2.0, 3.0]], dtype=np.float32)
    grad = np.asarray(saliency.gradient(lambda a: a * a, x))
    np.testing.assert_allclose(grad, 2 * x)


@pytest.mark.parametrize("name", ["lipnet-1", "lipnet-4", "lipnet-4c"])
def test_grad_cam_has_the_input_shape_and_is_not_constant(name):
    import keras

    keras.utils.set_random_seed(1)
    model = build_lipnet(name)
    images = _inputs(5, 28)
    maps = saliency.grad_cam(model, images)
    assert maps.shape == images.shape[:3]
    assert maps.min() >= 0 and maps.max() <= 1
    for m in maps:
        assert m.std() > 0.01, "a saliency map is constant"


def test_grad_cam_of_another_class_differs(net):
    images = _inputs(3, 28, seed=1)
    a = saliency.grad_cam(net, images, classes=np.zeros(3, dtype=int))
    b = saliency.grad_cam(net, images, classes=np.full(3, 2))
    assert not np.allclose(a, b)


def test_grad_cam_per_image_equals_batched(net):
    images = _inputs(4, 28, seed=2)
    together = saliency.grad_cam(net, images, batch_size=4)
    alone = np.stack([saliency.grad_cam(net, images[i : i + 1])[0] for i in range(4)])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_grad_cam_refuses_an_unknown_layer(net):
    with pytest.raises(ConfigError, match="'fc1' is not a convolution layer of lipnet-4"):
        saliency.grad_cam(net, _inputs(1, 28), layer="fc1")


def test_filters_and_block_activations(net):
    filters = saliency.first_layer_filters(net)
    assert filters.shape == (32, 3, 3) and filters.std() > 0
    maps = saliency.block_activations(net, _inputs(1, 28)[0])
    assert {k: v.shape for k, v in maps.items()} == {
        "block1_conv2": (28, 28, 32),
        "block2_conv2": (14, 14, 32),
    }
    assert all(v.min() >= 0 for v in maps.values())  # after the ReLU


UNDER_JAX = """
import json, sys
try:
    import jax  # noqa: F401
except ImportError as exc:
    print(json.dumps({"skip": f"jax is not importable ({exc})"}))
    sys.exit(0)
import keras, numpy as np
from liposome_bench import saliency
from liposome_bench.models import build_lipnet
keras.utils.set_random_seed(1)
x = np.random.default_rng(0).normal(size=(3, 28, 28, 1)).astype("float32")
maps = saliency.grad_cam(build_lipnet("lipnet-4"), x)
grad = np.asarray(saliency.gradient(lambda a: a * a, np.array([1.0, -2.0], "float32")))
print(json.dumps({"backend": keras.backend.backend(), "shape": list(maps.shape),
                  "std": [float(m.std()) for m in maps], "grad": grad.tolist()}))
"""


def test_grad_cam_under_jax():
    env = dict(os.environ, KERAS_BACKEND="jax")
    proc = subprocess.run(
        [sys.executable, "-c", UNDER_JAX],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(out["skip"])
    assert out["backend"] == "jax"
    assert out["shape"] == [3, 28, 28]
    assert min(out["std"]) > 0.01
    assert out["grad"] == [2.0, -4.0]
