"""CNN training throughput: liposome_bench's training path against plain
``model.fit`` on pre-made arrays.

Both train lipnet-4 at 28x28 with Adam, label smoothing and batch size 32 on
the same number of samples per epoch, in this process:

* **baseline**: ``model.fit(x, y, epochs=E, shuffle=True)`` on a NumPy array,
  no augmentation, no balancing;
* **liposome-bench**: :func:`liposome_bench.cnn.train_fold`, the code
  ``run_cnn`` runs for every fold: a class-balanced oversampled draw per
  epoch (:class:`~liposome_bench.cnn.EpochSampler`) and all five random
  augmentations (flips, rotation, shear, shift, zoom) as Keras layers in the
  training model. Its per-epoch validation pass is left out (no validation
  part) because the baseline has none.

Throughput is samples per second over epochs 2..E (epoch 1 includes tracing
and compilation), timed at each epoch's end, in wall time and in this
process's CPU time (less disturbed by other processes on a shared machine;
TensorFlow's spinning worker threads still inflate it under contention).
The images are random with the lamellarity set's class proportions
(87 / 12 / 0.6 %); throughput does not depend on their content. Runs
alternate (baseline, ours, baseline, ours...) and the best of ``--repeats``
of each is reported, since other processes on a shared machine only ever slow
a run down. The target is a ratio of at least
0.9: augmentation and balancing should cost almost nothing.

Usage::

    python benchmarks/bench_cnn.py [--samples 10000] [--epochs 3] [--repeats 3]
                                   [--mixed-precision]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

PROPORTIONS = (12368, 1717, 84)  # thesis Table 1


def make_data(n, size, seed=0):
    rng = np.random.default_rng(seed)
    p = np.array(PROPORTIONS, dtype=float) / sum(PROPORTIONS)
    y = rng.choice(len(p), size=n, p=p)
    y[:3] = [0, 1, 2]  # every class present
    x = rng.normal(size=(n, size, size, 1)).astype("float32")
    return x, y


class EpochClock:
    """Wall and CPU times of epoch ends, from a Keras callback or a progress
    reporter."""

    def __init__(self):
        self.wall, self.cpu = [], []

    def epoch(self, *args, **kwargs):  # progress-reporter interface
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def __getattr__(self, name):  # the reporter's other events: ignored
        return lambda *a, **k: None

    def steady_rates(self, samples_per_epoch):
        """(samples per wall second, samples per CPU second) over epochs 2..E."""
        n = samples_per_epoch * (len(self.wall) - 1)
        return n / (self.wall[-1] - self.wall[0]), n / (self.cpu[-1] - self.cpu[0])


def run_baseline(x, y, epochs, batch_size, seed, dtype):
    import keras

    from liposome_bench.cnn import LABEL_SMOOTHING
    from liposome_bench.models import build_lipnet

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = build_lipnet("lipnet-4", x.shape[1:], 3, dtype=dtype)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=LABEL_SMOOTHING),
    )
    clock = EpochClock()
    callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: clock.epoch())
    model.fit(x, np.eye(3, dtype="float32")[y], batch_size=batch_size, epochs=epochs,
              shuffle=True, verbose=0, callbacks=[callback])
    return clock.steady_rates(len(x))


def run_ours(x, y, epochs, batch_size, seed, dtype):
    from liposome_bench.cnn import train_fold

    clock = EpochClock()
    train_fold(
        x, y, x[:0], y[:0], model="lipnet-4", n_classes=3, augment="all",
        balance="oversample", epochs=epochs, patience=None, batch_size=batch_size,
        samples_per_epoch=len(x), dtype_policy=dtype, seed=seed, reporter=clock,
    )
    return clock.steady_rates(len(x))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10000,
                        help="samples per epoch (about a lamellarity fold's fit part)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (>= 2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mixed-precision", action="store_true",
                        help="both runs in mixed_bfloat16 (CPU) / mixed_float16 (GPU)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (epoch 1 is not timed)")

    import keras

    from liposome_bench.cnn import describe_device

    device, line = describe_device()
    dtype = None
    if args.mixed_precision:
        dtype = "mixed_float16" if device == "gpu" else "mixed_bfloat16"
    x, y = make_data(args.samples, 28)
    print(line)
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, "
          f"dtype policy {dtype or 'float32'}; load average at start "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"lipnet-4, 28x28, batch {args.batch_size}, {args.samples} samples x "
          f"{args.epochs} epochs, best of {args.repeats}")
    rates = {"baseline": [], "ours": []}
    for r in range(args.repeats):
        for name, fn in (("baseline", run_baseline), ("ours", run_ours)):
            wall, cpu = fn(x, y, args.epochs, args.batch_size, seed=r, dtype=dtype)
            rates[name].append((wall, cpu))
            print(f"  run {r + 1} {name:9s} {wall:7.0f} samples/s wall, "
                  f"{cpu:7.0f} samples per CPU second", flush=True)
    base = [max(v[i] for v in rates["baseline"]) for i in (0, 1)]
    ours = [max(v[i] for v in rates["ours"]) for i in (0, 1)]
    print("best of each           samples/s (wall)   samples per CPU second")
    print(f"baseline: model.fit    {base[0]:16.0f}   {base[1]:22.0f}")
    print(f"liposome-bench         {ours[0]:16.0f}   {ours[1]:22.0f}")
    print(f"ratio                  {ours[0] / base[0]:16.2f}   {ours[1] / base[1]:22.2f}"
          "   (target >= 0.9)")


if __name__ == "__main__":
    main()
