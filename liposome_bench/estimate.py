"""How long a benchmark will take on this machine, measured before it starts.

``benchmark`` prints :func:`describe` of :func:`estimate_benchmark` before
any model trains. The estimate comes from a short calibration on the run's
own data, settings and device, not from assumed rates:

- **SVM**: on stratified samples of two sizes (:data:`SVM_SIZES`, the larger
  one the coarse grid's own subsample of 2,000, so that its search, grid
  extensions included, is timed at the size it runs at), the features are
  computed and one outer fold (grid search, final fit, prediction:
  ``svm.fit_fold``) is run, each timed apart; the features are
  extrapolated linearly to the dataset, the grid search by a power law up
  to its own subsample size, the final fit and prediction by a power law
  to the run's training folds. Where the folds search exactly the larger
  size (the coarse grid on 2,500 particles or more), the search is timed
  there only, and the smaller size times the final fit alone, at the
  larger search's C and gamma. The exponents are clipped to
  :data:`SVM_EXPONENTS`: below 2,000 particles LIBSVM's fixed costs hide
  how its training grows (n^0.6-0.9 from 400 to 800 here, n^1.7-1.9 from
  2,000 to 11,335 on three C/gamma points, docs/performance.md).
- **Repeats** (``--repeats``) reuse the features and the prepared CNN
  inputs, so those are counted once; the folds are counted per repeat.
- **A resumed run** counts only its unfinished (repeat, fold) pairs per
  model (``estimate_benchmark``'s ``folds_left``); a model with none left
  is not calibrated.
- **Beside the CNN** (a serial run with a GPU, or on a CPU-only machine of
  two cores or more: ``comparison.svm_beside``) the SVM and the CNNs run at
  once, so the total is the longer of the two plus :data:`BESIDE_COST` of
  the shorter, for what each takes from the other.
- **On Dask** the figure is still a serial run's on this machine: how the
  workers share the tasks is not modelled, and :func:`describe` says so.
- **CNN**: the inputs of a sample are prepared and timed; then
  ``cnn.train_fold`` runs twice, :data:`CALIBRATION_EPOCHS` short epochs
  each, of the two sizes in :data:`CALIBRATION_SAMPLES` with a validation
  part. The lower median time of the epochs after the first (the first
  pays for tracing; the lower median passes over up to two epochs that ran
  at half speed) at the two sizes separates the cost per training image from
  each epoch's fixed cost (its ``fit`` call, the callback, weight
  averaging), which a short epoch would otherwise spread over its few
  images; the validation part is timed apart by a prediction. The first
  epoch's extra time in the second run is the per-fold start-up.

Where early stopping can end a fold early, the CNN's number of epochs is
unknown in advance and its part is a range: from every fold stopping at its
first chance (``patience + 1`` epochs) to every fold running to
``--epochs``. Where it cannot (:func:`fewest_epochs`), the part is one
figure. docs/performance.md
records how the estimate compared with the measured time.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from liposome_bench import svm as svm_module
from liposome_bench.cnn import describe_device, prepare_cnn_images, resolve_dtype_policy, train_fold
from liposome_bench.cnn.train import predict_batches
from liposome_bench.features import extract_features
from liposome_bench.progress import NullReporter
from liposome_bench.settings import is_fixed_budget
from liposome_bench.svm import stratified_subsample

#: Particles whose features and inputs are timed.
PREPARE_SAMPLE = 256
#: Training-fold sizes of the two SVM calibration fits.
SVM_SIZES = (1000, 2000)
#: Range of the power-law exponents of LIBSVM's grid search and final fit.
SVM_EXPONENTS = (1.7, 2.5)
#: Images per epoch of the two CNN calibration runs, validation images, and
#: epochs per run. An epoch's time is the lower median of the later epochs
#: (the second fastest of four): on an Intel Xeon with AMX a short epoch
#: sometimes took twice its time (0.6 s for 0.3 s in bfloat16, 2.6 s for
#: 1.3 s in float32), in up to two of a run's four, so that the mean of two
#: epochs (the median when there were three) put the default run's estimate
#: at +100 % and the plain median of four at +48 % (docs/performance.md).
CALIBRATION_SAMPLES = (1024, 3072)
CALIBRATION_VALIDATION = 256
CALIBRATION_EPOCHS = 5
#: When the SVM runs beside the CNNs, the fraction of the shorter part that
#: still adds to the run: the two share the CPU. Measured on a 2-core Intel
#: Xeon with AMX (docs/performance.md): the lipnet-4 fold the SVM overlapped
#: took 27 s longer than the run's other folds, in two runs whose SVM was
#: estimated at 61 and 67 s (0.45 and 0.41 of it).
BESIDE_COST = 0.45


@dataclass
class Estimate:
    """Seconds each part is expected to take; CNN parts as (low, high)."""

    svm_s: float = 0.0  # every SVM row together
    cnn_s: dict = field(default_factory=dict)  # model -> (low_s, high_s)
    calibration_s: float = 0.0
    details: dict = field(default_factory=dict)
    tasks: tuple | None = None  # (left, total) (repeat, fold, model) tasks of a resumed run
    beside: bool = False  # the SVM runs beside the CNNs (module docstring)

    def _total(self, cnn_s: float) -> float:
        if not self.beside:
            return self.svm_s + cnn_s
        return max(self.svm_s, cnn_s) + BESIDE_COST * min(self.svm_s, cnn_s)

    @property
    def low_s(self) -> float:
        return self._total(sum(lo for lo, _ in self.cnn_s.values()))

    @property
    def high_s(self) -> float:
        return self._total(sum(hi for _, hi in self.cnn_s.values()))

    def to_dict(self) -> dict:
        return {
            "svm_s": round(self.svm_s, 1),
            "cnn_s": {m: [round(lo, 1), round(hi, 1)] for m, (lo, hi) in self.cnn_s.items()},
            "low_s": round(self.low_s, 1),
            "high_s": round(self.high_s, 1),
            "calibration_s": round(self.calibration_s, 1),
            "tasks": list(self.tasks) if self.tasks else None,
            "beside": self.beside,
            "details": self.details,
        }


def _sample(y, n, seed):
    n = min(int(n), len(y))
    return np.sort(stratified_subsample(y, n, min_per_class=2, seed=seed))


def _train_size(n: int, k: int) -> int:
    return int(round(n * (k - 1) / k))


def _power_law(sizes, seconds, target, exponents=SVM_EXPONENTS):
    """Extrapolate seconds(size) to ``target`` through two measured points,
    the exponent clipped to the range ``exponents``."""
    (n1, n2), (t1, t2) = sizes, seconds
    p = np.log(max(t2, 1e-6) / max(t1, 1e-6)) / np.log(n2 / n1) if n2 > n1 else 2.0
    p = float(np.clip(p, *exponents))
    return t2 * (target / n2) ** p, p


def _linear(sizes, seconds, target):
    """Extrapolate a cost with a fixed part linearly through two points."""
    (n1, n2), (t1, t2) = sizes, seconds
    slope = max(t2 - t1, 0.0) / (n2 - n1) if n2 > n1 else t2 / n2
    return max(t1 + slope * (target - n1), t2)


def calibrate_svm(
    dataset,
    svm_settings,
    k: int,
    seed: int = 0,
    jobs: int = 1,
    folds: int | None = None,
) -> tuple:
    """Seconds of ``folds`` (default ``k``) outer folds of the SVM (every
    repeat's, or a resumed run's unfinished ones) with the features,
    computed once, included; and details.

    Features, the grid search and the final fit are timed apart on samples
    of :data:`SVM_SIZES` (x 5/4, so that a 5-fold training part has that
    size): the features grow linearly with the particles (a fixed part plus
    a cost per particle); the grid search with its own subsample
    (``max_samples`` of the grid, 2,000 for ``coarse``), so it is
    extrapolated only up to that; the final fit and the prediction with the
    whole training folds.
    """
    n = len(dataset)
    n_train = _train_size(n, k)
    # With C and gamma both given there is no grid search to time.
    searched = svm_settings.C is None or svm_settings.gamma is None
    max_samples = svm_module.GRIDS[svm_settings.grid]["max_samples"]
    grid_target = n_train if max_samples is None else min(n_train, max_samples)
    measured = {}  # training size -> (features_s, grid_s or None, fit_s)
    chosen = {"C": svm_settings.C, "gamma": svm_settings.gamma}
    with tempfile.TemporaryDirectory(prefix="liposome-bench-estimate-") as tmp:
        # The larger size first: where a fold's search runs at that very
        # size (the coarse grid's 2,000 on a set of 2,500 particles or
        # more), the smaller size's search would not change the figure, so
        # only its final fit is timed, at the point the larger search chose.
        for size in reversed(SVM_SIZES):
            idx = _sample(dataset.y, size * 5 // 4, seed)
            cut = _train_size(len(idx), 5)
            if cut in measured:  # a small set: both sizes are the whole set
                continue
            sub = dataset.subset(idx)
            t0 = time.perf_counter()
            feats = extract_features(
                sub, svm_settings.feature_set, source=svm_settings.source, units=svm_settings.units
            )
            feature_s = time.perf_counter() - t0
            X, names, _ = svm_module.feature_matrix(feats, sub, NullReporter())
            order = np.random.default_rng(seed).permutation(len(idx))
            search_here = searched and not (measured and grid_target == max(measured))
            out = svm_module.fit_fold(
                X=X,
                y=sub.y,
                train=np.sort(order[:cut]),
                test=np.sort(order[cut:]),
                fold=0,
                C=svm_settings.C if search_here else chosen["C"],
                gamma=svm_settings.gamma if search_here else chosen["gamma"],
                grid=svm_settings.grid,
                seed=seed,
                jobs=jobs,
                stem=Path(tmp) / f"cal-{cut}",
                feature_names=names,
                class_names=list(dataset.problem.classes),
                groups=None,
            )
            if not measured:
                chosen = {key: out["params"][key] for key in chosen}
            timings = out["timings"]
            measured[cut] = (
                feature_s,
                float(timings.get("grid_s") or 0.0) if search_here else None,
                float(timings.get("fit_s") or 0.0) + float(timings.get("predict_s") or 0),
            )
    sizes = sorted(measured) * (2 if len(measured) == 1 else 1)  # two points to extrapolate
    feature_s, grid_s, fit_s = ([measured[s][part] for s in sizes] for part in range(3))
    features_total = _linear([s * 5 // 4 for s in sizes], feature_s, n)
    if not searched:
        grid_fold, grid_exponent = 0.0, 0.0
    elif grid_s[0] is None:  # timed only at grid_target itself
        grid_fold, grid_exponent = grid_s[-1], None
    else:
        grid_fold, grid_exponent = _power_law(sizes, grid_s, grid_target)
    fit_fold, fit_exponent = _power_law(sizes, fit_s, n_train)
    n_folds = k if folds is None else folds
    return features_total + n_folds * (grid_fold + fit_fold), {
        "features_s": round(features_total, 1),
        "grid_s": round(grid_fold, 1),
        "fit_s": round(fit_fold, 1),
        "exponents": {
            "grid": None if grid_exponent is None else round(grid_exponent, 2),
            "fit": round(fit_exponent, 2),
        },
        "measured": {
            str(s): {
                "features_s": round(a, 2),
                "grid_s": None if b is None else round(b, 2),
                "fit_s": round(c, 2),
            }
            for s, a, b, c in zip(sizes, feature_s, grid_s, fit_s)
        },
    }


def fewest_epochs(settings) -> int:
    """The fewest epochs a fold of ``settings`` can train: ``patience + 1``
    with early stopping, every epoch when it cannot stop early (no
    validation part, early stopping "none", or ``patience`` of at least
    ``epochs - 1``).

    >>> from liposome_bench.settings import CNNSettings
    >>> fewest_epochs(CNNSettings(epochs=30, early_stopping="macro_f1", patience=5))
    6
    >>> fewest_epochs(CNNSettings(epochs=30, early_stopping="macro_f1", patience=30))
    30
    >>> fewest_epochs(CNNSettings(epochs=30, early_stopping="none"))
    30
    """
    if not settings.validation_fraction or is_fixed_budget(settings):
        return settings.epochs
    return min(settings.epochs, settings.patience + 1)


def calibrate_cnn(dataset, settings, k: int, seed: int = 0, folds: int | None = None) -> tuple:
    """(low_s, high_s) of ``folds`` (default ``k``) outer folds of a CNN
    (every repeat's, or a resumed run's unfinished ones) with the inputs,
    prepared once, included; and details."""
    n = len(dataset)
    pick = _sample(dataset.y, PREPARE_SAMPLE, seed)
    t0 = time.perf_counter()
    images = prepare_cnn_images(dataset.subset(pick), settings)  # as run_cnn prepares them
    prepare_s = (time.perf_counter() - t0) * n / len(pick)
    y = dataset.y[pick]
    rng = np.random.default_rng(seed)
    val = rng.choice(len(pick), CALIBRATION_VALIDATION, replace=True)
    device, _ = describe_device()
    class_names = list(dataset.problem.classes)
    runs = []
    for samples in CALIBRATION_SAMPLES:
        fit = rng.choice(len(pick), samples, replace=True)
        runs.append(
            _time_epochs(
                images[fit], y[fit], images[val], y[val], settings, class_names, device, seed
            )
        )
    (_, steady_small, net), (large, steady_large, _) = runs
    t0 = time.perf_counter()
    predict_batches(net, images[val])  # as the monitor scores the validation part
    predict_per_image = (time.perf_counter() - t0) / len(val)
    few, many = CALIBRATION_SAMPLES
    train_per_sample = (steady_large - steady_small) / (many - few)
    if train_per_sample <= 0:  # timing noise: the larger run's epochs without a fixed part
        train_per_sample, epoch_fixed = steady_large / many, 0.0
    else:
        epoch_fixed = steady_small - few * train_per_sample
    epoch_fixed = max(epoch_fixed - predict_per_image * len(val), 0.0)
    startup = max(large - steady_large, 0.0)

    n_train = _train_size(n, k)
    n_val = int(round(n_train * settings.validation_fraction))
    n_fit = n_train - n_val
    per_epoch = settings.samples_per_epoch or n_fit
    epoch_s = epoch_fixed + per_epoch * train_per_sample + n_val * predict_per_image
    test_s = (n - n_train) * predict_per_image
    fewest = fewest_epochs(settings)

    n_folds = k if folds is None else folds

    def total(epochs):
        return prepare_s + n_folds * (startup + epochs * epoch_s + test_s)

    return (total(fewest), total(settings.epochs)), {
        "prepare_s": round(prepare_s, 1),
        "startup_s": round(startup, 2),
        "epoch_s": round(epoch_s, 2),
        "epoch_fixed_s": round(epoch_fixed, 3),
        "test_s": round(test_s, 2),
        "train_samples_per_s": round(1 / train_per_sample, 1) if train_per_sample else None,
        "epochs": [fewest, settings.epochs],
    }


def steady_epoch_s(later) -> float:
    """An epoch's time from the epochs after the first: their lower median,
    which passes over up to half of them running at half speed.

    >>> steady_epoch_s([0.30, 0.61, 0.29, 0.62])  # two slow of four: not 0.455
    0.3
    """
    later = np.sort(np.asarray(later, dtype=float))
    return float(later[(len(later) - 1) // 2])


def _time_epochs(x_fit, y_fit, x_val, y_val, settings, class_names, device, seed):
    """(first epoch's seconds, the later epochs' lower median, network)
    of a :data:`CALIBRATION_EPOCHS`-epoch ``cnn.train_fold`` that draws
    ``len(x_fit)`` images an epoch."""
    stamps = []

    class Clock(NullReporter):
        def epoch(self, epoch, epochs, **metrics):
            stamps.append(time.perf_counter())

    quick = settings.replace(
        epochs=CALIBRATION_EPOCHS,
        patience=CALIBRATION_EPOCHS,
        samples_per_epoch=len(x_fit),
        balance="class-weight" if settings.balance == "smote" else settings.balance,
    )
    start = time.perf_counter()
    net, _ = train_fold(
        x_fit,
        y_fit,
        x_val,
        y_val,
        quick,
        n_classes=len(class_names),
        dtype_policy=resolve_dtype_policy(settings.mixed_precision, device),
        seed=seed,
        class_names=class_names,
        reporter=Clock(),
    )
    first = stamps[0] - start
    steady = steady_epoch_s(np.diff(stamps)) if len(stamps) > 1 else first
    return first, steady, net


def estimate_benchmark(
    dataset,
    k: int,
    repeats: int,
    svm_settings,
    cnn_settings: dict,
    seed: int = 0,
    jobs: int = 1,
    folds_left: dict | None = None,
    beside: bool = False,
) -> Estimate:
    """Calibrate every model of a benchmark on ``dataset`` and estimate the
    wall time of ``repeats`` x ``k`` folds (see the module docstring).
    ``svm_settings``: one ``SVMSettings`` or a dict of SVM rows (name ->
    settings, ``--svm-features``). ``folds_left`` (model -> unfinished
    (repeat, fold) pairs, a resumed run's) counts only those; a model with
    none left is not calibrated. ``beside``: the SVM runs beside the CNNs
    (:data:`BESIDE_COST`)."""
    t0 = time.perf_counter()
    estimate = Estimate(beside=beside)
    rows = svm_settings if isinstance(svm_settings, dict) else {svm_module.MODEL_NAME: svm_settings}
    left = {name: repeats * k for name in [*rows, *cnn_settings]}
    left.update(folds_left or {})
    if folds_left is not None:
        estimate.tasks = (sum(left.values()), repeats * k * len(left))
    for name, settings in rows.items():  # one per --svm-features row
        if left[name]:
            svm_s, details = calibrate_svm(
                dataset, settings, k, seed=seed, jobs=jobs, folds=left[name]
            )
            estimate.svm_s += svm_s
            estimate.details[name] = details
    for name, settings in cnn_settings.items():
        if left[name]:
            estimate.cnn_s[name], details = calibrate_cnn(
                dataset, settings, k, seed=seed, folds=left[name]
            )
            estimate.details[name] = details
    estimate.calibration_s = time.perf_counter() - t0
    return estimate


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def describe(estimate: Estimate, scheduler: str = "serial") -> str:
    """One line for the terminal; ``scheduler`` other than "serial" adds
    that the figure is a serial run's."""
    beside = " beside the CNN" if estimate.beside and estimate.cnn_s else ""
    parts = [f"SVM about {_minutes(estimate.svm_s)}{beside}"] if estimate.svm_s else []
    ranged = False
    for name, (lo, hi) in estimate.cnn_s.items():
        if _minutes(lo) == _minutes(hi):  # a fixed number of epochs per fold
            parts.append(f"{name} about {_minutes(hi)}")
        else:
            ranged = True
            parts.append(f"{name} {_minutes(lo)} to {_minutes(hi)}")
    span = (
        f"{_minutes(estimate.low_s)} to {_minutes(estimate.high_s)}"
        if ranged
        else f"about {_minutes(estimate.high_s)}"
    )
    why = (
        "; a CNN's range runs from every fold stopping early at its first chance to every "
        "fold reaching --epochs"
        if ranged
        else ""
    )
    resumed = (
        f" for the {estimate.tasks[0]} of {estimate.tasks[1]} (repeat, fold, model) tasks left"
        if estimate.tasks and estimate.tasks[0] < estimate.tasks[1]
        else ""
    )
    dask = (
        f" That is a serial run's time; how --scheduler {scheduler} shares the tasks among "
        "its workers is not modelled."
        if scheduler != "serial"
        else ""
    )
    return (
        f"Estimated time on this machine{resumed}: {span} ({'; '.join(parts)}{why}). "
        f"Calibration took {estimate.calibration_s:.0f} s.{dask}"
    )
