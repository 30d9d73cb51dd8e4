"""How many labels until the CNN wins: paired learning curves, ``liposome-bench curve``.

Each training fold of the dataset's stored folds is subsampled to a share of
its particles (``--fractions 0.1,0.25,0.5,1``) or to a number per class
(``--per-class 20,50``); the test folds stay as they are, so every point of
the curve is scored on the same particles. The subsample is stratified (each
class keeps the share it asks for) and, where the folds are grouped
(``--group-by micrograph``), takes whole groups. Within one repeat the
ungrouped subsamples are nested: a smaller one is part of every larger one.

The SVM and each CNN are trained at every point. Each (point, repeat, model,
fold) is one task on the Dask engine of :mod:`liposome_bench.sweep`
(:func:`liposome_bench.sweep.run_task`): a local cluster or ``--scheduler
tcp://host:8786``; finished tasks are skipped on resume.

The summary (``curve-summary.json``) holds, per point, the per-class and
macro F1 of each model over folds, the paired verdict of each CNN against the
SVM (:func:`liposome_bench.stats.compare_fold_scores`: the corrected
resampled t-test, Holm across the classes of the point; a second Holm
adjustment across every point is recorded too, docs/curve.md argues which to
read), and per model and class a fitted power law of the error,

    1 - F1(n) = b * n ** (-c),

extrapolated to where the SVM's and the CNN's curves cross, with a bootstrap
over the fold scores for its uncertainty.

Layout of the curve folder::

    OUT/curve.json                  the models, points, dataset and folds
    OUT/cells/<model>-<8 hex>-<point>-r<repeat>/
                                    one results folder per (model, point, repeat)
    OUT/curve-summary.json          per point and class: F1, verdicts; the fits
    OUT/report.md, report-figures/  ``liposome-bench report OUT``
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liposome_bench import __version__, engine, registry
from liposome_bench import sweep as _sweep
from liposome_bench.errors import ConfigError, CurveError, ResultsError
from liposome_bench.folds import Folds
from liposome_bench.io import atomic_write_json, atomic_write_text
from liposome_bench.settings import CNNSettings, SVMSettings
from liposome_bench.metrics import to_jsonable
from liposome_bench.models import INPUT_SIZES
from liposome_bench.plotting import plot_learning_curves
from liposome_bench.progress import NullReporter
from liposome_bench.results import ResultsDir, run_lock
from liposome_bench.stats import compare_fold_scores, fold_scores, holm

CURVE_JSON = "curve.json"
SUMMARY_JSON = "curve-summary.json"
CURVE_SCHEMA_VERSION = 1
DEFAULT_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
#: ``--quick``: two points on the benchmark's quick subsample, 2 CNN epochs.
QUICK_FRACTIONS = (0.5, 1.0)
QUICK_EPOCHS = 2
#: Resamples of the (repeat, fold) scores for the crossing's uncertainty.
BOOTSTRAPS = 1000
#: Beyond this multiple of the largest training size a crossing is a guess.
GUESS_BEYOND = 2.0
#: Beyond this multiple the curves are said not to cross.
NO_CROSSING_BEYOND = 10.0
#: F1 is clipped into [EPS, 1 - EPS] before the log of the error is taken.
EPS = 1e-3
MACRO = "macro F1"


# Subsampled training folds ------------------------------------------------------


@dataclass
class SubsampledFolds(Folds):
    """Stored folds whose training part is a subsample; test folds unchanged.

    ``train_subsets[f]`` are the (sorted) dataset indices fold ``f`` trains
    on, a subset of ``Folds.train_indices(f)``.
    """

    train_subsets: dict = field(default_factory=dict)

    def train_indices(self, fold: int) -> np.ndarray:
        return self.train_subsets[fold]


def subsample_training(
    folds: Folds,
    y,
    classes,
    *,
    fraction: float | None = None,
    per_class: int | None = None,
    seed: int = 0,
    repeat: int = 0,
) -> SubsampledFolds:
    """Subsample every training fold of ``folds``, stratified, by groups when
    the folds are grouped; the test folds are left as they are.

    Each class keeps ``round(fraction * its training particles)`` (or
    ``min(per_class, its training particles)``). Ungrouped, the particles of
    each class are taken in an order fixed by (seed, repeat, fold), so the
    subsamples of one repeat are nested. Grouped, the groups are taken in
    such an order while a group brings a particle of a class that is still
    short of its target: whole groups, so a class can overshoot its target by
    the rest of a group.

    Parameters
    ----------
    folds : folds.Folds
    y : array of int
        Class index of every particle (the dataset's order).
    classes : sequence of str
        Class names, for messages.
    fraction : float, optional
        Share of each class's training particles, in (0, 1].
    per_class : int, optional
        Training particles per class (all of a class that has fewer).
    seed, repeat : int

    Returns
    -------
    SubsampledFolds

    Raises
    ------
    CurveError
        If a class would keep no training particle in some fold.
    """
    y = np.asarray(y)
    if (fraction is None) == (per_class is None):
        raise ConfigError("Give a training fraction or a count per class, not both or neither.")
    subsets = {}
    for fold in range(folds.k):
        train = Folds.train_indices(folds, fold)
        rng = np.random.default_rng(np.random.SeedSequence((int(seed), int(repeat), fold)))
        counts = np.bincount(y[train], minlength=len(classes))
        if fraction is not None:
            targets = np.round(fraction * counts).astype(int)
        else:
            targets = np.minimum(int(per_class), counts)
        short = [j for j in range(len(classes)) if counts[j] > 0 and targets[j] < 1]
        if short:
            j = short[0]
            size = (
                f"{fraction:.0%} of the training folds"
                if fraction is not None
                else f"{per_class} per class"
            )
            raise CurveError(
                f"At {size}, class {classes[j]!r} keeps no training particle in fold {fold} "
                f"(it has {counts[j]}); use larger --fractions or --per-class."
            )
        if folds.groups is None:
            keep = []
            for j in range(len(classes)):
                members = train[y[train] == j]
                keep.append(members[rng.permutation(len(members))[: targets[j]]])
            chosen = np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)
        else:
            groups = np.asarray(folds.groups)[train]
            names = np.unique(groups)
            have = np.zeros(len(classes), dtype=int)
            chosen_parts = []
            for name in names[rng.permutation(len(names))]:
                if (have >= targets).all():
                    break
                members = train[groups == name]
                brings = np.bincount(y[members], minlength=len(classes))
                if ((brings > 0) & (have < targets)).any():
                    chosen_parts.append(members)
                    have += brings
            chosen = np.concatenate(chosen_parts) if chosen_parts else np.zeros(0, np.int64)
        subsets[fold] = np.sort(chosen.astype(np.int64))
    return SubsampledFolds(
        folds.k,
        folds.seed,
        folds.fingerprint,
        folds.fold_of,
        None,
        folds.group_by,
        folds.groups,
        train_subsets=subsets,
    )


@dataclass(frozen=True)
class CurvePoint:
    """One training size: ``kind`` "fraction" or "per_class", its value."""

    kind: str
    value: float

    @property
    def label(self) -> str:
        """``f0.25`` or ``n50``: names its cells."""
        return f"f{self.value:g}" if self.kind == "fraction" else f"n{int(self.value)}"

    def describe(self) -> str:
        return (
            f"{self.value:.0%} of the training folds"
            if self.kind == "fraction"
            else f"{int(self.value)} per class"
        )


def parse_points(fractions=None, per_class=None) -> list[CurvePoint]:
    """The curve's points from ``--fractions`` or ``--per-class`` (comma-
    separated text or sequences); default :data:`DEFAULT_FRACTIONS`.

    Raises
    ------
    ConfigError
        If both are given, a value is not a number, a fraction is outside
        (0, 1], or a count is below 1.
    """
    if fractions is not None and per_class is not None:
        raise ConfigError("Give --fractions or --per-class, not both.")

    def values(text, name):
        items = text.split(",") if isinstance(text, str) else list(text)
        try:
            out = sorted({float(v) for v in items if str(v).strip()})
        except ValueError:
            raise ConfigError(
                f"{name} expects comma-separated numbers such as "
                f"{'0.1,0.5,1' if name == '--fractions' else '20,50'}; got "
                f"{text!r}."
            ) from None
        if not out:
            raise ConfigError(f"{name} is empty; give at least one training size.")
        return out

    if per_class is not None:
        counts = values(per_class, "--per-class")
        bad = [c for c in counts if c < 1 or c != int(c)]
        if bad:
            raise ConfigError(
                f"--per-class takes whole numbers of particles of at least 1; got {bad[0]:g}."
            )
        return [CurvePoint("per_class", int(c)) for c in counts]
    shares = values(fractions if fractions is not None else DEFAULT_FRACTIONS, "--fractions")
    bad = [f for f in shares if not 0 < f <= 1]
    if bad:
        raise ConfigError(
            f"--fractions are shares of the training folds in (0, 1]; got "
            f"{bad[0]:g}. Use --per-class for counts."
        )
    return [CurvePoint("fraction", f) for f in shares]


# The plan: the (point, repeat, model, fold) tasks ---------------------------------


@dataclass
class CurveTask:
    cell: _sweep.Cell
    point: CurvePoint
    repeat: int
    fold: int

    @property
    def id(self) -> str:
        return task_cell_id(self.cell, self.point, self.repeat)


def task_cell_id(cell, point: CurvePoint, repeat: int) -> str:
    """``lipnet-4-3fa9c2d1-f0.25-r0``: the results folder of a model at a point."""
    return f"{cell.id}-{point.label}-r{repeat}"


@dataclass
class CurvePlan:
    """What a curve into ``out`` has to do."""

    out: Path
    cells: list  # sweep.Cell: the SVM and the CNN(s)
    points: list  # CurvePoint that can be made
    repeats: int
    k: int
    subsamples: dict  # (point label, repeat) -> SubsampledFolds
    skipped: dict  # point label -> the CurveError's message
    tasks: list  # CurveTask still to run
    done: int  # tasks finished before

    @property
    def total(self) -> int:
        return len(self.tasks) + self.done


def model_cells(
    cnn_models,
    cnn_settings: CNNSettings | None = None,
    svm_settings: SVMSettings | None = None,
    *,
    svm: bool = True,
) -> list:
    """The curve's models as :class:`sweep.Cell` (their ids name the folders)."""
    cells = [_sweep.Cell(registry.SVM.family, svm_settings or SVMSettings())] if svm else []
    base = cnn_settings or CNNSettings()
    for model in cnn_models:
        cells.append(_sweep.Cell(registry.LIPNET.family, base.replace(model=model)))
    return cells


def plan_curve(
    folds: Folds, y, classes, out, cells, points, *, repeats: int = 1, seed: int = 0
) -> CurvePlan:
    """Subsample the training folds for every point and repeat, and list the
    tasks not yet finished in ``out``. A point that a class cannot fill is
    skipped with its one-line reason (``CurvePlan.skipped``)."""
    subsamples, skipped, usable = {}, {}, []
    for point in points:
        try:
            for r in range(repeats):
                subsamples[(point.label, r)] = subsample_training(
                    folds,
                    y,
                    classes,
                    seed=seed,
                    repeat=r,
                    **(
                        {"fraction": point.value}
                        if point.kind == "fraction"
                        else {"per_class": int(point.value)}
                    ),
                )
        except CurveError as exc:
            skipped[point.label] = str(exc)
            continue
        usable.append(point)
    tasks, done = [], 0
    for point in usable:
        for r in range(repeats):
            for cell in cells:
                results = ResultsDir(_sweep.cell_dir(out, task_cell_id(cell, point, r)))
                for f in range(folds.k):
                    if results.fold_json(cell.model, f).exists():
                        done += 1
                    else:
                        tasks.append(CurveTask(cell, point, r, f))
    return CurvePlan(
        Path(out), list(cells), usable, repeats, folds.k, subsamples, skipped, tasks, done
    )


def estimate_seconds(plan: CurvePlan) -> float:
    """Rough CPU-seconds of the remaining tasks, from the sweep's assumed
    rates (:data:`sweep.ASSUMED_SAMPLES_PER_CPU_S`, :data:`sweep.ASSUMED_SVM_FOLD_S`):
    a CNN task costs its maximum epochs x its fit particles; an SVM fold
    scales with its training particles (linearly: optimistic for an RBF SVM)."""
    total = 0.0
    for task in plan.tasks:
        n_train = len(plan.subsamples[(task.point.label, task.repeat)].train_indices(task.fold))
        s = task.cell.settings
        if registry.get(task.cell.kind).input_size is not None:  # an image model
            size = int(s.input_size or INPUT_SIZES[s.model])
            samples = s.epochs * n_train * (1 - s.validation_fraction)
            total += samples / _sweep.ASSUMED_SAMPLES_PER_CPU_S * (size / 28) ** 2
        else:
            per_fold = _sweep.ASSUMED_SVM_FOLD_S.get(s.grid, 3600.0)
            total += per_fold * n_train / (_sweep.ASSUMED_SVM_PARTICLES * 0.8)
    return total


# The curve folder --------------------------------------------------------------


def _dataset_record(dataset, folds) -> dict:
    return {
        "problem": dataset.problem.name,
        "classes": list(dataset.problem.classes),
        "fingerprint": folds.fingerprint,
        "n_particles": len(dataset),
        "synthetic": dataset.synthetic,
        "source": str(dataset.root) if dataset.root else dataset.description,
    }


def write_curve_json(plan: CurvePlan, out, dataset, folds, seed: int) -> dict:
    """Record the curve in ``out/curve.json``: models, points with their mean
    training sizes (total and per class), dataset, folds, seed.

    Raises
    ------
    ResultsError
        If ``out`` holds a curve of another dataset, other folds or seed, or
        another kind of results folder.
    """
    out = Path(out)
    classes = list(dataset.problem.classes)
    y = dataset.y
    old = read_curve_json(out, missing_ok=True)
    points = dict((old or {}).get("points", {}))
    for point in plan.points:
        for r in range(plan.repeats):
            sub = plan.subsamples[(point.label, r)]
            sizes = np.array(
                [
                    np.bincount(y[sub.train_indices(f)], minlength=len(classes))
                    for f in range(folds.k)
                ],
                dtype=np.float64,
            )
            points[f"{point.label}-r{r}"] = {
                "label": point.label,
                "kind": point.kind,
                "value": point.value,
                "repeat": r,
                "n_train": float(sizes.sum(axis=1).mean()),
                "n_train_per_class": dict(zip(classes, sizes.mean(axis=0).tolist())),
                "n_test": float(np.mean([len(folds.test_indices(f)) for f in range(folds.k)])),
            }
    cells = dict((old or {}).get("cells", {}))
    cells.update(
        {
            c.id: {"kind": c.kind, "model": c.model, "settings": c.settings.to_dict()}
            for c in plan.cells
        }
    )
    record = {
        "schema_version": CURVE_SCHEMA_VERSION,
        "kind": "curve",
        "tool_version": __version__,
        "dataset": _dataset_record(dataset, folds),
        "folds": {"k": folds.k, "seed": folds.seed, "group_by": folds.group_by},
        "seed": int(seed),
        "cells": cells,
        "points": points,
        "skipped": {**(old or {}).get("skipped", {}), **plan.skipped},
    }
    if old:
        for key, label in (
            ("dataset", "another dataset"),
            ("folds", "other folds"),
            ("seed", "another --seed"),
        ):
            mine = record[key]["fingerprint"] if key == "dataset" else record[key]
            theirs = old[key]["fingerprint"] if key == "dataset" else old.get(key)
            if mine != theirs:
                raise ResultsError(
                    f"{out} holds a curve of {label} ({key}: {theirs}, now "
                    f"{mine}). Use another --out, or the same data, folds "
                    "and seed."
                )
    elif out.exists() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise ResultsError(
            f"{out} already holds other results; a curve needs its own folder. Use another --out."
        )
    atomic_write_json(out / CURVE_JSON, json.loads(json.dumps(record)))
    return record


def read_curve_json(out, *, missing_ok: bool = False) -> dict:
    path = Path(out) / CURVE_JSON
    if not path.exists():
        if missing_ok:
            return {}
        raise ResultsError(
            f"{out} is not a curve folder (no {CURVE_JSON}). Run "
            "`liposome-bench curve --out` first."
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ResultsError(
            f"{path} is not valid JSON ({exc}). Run the curve again to rewrite it."
        ) from None


def is_curve_folder(path) -> bool:
    return (Path(path) / CURVE_JSON).is_file()


# Running ---------------------------------------------------------------------------


@dataclass
class CurveRun:
    """What :func:`run_curve` did."""

    out: Path
    ran: int = 0
    skipped: int = 0
    errors: dict = field(default_factory=dict)  # point label -> first message
    seconds: float = 0.0
    workers: int = 0


def run_curve(
    plan: CurvePlan,
    dataset,
    folds,
    *,
    seed: int = 0,
    scheduler: str = "local",
    n_workers: int | None = None,
    source=None,
    reporter=None,
    wait: bool = False,
) -> CurveRun:
    """Run every unfinished task of ``plan`` on Dask into ``plan.out``.

    Parameters
    ----------
    plan : CurvePlan
    dataset : Dataset
    folds : folds.Folds
        The stored folds the plan's subsamples were drawn from.
    seed : int
        Training seed (as ``--seed`` of ``cnn`` / ``svm``), the same at
        every point.
    scheduler : str
        ``"local"`` or a Dask scheduler address (``tcp://host:8786``).
    n_workers : int, optional
        Workers of the local cluster.
    source : sweep.DatasetSource, optional
        How workers read the dataset (default: its folder; sent from the
        client when it has none).
    reporter : progress reporter, optional
        Gets one line per finished task, each skipped point once, and the
        first user error of each point once.
    wait : bool
        Wait for another run that holds ``plan.out``'s lock.

    Returns
    -------
    CurveRun

    Raises
    ------
    ResultsError, ConfigError
        Another curve in ``out``, a held lock, an unreachable scheduler.
    """
    reporter = reporter or NullReporter()
    _sweep.check_scheduler(scheduler)
    out = plan.out
    started = time.perf_counter()
    with run_lock(out, wait=wait, reporter=reporter, command="curve"):
        write_curve_json(plan, out, dataset, folds, seed)
        run = CurveRun(out=out, skipped=plan.done)
        for label, message in plan.skipped.items():
            reporter.message(f"Point {label} skipped: {message}")
        if plan.done:
            reporter.message(
                f"{plan.done} of {plan.total} tasks already finished in {out}; "
                f"running {len(plan.tasks)}."
            )
        if plan.tasks:
            _run_tasks(
                plan,
                dataset,
                folds,
                run,
                seed=seed,
                scheduler=scheduler,
                n_workers=n_workers,
                source=source,
                reporter=reporter,
            )
    run.seconds = time.perf_counter() - started
    return run


def _run_tasks(plan, dataset, folds, run, *, seed, scheduler, n_workers, source, reporter):
    from distributed import as_completed

    # One process per SVM task: the cluster runs the tasks in parallel, and a
    # worker whose grid search started joblib processes waits for them (loky's
    # 300 s idle timeout) before it can close.
    jobs = 1
    with engine.connect(scheduler, n_workers=n_workers, reporter=reporter) as connection:
        client = connection.client
        run.workers = connection.workers
        data_arg = engine.dataset_argument(client, dataset, source, folds.fingerprint)
        token = uuid.uuid4().hex[:8]
        # Each point's folds go to the cluster once, as a task (remade if the
        # workers holding it die), not with every task.
        sent = {
            key: engine.share(client, dataclasses.replace(sub, path=None))
            for key, sub in plan.subsamples.items()
        }
        futures = {}
        for task in plan.tasks:
            future = client.submit(
                _sweep.run_task,
                data_arg,
                task.cell.kind,
                task.cell.settings.to_dict(),
                task.id,
                task.fold,
                sent[(task.point.label, task.repeat)],
                str(plan.out),
                seed,
                False,
                jobs,
                key=f"curve-{task.id}-fold{task.fold}-{token}",
                pure=False,
                retries=engine.TASK_RETRIES,
            )
            futures[future] = task
        reporter.stage("curve", total=len(futures))
        for future in as_completed(list(futures)):
            task = futures[future]
            outcome = future.result()
            reporter.advance()
            if outcome.error is not None:
                # A user error (a class too small for the SVM's grid search at
                # this size): said once per point, never retried.
                if task.point.label not in run.errors:
                    run.errors[task.point.label] = outcome.error
                    reporter.message(
                        f"Point {task.point.label} ({task.point.describe()}): {outcome.error}"
                    )
                continue
            _sweep.save_outcome(
                plan.out, dataset, plan.subsamples[(task.point.label, task.repeat)], outcome
            )
            run.ran += 1
            reporter.message(
                f"{task.id} fold {task.fold + 1}/{plan.k} done on worker "
                f"{outcome.worker} in {outcome.seconds:.0f} s."
            )


# Fits and crossings ----------------------------------------------------------------


def fit_power_law(n, f1) -> dict:
    """Fit ``1 - F1 = b * n ** (-c)`` by least squares on log(1 - F1)
    against log n (F1 clipped into [EPS, 1 - EPS]).

    Returns
    -------
    dict
        "log_b", "c" (NaN with fewer than 2 distinct n).
    """
    n = np.asarray(n, dtype=np.float64)
    f1 = np.asarray(f1, dtype=np.float64)
    ok = np.isfinite(n) & np.isfinite(f1) & (n > 0)
    if len(np.unique(n[ok])) < 2:
        return {"log_b": math.nan, "c": math.nan}
    slope, intercept = np.polyfit(np.log(n[ok]), np.log(1 - np.clip(f1[ok], EPS, 1 - EPS)), 1)
    return {"log_b": float(intercept), "c": float(-slope)}


def predict_power_law(fit: dict, n) -> np.ndarray:
    """F1 of a :func:`fit_power_law` fit at ``n`` training particles."""
    return 1 - np.exp(fit["log_b"] - fit["c"] * np.log(np.asarray(n, dtype=np.float64)))


def crossing(fit_a: dict, fit_b: dict) -> float:
    """Where two fitted power laws cross (training particles); NaN if they
    are parallel or undefined."""
    dc = fit_a["c"] - fit_b["c"]
    if not np.isfinite(dc) or dc == 0:
        return math.nan
    log_n = (fit_a["log_b"] - fit_b["log_b"]) / dc
    if not np.isfinite(log_n):
        return math.nan
    # Nearly parallel curves cross absurdly far out (or near 0): beyond floats.
    return math.inf if log_n > 700 else 0.0 if log_n < -700 else float(math.exp(log_n))


def _ahead_crossing(fit_a, fit_b, n_max) -> float:
    """The crossing beyond ``n_max``; inf when there is none (parallel, or
    crossed at or below ``n_max``)."""
    x = crossing(fit_a, fit_b)
    return x if np.isfinite(x) and x > n_max else math.inf


def crossing_estimate(n, scores_a, scores_b, *, n_boot: int = BOOTSTRAPS, seed: int = 0) -> dict:
    """Fit both models' curves and where they cross beyond the largest size,
    with a bootstrap over the fold scores.

    Parameters
    ----------
    n : array, shape (P,)
        Training particles at each point.
    scores_a, scores_b : array, shape (P, U)
        F1 of model A and B at each point over the same U (repeat, fold)
        units; the bootstrap resamples the units, paired for both models and
        every point.

    Returns
    -------
    dict
        "fit_a", "fit_b", "crossing" (training particles, inf when none
        beyond the data), "low", "high" (2.5 and 97.5 % of the bootstrap;
        inf for beyond 10x or no crossing), "share_crossing" (share of the
        resamples that cross within 10x), "n_max".
    """
    n = np.asarray(n, dtype=np.float64)
    a, b = np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)
    n_max = float(np.nanmax(n)) if n.size else math.nan
    fit_a, fit_b = fit_power_law(n, np.nanmean(a, axis=1)), fit_power_law(n, np.nanmean(b, axis=1))
    x = _ahead_crossing(fit_a, fit_b, n_max)
    limit = NO_CROSSING_BEYOND * n_max
    rng = np.random.default_rng(seed)
    units = a.shape[1]
    draws = np.full(n_boot, math.inf)
    for i in range(n_boot if units > 1 else 0):
        pick = rng.integers(0, units, units)
        with np.errstate(all="ignore"):
            fa = fit_power_law(n, np.nanmean(a[:, pick], axis=1))
            fb = fit_power_law(n, np.nanmean(b[:, pick], axis=1))
        draws[i] = _ahead_crossing(fa, fb, n_max)
    within = draws[draws <= limit]
    # Resamples without a crossing within 10x count as +inf, so the interval
    # says so (its high end is then inf: "beyond 10x").
    low, high = (
        np.quantile(
            np.where(draws <= limit, draws, math.inf), [0.025, 0.975], method="inverted_cdf"
        )
        if units > 1
        else (math.nan, math.nan)
    )
    return {
        "fit_a": fit_a,
        "fit_b": fit_b,
        "crossing": x if x <= limit else math.inf,
        "crossing_raw": x,
        "low": float(low),
        "high": float(high),
        "share_crossing": float(within.size / n_boot) if units > 1 else math.nan,
        "n_max": n_max,
    }


# The summary -----------------------------------------------------------------------


def _results(out, cell_id, model, classes) -> list:
    return _sweep.load_cell_folds(out, cell_id, model, classes)


def summarise_curve(out, *, n_boot: int = BOOTSTRAPS) -> dict:
    """Per point the F1 of each model and the paired verdicts; per CNN and
    class the fitted curves, their crossing and the summary line.

    Returns
    -------
    dict (JSON-ready), also written to ``out/curve-summary.json``.
    """
    out = Path(out)
    record = read_curve_json(out)
    classes = record["dataset"]["classes"]
    k = record["folds"]["k"]
    cells = record["cells"]
    svm_ids = [c for c, info in cells.items() if registry.get(info["kind"]).baseline]
    cnn_ids = [c for c, info in cells.items() if not registry.get(info["kind"]).baseline]
    by_label: dict = {}
    for info in record["points"].values():
        by_label.setdefault(info["label"], []).append(info)
    points = []
    for label, reps in sorted(by_label.items(), key=lambda kv: kv[1][0]["n_train"]):
        reps = sorted(reps, key=lambda r: r["repeat"])
        entry = {
            "label": label,
            "kind": reps[0]["kind"],
            "value": reps[0]["value"],
            "n_train": float(np.mean([r["n_train"] for r in reps])),
            "n_train_per_class": {
                c: float(np.mean([r["n_train_per_class"][c] for r in reps])) for c in classes
            },
            "n_test": reps[0]["n_test"],
            "models": {},
            "verdicts": [],
        }
        runs = {}
        for cell_id, info in cells.items():
            model_runs = [
                _results(out, f"{cell_id}-{label}-r{r['repeat']}", info["model"], classes)
                for r in reps
            ]
            if not any(model_runs):
                continue
            runs[cell_id] = model_runs
            scores = [fold_scores(folds, len(classes)) for folds in model_runs if folds]
            f1 = np.concatenate([s["f1"] for s in scores], axis=0)
            macro = np.concatenate([s["macro_f1"] for s in scores])
            units = [(r["repeat"], res.fold) for r, folds in zip(reps, model_runs) for res in folds]
            entry["models"][cell_id] = {
                "model": info["model"],
                "kind": info["kind"],
                "n_folds": len(macro),
                "units": units,
                "f1": {c: _mean_sd(f1[:, j]) for j, c in enumerate(classes)},
                "macro_f1": _mean_sd(macro),
                "fold_f1": {c: f1[:, j].tolist() for j, c in enumerate(classes)},
                "fold_macro_f1": macro.tolist(),
            }
        for a in svm_ids:
            for b in cnn_ids:
                if a in runs and b in runs:
                    comp = compare_fold_scores(
                        runs[a],
                        runs[b],
                        classes,
                        record["dataset"]["n_particles"],
                        # The point's measured training size: its subsample.
                        n_train=entry["n_train"],
                        name_a=cells[a]["model"],
                        name_b=cells[b]["model"],
                    )
                    comp["cell_a"], comp["cell_b"] = a, b
                    entry["verdicts"].append(comp)
        points.append(entry)
    # Holm across every point as well (docs/curve.md: read this one for "is
    # there a size where one model wins").
    family = [
        (e, key)
        for p in points
        for comp in p["verdicts"]
        for key, e in [*comp["per_class"].items(), ("macro_f1", comp["macro_f1"])]
    ]
    for (e, _), adjusted in zip(family, holm([e["p"] for e, _ in family])):
        e["p_holm_curve"] = float(adjusted)
    crossings, lines = [], []
    for a in svm_ids:
        for b in cnn_ids:
            pts = [p for p in points if a in p["models"] and b in p["models"]]
            if not pts:
                continue
            for cls in [*classes, MACRO]:
                n, sa, sb = [], [], []
                for p in pts:
                    ma, mb = p["models"][a], p["models"][b]
                    fa = ma["fold_macro_f1"] if cls == MACRO else ma["fold_f1"][cls]
                    fb = mb["fold_macro_f1"] if cls == MACRO else mb["fold_f1"][cls]
                    pa = dict(zip(map(tuple, ma["units"]), fa))
                    pb = dict(zip(map(tuple, mb["units"]), fb))
                    shared = sorted(set(pa) & set(pb))
                    n.append(p["n_train"] if cls == MACRO else p["n_train_per_class"][cls])
                    sa.append([pa[u] for u in shared])
                    sb.append([pb[u] for u in shared])
                width = min(len(s) for s in sa)
                est = crossing_estimate(
                    n, [s[:width] for s in sa], [s[:width] for s in sb], n_boot=n_boot
                )
                last = pts[-1]
                verdict = next(c for c in last["verdicts"] if c["cell_a"] == a and c["cell_b"] == b)
                v = verdict["macro_f1"] if cls == MACRO else verdict["per_class"][cls]
                item = {
                    "cell_a": a,
                    "cell_b": b,
                    "model_a": cells[a]["model"],
                    "model_b": cells[b]["model"],
                    "class": cls,
                    "n": n,
                    "f1_a": [float(np.nanmean(s)) for s in sa],
                    "f1_b": [float(np.nanmean(s)) for s in sb],
                    "sd_a": [_mean_sd(s)["sd"] for s in sa],
                    "sd_b": [_mean_sd(s)["sd"] for s in sb],
                    **est,
                    "verdict_at_largest": v["verdict"],
                }
                # A fitted exponent <= 0 is an error that does not fall with
                # more data: not a learning curve, so nothing is extrapolated.
                item["not_learning"] = [
                    item[f"model_{side}"] for side in ("a", "b") if not est[f"fit_{side}"]["c"] > 0
                ]
                if item["not_learning"]:
                    item.update(
                        crossing=math.inf, crossing_raw=math.nan, low=math.nan, high=math.nan
                    )
                item["line"] = summary_line(item)
                crossings.append(item)
                lines.append(item["line"])
    summary = {
        "problem": record["dataset"]["problem"],
        "classes": classes,
        "folds": k,
        "repeats": max((len(v) for v in by_label.values()), default=0),
        "n_particles": record["dataset"]["n_particles"],
        "synthetic": record["dataset"].get("synthetic"),
        "group_by": record["folds"].get("group_by"),
        "family": "1 - F1 = b * n^(-c) (power law of the error, least squares in log-log)",
        "points": points,
        "skipped": record.get("skipped", {}),
        "crossings": crossings,
        "lines": lines,
    }
    summary = to_jsonable(summary)
    atomic_write_json(out / SUMMARY_JSON, summary)
    return summary


def _mean_sd(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return {
        "mean": float(v.mean()) if v.size else math.nan,
        "sd": float(v.std(ddof=1)) if v.size > 1 else math.nan,
        "n": int(v.size),
    }


def _count(x: float) -> str:
    return f"{x:.0f}" if x < 1e4 else f"{x:.3g}"


def summary_line(item: dict) -> str:
    """The answer for one class: who is ahead at the largest size, and where
    the fitted curves cross (or that they do not within 10x)."""
    n_max = item["n_max"]
    fa, fb = item["f1_a"][-1], item["f1_b"][-1]
    leader = item["model_a"] if fa > fb else item["model_b"] if fb > fa else None
    what = "particles" if item["class"] != MACRO else "training particles"
    head = (
        f"{item['class']}: at {_count(n_max)} {what} "
        + (f"the {leader} is ahead" if leader else "the models are level")
        + f" (F1 {item['model_a']} {fa:.2f} vs {item['model_b']} {fb:.2f}; "
        f"{item['verdict_at_largest']})"
    )
    x = item["crossing"]
    if item.get("not_learning"):
        return head + (
            f"; the fitted F1 of {' and '.join(item['not_learning'])} does not "
            "rise with more data here (exponent <= 0), so no crossing is "
            "extrapolated."
        )
    if not np.isfinite(x):
        raw = item.get("crossing_raw", math.inf)
        if np.isfinite(raw) and raw > n_max:
            return head + (
                f"; the fitted curves do not cross within "
                f"{NO_CROSSING_BEYOND:g}x the data ({_count(NO_CROSSING_BEYOND * n_max)}"
                f" {what})."
            )
        return head + "; the fitted curves do not cross beyond the data."
    low, high = item["low"], item["high"]
    spread = (
        ""
        if not np.isfinite(low)
        else f" (bootstrap 95 %: {_count(low)} to "
        + (f"{_count(high)}" if np.isfinite(high) else f"beyond {NO_CROSSING_BEYOND:g}x")
        + ")"
    )
    guess = (
        f"; beyond {GUESS_BEYOND:g}x the data this extrapolation is a guess"
        if x > GUESS_BEYOND * n_max
        else ""
    )
    return head + f"; the fitted curves cross near {_count(x)} {what}{spread}{guess}."


# Report ------------------------------------------------------------------------------


def render_curve_report(out, report_path=None) -> Path:
    """``report.md`` for a curve folder: the summary lines, per point the F1
    of each model and the verdicts, and the per-class curves (log x) with
    their fits and crossing."""
    out = Path(out)
    summary = summarise_curve(out)
    report_path = Path(report_path) if report_path else out / "report.md"
    figures = report_path.parent / f"{report_path.stem}-figures"
    lines = [f"# Learning curve: {summary['problem']}", ""]
    if summary.get("synthetic"):
        lines += ["**Synthetic data: these are not the thesis's results.**", ""]
    lines += [
        f"{len(summary['points'])} training sizes x {summary['repeats']} repeat(s) x "
        f"{summary['folds']} folds on {summary['n_particles']} particles"
        + (f", folds grouped by {summary['group_by']}" if summary["group_by"] else "")
        + "; every size is tested on the same test folds.",
        "",
        "## Answer",
        "",
    ]
    lines += [f"- {line}" for line in summary["lines"]] or ["- No point has both models."]
    lines += [
        "",
        (
            f"Curves: {summary['family']}. Extrapolation beyond {GUESS_BEYOND:g}x "
            "the largest training size is a guess; the interval is a bootstrap over "
            "the fold scores and does not include the error of the curve family."
        ),
        "",
    ]
    for label, message in summary["skipped"].items():
        lines += [f"Point {label} skipped: {message}", ""]
    path = plot_learning_curves(summary, figures / "curves.png")
    if path is not None:
        lines += [
            (
                f"![F1 against training particles]"
                f"({path.relative_to(report_path.parent).as_posix()})"
            ),
            "",
        ]
    lines += [
        "## F1 per point (mean ± sd over folds)",
        "",
        (
            "| point | training particles | model | "
            + " | ".join(summary["classes"])
            + " | macro F1 |"
        ),
        "|" + " --- |" * (4 + len(summary["classes"])),
    ]
    for p in summary["points"]:
        for m in p["models"].values():
            cellsx = [_ms(m["f1"][c]) for c in summary["classes"]] + [_ms(m["macro_f1"])]
            lines.append(
                f"| {p['label']} | {p['n_train']:.0f} | {m['model']} | " + " | ".join(cellsx) + " |"
            )
    lines += [
        "",
        "## Paired verdicts per point",
        "",
        (
            "F1 difference (CNN − SVM) over the paired fold scores, corrected resampled "
            "t-test; `p (Holm)` adjusts over the classes and macro F1 of that point, "
            "`p (Holm, curve)` over every point as well."
        ),
        "",
        "| point | a | b | class | difference | p (Holm) | p (Holm, curve) | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in summary["points"]:
        for comp in p["verdicts"]:
            for cls, e in [*comp["per_class"].items(), ("macro F1", comp["macro_f1"])]:
                lines.append(
                    f"| {p['label']} | {comp['model_a']} | {comp['model_b']} | {cls} "
                    f"| {e['difference']:+.3f} | {_p(e['p_holm'])} | "
                    f"{_p(e.get('p_holm_curve'))} | {e['verdict']} |"
                )
    atomic_write_text(report_path, "\n".join(lines) + "\n")
    return report_path


def _ms(entry) -> str:
    m, s = entry["mean"], entry["sd"]
    if m is None or math.isnan(m):
        return "—"
    return f"{m:.2f}" if s is None or math.isnan(s) else f"{m:.2f} ± {s:.2f}"


def _p(value) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.3g}"
