"""SVM against CNN on identical folds: the ``benchmark`` command's library side.

``run_benchmark`` calls the library functions in order and adds no method of
its own: resolve the dataset, load or make its stored folds, run
:func:`svm.run_svm` and :func:`cnn.run_cnn` unchanged into one results
folder, then summarise (:func:`stats.summarise_results`) and write

``RESULTS/summary.json``
    schema version, tool and library versions, command line, seed, dataset
    (fingerprint, class counts, image sizes), folds, every setting of every
    model (as recorded in ``run.json``), wall time per stage, the device the
    CNN used, per-model metric summaries with bootstrap intervals, and the
    paired comparisons of the SVM against each CNN;
``RESULTS/predictions.csv``
    the out-of-fold prediction of every particle: id, label, fold, and for
    each model its predicted class and its scores (CNN class probabilities
    ``<model>_score_<class>``, SVM one-vs-one decision values
    ``svm_score_<a>_vs_<b>``).

With ``repeats`` R > 1 the whole k-fold is repeated with fold seeds
``fold_seed``, ``fold_seed + 1``, ... into ``RESULTS/repeat-<r>/`` (each a
complete results folder with its own summary and predictions), and the
top-level ``summary.json`` holds the first repeat's details plus the
run-to-run spread of every metric; the top-level ``predictions.csv`` stacks
the repeats with a ``repeat`` column.

Parallelism: ``scheduler`` picks where the (repeat, fold, model) tasks run.
``"serial"`` runs them in this process: ``jobs`` goes to the SVM (folds and
grid points through joblib), and when the CNN trains on a GPU the SVM runs
at the same time in a thread on the CPU cores. ``"local"`` (a local Dask
cluster) and ``"tcp://HOST:PORT"`` (a running Dask scheduler) run every task
on the engine of ``sweep`` and ``curve`` (:mod:`liposome_bench.engine`).
``"serial"`` is the default: on a small machine the local cluster has one
worker and only adds its start-up (docs/benchmark.md has the measurement).
Each task gets the seed a serial run gives it, so the results are the same
either way. The SVM's features and each CNN's prepared images are computed
once and shared by every repeat (on Dask: once on a worker, as a task of
their own).

Every fold is saved as it finishes, so re-running the same call with the same
``out`` resumes at the first unfinished fold of each model.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import platform
import shlex
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liposome_bench import __version__, engine, registry, stats
from liposome_bench import estimate as _estimate
from liposome_bench.cnn import describe_device
from liposome_bench.dataset import Dataset, describe_dataset
from liposome_bench.duplicates import find_near_duplicates, pairs_across_folds
from liposome_bench.errors import ConfigError, LiposomeBenchError, ResultsError
from liposome_bench.folds import load_or_make_folds, resolve_group_by, ungrouped_warning
from liposome_bench.io import atomic_write_json, atomic_write_text
from liposome_bench.machine import usable_cores
from liposome_bench.metrics import (
    CLASS_METRICS,
    OVERALL_METRICS,
    metrics_by_size_quartile,
    to_jsonable,
)
from liposome_bench.progress import NullReporter
from liposome_bench.quantify import PREVALENCE_METHOD, prevalence_error
from liposome_bench.results import (
    SUMMARY_SCHEMA_VERSION,
    ResultsDir,
    fold_file_hashes,
    fold_record,
)
from liposome_bench.prepare import prepare_run
from liposome_bench.settings import (
    BenchmarkConfig,
    SVMSettings,
    check_seed,
    is_fixed_budget,
    load_config,
)
from liposome_bench.svm import MODEL_NAME as SVM_NAME
from liposome_bench.svm import default_feature_set, stratified_subsample

#: The thesis's pick per problem (section 9): LipNet-4 for lamellarity,
#: LipNet-2 for encapsulation.
DEFAULT_CNN = {"lamellarity": ("lipnet-4",), "encapsulation": ("lipnet-2",)}
#: ``--quick``: at most about this many particles (stratified), each class
#: keeping at least ``QUICK_MIN_PER_CLASS`` (or all it has), and this many
#: CNN epochs: a smoke test, not a measurement.
QUICK_PARTICLES = 120
QUICK_MIN_PER_CLASS = 12
QUICK_EPOCHS = 2
#: Smallest dataset whose benchmark is preceded by a measured time estimate
#: (``estimate.estimate_benchmark``; it costs about 30 s on 2 cores).
ESTIMATE_MIN_PARTICLES = 1000
SUMMARY_KIND = "liposome-bench benchmark summary"
#: ``scheduler`` values of ``benchmark`` besides ``local`` and tcp:// addresses.
SCHEDULER_MODES = ("serial",)


class _MessagesOnly(NullReporter):
    """For the SVM while it runs beside the CNN: only its messages reach the
    shared display (the live bar follows the CNN)."""

    def __init__(self, reporter):
        self._reporter = reporter

    def stage(self, name, total=None):
        self._reporter.message(f"{name}: started on the CPU")

    def message(self, text):
        self._reporter.message(text)


def default_out(problem: str, quick: bool = False) -> Path:
    """``results/benchmark-<problem>`` (``...-quick`` for ``--quick``), so a
    quick run never lands in a full run's folder."""
    return Path("results") / f"benchmark-{problem}{'-quick' if quick else ''}"


def quick_subset(dataset, seed: int = 0):
    """A stratified subsample of ``dataset`` for ``--quick``, held in memory
    only (its folds are not stored beside the full dataset's)."""

    keep = stratified_subsample(
        dataset.y, QUICK_PARTICLES, min_per_class=QUICK_MIN_PER_CLASS, seed=seed
    )
    subset = dataset.subset(keep)
    subset.root = None
    subset.description = (
        f"quick subsample ({len(keep)} of {len(dataset)} particles, seed {seed}) of "
        f"{dataset.root or dataset.description}"
    )
    return subset


def run_benchmark(
    problem: str | None,
    data=None,
    *,
    cnn_models=None,
    out=None,
    quick: bool = False,
    repeats: int = 1,
    k: int = 5,
    folds=None,
    fold_seed: int = 0,
    group_by: str | None = "auto",
    seed: int = 0,
    jobs: int = 1,
    cache_dir=None,
    reader_options: dict | None = None,
    config=None,
    svm_options: dict | None = None,
    cnn_options: dict | None = None,
    n_resamples: int = 1000,
    reporter=None,
    command: str | None = None,
    wait: bool = False,
    estimate: bool = True,
    near_duplicates: bool = True,
    svm_features=None,
    scheduler: str = "serial",
    n_workers: int | None = None,
    connect_timeout: float = engine.CONNECT_TIMEOUT_S,
    dry_run: bool = False,
) -> dict:
    """Run the SVM and the CNN(s) on identical folds and summarise them.

    Parameters
    ----------
    problem : {"lamellarity", "encapsulation"} or None
        Picks the built-in dataset; with ``data`` it may be None, and the
        problem (possibly a custom one) is inferred from the labels.
    data : path or dataset.Dataset, optional
        A dataset folder or file (see ``dataset.load_dataset``) or a dataset
        in memory; default the built-in one.
    cnn_models : sequence of str, optional
        CNNs to run; default (None) :data:`DEFAULT_CNN` of the problem; an
        empty sequence runs the SVM alone.
    out : path, optional
        Results folder; default :func:`default_out`.
    quick : bool
        Smoke test: :func:`quick_subset` and ``QUICK_EPOCHS`` epochs.
    repeats : int
        Repeat the k-fold with this many fold seeds (see the module docstring).
    k, fold_seed : int
        Number of folds and the seed of the (first) fold assignment.
    folds : folds.Folds, optional
        Use these folds of the dataset (one repeat only) instead of the
        stored ``k``-fold assignment.
    group_by : str or None
        Keep particles sharing ``Particle.meta[group_by]`` (a micrograph,
        session or grid id) in one fold, one inner grid-search fold and one
        side of the CNN's validation split (``folds.load_or_make_folds``).
        The default ``"auto"`` groups by the data's own acquisition key
        (``folds.default_group_key``: micrograph first) where it has one;
        None makes ungrouped folds.
    seed : int
        Seed of every model and of the bootstrap.
    jobs : int
        SVM workers (joblib; -1 every core).
    cache_dir : path, optional
        Where the built-in dataset is generated.
    reader_options : dict, optional
        Passed to ``sources.resolve_dataset``.
    config : settings.BenchmarkConfig or path, optional
        The SVM's and each CNN's settings (a ``BenchmarkConfig``, or a TOML
        file read by ``settings.load_config``); default every model's
        defaults.
    svm_options, cnn_options : dict, optional
        Single settings replacing the config's, for the SVM and for every
        CNN (e.g. ``{"grid": "full"}``, ``{"epochs": 30}``).
    n_resamples : int
        Bootstrap resamples of every interval.
    reporter : progress.NullReporter, optional
    command : str, optional
        The command line to record (the CLI passes its own).
    wait : bool
        If another run holds ``out``'s run lock (``results.run_lock``), wait
        for it instead of raising ``ResultsError``.
    estimate : bool
        Before training, calibrate on this machine and report the expected
        wall time (``estimate.estimate_benchmark``), stored in the summary's
        ``timings["estimate"]``; skipped with ``quick`` and below
        :data:`ESTIMATE_MIN_PARTICLES` particles.
    svm_features : sequence of str, optional
        Run the SVM once per feature set on the same folds: the first as
        ``svm``, each other as ``svm-<set>`` (``--svm-features vironova,all``:
        rows ``svm`` and ``svm-all``); every CNN is compared with every SVM
        row (same paired test, Holm within each comparison). Default one SVM
        with the settings' feature set.
    near_duplicates : bool
        Look for near-identical particles (``duplicates.find_near_duplicates``,
        about 7-25 s per 14,000 particles on 2 cores) and warn when a test fold shares
        any with its training folds; ``summary["folds"]["near_duplicates"]``.
    scheduler : {"serial", "local"} or "tcp://HOST:PORT"
        Where the (repeat, fold, model) tasks run (see the module docstring).
    n_workers : int, optional
        Workers of the local Dask cluster (default: by the machine).
    connect_timeout : float
        Seconds to try to reach a ``tcp://`` scheduler, before anything is
        written.
    dry_run : bool
        Check the options, the dataset and the results folder (its layout;
        in a folder it would resume, the dataset and each repeat's folds),
        report the grouping, the near-duplicate check and the time estimate
        (made as for a real run), then return the plan (:func:`plan_text`)
        instead of training: nothing is written to ``out``.

    Returns
    -------
    dict
        The summary written to ``summary.json``; with ``dry_run`` the plan:
        ``{"dry_run": True, "settings", "tasks": [left, total], "per_model":
        {model: tasks left}, "estimate": timings.estimate or None,
        "no_estimate": why none was made or None, "beside": the line a serial
        run prints when it trains the SVM beside the CNNs, or None}``.

    Raises
    ------
    LiposomeBenchError
        On bad options, an unreadable dataset, or a results folder that
        belongs to another dataset or other settings.
    """

    started = time.perf_counter()
    cnn_models = (
        list(DEFAULT_CNN.get(problem, ("lipnet-4",))) if cnn_models is None else list(cnn_models)
    )
    candidates = registry.model_names(baseline=False)  # the SVM always runs
    for name in cnn_models:
        if name not in candidates:
            raise ConfigError(f"Unknown model {name!r}; expected one of {', '.join(candidates)}.")
    if len(set(cnn_models)) != len(cnn_models):
        raise ConfigError(f"--cnn lists a model twice ({','.join(cnn_models)}); list each once.")
    if repeats < 1:
        raise ConfigError(f"--repeats must be 1 or more; got {repeats}.")
    if jobs == 0 or jobs < -1:
        raise ConfigError(f"--jobs must be a positive number of workers or -1; got {jobs}.")
    check_seed(seed, "--seed")
    check_seed(fold_seed, "--fold-seed")
    engine.check_scheduler(scheduler, also=SCHEDULER_MODES)
    if scheduler not in SCHEDULER_MODES:
        engine.probe_scheduler(scheduler, connect_timeout)  # before anything is written
    out = Path(out) if out is not None else default_out(problem or "custom", quick)
    config_input = {"--config": None if isinstance(config, BenchmarkConfig) else config}
    config_file = None
    if config is None:
        config = BenchmarkConfig()
    elif not isinstance(config, BenchmarkConfig):
        config_file = str(config)
        config = load_config(config)
    svm_options = {k: v for k, v in (svm_options or {}).items() if v is not None}
    cnn_options = {k: v for k, v in (cnn_options or {}).items() if v is not None}
    if quick:
        cnn_options.setdefault("epochs", QUICK_EPOCHS)
    # Every model's settings are validated before any work.
    svm_settings = config.svm.replace(**svm_options)
    if len(_svm_rows(svm_settings, svm_features, svm_options)) > 1 and scheduler != "serial":
        # (checked before any work) The Dask path runs one SVM row.
        raise ConfigError(
            f"--svm-features with --scheduler {scheduler} is not supported yet; "
            "run it with --scheduler serial (the default)."
        )
    cnn_settings = {
        name: registry.get(name).settings_for(config, name, cnn_options) for name in cnn_models
    }
    no_dask = [name for name in cnn_models if not registry.get(name).runs_on_dask]
    if no_dask and scheduler != "serial":
        raise ConfigError(
            f"{no_dask[0]} cannot run on --scheduler {scheduler} (its family has no Dask "
            "tasks); run it with --scheduler serial (the default)."
        )
    reporter = reporter or NullReporter()
    timings = {}
    t0 = time.perf_counter()
    in_memory = isinstance(data, Dataset)
    run = prepare_run(
        data,
        problem,
        out=out,
        cache_dir=cache_dir,
        reader_options=reader_options,
        inputs=config_input,
        check_folder=lambda folder: _check_layout(folder, repeats),
        reporter=reporter,
    )
    dataset = run.dataset
    if in_memory:
        data = None
    if config_file is None and "feature_set" not in svm_options and config.svm == SVMSettings():
        # No feature set chosen: the problem's default (all features on a
        # custom problem; svm.default_feature_set).

        svm_settings = svm_settings.replace(feature_set=default_feature_set(dataset.problem))
    svm_rows = _svm_rows(svm_settings, svm_features, svm_options)
    if folds is not None and (repeats > 1 or quick):
        raise ConfigError("Given folds are used once: pass them without --repeats or --quick.")
    if folds is not None and folds.fingerprint != dataset.fingerprint():
        raise ConfigError(
            "The folds given were made for another dataset (fingerprint "
            f"{folds.fingerprint}); make them with make_folds(dataset)."
        )
    full_size = len(dataset)
    source = None
    if quick:
        dataset = quick_subset(dataset, seed)
    elif not in_memory and dataset.root is not None:
        # How Dask workers read the dataset (or generate the built-in one);
        # a dataset given in memory is sent to them.
        source = {"builtin": data is None, "reader_options": dict(reader_options or {})}
    timings["dataset_s"] = time.perf_counter() - t0
    if folds is None:
        group_by = resolve_group_by(dataset, group_by, k)
        if group_by:
            n_groups = len({str(p.meta.get(group_by)) for p in dataset.particles})
            reporter.message(
                f"Folds grouped by {group_by!r} ({n_groups} values): each {group_by} is in "
                "one fold (--group-by KEY for another key, --no-group for none)."
            )
    duplicate_pairs = None
    if near_duplicates:
        t0 = time.perf_counter()
        duplicate_pairs = find_near_duplicates(dataset, reporter=reporter)
        timings["near_duplicates_s"] = time.perf_counter() - t0
    if dataset.synthetic:
        reporter.message(
            f"{dataset.problem.name}: synthetic data ({len(dataset)} particles); "
            "results on synthetic data are not the thesis's results."
        )
    settings = {
        "problem": problem,
        "data": None if data is None else str(data),
        "out": str(out),
        "cnn_models": cnn_models,
        "quick": quick,
        "repeats": repeats,
        "folds": k if folds is None else folds.k,
        "fold_seed": fold_seed if folds is None else folds.seed,
        "group_by": group_by if folds is None else folds.group_by,
        "seed": seed,
        "jobs": jobs,
        "config": config_file,
        "svm_options": svm_options,
        "cnn_options": cnn_options,
        "svm": svm_rows[SVM_NAME].to_dict(),
        "svm_models": list(svm_rows),
        "svm_features": list(svm_features) if svm_features else None,
        "cnn": {name: s.to_dict() for name, s in cnn_settings.items()},
        "n_resamples": n_resamples,
    }
    # The estimate calibrates the SVM and LipNet; other families are left out.
    timed = {n: s for n, s in cnn_settings.items() if registry.get(n) is registry.LIPNET}
    timing = estimate and not quick and len(dataset) >= ESTIMATE_MIN_PARTICLES
    # A resumed run's estimate counts its unfinished folds only; none, no estimate.
    models = [*svm_rows, *cnn_settings] if dry_run else [*svm_rows, *timed]
    if dry_run:  # before the calibration: a folder the run would refuse fails at once
        _check_resumable(out, dataset, settings, folds)
    left = _folds_left(out, repeats, settings["folds"], models) if timing or dry_run else {}
    # Where a serial run trains the SVM beside the CNNs (svm_beside): the
    # estimate counts it, and a dry run's plan says it.
    beside = svm_beside(cnn_settings) if scheduler == "serial" else None
    if timing and any(left.values()):
        reporter.message("Measuring this machine's speed for a time estimate (--no-estimate skips)")
        reporter.stage("time estimate")  # ends the near-duplicate stage's clock
        if len(timed) < len(cnn_settings):
            reporter.message(
                "The time estimate leaves out "
                + ", ".join(n for n in cnn_settings if n not in timed)
                + " (no calibration for its family)."
            )
        guess = _estimate.estimate_benchmark(
            dataset,
            settings["folds"],
            repeats,
            svm_rows,
            timed,
            seed=seed,
            jobs=jobs,
            folds_left=left,
            beside=beside is not None,
        )
        # What the estimate covers starts here: the measured time to compare
        # it with is total_s - estimate["done_at_s"].
        timings["estimate"] = {**guess.to_dict(), "done_at_s": time.perf_counter() - started}
        reporter.message(_estimate.describe(guess, scheduler))
    if dry_run:
        return {
            "dry_run": True,
            "settings": settings,
            "tasks": [sum(left.values()), repeats * settings["folds"] * len(models)],
            "per_model": left,
            "estimate": timings.get("estimate"),
            "no_estimate": _why_no_estimate(estimate, quick, len(dataset), left),
            "beside": BESIDE_MESSAGES[beside].format(jobs=jobs) if beside else None,
        }
    runner = _Runner(scheduler, n_workers, connect_timeout, source)
    with run.session(wait=wait, reporter=reporter, command=command):
        return _run_repeats(
            dataset,
            settings,
            folds=folds,
            svm_rows=svm_rows,
            cnn_settings=cnn_settings,
            command=command,
            full_size=full_size,
            timings=timings,
            started=started,
            reporter=reporter,
            runner=runner,
            duplicate_pairs=duplicate_pairs,
        )


def _check_resumable(out: Path, dataset, settings: dict, folds) -> None:
    """What a dry run can check of a folder it would resume: the dataset and
    each repeat's folds (each model's settings are checked when it starts)."""
    fingerprint = dataset.fingerprint() if folds is None else folds.fingerprint
    for r, rdir in enumerate(_repeat_dirs(out, settings["repeats"])):
        if folds is not None:
            fold_info = fold_record(folds.k, folds.seed, getattr(folds, "group_by", None))
        else:
            fold_info = fold_record(
                settings["folds"], settings["fold_seed"] + r, settings["group_by"]
            )
        ResultsDir(rdir).check_resumable(fingerprint, fold_info)


def _why_no_estimate(estimate: bool, quick: bool, n: int, left: dict) -> str | None:
    """Why a run makes no time estimate, or None when it makes one."""
    if not estimate:
        return "--no-estimate was given"
    if quick:
        return "--quick runs in under a minute"
    if n < ESTIMATE_MIN_PARTICLES:
        return (
            f"the set has {n} particles, under {ESTIMATE_MIN_PARTICLES:,}, so the run is "
            "about as short as the calibration"
        )
    if not any(left.values()):
        return "every task is done"
    return None


def plan_text(plan: dict) -> str:
    """The closing line of a dry run (``run_benchmark(..., dry_run=True)``)."""
    settings = plan["settings"]
    left, total = plan["tasks"]
    n_models = len(plan["per_model"])
    shape = (
        f"{settings['repeats']} repeat(s) x {settings['folds']} folds x "
        f"{n_models} model{'' if n_models == 1 else 's'}"
    )
    if not left:
        todo = (
            f"all {total} (repeat, fold, model) tasks ({shape}) are done in "
            f"{settings['out']}; the command would only rewrite its summary"
        )
    elif left < total:
        todo = (
            f"{left} of {total} (repeat, fold, model) tasks ({shape}) are left in "
            f"{settings['out']}; the command resumes there"
        )
    else:
        todo = f"{total} (repeat, fold, model) tasks ({shape}) into {settings['out']}"
    why = f" No time estimate: {plan['no_estimate']}." if plan["no_estimate"] else ""
    order = f" {plan['beside']}" if left and plan.get("beside") else ""
    start = " Run the same command without --dry-run to start." if left else ""
    return f"Dry run: {todo}.{order} No fold was trained and nothing was written there.{why}{start}"


def _svm_rows(svm_settings, svm_features, svm_options) -> dict:
    """name -> SVMSettings of every SVM row: ``svm``, and with
    ``svm_features`` one ``svm-<set>`` per further feature set."""
    if not svm_features:
        return {SVM_NAME: svm_settings}
    sets = [str(f).strip() for f in svm_features]
    if len(set(sets)) != len(sets) or not all(sets):
        raise ConfigError(
            f"--svm-features lists a feature set twice or empty ({','.join(sets)}); list each once."
        )
    if "feature_set" in svm_options:
        raise ConfigError("Give the feature set once: --svm-features, or feature_set alone.")
    rows = {}
    for i, feature_set in enumerate(sets):
        rows[SVM_NAME if i == 0 else f"{SVM_NAME}-{feature_set}"] = svm_settings.replace(
            feature_set=feature_set
        )
    return rows


@dataclass
class _Runner:
    """Where the tasks run: ``scheduler`` is "serial", "local" or an
    address; ``source`` the ``engine.DatasetSource`` fields workers read the
    dataset with (None: the dataset is sent from here)."""

    scheduler: str
    n_workers: int | None
    connect_timeout: float
    source: dict | None


def _run_repeats(
    dataset,
    settings,
    *,
    folds,
    svm_rows,
    cnn_settings,
    command,
    full_size,
    timings,
    started,
    reporter,
    runner,
    duplicate_pairs=None,
) -> dict:
    """Every repeat's models and summary, then the top-level outputs.

    The run's own values (folder, repeats, fold seed, seed, jobs, models,
    resamples) are read from ``settings``, the dict the summary records;
    ``folds`` are given folds (one repeat) or None."""
    out, repeats = Path(settings["out"]), settings["repeats"]
    seed, jobs, n_resamples = settings["seed"], settings["jobs"], settings["n_resamples"]
    cnn_models = settings["cnn_models"]
    # Only read without given folds (repeats need their own), where it is --fold-seed.
    fold_seed = settings["fold_seed"]

    k, group_by = settings["folds"], settings["group_by"]
    rdirs = _repeat_dirs(out, repeats)
    fold_sets, repeat_timings = [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        fold_sets.append(
            folds
            if folds is not None
            else load_or_make_folds(
                dataset, k, fold_seed + r, group_by, reporter=reporter if r == 0 else None
            )
        )
        repeat_timings.append({"folds_s": time.perf_counter() - t0})
    if runner.scheduler == "serial":
        shared = {}  # features and prepared images, made once for every repeat
        for r in range(repeats):
            if repeats > 1:
                reporter.message(
                    f"repeat {r + 1}/{repeats} (fold seed {fold_seed + r}) -> {rdirs[r]}"
                )
            repeat_timings[r].update(
                _run_models(
                    dataset,
                    fold_sets[r],
                    ResultsDir(rdirs[r]),
                    svm_rows,
                    cnn_settings,
                    seed,
                    jobs,
                    reporter,
                    shared,
                )
            )
    else:
        for r, model_timings in enumerate(
            _run_on_dask(
                dataset,
                fold_sets,
                rdirs,
                svm_rows[SVM_NAME],
                cnn_settings,
                seed,
                jobs,
                runner,
                reporter,
            )
        ):
            repeat_timings[r].update(model_timings)
    for rdir in rdirs:
        # The command's model order, whichever model started first.
        ResultsDir(rdir).order_models([*svm_rows, *cnn_settings])
    per_repeat = []
    for r, (rdir, fold_assignment, stage_timings) in enumerate(
        zip(rdirs, fold_sets, repeat_timings)
    ):
        t0 = time.perf_counter()
        reporter.stage("statistics")
        summary = _summarise(
            rdir, dataset, fold_assignment, settings, seed, n_resamples, command, full_size
        )
        stage_timings["stats_s"] = time.perf_counter() - t0
        summary["timings"] = stage_timings
        summary["folds"]["near_duplicates"] = _duplicates_across_folds(
            duplicate_pairs, fold_assignment, reporter if r == 0 else None
        )
        per_repeat.append(summary)
        if repeats > 1:
            _write_outputs(rdir, summary, dataset, cnn_models)
    summary = dict(per_repeat[0])
    if repeats > 1:
        summary["repeats"] = _spread(per_repeat, out, fold_seed)
        summary["verdict"] = _verdict_over_repeats(out, repeats, summary)
        summary["prevalence_error"] = prevalence_error_row(
            [out / f"repeat-{r}" for r in range(repeats)],
            dataset,
            folds if folds is not None else fold_assignment,
            summary,
        )
    for one in per_repeat[1:]:
        for key, value in one["timings"].items():
            timings[key] = timings.get(key, 0.0) + value
    summary["timings"] = {
        **timings,
        **{k: v + timings.get(k, 0.0) for k, v in per_repeat[0]["timings"].items()},
    }
    summary["timings"]["total_s"] = time.perf_counter() - started
    verdict = summary.get("verdict") or {}
    for comp in verdict.get("comparisons", []):
        comp["repeats_suggestion"] = stats.repeats_suggestion(
            comp,
            verdict.get("repeats", repeats),
            verdict.get("k", k),
            summary["timings"]["total_s"],
            verdict.get("alpha", stats.ALPHA),
        )
    _write_outputs(out, summary, dataset, cnn_models, repeats=repeats)
    return summary


def _duplicates_across_folds(pairs, folds, reporter=None) -> dict | None:
    """Near-duplicate pairs split between a test fold and its training folds
    (None when they were not looked for); a warning through ``reporter``."""

    if pairs is None:
        return None
    across = pairs_across_folds(pairs, folds.fold_of)
    warning = None
    if across:
        warning = (
            f"{across} of {len(pairs)} near-duplicate particle pair(s) have one particle in a "
            "test fold and the other in its training folds, which flatters every score. "
            "liposome-bench dataset check --write-grouping FILE suggests a grouping that "
            "keeps them together (--group-file FILE --group-by group)."
        )
        if reporter is not None:
            reporter.message(f"Warning: {warning}")
    return {"pairs": len(pairs), "across_folds": across, "warning": warning}


def _check_layout(out: Path, repeats: int) -> None:
    """Refuse to mix a single run and repeated runs in one folder."""
    if repeats > 1 and (out / "run.json").exists():
        raise ResultsError(
            f"{out} holds a run without --repeats; repeated runs go into repeat-<r> "
            "subfolders. Use another --out or delete that folder."
        )
    if repeats == 1 and (out / "repeat-0").exists():
        raise ResultsError(
            f"{out} holds a run with --repeats; pass the same --repeats, or use another --out."
        )


#: What a serial run says when the SVM runs beside the CNNs (``svm_beside``).
BESIDE_MESSAGES = {
    "gpu": "GPU found: the SVM runs on the CPU beside the CNN.",
    "cpu": (
        "No GPU: the SVM ({jobs} worker(s), --jobs) runs beside the CNN on the CPU time "
        "its training leaves idle."
    ),
}


def svm_beside(cnn_settings: dict) -> str | None:
    """Where a serial run trains the SVM in a thread beside its CNNs: "gpu"
    when the Keras backend sees a GPU, "cpu" on a CPU-only machine of two
    cores or more, None (one after the other) with one core or no CNN that
    trains on the Keras backend. On 2 CPU cores a LipNet keeps about 1.5-1.6
    of them busy; the SVM beside it on one thread slows the fold it overlaps
    but the run still ends sooner (docs/performance.md)."""
    if not any(registry.get(name).uses_gpu for name in cnn_settings):
        return None
    if _gpu_available():
        return "gpu"
    return "cpu" if usable_cores() >= 2 else None


def _gpu_available() -> bool:
    """Whether the Keras backend sees a GPU (only asked when a CNN will run)."""

    return describe_device()[0] == "gpu"


def _repeat_dirs(out: Path, repeats: int) -> list[Path]:
    """Each repeat's results folder: ``out`` itself for one repeat."""
    return [out if repeats == 1 else out / f"repeat-{r}" for r in range(repeats)]


def _unfinished(results, model: str, k: int) -> list[int]:
    """The folds of ``model`` with no fold file in ``results`` yet."""
    return [f for f in range(k) if not results.fold_json(model, f).exists()]


def _folds_left(out: Path, repeats: int, k: int, models) -> dict:
    """model -> (repeat, fold) pairs with no fold file in ``out`` yet (what a
    resumed run still trains; every pair in a new folder)."""
    rdirs = _repeat_dirs(out, repeats)
    return {m: sum(len(_unfinished(ResultsDir(d), m, k)) for d in rdirs) for m in models}


def _run_models(
    dataset, folds, results, svm_rows, cnn_settings, seed, jobs, reporter, shared=None
) -> dict:
    """Run every SVM row (name -> SVMSettings, or one SVMSettings: ``svm``)
    and every other model (name -> its settings) into ``results``, each
    through its family's ``registry.ModelSpec``; wall time of each.
    ``shared`` (a dict) keeps each model's inputs (features, prepared
    images) for the next repeat; None makes them in each call."""
    if isinstance(svm_rows, SVMSettings):
        svm_rows = {SVM_NAME: svm_rows}
    timings = {}

    def run(models, model_reporter):
        for name, settings in models.items():
            # The SVM rows (svm, svm-<feature set>) are all the baseline's.
            spec = registry.baseline() if models is svm_rows else registry.get(name)
            t0 = time.perf_counter()
            if (
                shared is not None
                and spec.prepare_inputs is not None
                and name not in shared
                and _unfinished(results, name, folds.k)
            ):
                shared[name] = spec.prepare_inputs(
                    dataset, settings, jobs=jobs, reporter=model_reporter
                )
            spec.run_cv(
                dataset,
                folds,
                results,
                settings,
                name=name,
                seed=seed,
                jobs=jobs,
                reporter=model_reporter,
                inputs=(shared or {}).get(name),
            )
            timings[f"{name}_s"] = time.perf_counter() - t0

    beside = svm_beside(cnn_settings)
    if beside:
        # The SVM in a thread while the CNNs train: on a GPU it has the CPU
        # cores to itself; on a CPU-only machine it takes the cycles the
        # CNN's training leaves idle (docs/benchmark.md#parallelism-jobs-scheduler).
        from joblib import Parallel, delayed

        reporter.message(BESIDE_MESSAGES[beside].format(jobs=jobs))
        Parallel(n_jobs=2, backend="threading")(
            [
                delayed(run)(svm_rows, _MessagesOnly(reporter)),
                delayed(run)(cnn_settings, reporter),
            ]
        )
    else:
        run(svm_rows, reporter)
        run(cnn_settings, reporter)
    return timings


@engine.quiet_dask_logs
def _run_on_dask(
    dataset, fold_sets, rdirs, svm_settings, cnn_settings, seed, jobs, runner, reporter
) -> list[dict]:
    """Every unfinished (repeat, fold, model) as one task on the Dask engine;
    the seconds its tasks took, per repeat and model."""
    from distributed import as_completed

    settings_of = {SVM_NAME: svm_settings, **cnn_settings}
    timings = [{f"{name}_s": 0.0 for name in settings_of} for _ in rdirs]
    tasks = []
    for r, (rdir, folds) in enumerate(zip(rdirs, fold_sets)):
        results = ResultsDir(rdir)
        # Here, before any task: each model's settings are checked against
        # the folder (and recorded in run.json), as a serial run does.
        for name, settings in settings_of.items():
            registry.get(name).run_cv(
                dataset,
                folds,
                results,
                settings,
                name=name,
                seed=seed,
                jobs=jobs,
                reporter=None,
                inputs=None,
                only_folds=[],
            )
        tasks += [(r, name, f) for name in settings_of for f in _unfinished(results, name, folds.k)]
    total = len(rdirs) * fold_sets[0].k * len(settings_of)
    if len(tasks) < total:
        reporter.message(
            f"{total - len(tasks)} of {total} (repeat, fold, model) tasks already finished; "
            f"running {len(tasks)}."
        )
    if not tasks:
        return timings
    errors = {}
    with engine.connect(
        runner.scheduler,
        n_workers=runner.n_workers,
        connect_timeout=runner.connect_timeout,
        reporter=reporter,
    ) as connection:
        client = connection.client
        source = None
        if runner.source is not None:
            source = engine.DatasetSource(
                root=str(dataset.root),
                problem=dataset.problem.name if dataset.problem.codes is not None else None,
                fingerprint=fold_sets[0].fingerprint,
                **runner.source,
            )
        data_arg = engine.dataset_argument(client, dataset, source, fold_sets[0].fingerprint)
        svm_jobs = connection.jobs(jobs)
        token = uuid.uuid4().hex[:8]
        folds_args = [
            engine.share(
                client, dataclasses.replace(f, path=None), key=f"benchmark-folds{r}-{token}"
            )
            for r, f in enumerate(fold_sets)
        ]
        # Features and prepared images: one task each, on a worker; every
        # task of the model gets that one result (moved once per worker).
        inputs = {}
        for name in {name for _, name, _ in tasks}:
            inputs[name] = client.submit(
                engine.inputs_task,
                data_arg,
                name,
                settings_of[name].to_dict(),
                svm_jobs,
                key=f"benchmark-inputs-{name}-{token}",
                pure=False,
                retries=engine.TASK_RETRIES,
            )
        futures = {}
        for r, name, fold in tasks:
            future = client.submit(
                engine.run_fold_task,
                data_arg,
                name,
                settings_of[name].to_dict(),
                str(rdirs[r]),
                fold,
                folds_args[r],
                seed,
                True,
                svm_jobs,
                inputs[name],
                rdirs[r].name,
                key=f"benchmark-r{r}-{name}-fold{fold}-{token}",
                pure=False,
                retries=engine.TASK_RETRIES,
            )
            futures[future] = (r, name, fold)
        reporter.stage("benchmark", total=len(futures))
        for future in as_completed(list(futures)):
            r, name, fold = futures[future]
            outcome = future.result()
            reporter.advance()
            where = (f"{rdirs[r].name}: " if len(rdirs) > 1 else "") + f"{name} fold {fold}"
            if outcome.error is not None:
                if outcome.error not in errors:
                    reporter.message(f"{where} (worker {outcome.worker}): {outcome.error}")
                errors.setdefault(outcome.error, []).append(where)
                continue
            engine.save_outcome(rdirs[r], dataset, fold_sets[r], outcome)
            timings[r][f"{name}_s"] += outcome.seconds
            reporter.message(f"{where} done on worker {outcome.worker} in {outcome.seconds:.0f} s.")
    if errors:
        message, where = next(iter(errors.items()))
        failed = sum(len(v) for v in errors.values())
        raise LiposomeBenchError(
            f"{failed} of {len(tasks)} tasks failed (first: {where[0]}: {message}); "
            "the others are saved: fix the cause and run the same command to resume."
        )
    return timings


def _summarise(rdir, dataset, folds, settings, seed, n_resamples, command, full_size) -> dict:

    results = ResultsDir(rdir)
    run = results.read_run()
    svm_models = settings.get("svm_models") or [SVM_NAME]
    core = stats.summarise_results(
        results, models=[*svm_models, *settings["cnn_models"]], n_resamples=n_resamples, seed=seed
    )
    if len(svm_models) > 1 and settings["cnn_models"]:
        core = _compare_every_svm(
            core, results, svm_models, settings["cnn_models"], n_resamples, seed
        )
    devices = sorted(
        {
            d
            for name, m in core["models"].items()
            if name not in svm_models
            for d in m.get("device", [])
        }
    )
    summary = {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "kind": SUMMARY_KIND,
        "tool_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "equivalent_command": equivalent_command(
            settings, rdir if settings["repeats"] == 1 else Path(rdir).parent
        ),
        "seed": seed,
        "versions": library_versions(),
        "device": {"cnn": devices, "platform": platform.platform(), "cpu_count": usable_cores()},
        "dataset": {
            **run.get("dataset", {}),
            **_describe(dataset),
            **(
                {"subsample": dataset.description, "full_size": full_size}
                if settings["quick"]
                else {}
            ),
        },
        "folds": {
            **(run.get("folds") or {}),
            "sizes": [int(np.count_nonzero(folds.fold_of == f)) for f in range(folds.k)],
            **_group_facts(dataset, folds),
        },
        "settings": {**settings, "models": run.get("models", {})},
    }
    summary.update(core)
    summary["by_size_quartile"] = _size_quartiles(results, dataset, list(core["models"]))
    summary["prevalence_error"] = prevalence_error_row([rdir], dataset, folds, summary)
    return summary


def prevalence_error_row(result_dirs, dataset, folds, summary) -> dict:
    """The secondary prevalence-error row (``quantify.prevalence_error``) over
    the repeats in ``result_dirs``; a reason instead when the folds are not
    grouped (a test fold then holds parts of groups, not whole ones)."""

    groups = getattr(folds, "groups", None)
    if groups is None:
        return {
            "method": PREVALENCE_METHOD,
            "skipped": "the folds are not grouped, so no test fold holds whole groups; "
            "pass --group-by KEY (micrograph, session, grid) for this row",
        }
    runs = {
        name: [ResultsDir(d).load_model(name) for d in result_dirs] for name in summary["models"]
    }
    row = prevalence_error(
        runs,
        summary["reference"],
        summary["classes"],
        dict(zip(dataset.ids, groups)),
        summary["dataset"]["n_particles"],
    )
    return {"group_by": folds.group_by, **row}


def _compare_every_svm(core, results, svm_models, cnn_models, n_resamples, seed) -> dict:
    """``core`` (``stats.summarise_results`` against ``svm``) with every CNN
    compared with every SVM row instead: the paired comparisons and the
    verdict of each further SVM row against the CNNs added, the SVM-against-
    SVM comparison left out (the verdict is about CNN against SVM)."""
    comparisons = [c for c in core["comparisons"] if c["model_b"] in cnn_models]
    for name in svm_models[1:]:
        more = stats.summarise_results(
            results,
            models=[name, *cnn_models],
            reference=name,
            n_resamples=n_resamples,
            seed=seed,
        )
        comparisons += more["comparisons"]
    core["comparisons"] = comparisons
    runs = {name: [results.load_model(name)] for name in core["models"]}
    run = results.read_run()
    core["verdict"] = svm_rows_verdict(
        runs,
        svm_models,
        cnn_models,
        core["classes"],
        int(run["dataset"].get("n_particles") or sum(len(f.ids) for f in runs[svm_models[0]][0])),
        k=run["folds"]["k"],
        mcnemar=comparisons,
    )
    return core


def svm_rows_verdict(runs, svm_models, cnn_models, classes, n_particles, *, k, mcnemar) -> dict:
    """The headline verdict of every CNN against every SVM row
    (``stats.headline_verdict`` once per SVM row, comparisons in one list).

    ``runs``: model -> list (one per repeat) of its folds; ``mcnemar``: the
    paired comparisons (``model_a``, ``model_b``, ``mcnemar``) to show."""
    verdict = None
    for name in svm_models:
        one = stats.headline_verdict(
            {m: runs[m] for m in [name, *cnn_models] if m in runs},
            name,
            classes,
            n_particles,
            k=k,
            mcnemar={c["model_b"]: c["mcnemar"] for c in mcnemar if c["model_a"] == name},
        )
        if verdict is None:
            verdict = one
        else:
            verdict["comparisons"].extend(one["comparisons"])
    return verdict


def particle_sizes(dataset) -> tuple[np.ndarray, str]:
    """Each particle's mask area: in nm^2 when every particle has a pixel
    size, else in px; with the unit's name."""
    px = np.array([p.pixel_size_nm for p in dataset.particles], dtype=float)
    area = np.array([float(np.count_nonzero(p.mask)) for p in dataset.particles])
    if len(px) and np.all(np.isfinite(px)):
        return area * px**2, "nm^2"
    return area, "px"


def _size_quartiles(results, dataset, models) -> dict:
    """Metrics by quartile of particle size (mask area) for every model,
    on quartile edges of the whole dataset's sizes."""

    sizes, unit = particle_sizes(dataset)
    edges = np.quantile(sizes, [0.25, 0.5, 0.75])
    size_of = dict(zip(dataset.ids, sizes))
    out = {"size": f"mask area ({unit})", "edges": [float(e) for e in edges], "models": {}}
    classes = list(dataset.problem.classes)
    for name in models:
        folds = results.load_model(name)
        if not folds:
            continue
        ids = [i for f in folds for i in f.ids]
        if any(i not in size_of for i in ids):
            continue
        y_true = np.concatenate([f.y_true for f in folds])
        y_pred = np.concatenate([f.y_pred for f in folds])
        out["models"][name] = to_jsonable(
            metrics_by_size_quartile([size_of[i] for i in ids], y_true, y_pred, classes, edges)
        )
    return out


def _group_facts(dataset, folds) -> dict:
    """Groups per fold of grouped folds; the ungrouped-data warning otherwise."""

    groups = getattr(folds, "groups", None)
    if groups is None:
        warning = ungrouped_warning(dataset, None, folds.k)
        return {"group_by": None, **({"warning": warning} if warning else {})}
    return {
        "group_by": folds.group_by,
        "n_groups": int(len(np.unique(groups))),
        "groups_per_fold": [
            int(len(np.unique(groups[folds.fold_of == f]))) for f in range(folds.k)
        ],
    }


def _describe(dataset) -> dict:
    """Class counts, image and pixel sizes of the dataset (thesis Tables 1-2)."""

    info = describe_dataset(dataset)
    return {
        "class_counts": {c["class"]: c["count"] for c in info["class_counts"]},
        "image_size": info["image_size"]["all"],
        "pixel_size_nm": info["pixel_size_nm"],
        "masks_derived": info["masks_derived"],
        "warnings": info["warnings"],
    }


def library_versions() -> dict:
    """Versions of Python and the libraries that produce the numbers."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for dist in (
        "numpy",
        "scipy",
        "scikit-learn",
        "scikit-image",
        "libsvm-official",
        "keras",
        "tensorflow",
        "tensorflow-cpu",
        "jax",
        "torch",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    if "keras" in sys.modules:
        try:
            versions["keras backend"] = sys.modules["keras"].backend.backend()
        except AttributeError:
            pass
    return versions


def equivalent_command(settings: dict, out) -> str:
    """The ``liposome-bench benchmark`` command line that repeats a run."""
    args = ["liposome-bench", "benchmark"]
    if settings["problem"] is not None:
        args += ["--problem", settings["problem"]]
    if settings.get("data"):
        args += ["--data", settings["data"]]
    if settings["cnn_models"]:
        args += ["--cnn", ",".join(settings["cnn_models"])]
    args += ["--out", str(out)]
    if settings.get("quick"):
        args.append("--quick")
    if settings.get("config"):
        args += ["--config", settings["config"]]
    args += [
        "--repeats",
        str(settings["repeats"]),
        "--folds",
        str(settings["folds"]),
        "--fold-seed",
        str(settings["fold_seed"]),
    ]
    if settings.get("group_by"):
        args += ["--group-by", settings["group_by"]]
    else:
        args.append("--no-group")
    if settings.get("svm_features"):
        args += ["--svm-features", ",".join(settings["svm_features"])]
    args += ["--seed", str(settings["seed"]), "--jobs", str(settings["jobs"])]
    extra = {**settings.get("svm_options", {}), **settings.get("cnn_options", {})}
    if settings.get("quick"):
        extra.pop("epochs", None)
    text = shlex.join(args)
    notes = [f"{k}={v}" for k, v in extra.items()]
    if not settings["cnn_models"]:
        notes.insert(0, "cnn_models=[] (SVM only)")
    if notes:
        text += "  # library options: " + ", ".join(notes)
    return text


def _verdict_over_repeats(out: Path, repeats: int, summary: dict) -> dict:
    """The headline verdict over the paired fold scores of every repeat."""

    models = list(summary["models"])
    runs = {
        name: [ResultsDir(out / f"repeat-{r}").load_model(name) for r in range(repeats)]
        for name in models
    }
    svm_models = summary["settings"].get("svm_models") or [SVM_NAME]
    cnn_models = summary["settings"]["cnn_models"]
    if len(svm_models) > 1 and cnn_models:
        return svm_rows_verdict(
            runs,
            svm_models,
            cnn_models,
            summary["classes"],
            summary["dataset"]["n_particles"],
            k=summary["folds"]["k"],
            mcnemar=summary.get("comparisons", []),
        )
    return stats.headline_verdict(
        runs,
        summary["reference"],
        summary["classes"],
        summary["dataset"]["n_particles"],
        k=summary["folds"]["k"],
        mcnemar={c["model_b"]: c["mcnemar"] for c in summary.get("comparisons", [])},
    )


def _spread(per_repeat: list[dict], out: Path, fold_seed: int) -> dict:
    """Mean, std, min and max over repeats of every model's fold-mean metrics."""

    spread = {}
    for name in per_repeat[0]["models"]:
        spread[name] = {}
        groups = [(cls, CLASS_METRICS) for cls in per_repeat[0]["classes"]]
        groups.append(("overall", OVERALL_METRICS))
        for cls, metrics in groups:
            spread[name][cls] = {}
            for metric in metrics:
                values = []
                for s in per_repeat:
                    m = s["models"].get(name)
                    if m is None:
                        continue
                    entry = (
                        m["overall"][metric] if cls == "overall" else m["per_class"][cls][metric]
                    )
                    if entry.get("mean") is not None:
                        values.append(entry["mean"])
                v = np.array(values, dtype=np.float64)
                spread[name][cls][metric] = (
                    None
                    if not v.size
                    else {
                        "mean": float(v.mean()),
                        "std": float(v.std(ddof=1)) if v.size > 1 else None,
                        "min": float(v.min()),
                        "max": float(v.max()),
                        "n": int(v.size),
                    }
                )
    return {
        "count": len(per_repeat),
        "fold_seeds": [fold_seed + r for r in range(len(per_repeat))],
        "dirs": [f"repeat-{r}" for r in range(len(per_repeat))],
        "spread": spread,
    }


def collect_predictions(results_dir, dataset_order=None):
    """Out-of-fold predictions of every finished model of a results folder,
    one row per particle (see the module docstring for the columns).

    Returns
    -------
    pandas.DataFrame
    """
    import pandas as pd

    results = ResultsDir(results_dir)
    run = results.read_run()
    classes = run["dataset"]["classes"]
    table = None
    for name in results.model_names():
        folds = results.load_model(name)
        if len(folds) != run["folds"]["k"]:
            continue
        parts = []
        for r in folds:
            part = pd.DataFrame(
                {
                    "id": r.ids,
                    "label": [classes[i] for i in r.y_true],
                    "fold": r.fold,
                    f"{name}_predicted": [classes[i] for i in r.y_pred],
                }
            )
            for j, score in enumerate(r.score_names):
                part[f"{name}_score_{score}"] = r.scores[:, j]
            parts.append(part)
        frame = pd.concat(parts, ignore_index=True)
        table = (
            frame if table is None else table.merge(frame, on=["id", "label", "fold"], how="outer")
        )
    if table is None:
        return pd.DataFrame(columns=["id", "label", "fold"])
    if dataset_order is not None:
        order = {pid: i for i, pid in enumerate(dataset_order)}
        table = table.sort_values("id", key=lambda s: s.map(order)).reset_index(drop=True)
    return table


def _write_outputs(out: Path, summary: dict, dataset, cnn_models, repeats: int = 1) -> None:
    """summary.json and predictions.csv, atomically."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    if repeats == 1:
        table = collect_predictions(out, dataset.ids)
    else:
        parts = []
        for r in range(repeats):
            part = collect_predictions(out / f"repeat-{r}", dataset.ids)
            part.insert(0, "repeat", r)
            parts.append(part)
        table = pd.concat(parts, ignore_index=True)
    atomic_write_text(out / "predictions.csv", table.to_csv(index=False))
    # What the summary was computed from: the gate refuses it once they change.
    summary["fold_files"] = fold_file_hashes(out)
    atomic_write_json(out / "summary.json", summary)


def recorded_settings(summary: dict, model: str) -> dict:
    """The settings ``model`` ran with, as ``summary`` recorded them (empty
    for summaries that predate the record)."""
    return ((summary.get("settings") or {}).get("models") or {}).get(model) or {}


def budget_notes(summary: dict) -> list[str]:
    """Plain sentences on the training budgets: how many CNN folds stopped
    early, which may be under-trained, where the SVM grid was extended or
    still ends at the best point. Used on screen and in the report."""
    notes = []
    for name, m in summary["models"].items():
        params = m.get("params") or []
        if any("epochs_run" in p for p in params):
            early = [i for i, p in enumerate(params) if p.get("stopped_early")]
            under = [i for i, p in enumerate(params) if p.get("under_trained")]
            most = max((p.get("max_epochs") or 0) for p in params)
            if is_fixed_budget(recorded_settings(summary, name)):
                notes.append(
                    f"{name}: a fixed budget of {most} epochs per fold, the last epoch's weights "
                    "kept (no early stopping)."
                )
                continue
            notes.append(
                f"{name}: early stopping ended {len(early)} of {len(params)} folds "
                f"before the maximum of {most} epochs (best epochs "
                f"{', '.join(str(p.get('epochs')) for p in params)})."
            )
            if under:
                notes.append(
                    f"{name}: fold(s) {', '.join(map(str, under))} had their best validation "
                    f"macro F1 at the last allowed epoch: possibly under-trained. Raise --epochs "
                    "(or epochs in --config) and compare."
                )
        elif any("grid_extended" in p for p in params):
            grown = [i for i, p in enumerate(params) if p.get("grid_extended")]
            edge = [i for i, p in enumerate(params) if p.get("grid_edge")]
            if grown:
                notes.append(
                    f"{name}: the best C/gamma lay on the grid's edge in fold(s) "
                    f"{', '.join(map(str, grown))}; the grid was extended there ("
                    + "; ".join(f"fold {i}: {', '.join(params[i]['grid_extended'])}" for i in grown)
                    + ")."
                )
            if edge:
                notes.append(
                    f"{name}: in fold(s) {', '.join(map(str, edge))} the best point is still on "
                    "the edge of the (extended) grid, at its limit (docs/svm.md)."
                )
    return notes
