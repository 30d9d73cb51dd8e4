"""CNN training throughput and score: liposome_bench's training path against
plain ``model.fit``.

**Throughput.** Both train lipnet-4 at 28x28 with Adam and label smoothing
on the same number of samples per epoch, in this process:

* **baseline**: ``model.fit(x, y, batch_size=32, shuffle=True)`` on a NumPy
  array in float32, no augmentation, no balancing: what a Keras user writes
  first, at the thesis's batch size;
* **liposome-bench**: :func:`liposome_bench.cnn.train_fold` with the
  library's defaults, the code ``run_cnn`` runs for every fold: a
  class-balanced oversampled draw per epoch, all five random augmentations in
  the training model, the default batch size with its scaled learning rate
  and warm-up, the default precision (bfloat16 on a CPU that has it
  natively) and the default weight averaging. Its per-epoch validation pass
  is left out, as the baseline has none.

Throughput is samples per second over epochs 2..E (epoch 1 includes tracing
and compilation), in wall time and in this process's CPU time. Runs
alternate (baseline, ours, baseline, ours...) and the best of ``--repeats``
of each is reported, since other processes on a shared machine only slow a
run down. Images are random (throughput does not depend on their content).
Target: a wall-time ratio of at least 2.0.

**Ceiling.** Then the CPU's float32 matrix-multiply speed is measured on the
shape of lipnet-4's largest convolution (as the matrix product a
convolution becomes) and divided by lipnet-4's FLOPs per training sample:
about the samples/s float32 training would reach on this CPU if all of it
ran at that speed (in practice pooling, dropout, augmentation and the
optimizer add time), and that rough ceiling as a multiple of the baseline.
Where it is near or under 2, the target is out of reach in float32
(docs/performance.md).

**Score** (skip with ``--no-score``). Faster training must not train worse:
on fold 1 of the built-in lamellarity set (5 folds, fold seed 0; its
training folds split as ``run_cnn`` does into a fit part and a validation
part), three runs see the same number of samples (``--score-epochs`` x the
fit part), and the validation part's macro F1, balanced accuracy and
class-balanced loss are printed after every epoch:

* the baseline above (plain ``fit``, batch 32, float32, no augmentation or
  balancing; its score shows what balancing and augmentation are for);
* ``train_fold`` with the thesis's batch 32, float32 and a constant learning
  rate (the training path before the speed-up: the control);
* ``train_fold`` with the defaults (the timed path).

The line to read is the best validation macro F1 and the lowest validation
loss over the epochs, defaults against the control.

Usage::

    python benchmarks/bench_cnn.py [--samples 10000] [--epochs 3] [--repeats 3]
                                   [--score-epochs 6] [--no-score]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

PROPORTIONS = (12368, 1717, 84)  # thesis Table 1
BASELINE_BATCH = 32


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


def plain_fit(x, y, epochs, seed, on_epoch_end):
    """The baseline: plain model.fit, batch 32, float32, no augmentation."""
    import keras

    from liposome_bench.cnn import LABEL_SMOOTHING
    from liposome_bench.models import build_lipnet

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = build_lipnet("lipnet-4", x.shape[1:], 3)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=LABEL_SMOOTHING),
    )
    callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: on_epoch_end(model))
    model.fit(
        x,
        np.eye(3, dtype="float32")[y],
        batch_size=BASELINE_BATCH,
        epochs=epochs,
        shuffle=True,
        verbose=0,
        callbacks=[callback],
    )
    return model


def ours(x, y, x_val, y_val, epochs, seed, reporter, **options):
    """liposome-bench's training path with the library's defaults (or
    ``options``)."""
    from liposome_bench.cnn import describe_device, resolve_dtype_policy, train_fold
    from liposome_bench.settings import CNNSettings

    dtype_policy = options.pop("dtype_policy", resolve_dtype_policy(None, describe_device()[0]))
    settings = CNNSettings(
        model="lipnet-4",
        augment="all",
        balance="oversample",
        epochs=epochs,
        patience=10**9,
        samples_per_epoch=len(x),
        **options,
    )
    return train_fold(
        x,
        y,
        x_val,
        y_val,
        settings,
        n_classes=3,
        dtype_policy=dtype_policy,
        seed=seed,
        reporter=reporter,
    )


def measure_throughput(args):
    x, y = make_data(args.samples, 28)
    rates = {"baseline": [], "ours": []}
    for r in range(args.repeats):
        clock = EpochClock()
        plain_fit(x, y, args.epochs, r, lambda model: clock.epoch())
        rates["baseline"].append(clock.steady_rates(len(x)))
        clock = EpochClock()
        ours(x, y, x[:0], y[:0], args.epochs, r, clock)
        rates["ours"].append(clock.steady_rates(len(x)))
        for name in ("baseline", "ours"):
            wall, cpu = rates[name][-1]
            print(
                f"  run {r + 1} {name:9s} {wall:7.0f} samples/s wall, "
                f"{cpu:7.0f} samples per CPU second",
                flush=True,
            )
    base = [max(v[i] for v in rates["baseline"]) for i in (0, 1)]
    mine = [max(v[i] for v in rates["ours"]) for i in (0, 1)]
    print("best of each           samples/s (wall)   samples per CPU second")
    print(f"baseline: model.fit    {base[0]:16.0f}   {base[1]:22.0f}")
    print(f"liposome-bench         {mine[0]:16.0f}   {mine[1]:22.0f}")
    print(
        f"ratio                  {mine[0] / base[0]:16.2f}   {mine[1] / base[1]:22.2f}"
        "   (target >= 2.0 wall)"
    )
    return base[0]


def matrix_products(model) -> list:
    """(rows, inner, columns) of the matrix product each convolution and
    dense layer of ``model`` computes for one sample: a convolution as its
    im2col product (output positions) x (kernel height x width x input
    channels) x (output channels)."""
    import keras

    shapes = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            h, w, c_out = layer.output.shape[1:]
            kh, kw, c_in, _ = layer.kernel.shape
            shapes.append((h * w, kh * kw * c_in, c_out))
        elif isinstance(layer, keras.layers.Dense):
            shapes.append((1, *layer.kernel.shape))
    return shapes


def measure_ceiling(baseline_rate: float, batch: int = 128) -> None:
    """The CPU's float32 matrix-multiply speed on lipnet-4's largest
    product (its 28 px, 32-channel 3x3 convolution, for ``batch`` samples)
    and the samples/s it would allow if all of training ran at that speed:
    a rough ceiling for float32 training on this CPU (NumPy's BLAS stands in
    for the framework's kernels). A training sample costs 3 times its
    forward pass's multiply-adds x 2 FLOPs (the backward pass computes
    gradients of the inputs and of the weights, each as costly as the
    forward pass)."""
    from liposome_bench.models import build_lipnet

    shapes = matrix_products(build_lipnet("lipnet-4", (28, 28, 1), 3))
    flops = 3 * sum(2.0 * m * k * n for m, k, n in shapes)
    m, k, n = max(shapes, key=np.prod)
    rng = np.random.default_rng(0)
    a = rng.random((batch * m, k), dtype=np.float32)
    b = rng.random((k, n), dtype=np.float32)
    a @ b
    best = np.inf
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    gflops = 2.0 * batch * m * k * n / best / 1e9
    ceiling = gflops * 1e9 / flops
    print(
        f"ceiling: lipnet-4 costs {flops / 1e6:.1f} MFLOP per training sample; float32 "
        f"matrix products of its largest convolution's shape run at {gflops:.0f} GFLOP/s "
        f"(NumPy, all cores); all of training at that speed would be about {ceiling:.0f} "
        f"samples/s: {ceiling / baseline_rate:.2f} times the baseline."
    )


def measure_score(args):
    from liposome_bench.cnn import (
        fold_seed,
        validation_metrics,
        prepare_images,
        split_validation,
    )
    from liposome_bench.sources import resolve_dataset
    from liposome_bench.folds import load_or_make_folds

    dataset = resolve_dataset(None, "lamellarity", cache_dir=args.cache_dir)
    images = prepare_images(dataset, "masked", 28)
    folds = load_or_make_folds(dataset, 5, 0)
    train = folds.train_indices(0)
    seed = fold_seed(0, 0)
    fit_pos, val_pos = split_validation(dataset.y[train], 0.1, np.random.default_rng(seed))
    fit, val = train[fit_pos], train[val_pos]
    x, y, x_val, y_val = images[fit], dataset.y[fit], images[val], dataset.y[val]
    print(
        f"\nScore: fold 1 of the built-in lamellarity set (synthetic), {len(fit)} fit "
        f"and {len(val)} validation images {np.bincount(y_val).tolist()}, "
        f"{args.score_epochs} epochs of {len(fit)} samples each"
    )

    histories = {}
    history = []

    def score(model):
        history.append(
            validation_metrics(model.predict(x_val, batch_size=256, verbose=0), y_val, 3)
        )

    t0 = time.perf_counter()
    plain_fit(x, y, args.score_epochs, seed, score)
    histories["plain fit, batch 32"] = (history, time.perf_counter() - t0)
    for name, options in (
        (
            "ours, batch 32 float32 (control)",
            dict(batch_size=32, learning_rate=1e-3, warmup_epochs=0, dtype_policy=None),
        ),
        ("ours, defaults", {}),
    ):
        t0 = time.perf_counter()
        _, info = ours(x, y, x_val, y_val, args.score_epochs, seed, None, **options)
        h = info["history"]
        histories[name] = (
            [
                {k: h[k][i] for k in ("val_loss", "val_balanced_accuracy", "val_macro_f1")}
                for i in range(len(h["loss"]))
            ],
            time.perf_counter() - t0,
        )
    print("validation macro F1 per epoch (balanced accuracy, loss at the best F1)")
    for name, (hist, seconds) in histories.items():
        f1 = [m["val_macro_f1"] for m in hist]
        best = int(np.argmax(f1))
        print(
            f"  {name:34s} "
            + " ".join(f"{v:.3f}" for v in f1)
            + f"  best {f1[best]:.3f} (bacc {hist[best]['val_balanced_accuracy']:.3f}), "
            f"lowest loss {min(m['val_loss'] for m in hist):.3f}, {seconds:.0f} s"
        )
    control = max(m["val_macro_f1"] for m in histories["ours, batch 32 float32 (control)"][0])
    mine = max(m["val_macro_f1"] for m in histories["ours, defaults"][0])
    print(
        f"best validation macro F1, defaults - control: {mine - control:+.3f} "
        "(validation part of one fold; its smallest class has "
        f"{np.bincount(y_val).min()} particles, so differences under ~0.03 are noise)"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--samples",
        type=int,
        default=10000,
        help="samples per epoch (about a lamellarity fold's fit part)",
    )
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (>= 2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--score-epochs", type=int, default=6, help="epochs of each score run on the built-in data"
    )
    parser.add_argument("--no-score", action="store_true", help="throughput only")
    parser.add_argument("--cache-dir", default=None, help="built-in dataset cache")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (epoch 1 is not timed)")

    from liposome_bench.cnn import describe_device, resolve_dtype_policy
    from liposome_bench.settings import CNNSettings

    device, line = describe_device()
    import keras

    defaults = CNNSettings()
    print(line)
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}; load average at "
        f"start {', '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    policy = resolve_dtype_policy(None, device) or "float32"
    print(
        f"lipnet-4, 28x28, {args.samples} samples x {args.epochs} epochs, best of "
        f"{args.repeats}. Baseline: batch {BASELINE_BATCH}, float32, no augmentation. "
        f"Ours: batch {defaults.batch_size}, learning rate "
        f"{defaults.resolved_learning_rate:g}, {policy}, all augmentations, oversampled."
    )
    base = measure_throughput(args)
    measure_ceiling(base)
    if not args.no_score:
        measure_score(args)
    print(f"load average at the end {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
