"""Where and in what precision the networks train: the device line printed
before training, the mixed-precision policy, and starting the Keras backend
without its start-up noise on stderr.

Keras (and TensorFlow) are imported inside the functions: importing this
module loads neither.
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile

from liposome_bench import machine
from liposome_bench.models import quiet_tensorflow


def describe_device() -> tuple[str, str]:
    """("gpu" or "cpu", a line saying what the Keras backend will train on:
    the GPUs, or the CPU by model and instruction sets)."""
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
        f"Training on CPU: {machine.describe_cpu()}; Keras backend {backend}; no GPU is visible to it."
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
    if mixed_precision is None:
        if backend is None:
            import keras

            backend = keras.backend.backend()
        mixed_precision = device == "cpu" and backend == "tensorflow" and machine.native_bfloat16()
    if not mixed_precision:
        return None
    return "mixed_float16" if device == "gpu" else "mixed_bfloat16"
