"""The thesis's experiment grid in one command: ``liposome-bench sweep``.

A sweep file (TOML) declares settings of :class:`~liposome_bench.settings.CNNSettings`
and, optionally, :class:`~liposome_bench.settings.SVMSettings`. A key whose
value is a list is an *axis*: every level is tried. A scalar is fixed::

    [sweep]                       # optional: folds, fold_seed, seed, group_by
    folds = 5

    [cnn]                         # every CNN cell; lists are axes
    epochs = 8
    model = ["lipnet-2", "lipnet-4"]
    input_mode = ["surrounding", "cropped", "masked"]

    [[cnn.grid]]                  # optional sub-grids, each crossed with [cnn]
    name = "augmentation"
    augment = ["none", "rotation", "all"]

    [svm]                         # optional: SVM cells (lists are axes too)
    feature_set = ["vironova", "all"]

Without ``[[cnn.grid]]`` tables the CNN cells are the product of ``[cnn]``'s
axes; with them, each grid's cells are the product of its own axes and
``[cnn]``'s, and a grid's scalars override ``[cnn]``'s. A setting that is
itself a list is written as a string (``augment = "flip,rotation"``) or, as
one level of an axis, as a list in the list (``dropout = [[0.25, 0.5]]``).

Every cell is validated by the settings classes before any work. A cell is
named by a hash of its settings (``lipnet-4-3fa9c2d1``), so a re-run finds
its finished folds, and a changed file runs only its new cells. Every cell
runs on the dataset's stored folds. Each (cell, fold) is one task on
dask.distributed (docs/sweep.md): a local cluster sized to the machine, or an
existing one (``tcp://host:8786``).

Layout of the sweep folder::

    OUT/sweep.json                    the cells, axes, grids, dataset, folds
    OUT/cells/<cell>/                 one results folder per cell (run.json,
                                      <model>/fold-<i>.json/.csv: results.py)
    OUT/sweep-table.csv               per cell and class: metric mean, std
    OUT/sweep-comparisons.csv         paired comparisons on shared folds
    OUT/report.md, report-figures/    ``liposome-bench report OUT``
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from liposome_bench import __version__
from liposome_bench.engine import (  # noqa: F401  (the engine's names, as sweep.<name>)
    CONNECT_TIMEOUT_S,
    CORES_PER_CPU_WORKER,
    SCHEDULER_FORMS,
    TASK_RETRIES,
    DatasetSource,
    TaskOutcome,
    check_scheduler,
    connect,
    count_gpus,
    dashboard_link,
    dataset_argument,
    gpu_ids,
    load_task_dataset,
    local_cluster_shape,
    parse_scheduler,
    probe_scheduler,
    quiet_dask_logs,
    run_fold_task,
    share,
    start_local_cluster,
)
from liposome_bench.engine import save_outcome as save_fold_outcome
from liposome_bench import registry
from liposome_bench.errors import ConfigError, ResultsError, SweepError
from liposome_bench.io import atomic_write_json, atomic_write_text
from liposome_bench.metrics import OVERALL_METRICS, compute_metrics
from liposome_bench.models import INPUT_SIZES
from liposome_bench.plotting import plot_axis_f1, plot_cells_f1
from liposome_bench.progress import NullReporter
from liposome_bench.results import ResultsDir, run_lock
from liposome_bench.settings import AUGMENTATIONS, CNNSettings, SVMSettings
from liposome_bench.stats import compare_fold_scores, holm, verdict_word

SWEEP_JSON = "sweep.json"
SWEEP_SCHEMA_VERSION = 1
CELLS_DIR = "cells"
TABLE_CSV = "sweep-table.csv"
COMPARISONS_CSV = "sweep-comparisons.csv"


def swept_families() -> list:
    """The families a sweep file can hold (``registry.ModelSpec``): those
    whose settings class names its table (``TABLE``), the compared models
    first and the baseline last (the order of the cells)."""
    return [
        spec
        for spec in sorted(registry.families(), key=lambda spec: spec.baseline)
        if getattr(spec.settings_class, "TABLE", None)
    ]


#: Tables of a sweep file (``[sweep]`` and each family's), and the keys of
#: its [sweep] table.
SWEEP_TABLES = ("sweep", *(spec.settings_class.TABLE for spec in swept_families()))
SWEEP_KEYS = ("folds", "fold_seed", "seed", "group_by")
#: For --dry-run's estimate when no fold has been measured yet: lipnet-4 at
#: 28x28 px trains ~1,400 samples per CPU-second (docs/performance.md, 2-core
#: Xeon, TensorFlow CPU); the SVM with the coarse grid took 58.9 s for 5
#: folds of the 14,169-particle set, features included (docs/benchmark.md).
#: The full grid was never timed (docs/svm.md: expect hours), so it is not
#: estimated. Rough, CPU only.
ASSUMED_SAMPLES_PER_CPU_S = 1400.0
ASSUMED_SVM_FOLD_S = {"coarse": 58.9 / 5}
ASSUMED_SVM_PARTICLES = 14169


# Cells -------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One combination of settings: a CNN or the SVM, run on every fold."""

    kind: str  # the family (registry.ModelSpec.family) whose [table] it came from
    settings: CNNSettings | SVMSettings
    levels: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def model(self) -> str:
        # A family of several models records which in its settings (a LipNet).
        return getattr(self.settings, "model", None) or registry.get(self.kind).names[0]

    @cached_property
    def id(self) -> str:
        """``<model>-<8 hex>``: a SHA-256 of the kind and every setting, so
        the same settings get the same name on every machine and run
        (computed once per cell: a 10,000-cell sweep looks ids up often)."""
        canonical = json.dumps(
            {"kind": self.kind, "settings": self.settings.to_dict()},
            sort_keys=True,
            separators=(",", ":"),
        )
        return f"{self.model}-{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"

    def describe(self, axes=None) -> str:
        """``model=lipnet-4, input_mode=masked`` over ``axes`` (default: the
        levels that made the cell)."""
        names = axes if axes is not None else list(self.levels)
        values = self.settings.to_dict()
        return ", ".join(f"{n}={level_text(values.get(n))}" for n in names) or self.model


@dataclass(frozen=True)
class Grid:
    """A named product of axes; its cells are compared along each axis."""

    name: str
    kind: str
    axes: dict  # setting name -> list of levels (as written)
    cells: tuple  # cell ids, in product order


@dataclass(frozen=True)
class SweepConfig:
    """A parsed sweep file: its cells (unique, in file order) and grids."""

    path: Path
    cells: tuple
    grids: tuple
    folds: int | None = None
    fold_seed: int | None = None
    seed: int | None = None
    group_by: str | None = None

    @property
    def axes(self) -> dict:
        """Every axis name -> its levels, over all grids."""
        out: dict = {}
        for grid in self.grids:
            for name, levels in grid.axes.items():
                known = out.setdefault(name, [])
                known.extend(v for v in levels if v not in known)
        return out

    @cached_property
    def _cells_by_id(self) -> dict:
        return {c.id: c for c in self.cells}

    def cell(self, cell_id: str) -> Cell:
        """The cell named ``cell_id`` (a dictionary lookup)."""
        return self._cells_by_id[cell_id]


def level_text(value) -> str:
    """A setting's value as a sweep table shows it: a list joined with commas
    (``none`` when empty, ``all`` for every augmentation), else ``str``."""
    if isinstance(value, (list, tuple)):
        if tuple(value) == AUGMENTATIONS:
            return "all"
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def load_sweep(path) -> SweepConfig:
    """Read and validate a sweep file: every cell is made, and so checked,
    by :class:`CNNSettings` / :class:`SVMSettings` before any work.

    Raises
    ------
    ConfigError
        If the file is missing or not TOML, has an unknown table or key, an
        empty axis, or a cell with an invalid setting; the message names the
        file, the table and the key.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path} does not exist; pass a sweep file (TOML, docs/sweep.md)."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read ({exc}); pass a sweep file (TOML).") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}).") from None
    try:
        return _parse_sweep(path, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _parse_sweep(path: Path, data: dict) -> SweepConfig:
    unknown = [k for k in data if k not in SWEEP_TABLES]
    if unknown:
        raise ConfigError(
            f"unknown table or key {unknown[0]!r}; a sweep file holds [sweep], [cnn] "
            "(with optional [[cnn.grid]] tables) and [svm]."
        )
    families = swept_families()
    if not any(spec.settings_class.TABLE in data for spec in families):
        raise ConfigError("no [cnn] or [svm] table, so there is nothing to run.")
    run = _table(data.get("sweep", {}), "[sweep]")
    bad = [k for k in run if k not in SWEEP_KEYS]
    if bad:
        raise ConfigError(f"[sweep]: unknown key {bad[0]!r}; expected {', '.join(SWEEP_KEYS)}.")
    if run.get("group_by") is not None and not (
        isinstance(run["group_by"], str) and run["group_by"].strip()
    ):
        raise ConfigError(
            f'[sweep]: group_by must be a meta key such as "micrograph"; got {run["group_by"]!r}.'
        )
    for key in ("folds", "fold_seed", "seed"):
        value = run.get(key)
        low = 2 if key == "folds" else 0
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < low
        ):
            raise ConfigError(
                f"[sweep]: {key} must be an integer of at least {low}; got {value!r}."
            )
    cells: dict[str, Cell] = {}
    grids = []
    for spec in families:
        kind, cls, key = spec.family, spec.settings_class, spec.settings_class.TABLE
        if key not in data:
            continue
        table = _table(data[key], f"[{key}]")
        sub = None
        if "grid" not in {f.name for f in dataclasses.fields(cls)}:
            sub = table.pop("grid", None)
        elif isinstance(table.get("grid"), list) and any(
            isinstance(t, dict) for t in table["grid"]
        ):
            # [svm] grid is the SVM's C/gamma grid setting, not sub-grids.
            raise ConfigError(
                "[[svm.grid]] tables are not supported; put the SVM's axes "
                'in [svm] (grid = ["coarse", "full"] is an axis).'
            )
        if sub is None:
            sub_tables = [{}]
        elif isinstance(sub, list) and sub and all(isinstance(t, dict) for t in sub):
            sub_tables = sub
        else:
            raise ConfigError(f"[{key}] grid must be [[{key}.grid]] tables; got {sub!r}.")
        for number, extra in enumerate(sub_tables, 1):
            extra = dict(extra)
            name = extra.pop("name", None)
            where = f"[[{key}.grid]] {name or number}" if sub is not None else f"[{key}]"
            if name is not None and not isinstance(name, str):
                raise ConfigError(f"{where}: name must be a string; got {name!r}.")
            if name is None:
                name = kind if sub is None else f"{kind}-grid-{number}"
            merged = {**table, **extra}
            grid = _expand(kind, cls, name, merged, where, cells)
            grids.append(grid)
    return SweepConfig(
        path=path,
        cells=tuple(cells.values()),
        grids=tuple(grids),
        folds=run.get("folds"),
        fold_seed=run.get("fold_seed"),
        seed=run.get("seed"),
        group_by=run.get("group_by"),
    )


def _table(value, where):
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table of settings; got {value!r}.")
    return {str(k).replace("-", "_"): v for k, v in value.items()}


def _expand(kind, cls, name, table, where, cells) -> Grid:
    """The cells of one grid (added to ``cells`` when new)."""
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in table if k not in valid]
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting {unknown[0]!r}; valid settings are {', '.join(valid)}."
        )
    axes = {k: v for k, v in table.items() if isinstance(v, list)}
    for key, levels in axes.items():
        if not levels:
            raise ConfigError(
                f"{where}: axis {key} is an empty list; give at least one level or remove it."
            )
    for key, value in table.items():
        for level in value if isinstance(value, list) else [value]:
            if isinstance(level, float) and not math.isfinite(level):
                what = f"axis {key} has the level" if key in axes else f"{key} is"
                raise ConfigError(
                    f"{where}: {what} {level}; settings are finite numbers. "
                    "Give a number, or remove it."
                )
    fixed = {k: v for k, v in table.items() if k not in axes}
    if "model" in valid and "model" not in table:
        # A family of several models (LipNet): its default model.
        fixed["model"] = cls().model
    ids = []
    names = list(axes)
    for combination in itertools.product(*(axes[n] for n in names)):
        levels = dict(zip(names, combination))
        settings = cls.from_mapping(
            {**fixed, **levels},
            where=f"{where} ({', '.join(f'{k}={level_text(v)}' for k, v in levels.items())})"
            if levels
            else where,
        )
        cell = Cell(kind, settings, levels)
        if cell.id not in cells:
            cells[cell.id] = cell
        if cell.id not in ids:
            ids.append(cell.id)
    return Grid(name=name, kind=kind, axes=axes, cells=tuple(ids))


# The plan: which (cell, fold) tasks remain -------------------------------------


@dataclass
class SweepPlan:
    """What a sweep into ``out`` has to do."""

    config: SweepConfig
    out: Path
    k: int
    done: dict  # cell id -> set of finished folds
    tasks: list  # (cell id, fold) still to run

    @property
    def total(self) -> int:
        return len(self.config.cells) * self.k


def cell_dir(out, cell_id: str) -> Path:
    return Path(out) / CELLS_DIR / cell_id


def plan_sweep(config: SweepConfig, out, k: int) -> SweepPlan:
    """The (cell, fold) pairs of ``config`` not yet finished in ``out``."""
    done, tasks = {}, []
    for cell in config.cells:
        results = ResultsDir(cell_dir(out, cell.id))
        finished = {f for f in range(k) if results.fold_json(cell.model, f).exists()}
        done[cell.id] = finished
        tasks.extend((cell.id, f) for f in range(k) if f not in finished)
    return SweepPlan(config, Path(out), k, done, tasks)


def estimate_seconds(plan: SweepPlan, n_particles: int) -> tuple[float, str]:
    """Rough CPU-seconds of the remaining tasks, and how they were estimated.

    A CNN task costs ``epochs x fit particles`` samples (every epoch run: an
    upper bound, early stopping shortens it) at a rate measured from the
    sweep's finished folds of the same model, else at
    :data:`ASSUMED_SAMPLES_PER_CPU_S` scaled by the input area. An SVM task
    costs its measured fold time, else :data:`ASSUMED_SVM_FOLD_S`.
    """
    measured = _measured_rates(plan)
    total, used_measured, used_assumed, unknown = 0.0, set(), False, 0
    k = plan.k
    n_train = n_particles * (k - 1) / k
    for cell_id, _fold in plan.tasks:
        cell = plan.config.cell(cell_id)
        s = cell.settings
        if registry.get(cell.kind).input_size is not None:  # an image model, trained in epochs
            n_fit = n_train * (1.0 - s.validation_fraction)
            samples = s.epochs * (s.samples_per_epoch or n_fit)
            rate = measured.get(cell.model)
            if rate is None:
                size = s.input_size or INPUT_SIZES[s.model]
                rate = ASSUMED_SAMPLES_PER_CPU_S * (28.0 / size) ** 2
                used_assumed = True
            else:
                used_measured.add(cell.model)
            total += samples / rate
        else:
            seconds = measured.get(cell.model)
            if seconds is not None:
                used_measured.add(cell.model)
            elif s.grid in ASSUMED_SVM_FOLD_S or (s.C is not None and s.gamma is not None):
                seconds = ASSUMED_SVM_FOLD_S["coarse"] * n_particles / ASSUMED_SVM_PARTICLES
                used_assumed = True
            else:
                unknown += 1
                continue
            total += seconds
    how = []
    if unknown:
        how.append(
            f"not counted: {unknown} SVM task(s) with the full grid, never timed "
            "(docs/svm.md: expect hours each)"
        )
    if used_measured:
        how.append(f"measured speed of finished folds ({', '.join(sorted(used_measured))})")
    if used_assumed:
        how.append(
            "CPU speeds measured in docs/performance.md and docs/benchmark.md, "
            "every epoch run (no early stop)"
        )
    return total, "; ".join(how) or "nothing left to run"


def _measured_rates(plan: SweepPlan) -> dict:
    """Median samples per second per CNN model, and median SVM fold seconds,
    from the folds already finished in the sweep folder."""
    rates: dict = {}
    for cell in plan.config.cells:
        folder = cell_dir(plan.out, cell.id) / cell.model
        for f in plan.done.get(cell.id, ()):
            try:
                meta = json.loads((folder / f"fold-{f}.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            timings, params = meta.get("timings") or {}, meta.get("params") or {}
            if registry.get(cell.kind).input_size is not None:
                seconds = timings.get("train_s")
                samples = (params.get("epochs_run") or 0) * (params.get("n_fit") or 0)
                if seconds and samples:
                    rates.setdefault(cell.model, []).append(samples / seconds)
            else:
                seconds = sum(
                    v
                    for k, v in timings.items()
                    if k.endswith("_s") and isinstance(v, (int, float))
                )
                if seconds:
                    rates.setdefault(cell.model, []).append(seconds)
    return {k: float(np.median(v)) for k, v in rates.items()}


def format_duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


# The sweep folder ------------------------------------------------------------------


def _dataset_record(dataset, folds) -> dict:
    return {
        "problem": dataset.problem.name,
        "classes": list(dataset.problem.classes),
        "fingerprint": folds.fingerprint,
        "n_particles": len(dataset),
        "synthetic": dataset.synthetic,
        "source": str(dataset.root) if dataset.root else dataset.description,
    }


def write_sweep_json(config: SweepConfig, out, dataset, folds, seed: int) -> dict:
    """Record the sweep (cells, grids, dataset, folds) in ``out/sweep.json``.

    Raises
    ------
    ResultsError
        If ``out`` holds a sweep of another dataset, other folds or seed.
    """
    out = Path(out)
    record = {
        "schema_version": SWEEP_SCHEMA_VERSION,
        "kind": "sweep",
        "tool_version": __version__,
        "config": str(config.path),
        "dataset": _dataset_record(dataset, folds),
        "folds": {"k": folds.k, "seed": folds.seed, "group_by": getattr(folds, "group_by", None)},
        "seed": int(seed),
        "axes": config.axes,
        "grids": [
            {"name": g.name, "kind": g.kind, "axes": g.axes, "cells": list(g.cells)}
            for g in config.grids
        ],
        "cells": {
            c.id: {"kind": c.kind, "model": c.model, "settings": c.settings.to_dict()}
            for c in config.cells
        },
    }
    old = read_sweep_json(out, missing_ok=True)
    if old:
        for key, label in (
            ("dataset", "another dataset"),
            ("folds", "other folds"),
            ("seed", "another --seed"),
        ):
            mine = record[key]["fingerprint"] if key == "dataset" else record[key]
            theirs = (old.get(key) or {}).get("fingerprint") if key == "dataset" else old.get(key)
            if key == "folds" and isinstance(theirs, dict):
                theirs = {"group_by": None, **theirs}
            if mine != theirs:
                raise ResultsError(
                    f"{out} holds a sweep of {label} ({key}: {theirs}, now {mine}). "
                    "Use another --out, or the same data, folds and seed."
                )
    elif out.exists() and any(out.iterdir()):
        if (out / "run.json").exists():
            raise ResultsError(
                f"{out} is a results folder of `benchmark`/`cnn`/`svm`, not a "
                "sweep. Use another --out."
            )
    atomic_write_json(out / SWEEP_JSON, json.loads(json.dumps(record)))
    return record


def read_sweep_json(out, *, missing_ok: bool = False) -> dict:
    path = Path(out) / SWEEP_JSON
    if not path.exists():
        if missing_ok:
            return {}
        raise ResultsError(
            f"{out} is not a sweep folder (no {SWEEP_JSON}). Run "
            "`liposome-bench sweep CONFIG.toml --out` first."
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ResultsError(
            f"{path} is not valid JSON ({exc}). Run the sweep again to rewrite it."
        ) from None


def is_sweep_folder(path) -> bool:
    return (Path(path) / SWEEP_JSON).is_file()


# Tasks: one (cell, fold) on the Dask engine (liposome_bench.engine) ----------------


def run_task(
    source,
    cell_kind: str,
    settings: dict,
    cell_id: str,
    fold: int,
    folds,
    out: str,
    seed: int,
    save_models: bool,
    jobs: int,
) -> TaskOutcome:
    """Run one (cell, fold) on a worker into the cell's folder of the sweep
    folder ``out`` (:func:`engine.run_fold_task`)."""
    return run_fold_task(
        source,
        cell_kind,
        settings,
        str(cell_dir(out, cell_id)),
        fold,
        folds,
        seed,
        save_models,
        jobs,
        label=cell_id,
    )


def save_outcome(out, dataset, folds, outcome: TaskOutcome) -> bool:
    """Write a task's fold into its cell of the sweep folder unless its
    worker already did (:func:`engine.save_outcome`)."""
    return save_fold_outcome(cell_dir(out, outcome.cell), dataset, folds, outcome)


@dataclass
class SweepRun:
    """What :func:`run_sweep` did."""

    out: Path
    ran: list = field(default_factory=list)  # (cell, fold) run now
    skipped: int = 0  # finished before
    errors: dict = field(default_factory=dict)  # message -> [(cell, fold)]
    seconds: float = 0.0
    dashboard: str | None = None
    workers: int = 0


def run_sweep(
    config: SweepConfig,
    dataset,
    folds,
    out,
    *,
    seed: int = 0,
    scheduler: str = "local",
    n_workers: int | None = None,
    save_models: bool = False,
    source: DatasetSource | None = None,
    reporter=None,
    wait: bool = False,
    connect_timeout: float = CONNECT_TIMEOUT_S,
) -> SweepRun:
    """Run every unfinished (cell, fold) of ``config`` on Dask into ``out``.

    Parameters
    ----------
    config : SweepConfig
    dataset : Dataset
        Read on the client, to check it and make the folds. Workers read it
        from ``source`` (default: ``dataset.root``), or get it from the
        client when it has no folder.
    folds : folds.Folds
        The dataset's stored folds; every cell runs on them.
    out : path
        The sweep folder.
    seed : int
        As ``--seed`` of ``cnn`` / ``svm``; fold ``i`` of every cell gets the
        seed a plain ``cnn`` run gives it.
    scheduler : str
        ``"local"``: a LocalCluster sized to this machine
        (:func:`local_cluster_shape`); ``"tcp://host:port"``: an existing
        Dask scheduler.
    n_workers : int, optional
        Workers of the local cluster (default: by the machine).
    save_models : bool
        Keep each fold's trained CNN (``.keras``).
    source : DatasetSource, optional
    reporter : progress reporter, optional
        Gets the dashboard address, one line per finished task, and each
        user error once.
    wait : bool
        Wait for another run holding ``out``'s run lock.
    connect_timeout : float
        Seconds to try to reach a remote scheduler; when tasks remain, it is
        tried (a TCP connection) before ``out`` is created.

    Returns
    -------
    SweepRun

    Raises
    ------
    SweepError
        If a task failed with a user error (after the other tasks finished).
    ResultsError
        If ``out`` holds another sweep, or another run holds its run lock
        (``results.run_lock``) and ``wait`` is False.
    """
    reporter = reporter or NullReporter()
    check_scheduler(scheduler)
    if plan_sweep(config, out, folds.k).tasks:  # a finished sweep contacts no scheduler
        probe_scheduler(scheduler, connect_timeout)  # before anything is written
    with run_lock(out, wait=wait, reporter=reporter, command="sweep"):
        return _run_sweep(
            config,
            dataset,
            folds,
            Path(out),
            seed=seed,
            scheduler=scheduler,
            n_workers=n_workers,
            save_models=save_models,
            source=source,
            reporter=reporter,
            connect_timeout=connect_timeout,
        )


@quiet_dask_logs
def _run_sweep(
    config,
    dataset,
    folds,
    out,
    *,
    seed,
    scheduler,
    n_workers,
    save_models,
    source,
    reporter,
    connect_timeout,
) -> SweepRun:
    from distributed import as_completed

    started = time.perf_counter()
    write_sweep_json(config, out, dataset, folds, seed)
    plan = plan_sweep(config, out, folds.k)
    run = SweepRun(out=out, skipped=plan.total - len(plan.tasks))
    if run.skipped:
        reporter.message(
            f"{run.skipped} of {plan.total} (cell, fold) tasks already "
            f"finished in {out}; running {len(plan.tasks)}."
        )
    if not plan.tasks:
        return run
    with connect(
        scheduler,
        n_workers=n_workers,
        connect_timeout=connect_timeout,
        dashboard=True,
        reporter=reporter,
    ) as engine:
        client = engine.client
        run.dashboard = dashboard_link(client)
        run.workers = engine.workers
        data_arg = dataset_argument(client, dataset, source, folds.fingerprint)
        jobs = engine.jobs()
        token = uuid.uuid4().hex[:8]
        folds_arg = share(client, dataclasses.replace(folds, path=None))
        futures = []
        for cell_id, fold in plan.tasks:
            cell = config.cell(cell_id)
            futures.append(
                client.submit(
                    run_task,
                    data_arg,
                    cell.kind,
                    cell.settings.to_dict(),
                    cell_id,
                    fold,
                    folds_arg,
                    str(out),
                    seed,
                    save_models,
                    jobs,
                    key=f"sweep-{cell_id}-fold{fold}-{token}",
                    pure=False,
                    retries=TASK_RETRIES,
                )
            )
        reporter.stage("sweep", total=len(futures))
        for future in as_completed(futures):
            outcome = future.result()
            reporter.advance()
            if outcome.error is not None:
                first = outcome.error not in run.errors
                run.errors.setdefault(outcome.error, []).append((outcome.cell, outcome.fold))
                if first:
                    reporter.message(
                        f"{outcome.cell} fold {outcome.fold + 1} (worker "
                        f"{outcome.worker}): {outcome.error}"
                    )
                continue
            save_outcome(out, dataset, folds, outcome)
            run.ran.append((outcome.cell, outcome.fold))
            reporter.message(
                f"{outcome.cell} fold {outcome.fold + 1}/{folds.k} done on "
                f"worker {outcome.worker} in {outcome.seconds:.0f} s."
            )
    run.seconds = time.perf_counter() - started
    if run.errors:
        failed = sum(len(v) for v in run.errors.values())
        message, where = next(iter(run.errors.items()))
        raise SweepError(
            f"{failed} of {len(plan.tasks)} tasks failed (first: {where[0][0]} fold "
            f"{where[0][1] + 1}: {message}); the others are saved in {out}."
        )
    return run


# Results: the table and the paired comparisons ----------------------------------------


def load_cell_folds(out, cell_id: str, model: str, classes) -> list:
    """Every finished fold of one cell, in fold order."""
    results = ResultsDir(cell_dir(out, cell_id))
    if not results.read_run():
        return []
    return results.load_model(model)


def summarise_sweep(out, metrics=("f1",)) -> dict:
    """Per cell, class and metric the mean and std over folds, and paired
    comparisons of cells on their shared folds.

    Cells are compared where a grid varies one axis with the others equal
    (``masked`` against ``surrounding`` at the same model, ...), and every
    SVM cell against every CNN cell. Each pair goes through
    :func:`stats.compare_fold_scores` on its shared folds, the benchmark's
    path: per class the corrected resampled t-test on the per-fold F1
    differences (folds share training particles), with the sizes measured
    on those folds. The per-class p-values of all comparisons are adjusted
    together with :func:`stats.holm`, and :func:`stats.verdict_word` names
    the better cell.

    Returns
    -------
    dict with ``table`` (rows: cell, model, axes..., class, metric, mean,
    std, n_folds), ``comparisons`` (rows) and ``classes``.
    """
    sweep = read_sweep_json(out)
    classes = sweep["dataset"]["classes"]
    k = sweep["folds"]["k"]
    n = sweep["dataset"]["n_particles"]
    axes = list(sweep.get("axes", {}))
    per_fold: dict = {}  # cell -> fold -> ModelMetrics
    fold_results: dict = {}  # cell -> fold -> FoldResult
    for cell_id, info in sweep["cells"].items():
        folds = load_cell_folds(out, cell_id, info["model"], classes)
        fold_results[cell_id] = {r.fold: r for r in folds}
        per_fold[cell_id] = {r.fold: compute_metrics(r.y_true, r.y_pred, classes) for r in folds}
    table = []
    for cell_id, info in sweep["cells"].items():
        settings = info["settings"]
        for metric in metrics:
            overall = metric in OVERALL_METRICS
            for j, cls in enumerate(["overall"] if overall else classes):
                values = np.array(
                    [
                        getattr(m, metric) if overall else getattr(m.per_class[j], metric)
                        for m in per_fold[cell_id].values()
                    ],
                    dtype=np.float64,
                )
                defined = values[~np.isnan(values)]
                table.append(
                    {
                        "cell": cell_id,
                        "model": info["model"],
                        **{a: level_text(settings[a]) if a in settings else "" for a in axes},
                        "class": cls,
                        "metric": metric,
                        "mean": float(defined.mean()) if defined.size else math.nan,
                        "std": float(defined.std(ddof=1)) if defined.size > 1 else math.nan,
                        "n_folds": int(defined.size),
                    }
                )
    comparisons = []
    for a, b, axis, where in _comparison_pairs(sweep):
        shared = sorted(set(per_fold[a]) & set(per_fold[b]))
        if len(shared) < 2:
            continue
        name_a, name_b = _describe_cell(sweep, a, axis), _describe_cell(sweep, b, axis)
        comp = compare_fold_scores(
            [[fold_results[a][f] for f in shared]],
            [[fold_results[b][f] for f in shared]],
            classes,
            n,
            name_a=name_a,
            name_b=name_b,
        )
        for cls in classes:
            test = comp["per_class"][cls]
            comparisons.append(
                {
                    "axis": axis,
                    "where": where,
                    "cell_a": a,
                    "cell_b": b,
                    "a": name_a,
                    "b": name_b,
                    "class": cls,
                    "metric": "f1",
                    "mean_difference": _number(test["difference"]),
                    "t": _t_value(test),
                    "df": test["df"],
                    "p": _number(test["p"]),
                    "n_folds": test["n"],
                    "n_train": comp["n_train"],
                    "n_test": comp["n_test"],
                }
            )
    adjusted = holm([c["p"] for c in comparisons])
    for c, p in zip(comparisons, adjusted):
        c["p_holm"] = float(p)
        c["verdict"] = verdict_word(c["mean_difference"], c["p_holm"], c["a"], c["b"])
    return {
        "classes": classes,
        "axes": axes,
        "table": table,
        "comparisons": comparisons,
        "folds": k,
        "n_particles": n,
        "synthetic": sweep["dataset"].get("synthetic"),
        "problem": sweep["dataset"]["problem"],
    }


def _number(value) -> float:
    """A JSON-ready number (None where undefined) back as a float (NaN)."""
    return math.nan if value is None else float(value)


def _t_value(entry) -> float:
    """An entry's t, NaN where undefined; JSON-ready entries hold an infinite
    t (identical nonzero differences, p 0) as None too, so its sign is the
    difference's."""
    if entry["t"] is not None:
        return float(entry["t"])
    if entry["p"] is None or entry["difference"] is None:
        return math.nan
    return math.copysign(math.inf, entry["difference"])


def _describe_cell(sweep, cell_id, axis) -> str:
    info = sweep["cells"][cell_id]
    if axis == "svm vs cnn":
        return cell_id
    return level_text(info["settings"].get(axis))


def _comparison_pairs(sweep) -> list:
    """(cell a, cell b, axis, where): per grid, cells differing in exactly
    that axis (``where`` names the grid's other axes' shared levels); and each
    SVM cell against each CNN cell (``where`` names the CNN's levels)."""
    pairs, seen = [], set()
    cells = sweep["cells"]
    all_axes = list(sweep.get("axes", {}))
    for grid in sweep.get("grids", []):
        ids = grid["cells"]
        for axis in grid["axes"]:
            for a, b in itertools.combinations(ids, 2):
                sa, sb = cells[a]["settings"], cells[b]["settings"]
                differing = [key for key in sa if sa[key] != sb.get(key)]
                if differing == [axis] and (a, b) not in seen:
                    seen.add((a, b))
                    where = ", ".join(f"{o}={level_text(sa[o])}" for o in grid["axes"] if o != axis)
                    pairs.append((a, b, axis, where))
    svm = [c for c, info in cells.items() if registry.get(info["kind"]).baseline]
    cnn = [c for c, info in cells.items() if not registry.get(info["kind"]).baseline]
    for a in svm:
        for b in cnn:
            sb = cells[b]["settings"]
            where = ", ".join(f"{o}={level_text(sb[o])}" for o in all_axes if o in sb)
            pairs.append((a, b, "svm vs cnn", where))
    return pairs


def write_sweep_tables(out, summary: dict) -> tuple[Path, Path]:
    """``sweep-table.csv`` and ``sweep-comparisons.csv``, atomically."""
    import pandas as pd

    out = Path(out)
    table = pd.DataFrame(summary["table"])
    comparisons = pd.DataFrame(
        summary["comparisons"],
        columns=[
            "axis",
            "where",
            "cell_a",
            "cell_b",
            "a",
            "b",
            "class",
            "metric",
            "mean_difference",
            "t",
            "df",
            "p",
            "p_holm",
            "n_folds",
            "n_train",
            "n_test",
            "verdict",
        ],
    )
    atomic_write_text(out / TABLE_CSV, table.to_csv(index=False))
    atomic_write_text(out / COMPARISONS_CSV, comparisons.to_csv(index=False))
    return out / TABLE_CSV, out / COMPARISONS_CSV


def pivot_table(summary: dict, metric: str = "f1"):
    """One row per cell (model, axes, folds finished), one column per class
    (or ``overall``): ``mean ± std`` over folds."""
    import pandas as pd

    rows = [r for r in summary["table"] if r["metric"] == metric]
    if not rows:
        return pd.DataFrame()
    axes = [a for a in summary["axes"] if a != "model"]
    wide: dict = {}
    for r in rows:
        entry = wide.setdefault(
            r["cell"],
            {"cell": r["cell"], "model": r["model"], **{a: r.get(a, "") for a in axes}, "folds": 0},
        )
        entry["folds"] = max(entry["folds"], r["n_folds"])
        m, s = r["mean"], r["std"]
        entry[r["class"]] = (
            "—" if math.isnan(m) else f"{m:.2f}" if math.isnan(s) else f"{m:.2f} ± {s:.2f}"
        )
    return pd.DataFrame(list(wide.values()))


# Report ------------------------------------------------------------------------------


def render_sweep_report(out, report_path=None) -> Path:
    """``report.md`` for a sweep folder: the per-class F1 table, the paired
    comparisons, and per grid and axis a figure of per-class F1 by level
    (thesis Figures 17-21)."""
    out = Path(out)
    summary = summarise_sweep(out)
    write_sweep_tables(out, summary)
    report_path = Path(report_path) if report_path else out / "report.md"
    figures = report_path.parent / f"{report_path.stem}-figures"
    sweep = read_sweep_json(out)
    per_fold = _per_fold_f1(out, sweep)
    lines = [f"# Sweep: {summary['problem']}", ""]
    if summary.get("synthetic"):
        lines += ["**Synthetic data: these are not the thesis's results.**", ""]
    lines += [
        f"{len(sweep['cells'])} cells x {summary['folds']} folds on "
        f"{summary['n_particles']} particles (folds seed {sweep['folds']['seed']}, "
        f"seed {sweep['seed']}); config `{sweep['config']}`.",
        "",
        "## Per-class F1 (mean ± std over folds)",
        "",
    ]
    wide = pivot_table(summary)
    if not wide.empty:
        lines += [_markdown(wide), ""]
    lines += ["## Figures", ""]
    overview = plot_cells_f1(per_fold, sweep, figures / "cells.png")
    if overview is not None:
        lines += [f"![F1 of every cell]({overview.relative_to(report_path.parent).as_posix()})", ""]
    for grid in sweep.get("grids", []):
        for axis in grid["axes"]:
            path = figures / f"{grid['name']}-{axis}.png"
            if plot_axis_f1(per_fold, sweep, grid, axis, path) is not None:
                lines += [
                    f"![{grid['name']}: F1 by {axis}]"
                    f"({path.relative_to(report_path.parent).as_posix()})",
                    "",
                ]
    lines += [
        "## Paired comparisons on shared folds",
        "",
        "Per-fold F1 differences (b − a), Nadeau & Bengio's corrected resampled "
        "t-test; p adjusted over all rows with Holm's method.",
        "",
    ]
    if summary["comparisons"]:
        import pandas as pd

        frame = pd.DataFrame(summary["comparisons"])[
            ["axis", "where", "a", "b", "class", "mean_difference", "p", "p_holm", "verdict"]
        ]
        frame["mean_difference"] = frame["mean_difference"].map(lambda v: f"{v:+.3f}")
        for col in ("p", "p_holm"):
            frame[col] = frame[col].map(lambda v: "—" if v != v else f"{v:.3g}")
        lines += [_markdown(frame), ""]
    else:
        lines += ["No pair of cells shares at least 2 finished folds.", ""]
    atomic_write_text(report_path, "\n".join(lines) + "\n")
    return report_path


def _markdown(frame) -> str:
    headers = [str(c) for c in frame.columns]
    rows = [["" if v is None else str(v) for v in row] for row in frame.itertuples(index=False)]
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _per_fold_f1(out, sweep) -> dict:
    """cell -> array (n_folds, n_classes) of per-fold F1."""
    classes = sweep["dataset"]["classes"]
    values = {}
    for cell_id, info in sweep["cells"].items():
        folds = load_cell_folds(out, cell_id, info["model"], classes)
        values[cell_id] = np.array(
            [[m.f1 for m in compute_metrics(r.y_true, r.y_pred, classes).per_class] for r in folds],
            dtype=np.float64,
        ).reshape(len(folds), len(classes))
    return values
