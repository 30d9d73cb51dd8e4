"""The ``liposome-bench`` command line: the only module that imports click.

Each command parses its options, calls one library function, and turns a
``LiposomeBenchError`` into a one-line ``Error:`` message with exit code 2.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys

import click

from liposome_bench import __version__
from liposome_bench import registry as _registry
from liposome_bench import settings as _settings
from liposome_bench.errors import LiposomeBenchError
from liposome_bench import errors as _errors

PROBLEM_NAMES = ("lamellarity", "encapsulation")


#: What an interrupted command keeps, by command (default: nothing half-written).
_KEPT = {
    "benchmark_command": "Finished folds are saved; run the same command again to resume.",
    "svm_command": "Finished folds are saved; run the same command again to resume.",
    "cnn_command": "Finished folds are saved; run the same command again to resume.",
    "sweep_command": "Finished (cell, fold) tasks are saved; run the same command again to resume.",
    "train_command": "Finished cross-validation folds are saved; no bundle was written (a "
    "bundle already at --out is unchanged). Run the same command again to "
    "resume.",
    "import_coco_command": "Nothing was written (the export appears whole or not at all); "
    "run the command again.",
    "import_labels_command": "Nothing was written (the export appears whole or not at all); "
    "run the command again.",
    "generate_command": "Nothing half-written was kept; run the command again.",
    "predict_command": "No predictions were written; run the command again.",
    "export_command": "No ONNX file was written; run the command again.",
}


_Terminated = _errors.Terminated


def _raise_terminated(signum, frame):
    _errors.note_interruption(_Terminated)
    raise _Terminated()


def _raise_interrupted(signum, frame):
    _errors.note_interruption(KeyboardInterrupt)
    raise KeyboardInterrupt()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While a command runs, SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C
    does, so the same clean-up runs (only in the main thread, where Python
    delivers signals). Both are also noted (``errors.note_interruption``),
    so that one that arrives inside a ctypes callback, where Python drops the
    exception, is raised when the C call returns."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _errors.clear_interruptions()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int is signal.default_int_handler:
        signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if previous_int is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous_int)
        _errors.clear_interruptions()


def _fail_cleanly(func):
    """Turn user mistakes into ``Error: <one line>`` and exit code 2; Ctrl-C
    and SIGTERM into one line saying what was kept (exit 130 and 143)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with _sigterm_as_interrupt():
                return func(*args, **kwargs)
        except LiposomeBenchError as exc:
            raise UserError(str(exc)) from None
        except OSError as exc:
            # Last resort: commands check their outputs before any work
            # (liposome_bench.outputs); an OS error nobody expected is still
            # one line, with the traceback in the debug log.
            from liposome_bench.outputs import describe_os_error

            logging.getLogger(__name__).debug("OS error", exc_info=True)
            raise UserError(describe_os_error(exc)) from None
        except KeyboardInterrupt as exc:
            what = "Terminated" if isinstance(exc, _Terminated) else "Interrupted"
            kept = _KEPT.get(
                func.__name__,
                "Files written so far are whole (none is half-written); run the command again.",
            )
            click.echo(f"{what}. {kept}", err=True)
            sys.exit(143 if isinstance(exc, _Terminated) else 130)

    return wrapper


def _display():
    """The display module, imported on first use (it brings numpy and rich,
    which ``--help`` does not need)."""
    from liposome_bench import display

    return display


class UserError(click.ClickException):
    """Printed as ``Error: <message>``; exit code 2, like click's usage errors."""

    exit_code = 2


class ModelChoice(click.Choice):
    """``click.Choice`` of the registered model names, read from
    ``registry`` when a value is checked (a family registered after this
    module was imported is offered too)."""

    def __init__(self, *, baseline: bool | None = None):
        self.baseline = baseline
        super().__init__(())

    @property
    def choices(self):
        return _registry.model_names(baseline=self.baseline)

    @choices.setter
    def choices(self, value):
        pass  # the registry is the one list


@contextlib.contextmanager
def _live_reporter():
    """One rich live display for a command's long work, closed however the
    command ends (library functions report to it but never close it)."""
    from liposome_bench.progress import RichReporter

    reporter = RichReporter()
    try:
        yield reporter
    finally:
        reporter.close()


# Shared options ------------------------------------------------------------


def data_option(func):
    return click.option(
        "--data",
        "data",
        type=click.Path(exists=True, dir_okay=True, file_okay=True),
        default=None,
        help="Dataset: a lab export folder (or its particles.json), a manifest "
        ".csv, a folder of class folders, or an .mrcs stack. "
        "Default: the built-in synthetic dataset of --problem.",
    )(func)


def problem_option(required=True):
    help_text = "Classification problem (thesis section 2)."
    if not required:
        help_text += (
            " Picks the built-in dataset; with --data it is inferred from "
            "the labels (other class sets are custom problems)."
        )

    def decorate(func):
        return click.option(
            "--problem",
            type=click.Choice(PROBLEM_NAMES),
            required=required,
            help=help_text,
        )(func)

    return decorate


def cache_option(func):
    return click.option(
        "--cache-dir",
        type=click.Path(file_okay=False),
        default=None,
        envvar="LIPOSOME_BENCH_CACHE",
        show_envvar=True,
        help="Where the built-in synthetic datasets are generated once and "
        "kept. Default: ~/.cache/liposome-bench.",
    )(func)


def seed_option(func):
    return click.option(
        "--seed", type=int, default=0, show_default=True, help="Random seed (0 to 2**32 - 1)."
    )(func)


def folds_option(func):
    return click.option(
        "--folds",
        "k",
        type=click.IntRange(min=2),
        default=5,
        show_default=True,
        help="Number of stratified folds (thesis section 8.1).",
    )(func)


def fold_seed_option(func):
    return click.option(
        "--fold-seed",
        type=int,
        default=0,
        show_default=True,
        help="Seed of the stored fold assignment (0 to 2**32 - 1).",
    )(func)


def group_by_option(func):
    """``--group-by KEY`` (default: the data's micrograph-like key) and
    ``--no-group``, merged into the command's one ``group_by`` argument:
    a key, ``"auto"`` or None (ungrouped)."""

    @functools.wraps(func)
    def merged(*args, no_group=False, group_by=None, **kwargs):
        if no_group and group_by is not None:
            raise click.UsageError(
                f"--group-by {group_by} and --no-group contradict each other; pass one of them."
            )
        group_by = None if no_group else (group_by or "auto")
        return func(*args, group_by=group_by, **kwargs)

    merged = click.option(
        "--no-group",
        "no_group",
        is_flag=True,
        default=False,
        help="Do not group the folds, even where the particles carry a micrograph key "
        "(scores then flatter every model: particles of one micrograph land in both "
        "training and test folds).",
    )(merged)
    return click.option(
        "--group-by",
        "group_by",
        default=None,
        metavar="KEY",
        help="Keep particles sharing this meta key (a manifest column or export key, "
        "e.g. micrograph, session, grid) in one fold; the SVM's inner grid-search "
        "folds and the CNN's validation split are grouped the same way. Default: the "
        "data's own acquisition key (micrograph, else session, grid, ...) where several "
        "particles share it and it has at least twice --folds values; else ungrouped.",
    )(merged)


def out_option(default, help_text, required=False):
    # Click 8.3+ counts an explicit default=None as a value, which would
    # satisfy required=True: pass a default only when there is one.
    defaults = {} if default is None else {"default": default, "show_default": True}

    def decorate(func):
        return click.option(
            "--out", type=click.Path(), required=required, help=help_text, **defaults
        )(func)

    return decorate


def _inputs_of(data, problem, cache_dir, reader_options, **more) -> dict:
    """A command's inputs for ``outputs.check_apart``: the dataset it reads
    (``sources.dataset_inputs``) and ``more`` ({what: path})."""
    from liposome_bench.sources import dataset_inputs

    return {**dataset_inputs(data, problem, cache_dir=cache_dir, **reader_options), **more}


def _finite_pixel_size(ctx, param, value):
    """FloatRange lets nan and inf through (no comparison fails for nan)."""
    import math

    if value is not None and not math.isfinite(value):
        raise click.BadParameter(
            f"{value} is not a finite number of nm per pixel; pass e.g. --pixel-size 0.84.",
            ctx,
            param,
        )
    return value


def reader_options(func):
    """Add --images-dir, --masks-dir, --pixel-size, --group-pattern and --group-file, passed to the command
    as one ``reader_options`` dict for ``resolve_dataset(..., **reader_options)``."""

    @functools.wraps(func)
    def wrapper(*args, images_dir, masks_dir, pixel_size_nm, group_pattern, group_file, **kwargs):
        kwargs["reader_options"] = {
            "images_dir": images_dir,
            "masks_dir": masks_dir,
            "pixel_size_nm": pixel_size_nm,
        }
        if group_pattern is not None:
            kwargs["reader_options"]["group_pattern"] = group_pattern
        if group_file is not None:
            kwargs["reader_options"]["group_file"] = group_file
        return func(*args, **kwargs)

    wrapper = click.option(
        "--group-file",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="Set each particle's group (for --group-by group) from a CSV of id,group, "
        "e.g. the grouping `dataset check --write-grouping` suggests.",
    )(wrapper)

    wrapper = click.option(
        "--group-pattern",
        default=None,
        metavar="REGEX",
        help="Set each particle's group (for --group-by group) to the first capture group "
        "of its micrograph's file name (its Micrograph, else its image file), e.g. "
        "Roboflow's '^(.*)_(?:jpg|png)\\.rf\\.'.",
    )(wrapper)

    wrapper = click.option(
        "--pixel-size",
        "pixel_size_nm",
        type=click.FloatRange(min=0, min_open=True),
        callback=_finite_pixel_size,
        default=None,
        help="Pixel size in nm/px for every particle, overriding the data's "
        "own (PixelSize in a lab export, pixel_size_nm in a manifest, the MRC header).",
    )(wrapper)
    wrapper = click.option(
        "--masks-dir",
        default="masks",
        show_default=True,
        help="Folder of masks in a lab export or class-folder dataset, "
        "relative to the dataset folder.",
    )(wrapper)
    wrapper = click.option(
        "--images-dir",
        default="images",
        show_default=True,
        help="Folder of images in a lab export, relative to its particles.json "
        "('.' for images beside it).",
    )(wrapper)
    return wrapper


def settings_options(cls, names=None, *, override: bool = False, unset=None, prefix: str = ""):
    """Click options made from settings fields' declarations
    (``settings.setting``): flag, type, range, choices, default and help.

    Parameters
    ----------
    cls : settings.CNNSettings or settings.SVMSettings
    names : sequence of str, optional
        The fields to offer (default: every field declared for the CLI).
    override : bool
        Options default to None (unset), so they override a ``--config``
        file instead of carrying the declared default.
    unset : dict, optional
        name -> help sentence: these options default to None, resolved by
        the command (the sentence says how).
    prefix : str
        Put before each help text ("Every CNN: ").
    """
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)}
    chosen = [fields[n] for n in (names or fields)]

    def option_for(f):
        meta = f.metadata
        kind = meta["kind"]
        declared = ",".join(f.default_factory()) if f.default is dataclasses.MISSING else f.default
        if kind == "augment" and declared == ",".join(_settings.AUGMENTATIONS):
            declared = "all"
        help_text = prefix + meta["help"] + (" Overrides --config." if override else "")
        resolved_later = f.name in (unset or {})
        if resolved_later:
            help_text += " " + unset[f.name]
        kwargs = {
            "default": None if override or resolved_later else declared,
            "show_default": not (override or resolved_later) and declared is not None,
            "help": help_text,
        }
        flag = _settings.flag_of(f)
        if kind == "bool":
            no_flag = "--no-" + flag[2:]
            return click.option(f"{flag}/{no_flag}", f.name, default=None, help=help_text)
        if kind == "choice":
            kwargs["type"] = click.Choice(meta["choices"])
        elif kind in ("int", "float"):
            number = click.IntRange if kind == "int" else click.FloatRange
            kwargs["type"] = number(
                min=meta["low"],
                max=meta["high"],
                **(
                    {}
                    if kind == "int"
                    else {"min_open": meta["low_open"], "max_open": meta["high_open"]}
                ),
            )
        return click.option(flag, f.name, **kwargs)

    def decorate(func):
        for f in reversed(chosen):
            func = option_for(f)(func)
        return func

    return decorate


def units_option(default="nm"):
    """--units nm|px (the SVM's features; docs/features.md)."""
    defaults = {"default": default, "show_default": True} if default else {"default": None}
    help_text = (
        "Features in nm (needs the pixel size) or every length in pixels, with "
        "pixel-based windows: edge profile -52..+10 px, SNR band 8 px "
        "(docs/features.md)."
    )
    if not default:
        help_text += " Default: nm, or [svm] units of --config."

    def decorate(func):
        return click.option(
            "--units",
            type=click.Choice(_settings.FEATURE_UNITS),
            help=help_text,
            **defaults,
        )(func)

    return decorate


def dask_options(scheduler_default="local", scheduler_help=None, *, connect_timeout=True):
    """--scheduler, --workers and (with ``connect_timeout``) --connect-timeout
    of the commands that run tasks on the Dask engine."""
    scheduler_help = scheduler_help or (
        "'local': a Dask cluster on this machine (one worker per GPU, else one per 4 "
        "cores); or the address of a running Dask scheduler (docs/sweep.md; SLURM: "
        "docs/curve.md)."
    )

    def decorate(func):
        if connect_timeout:
            func = click.option(
                "--connect-timeout",
                type=click.FloatRange(min=0, min_open=True),
                default=10.0,
                show_default=True,
                help="Seconds to try to reach a --scheduler address, before anything is written.",
            )(func)
        func = click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=None,
            help="Workers of the local cluster (default: sized to the machine).",
        )(func)
        metavar = "|".join(dict.fromkeys([scheduler_default, "local", "tcp://HOST:PORT"]))
        return click.option(
            "--scheduler",
            default=scheduler_default,
            show_default=True,
            metavar=metavar,
            help=scheduler_help,
        )(func)

    return decorate


def wait_option(func):
    return click.option(
        "--wait",
        is_flag=True,
        help="If another run is writing into the same --out, wait for it to finish "
        "and then reuse its folds, instead of stopping with an error.",
    )(func)


def jobs_option(func):
    return click.option(
        "--jobs",
        type=int,
        default=1,
        show_default=True,
        help="Parallel workers (joblib); -1 uses every core.",
    )(func)


# The group -----------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="liposome-bench")
@click.option("-v", "--verbose", is_flag=True, help="Show debug logging.")
def cli(verbose):
    """Does a CNN beat the feature-based SVM on your TEM particle images?

    liposome-bench trains the lab's LIBSVM baseline on handcrafted features
    and LipNet CNNs on raw pixels on identical stratified folds, and compares
    them per class. Every command runs out of the box on a built-in synthetic
    cryo-TEM dataset; pass --data for your own export.

    Example: liposome-bench benchmark --problem lamellarity
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


# Commands are added below, one section per module.

# --- generate (synth) -------------------------------------------------------


@cli.command("generate")
@problem_option(required=True)
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=None,
    help="Number of particles, split in the thesis's class proportions "
    "(Tables 1-2). Default the thesis's size: 14169 or 24918.",
)
@seed_option
@out_option(
    None, "Folder to write the lab export into (must not exist, or be empty).", required=True
)
@click.option(
    "--montage",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write a PNG grid of examples per class.",
)
@click.option(
    "--difficulty",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="0 easy to 1 hard: lower contrast, more blur, ice and crowding, "
    "more borderline particles and mask errors. 0.5 is calibrated so the "
    "lab's SVM gives about the thesis's Tables 7-8.",
)
@click.option(
    "--label-noise",
    type=click.FloatRange(0, 0.9),
    default=0.0,
    show_default=True,
    help="Fraction of particles whose image shows another class than their label.",
)
@click.option(
    "--dose",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Electron dose in e-/A^2 (lower is noisier).",
)
@click.option(
    "--pixel-size",
    "pixel_size_nm",
    type=click.FloatRange(0.5, 5),
    default=1.6,
    show_default=True,
    help="Pixel size in nm/px, recorded in the export.",
)
@_fail_cleanly
def generate_command(problem, n, seed, out, montage, difficulty, label_noise, dose, pixel_size_nm):
    """Generate a synthetic cryo-TEM liposome dataset as a lab export.

    Each particle is a projected lipid bilayer shell (multilamellar: 2-5
    stacked shells; full: a dark doxorubicin crystal bundle inside) imaged
    through a contrast transfer function, on vitreous ice with neighbours,
    ice crystals and shot noise. Writes particles.json, images/ (with the
    50 px surround) and masks/; docs/synthetic-data.md explains the model.

    \b
    Example: liposome-bench generate --problem encapsulation --n 3000 --seed 1 --out d
    """
    from liposome_bench.outputs import check_output_dir, check_output_file, writing
    from liposome_bench.synth import THESIS_COUNTS, generate_export

    check_output_dir(out)
    if montage is not None:
        check_output_file(montage, "--montage")
    with _live_reporter() as reporter, writing(out):
        dataset = generate_export(
            problem,
            out,
            n=n,
            seed=seed,
            montage=montage,
            difficulty=difficulty,
            label_noise=label_noise,
            dose=dose,
            pixel_size_nm=pixel_size_nm,
            reporter=reporter,
        )
    _display().print_generated(dataset, out, THESIS_COUNTS[problem], montage)


# --- dataset (dataset) ------------------------------------------------------


@cli.group("dataset")
def dataset_group():
    """Describe and validate particle datasets.

    Reads a lab export folder (or its particles.json), a manifest .csv, a
    folder of class folders or an .mrc/.mrcs stack; docs/data-formats.md
    describes each layout and every check.

    Example: liposome-bench dataset check my-export
    """


@dataset_group.command("info")
@click.argument("path", required=False, type=click.Path(exists=True))
@problem_option(required=False)
@reader_options
@cache_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--input-mode",
    type=click.Choice(_settings.INPUT_MODES),
    default="masked",
    show_default=True,
    help="The CNN input mode you will run: 'surrounding' shows the CNN the "
    "surround, so a short one is warned about.",
)
@_fail_cleanly
def dataset_info_command(path, problem, reader_options, cache_dir, as_json, input_mode):
    """Show a dataset: class counts and shares (as the thesis's Tables 1-2),
    image sizes overall and per class, particle sizes per class (nm, or px
    without a pixel size), the surround of the crops, pixel size, masks,
    stored folds.

    Without PATH, describes the built-in synthetic dataset of --problem
    (generated once into the cache).

    Example: liposome-bench dataset info my-export
    """
    import json

    from liposome_bench.dataset import describe_dataset, surround_warning
    from liposome_bench.sources import resolve_dataset

    if path is None and problem is None:
        raise UserError(
            "Give a dataset PATH, or --problem to describe the built-in synthetic dataset."
        )
    with _live_reporter() as reporter:
        dataset = resolve_dataset(
            path, problem, cache_dir=cache_dir, reporter=reporter, **reader_options
        )
    from liposome_bench.folds import describe_groups, describe_stored_folds

    info = describe_dataset(dataset)
    warning = surround_warning(info, input_mode)
    if warning:
        info["warnings"].append(warning)
    info["groups"] = describe_groups(dataset)
    info["folds"] = describe_stored_folds(dataset)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        _display().print_dataset_info(info)


@dataset_group.command("check")
@click.argument("path", type=click.Path(exists=True))
@problem_option(required=False)
@reader_options
@units_option()
@click.option(
    "--folds",
    "k",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="The folds you will cross-validate with: a class with fewer particles is "
    "a problem, as is a dataset of one class.",
)
@group_by_option
@click.option(
    "--write-grouping",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="Write the suggested grouping (groups joined where near-duplicates link "
    "them) to FILE as a CSV of id,group; use it with --group-file FILE --group-by group.",
)
@click.option(
    "--skip-near-duplicates",
    is_flag=True,
    help="Do not look for near-identical particle images "
    "(about 7-25 s per 14,000 particles on 2 cores).",
)
@_fail_cleanly
def dataset_check_command(
    path, problem, reader_options, units, k, group_by, write_grouping, skip_near_duplicates
):
    """Validate a dataset and list every problem found, one per line.

    Checks every image and mask (missing, unreadable, truncated, too large or
    too small, NaN or infinite pixels, mask shape, empty mask), class codes
    and labels, ids and paths, that the class counts allow cross-validation
    with --folds folds (at least 2 classes, each with --folds particles), and
    that every particle has the pixel size the default run's features (in
    nm) need; with --units px none is needed. Exits with code 2 if there is
    any problem.

    Then looks for near-identical particle images (rotated, flipped or
    re-noised copies; docs/commands-dataset.md), counts the pairs that cross
    the groups of --group-by (default: micrograph, where the particles have
    one) and suggests a grouping that keeps every pair in one group.

    Example: liposome-bench dataset check my-export
    """
    from liposome_bench.dataset import inspect_dataset
    from liposome_bench.features import pixel_size_problems

    if write_grouping is not None and skip_near_duplicates:
        raise UserError("--write-grouping needs the near-duplicate check; drop one of the two.")
    if write_grouping is not None:
        from liposome_bench.outputs import check_apart, check_output_file

        check_output_file(write_grouping, "--write-grouping")
        check_apart(
            write_grouping, _inputs_of(path, problem, None, reader_options), "--write-grouping"
        )
    with _live_reporter() as reporter:
        dataset, problems = inspect_dataset(
            path, problem, reporter=reporter, folds=k, **reader_options
        )
        if dataset is not None:
            problems = pixel_size_problems(dataset, _settings.SVMSettings(units=units))
        report = None
        if not problems and not skip_near_duplicates:
            from liposome_bench.duplicates import check_duplicates

            report = check_duplicates(dataset, group_by, reporter=reporter)
    for line in problems:
        click.echo(line)
    if problems:
        raise UserError(f"{len(problems)} problem(s) found in {path}.")
    click.echo(f"OK: {len(dataset)} particles ({dataset.problem.name}), no problems found.")
    for warning in dataset.warnings:
        click.echo(f"Warning: {warning}")
    if report is not None:
        _echo_duplicates(report, dataset, write_grouping)


def _echo_duplicates(report, dataset, write_grouping) -> None:
    """The near-duplicate lines of ``dataset check``."""
    from liposome_bench.duplicates import write_grouping as write_grouping_file

    if not report.pairs:
        click.echo("Near-duplicates: none found.")
        if write_grouping is not None:
            click.echo(f"No grouping to suggest; {write_grouping} not written.")
        return
    ids = dataset.ids
    shown = ", ".join(f"{ids[p.a]}~{ids[p.b]}" for p in report.pairs[:5])
    more = f" and {len(report.pairs) - 5} more" if len(report.pairs) > 5 else ""
    line = f"Warning: {len(report.pairs)} near-duplicate pair(s) ({shown}{more})"
    if report.group_by is None:
        click.echo(
            f"{line}. The particles have no group key: pass --group-by KEY to count the "
            "pairs that cross groups."
        )
        return
    click.echo(
        f"{line}; {report.cross_group} cross {report.group_by} groups, so grouped folds "
        "can put one copy in a test fold and the other in its training folds."
    )
    if not report.cross_group:
        return
    how = (
        f"written to {write_grouping}; use it with --group-file {write_grouping}"
        if write_grouping is not None
        else "write it with --write-grouping FILE, then pass --group-file FILE"
    )
    click.echo(
        f"Suggested grouping: {report.n_suggested_groups} groups instead of "
        f"{report.n_groups} ({report.group_by} groups joined where a pair links them), "
        f"which keeps every pair in one group; {how} --group-by group."
    )
    if write_grouping is not None:
        write_grouping_file(write_grouping, report)


# --- dataset import (importers) ------------------------------------------------


@dataset_group.group("import")
def import_group():
    """Make a particle dataset from annotated micrographs.

    Cuts one crop per particle (its bounding box plus --surround px each
    side) with its own mask, from COCO annotations (CVAT, Roboflow,
    Labelbox) or instance label images (ilastik, Cellpose, CellProfiler),
    and writes the lab export layout every command reads. Each particle
    records its micrograph (for --group-by micrograph) and its box in it.
    docs/data-formats.md ("From micrographs") describes both inputs.

    Example: liposome-bench dataset import coco ann.json --images mics --out ds
    """


def import_options(func):
    """--out, --surround, --drop-edge, --pixel-size and --group-pattern of both imports."""
    func = click.option(
        "--group-pattern",
        default=None,
        metavar="REGEX",
        help="Regular expression whose first group in the micrograph's file name is the "
        "particle's group (for --group-by group). Roboflow: '^(.*)_(?:jpg|png)\\.rf\\.'; "
        "CVAT frames: '^(.*)_frame_\\d+'.",
    )(func)
    func = click.option(
        "--pixel-size",
        "pixel_size_nm",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="nm/px of micrographs whose TIFF or MRC metadata gives none.",
    )(func)
    func = click.option(
        "--drop-edge",
        is_flag=True,
        help="Drop particles cut by the micrograph's edge (counted in the summary). "
        "Default: keep them, flagged EdgeCut in particles.json.",
    )(func)
    func = click.option(
        "--surround",
        type=click.IntRange(min=0),
        default=50,
        show_default=True,
        help="Pixels of micrograph kept around each particle's bounding box "
        "(thesis section 3: 50), less where the micrograph ends.",
    )(func)
    return out_option(None, "Export folder to write (must not exist, or be empty).", required=True)(
        func
    )


@import_group.command("coco")
@click.argument(
    "annotations", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False)
)
@click.option(
    "--images",
    "images_dir",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="Folder of the micrographs; the annotations' file_name is relative to it. "
    "With several COCO files, once per file in the same order, or once for all. "
    "Default: each COCO file's own folder.",
)
@click.option(
    "--classes",
    default=None,
    metavar="NAME=CODE[,...]",
    help="Category names to lab export codes (3, 4, 5 lamellarity; 7, 8, 10 "
    "encapsulation) or to class names, e.g. uni=3,multi=4,unsure=5. "
    "Default: the category names are the classes.",
)
@click.option(
    "--box-masks",
    type=click.Choice(["box", "ellipse"]),
    default=None,
    help="Mask of an annotation with only a box: the box itself, or the ellipse "
    "inscribed in it. Without it, box-only annotations are refused.",
)
@import_options
@_fail_cleanly
def import_coco_command(
    annotations,
    images_dir,
    classes,
    box_masks,
    out,
    surround,
    drop_edge,
    pixel_size_nm,
    group_pattern,
):
    """Import particles annotated in a COCO JSON file (polygons, RLE, boxes).

    Every inconsistent annotation (category not in categories, empty
    polygon, missing image, annotation outside its image) is listed, one
    per line, and nothing is written.

    Several files (a Roboflow export's train, valid and test) make one
    dataset; each particle records its file and split (Split in
    particles.json), and ids are prefixed with the split to stay unique.

    \b
    Example: liposome-bench dataset import coco ann.json --images mics --out ds
    Example: liposome-bench dataset import coco train/_annotations.coco.json valid/_annotations.coco.json --out ds
    """
    from liposome_bench.importers import import_coco

    if len(annotations) == 1:
        annotations = annotations[0]
    images_dir = (
        None if not images_dir else images_dir[0] if len(images_dir) == 1 else list(images_dir)
    )
    _run_import(
        import_coco,
        annotations,
        images_dir,
        out,
        surround=surround,
        classes=classes,
        box_masks=box_masks,
        drop_edge=drop_edge,
        pixel_size_nm=pixel_size_nm,
        group_pattern=group_pattern,
    )


@import_group.command("labels")
@click.option(
    "--images",
    "images_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Folder of the micrographs (TIFF, PNG, JPEG, BMP or MRC).",
)
@click.option(
    "--labels",
    "labels_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Folder of the label images: same name as the micrograph (or ending "
    "in _masks, _labels...), 8/16/32-bit TIFF or PNG, 0 = background.",
)
@click.option(
    "--classes",
    "classes_csv",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="CSV with columns micrograph, label, class: one row per particle.",
)
@import_options
@_fail_cleanly
def import_labels_command(
    images_dir, labels_dir, classes_csv, out, surround, drop_edge, pixel_size_nm, group_pattern
):
    """Import particles from instance label images and a table of classes.

    Each nonzero value of a micrograph's label image is one particle; the
    CSV gives its class. A label without a row, a row without its label, a
    missing label image or a size mismatch is listed, and nothing is written.

    \b
    Example: liposome-bench dataset import labels --images mics --labels seg --classes classes.csv --out ds
    """
    from liposome_bench.importers import import_labels

    _run_import(
        import_labels,
        images_dir,
        labels_dir,
        classes_csv,
        out,
        surround=surround,
        drop_edge=drop_edge,
        pixel_size_nm=pixel_size_nm,
        group_pattern=group_pattern,
    )


@import_group.command("star")
@click.argument("star", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--images",
    "images_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Folder of the micrographs; rlnMicrographName is relative to it (else its "
    "base name is looked up there).",
)
@click.option(
    "--diameter",
    "diameter_px",
    required=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Particle diameter in px: each picked coordinate gets a disk mask this wide.",
)
@click.option(
    "--classes",
    default=None,
    metavar="NUMBER=CODE[,...]",
    help="rlnClassNumber values to lab export codes or class names, e.g. "
    "1=unilamellar,2=multilamellar. Default: the numbers are the classes.",
)
@import_options
@_fail_cleanly
def import_star_command(
    star, images_dir, diameter_px, classes, out, surround, drop_edge, pixel_size_nm, group_pattern
):
    """Import particles picked in RELION (a particles STAR file).

    Each row (rlnMicrographName, rlnCoordinateX/Y, rlnClassNumber) is one
    particle with a disk mask of --diameter px. The pixel size comes from the
    micrograph's metadata, else the optics table's rlnMicrographPixelSize,
    else --pixel-size.

    \b
    Example: liposome-bench dataset import star particles.star --images mics --diameter 60 --out ds
    """
    from liposome_bench.importers import import_star

    _run_import(
        import_star,
        star,
        images_dir,
        out,
        diameter_px=diameter_px,
        surround=surround,
        classes=classes,
        drop_edge=drop_edge,
        pixel_size_nm=pixel_size_nm,
        group_pattern=group_pattern,
    )


def _run_import(function, *args, **kwargs):
    from liposome_bench.importers import ImportProblems

    try:
        with _live_reporter() as reporter:
            result = function(*args, reporter=reporter, **kwargs)
    except ImportProblems as exc:
        for line in exc.problems:
            click.echo(line)
        raise UserError(f"{len(exc.problems)} problem(s) found; nothing was written.") from None
    _display().print_import(result)


# --- features (features) ----------------------------------------------------


@cli.command("features")
@problem_option(required=False)
@data_option
@reader_options
@cache_option
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Feature table to write: .parquet or .csv (chosen by the extension).",
)
@click.option(
    "--feature-set",
    type=click.Choice(_settings.FEATURE_SETS),
    default="vironova",
    show_default=True,
    help="The lab's SVM inputs (area, circularity, moments, edge density "
    "profile, histogram; thesis section 4.1) or every feature.",
)
@click.option(
    "--source",
    type=click.Choice(_settings.FEATURE_SOURCES),
    default="computed",
    show_default=True,
    help="Compute features from the images, or use those stored in the lab export.",
)
@units_option()
@folds_option
@fold_seed_option
@group_by_option
@jobs_option
@_fail_cleanly
def features_command(
    problem,
    data,
    reader_options,
    cache_dir,
    out,
    feature_set,
    source,
    units,
    k,
    fold_seed,
    group_by,
    jobs,
):
    """Write the handcrafted features of every particle to a table.

    One row per particle: id, label, fold (of the dataset's stored folds)
    and the feature columns; docs/features.md defines every column. The
    file is written whole or not at all.

    Example: liposome-bench features --problem lamellarity --out features.parquet
    """
    from liposome_bench.sources import resolve_dataset
    from liposome_bench.features import check_table_path, write_feature_table
    from liposome_bench.folds import load_or_make_folds
    from liposome_bench.outputs import check_apart, check_output_file

    _settings.check_seed(fold_seed, "--fold-seed")
    out = check_output_file(check_table_path(out))
    check_apart(out, _inputs_of(data, problem, cache_dir, reader_options))
    _settings.SVMSettings(feature_set=feature_set, source=source, units=units)  # fail early
    with _live_reporter() as reporter:
        dataset = resolve_dataset(
            data, problem, cache_dir=cache_dir, reporter=reporter, **reader_options
        )
        folds = load_or_make_folds(
            dataset, k=k, seed=fold_seed, group_by=group_by, reporter=reporter
        )
        table = write_feature_table(
            dataset,
            folds,
            out,
            feature_set=feature_set,
            source=source,
            reporter=reporter,
            jobs=jobs,
            units=units,
        )
    click.echo(
        f"Wrote {len(table)} particles x {table.shape[1] - 3} features "
        f"({feature_set}, {source}{', in px' if units == 'px' else ''}) to {out}."
    )


# --- svm (svm) --------------------------------------------------------------


@cli.command("svm")
@problem_option(required=False)
@data_option
@reader_options
@cache_option
@settings_options(
    _settings.SVMSettings,
    unset={
        "feature_set": "Default: vironova for lamellarity and encapsulation, all for a custom "
        "problem."
    },
)
@folds_option
@fold_seed_option
@group_by_option
@jobs_option
@seed_option
@out_option(None, "Results folder. Default: results/svm-<problem>.")
@wait_option
@_fail_cleanly
def svm_command(
    problem,
    data,
    reader_options,
    cache_dir,
    k,
    fold_seed,
    group_by,
    jobs,
    seed,
    out,
    wait,
    **settings,
):
    """Cross-validate the lab's LIBSVM baseline on handcrafted features.

    C-SVC with an RBF kernel (one-vs-one), class weights inversely
    proportional to the training classes' frequencies, features scaled to
    [-1, 1] on the training folds, C and gamma chosen by grid search on the
    training folds only (macro F1). Prints per-class metrics and the
    fold-averaged normalised confusion matrix; writes predictions, decision
    values, chosen C and gamma, timings and LIBSVM model files to --out.
    Re-running the same command resumes at the first unfinished fold.

    Example: liposome-bench svm --problem lamellarity --jobs 2
    """
    from rich.console import Console

    from liposome_bench.display import fold_table, print_model_summary
    from liposome_bench.metrics import summarise_folds
    from liposome_bench.prepare import prepare_run
    from liposome_bench.svm import check_svm_options, default_feature_set

    spec = _registry.baseline()
    name = spec.names[0]
    feature_set = settings.pop("feature_set")
    svm_settings = _settings.SVMSettings(feature_set=feature_set or "vironova", **settings)
    check_svm_options(jobs=jobs)
    _settings.check_seed(seed, "--seed")
    _settings.check_seed(fold_seed, "--fold-seed")
    with _live_reporter() as reporter:
        run = prepare_run(
            data,
            problem,
            out=out,
            default_out=lambda dataset: f"results/{name}-{dataset.problem.name}",
            cache_dir=cache_dir,
            reader_options=reader_options,
            k=k,
            fold_seed=fold_seed,
            group_by=group_by,
            reporter=reporter,
        )
        dataset, results = run.dataset, run.results
        if feature_set is None:
            svm_settings = svm_settings.replace(feature_set=default_feature_set(dataset.problem))
        with run.session(wait=wait, reporter=reporter, command=_command_line()):
            fold_results = spec.run_cv(
                dataset,
                run.folds,
                results,
                svm_settings,
                name=name,
                seed=seed,
                jobs=jobs,
                reporter=reporter,
                inputs=None,
            )
    console = Console()
    print_model_summary(
        console, "SVM (LIBSVM C-SVC, RBF)", summarise_folds(fold_results, dataset.problem.classes)
    )
    console.print(
        fold_table(
            fold_results,
            ("C", "gamma", "grid_score"),
            ("grid_s", "fit_s", "predict_s"),
            title="SVM: folds",
        )
    )
    console.print(f"Results in {results.path / name}", soft_wrap=True)
    console.print(
        "  fold-<i>.csv: predictions and decision values; fold-<i>.json: C, gamma, "
        "timings; models/: LIBSVM model files for svm-predict (docs/svm.md).",
        soft_wrap=True,
    )


# --- cnn (cnn) --------------------------------------------------------------


@cli.command("cnn")
@problem_option(required=False)
@data_option
@reader_options
@cache_option
@settings_options(_settings.CNNSettings)
@folds_option
@fold_seed_option
@group_by_option
@seed_option
@out_option(None, "Results folder. Default: results/cnn-<problem>.")
@wait_option
@_fail_cleanly
def cnn_command(
    problem, data, reader_options, cache_dir, k, fold_seed, group_by, seed, out, wait, **settings
):
    """Cross-validate a LipNet CNN on the particle images.

    Trains on the same stored folds as `svm`: each fold's training folds are
    split into a fit part and a stratified validation part for early
    stopping; the fit part is class-balanced and augmented on the fly; the
    test fold gets class probabilities. Prints per-class metrics and the
    fold-averaged normalised confusion matrix; writes predictions,
    probabilities, training curves, timings and .keras models to --out.
    Re-running the same command resumes at the first unfinished fold.

    Example: liposome-bench cnn --problem lamellarity --model lipnet-4
    """
    from rich.console import Console

    from liposome_bench.display import fold_table, print_model_summary
    from liposome_bench.metrics import summarise_folds
    from liposome_bench.prepare import prepare_run

    spec = _registry.LIPNET
    cnn_settings = _settings.CNNSettings.make(
        **{k: v for k, v in settings.items() if v is not None}
    )
    model = cnn_settings.model
    given = click.get_current_context().get_parameter_source("patience")
    if given is not None and given.name == "COMMANDLINE":
        _settings.check_patience_applies({"patience"}, cnn_settings, "--patience")
    _settings.check_seed(seed, "--seed")
    _settings.check_seed(fold_seed, "--fold-seed")
    with _live_reporter() as reporter:
        _announce_device(reporter)
        run = prepare_run(
            data,
            problem,
            out=out,
            default_out=lambda dataset: f"results/{spec.family}-{dataset.problem.name}",
            cache_dir=cache_dir,
            reader_options=reader_options,
            k=k,
            fold_seed=fold_seed,
            group_by=group_by,
            reporter=reporter,
        )
        dataset, results = run.dataset, run.results
        with run.session(wait=wait, reporter=reporter, command=_command_line()):
            fold_results = spec.run_cv(
                dataset,
                run.folds,
                results,
                cnn_settings,
                name=model,
                seed=seed,
                jobs=1,
                reporter=reporter,
                inputs=None,
            )
    console = Console()
    print_model_summary(console, model, summarise_folds(fold_results, dataset.problem.classes))
    console.print(
        fold_table(
            fold_results,
            ("epochs", "epochs_run", "under_trained"),
            ("train_s", "predict_s"),
            title=f"{model}: folds",
        )
    )
    console.print(f"Results in {results.path / model}", soft_wrap=True)
    console.print(
        "  fold-<i>.csv: predictions and class probabilities; fold-<i>.json: best "
        "epoch, training curves, timings; models/fold-<i>.keras: the trained "
        "networks (docs/cnn.md).",
        soft_wrap=True,
    )


# --- benchmark and report (benchmark, report) -------------------------------

#: Exit status of ``report --baseline`` when a metric fell below the baseline
#: (bad input exits with 2, like every command).
EXIT_REGRESSION = 1


def _announce_device(reporter):
    """First line of cnn and benchmark: the CPU (model, AVX-512/AMX or AVX2)
    or GPU and the Keras backend the CNN will train with."""
    from liposome_bench.cnn import describe_device

    reporter.message(describe_device()[1])


def _command_line():
    """The command line as typed, when run as the liposome-bench program."""
    import os
    import shlex

    if os.path.basename(sys.argv[0]) in ("liposome-bench", "__main__.py"):
        return shlex.join(["liposome-bench", *sys.argv[1:]])
    return None


@cli.command("benchmark")
@problem_option(required=False)
@data_option
@reader_options
@cache_option
@click.option(
    "--cnn",
    "cnn",
    default=None,
    metavar="MODEL[,MODEL...]",
    help="CNN(s) or other registered models to compare with the SVM, comma-separated "
    f"({', '.join(_registry.model_names(baseline=False))}). Default: the thesis's pick "
    "(section 9), lipnet-4 for lamellarity, lipnet-2 for encapsulation.",
)
@click.option(
    "--quick",
    is_flag=True,
    help="Smoke test in under a minute: a stratified subsample of about 120 "
    "particles and 2 CNN epochs. Its results go to their own folder.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Repeat the whole k-fold with fold seeds --fold-seed, --fold-seed+1, ... "
    "into RESULTS/repeat-<r>, for run-to-run spread.",
)
@click.option(
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="TOML file of model settings: an [svm] table (every `svm` option) and "
    "[cnn] / [cnn.<model>] tables (every `cnn` option); docs/benchmark.md. "
    "The flags below override it.",
)
@settings_options(
    _settings.CNNSettings,
    ("epochs", "input_mode", "mixed_precision"),
    override=True,
    prefix="Every CNN: ",
)
@settings_options(_settings.SVMSettings, ("grid", "units"), override=True, prefix="The SVM: ")
@folds_option
@fold_seed_option
@group_by_option
@seed_option
@jobs_option
@out_option(
    None,
    "Results folder. Default: results/benchmark-<problem> "
    "(results/benchmark-<problem>-quick with --quick).",
)
@click.option(
    "--svm-features",
    default=None,
    metavar="SET[,SET...]",
    help="Run the SVM once per feature set on the same folds, e.g. vironova,all: rows "
    "svm (the first set) and svm-all, each compared with every CNN (docs/benchmark.md).",
)
@click.option(
    "--skip-near-duplicates",
    is_flag=True,
    help="Do not look for near-identical particles shared by test and training folds "
    "(about 7-25 s per 14,000 particles on 2 cores).",
)
@dask_options(
    "serial",
    "Where the (repeat, fold, model) tasks run: 'serial' in this process; 'local' a "
    "Dask cluster on this machine (one worker per GPU, else one per 4 cores); or the "
    "address of a running Dask scheduler. The results are the same (docs/benchmark.md).",
)
@wait_option
@click.option(
    "--no-estimate",
    "no_estimate",
    is_flag=True,
    default=False,
    help="Skip the time estimate printed before training (a calibration of about "
    "30 s on 2 cores; never made with --quick or under 1,000 particles).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check the data, the options and --out, print the grouping, the near-duplicate "
    "check, the task count and the time estimate (its calibration is about 30 s); train "
    "and write nothing.",
)
@_fail_cleanly
def benchmark_command(
    problem,
    data,
    reader_options,
    cache_dir,
    cnn,
    quick,
    repeats,
    config,
    epochs,
    input_mode,
    mixed_precision,
    grid,
    units,
    k,
    fold_seed,
    group_by,
    seed,
    jobs,
    out,
    svm_features,
    skip_near_duplicates,
    scheduler,
    workers,
    connect_timeout,
    wait,
    no_estimate,
    dry_run,
):
    """Compare the LIBSVM baseline with LipNet CNN(s) on identical folds.

    Runs the SVM and each CNN on the dataset's stored stratified folds
    (grouped by micrograph by default; --group-by KEY, --no-group), then prints, per class,
    TPR / TNR / PPV / NPV / F1 of every model side by side (mean ± std over
    folds, 95 % bootstrap interval over particles), macro F1, balanced
    accuracy and MCC, each model's fold-averaged normalised confusion
    matrix, and the verdict: per class F1 and macro F1 of each CNN minus the
    SVM over the paired fold scores of all --repeats x --folds, by the
    corrected resampled t-test (Nadeau & Bengio 2003), Holm-adjusted; a *
    marks only differences significant after that; accuracy and McNemar's
    test are secondary lines (docs/benchmark.md). Writes summary.json and
    predictions.csv to --out.
    Serially, the SVM (--jobs workers) runs in a thread beside the CNN: with
    a GPU on the CPU cores, on a CPU-only machine of two cores or more on
    the CPU time the CNN's training leaves idle; on one core they run one
    after the other. On Dask (--scheduler local or tcp://HOST:PORT) every (repeat,
    fold, model) is one task, as in `sweep`. Re-running the same command
    resumes at the first unfinished fold. --dry-run says how long it will
    take on this machine before anything is spent.

    Example: liposome-bench benchmark --problem lamellarity
    """
    from rich.console import Console

    from liposome_bench.comparison import plan_text, run_benchmark
    from liposome_bench.display import print_benchmark

    cnn_models = [m.strip() for m in cnn.split(",") if m.strip()] if cnn else None
    with _live_reporter() as reporter:
        if cnn_models is None or cnn_models:
            _announce_device(reporter)
        summary = run_benchmark(
            problem,
            data,
            cnn_models=cnn_models,
            out=out,
            quick=quick,
            repeats=repeats,
            k=k,
            fold_seed=fold_seed,
            group_by=group_by,
            seed=seed,
            jobs=jobs,
            cache_dir=cache_dir,
            reader_options=reader_options,
            config=config,
            svm_options={"grid": grid, "units": units},
            cnn_options={
                "epochs": epochs,
                "input_mode": input_mode,
                "mixed_precision": mixed_precision,
            },
            reporter=reporter,
            command=_command_line(),
            wait=wait,
            estimate=not no_estimate,
            near_duplicates=not skip_near_duplicates,
            svm_features=[f.strip() for f in svm_features.split(",")] if svm_features else None,
            scheduler=scheduler,
            n_workers=workers,
            connect_timeout=connect_timeout,
            dry_run=dry_run,
        )
    if summary.get("dry_run"):
        click.echo(plan_text(summary))
        return
    console = Console()
    print_benchmark(summary, console)
    where = summary["settings"]["out"]
    click.echo(
        f"Results in {where}: summary.json, predictions.csv, one folder per model. "
        f"Wall time {summary['timings']['total_s']:.0f} s"
        + (
            f" (training: {summary['timings']['total_s'] - guess.get('done_at_s', 0):.0f} s, "
            f"estimated {_seconds_range(guess['low_s'], guess['high_s'])}). "
            if (guess := summary["timings"].get("estimate"))
            else ". "
        )
        + f"Markdown report: liposome-bench report {where}"
    )


@cli.command("report")
@click.argument("results", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Markdown file to write; its PNG plots go to <name>-figures/ beside it. "
    "Default: RESULTS/report.md.",
)
@click.option(
    "--baseline",
    type=click.Path(dir_okay=False),
    default=None,
    help="Regression gate: compare every per-class and overall metric of every "
    "model with this baseline file and exit with status 1 if any fell by more "
    "than the tolerance.",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=0.02,
    show_default=True,
    help="Absolute drop allowed below the baseline, where the baseline file's "
    '"overrides" do not set one.',
)
@click.option(
    "--write-baseline",
    "write_baseline_to",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a baseline file from RESULTS (for a later --baseline).",
)
@click.option(
    "--gallery-size",
    type=click.IntRange(min=0),
    default=16,
    show_default=True,
    help="Particles per gallery (each model's errors per confusion cell, the SVM-CNN "
    "disagreements, the least confident correct predictions of rare classes); 0 "
    "leaves the galleries out.",
)
@click.option(
    "--filters",
    is_flag=True,
    help="Also draw each CNN fold's first-layer filters and the activation maps of "
    "each convolutional block for one particle per class.",
)
@click.option(
    "--data",
    type=click.Path(exists=True),
    default=None,
    help="The dataset the results were run on, if it is no longer where run.json "
    "recorded it (the galleries draw its particles).",
)
@_fail_cleanly
def report_command(
    results, out, baseline, tolerance, write_baseline_to, gallery_size, filters, data
):
    """Write a markdown report with plots from a results folder.

    Reads saved results only (nothing is retrained): dataset summary, the
    protocol run, side-by-side metric tables with intervals and the paired
    test, confusion matrices, per-class metric bars, confusion heatmaps, CNN
    training curves, galleries of the particles each model got wrong (with
    Grad-CAM saliency beside each CNN input) and the command that reproduces
    the run. With
    --baseline it is also a regression gate: it prints what moved and exits
    with status 1 naming each metric that fell by more than the tolerance
    (status 2 is bad input).

    Example: liposome-bench report results/benchmark-lamellarity
    """
    from pathlib import Path

    from rich.console import Console

    from liposome_bench.outputs import (
        check_apart,
        check_in_results,
        check_output_dir,
        check_output_file,
        writing,
    )
    from liposome_bench.report import (
        compare_to_baseline,
        read_baseline,
        render_report,
        write_baseline,
    )

    # Before any work: no output is an input. Inside RESULTS a report may be
    # new or replace an earlier report (.md, <name>-figures/), never a file
    # of the run.
    report_path = Path(out) if out is not None else Path(results) / "report.md"
    inputs = {"--baseline": baseline, "--data": data}
    check_in_results(report_path, results, own=(".md",))
    check_in_results(report_path.parent / f"{report_path.stem}-figures", results, own=("-figures",))
    check_apart(report_path, inputs)
    if write_baseline_to:
        check_in_results(write_baseline_to, results, "--write-baseline")
        check_apart(write_baseline_to, {**inputs, "--out": report_path}, "--write-baseline")
    if _report_curve(results, out, baseline, write_baseline_to) or _report_sweep(
        results, out, baseline, write_baseline_to
    ):
        return
    if baseline is not None:
        read_baseline(baseline)  # a bad baseline fails before any work
    check_output_file(report_path)
    check_output_dir(report_path.parent / f"{report_path.stem}-figures")
    if write_baseline_to:
        check_output_file(write_baseline_to, "--write-baseline")
    with writing(report_path):
        path = render_report(
            results, report_path, gallery_size=gallery_size, filters=filters, data=data
        )
    click.echo(f"Report written to {path} (plots in {path.parent / (path.stem + '-figures')}).")
    if write_baseline_to:
        with writing(write_baseline_to, "--write-baseline"):
            written = write_baseline(results, write_baseline_to)
        click.echo(f"Baseline written to {written}.")
    if baseline is None:
        return
    changes = compare_to_baseline(results, baseline, tolerance)
    _display().print_baseline_changes(Console(), changes, baseline)
    regressions = [c for c in changes if c.regressed]
    if regressions:
        for c in regressions:
            click.echo(f"Regression: {c.describe()}", err=True)
        click.echo(
            f"{len(regressions)} metric(s) fell by more than the tolerance below {baseline}.",
            err=True,
        )
        sys.exit(EXIT_REGRESSION)
    click.echo(
        f"No metric fell by more than its tolerance below {baseline} ({len(changes)} checked)."
    )


@cli.command("show")
@click.argument("particle_id", metavar="ID")
@click.option(
    "--results",
    "results",
    type=click.Path(exists=True, file_okay=False),
    required=True,
    help="A results folder (the --out of benchmark, svm or cnn).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Folder for the image particle-<ID>.png.",
)
@click.option(
    "--data",
    type=click.Path(exists=True),
    default=None,
    help="The dataset the results were run on, if it is no longer where run.json recorded it.",
)
@_fail_cleanly
def show_command(particle_id, results, out, data):
    """Show one particle across models: why was it called what it was called?

    Prints the particle's true class and, for every model, its test fold,
    predicted class, confidence (a CNN's probability, the SVM's margin) and
    scores; writes particle-<ID>.png: the particle with its mask, each
    model's view of it, and the Grad-CAM saliency map of each CNN's
    prediction (computed with the network of the particle's test fold).

    Example: liposome-bench show 540017 --results results/benchmark-lamellarity
    """
    from rich.console import Console

    from liposome_bench.gallery import show_particle

    report = show_particle(results, particle_id, out, data=data)
    _display().print_particle_report(Console(), report)
    if report.note:
        click.echo(f"Note: {report.note}")
    if report.image is not None:
        click.echo(f"Image written to {report.image} (particles read from {report.source}).")


# --- train, predict, export (deploy, export) ------------------------------------


@cli.command("train")
@click.option(
    "--model",
    "model",
    required=True,
    type=ModelChoice(),
    help="The model to train: "
    + "; ".join(f"{', '.join(s.names)} ({s.description})" for s in _registry.families())
    + ".",
)
@click.option(
    "--from-results",
    "from_results",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="A finished benchmark, svm or cnn results folder: its settings, dataset "
    "and cross-validation are used (no new cross-validation).",
)
@problem_option(required=False)
@data_option
@reader_options
@cache_option
@click.option(
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="TOML settings file ([svm], [cnn], [cnn.<model>] tables), as for benchmark.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Maximum epochs per cross-validation fold (CNN; overrides --config).",
)
@click.option(
    "--input-mode",
    type=click.Choice(_settings.INPUT_MODES),
    default=None,
    help="CNN input mode (overrides --config).",
)
@click.option(
    "--input-size",
    type=click.IntRange(min=4),
    default=None,
    help="CNN input side in px (overrides --config).",
)
@click.option(
    "--grid",
    type=click.Choice(_settings.GRID_NAMES),
    default=None,
    help="The SVM's C/gamma grid (overrides --config).",
)
@click.option(
    "--feature-set",
    type=click.Choice(_settings.FEATURE_SETS),
    default=None,
    help="The SVM's feature set (overrides --config).",
)
@click.option(
    "--cv-out",
    type=click.Path(file_okay=False),
    default=None,
    help="Results folder of the cross-validation run first (without "
    "--from-results). Default: MODEL_DIR-cv.",
)
@folds_option
@fold_seed_option
@seed_option
@jobs_option
@out_option(None, "The model bundle folder to write (a bundle there is replaced).", required=True)
@_fail_cleanly
def train_command(
    model,
    from_results,
    problem,
    data,
    reader_options,
    cache_dir,
    config,
    epochs,
    input_mode,
    input_size,
    grid,
    feature_set,
    cv_out,
    k,
    fold_seed,
    seed,
    jobs,
    out,
):
    """Train one final model on all particles and write a model bundle.

    Hyperparameters come from cross-validation on the same data only: the
    SVM's C and gamma from the grid search on all particles, the CNN's epoch
    count from the median best epoch of the folds' early stopping. With
    --from-results the finished run's settings, dataset and out-of-fold
    predictions are used; otherwise the cross-validation runs first (into
    --cv-out). The bundle holds the model (.keras, or LIBSVM .model + .range),
    the model card model.json and the out-of-fold predictions that
    `predict --target-precision` uses (docs/deploy.md).

    \b
    Example: liposome-bench train --from-results results/benchmark-lamellarity --model lipnet-4 --out m
    """
    from liposome_bench.deploy import train_from_results, train_model

    with _live_reporter() as reporter:
        if from_results is not None:
            given = {
                "--config": config,
                "--epochs": epochs,
                "--input-mode": input_mode,
                "--input-size": input_size,
                "--grid": grid,
                "--feature-set": feature_set,
                "--cv-out": cv_out,
            }
            clash = [name for name, value in given.items() if value is not None]
            if clash:
                raise UserError(
                    f"{clash[0]} cannot be combined with --from-results: the "
                    "run's settings are used. Drop it, or train without "
                    "--from-results."
                )
            card = train_from_results(
                from_results,
                model,
                out,
                data=data,
                problem=problem,
                cache_dir=cache_dir,
                reader_options=reader_options,
                jobs=jobs,
                reporter=reporter,
                command=_command_line(),
            )
        else:
            if data is None and problem is None:
                raise UserError(
                    "Give --data, --problem (the built-in dataset) or --from-results RESULTS."
                )
            # Each family takes the options it has settings for (registry.ModelSpec.settings_for).
            options = {
                "grid": grid,
                "feature_set": feature_set,
                "epochs": epochs,
                "input_mode": input_mode,
                "input_size": input_size,
            }
            card = train_model(
                model,
                out,
                data=data,
                problem=problem,
                cache_dir=cache_dir,
                reader_options=reader_options,
                config=config,
                options=options,
                folds=k,
                fold_seed=fold_seed,
                seed=seed,
                jobs=jobs,
                cv_out=cv_out,
                reporter=reporter,
                command=_command_line(),
            )
    _display().print_card(card, out)


@cli.command("predict")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--data",
    "data",
    required=True,
    type=click.Path(exists=True, dir_okay=True, file_okay=True),
    help="Particles to classify, with or without labels: a lab export (Class "
    "optional), a manifest .csv (label column optional), an .mrcs stack, a folder "
    "of class folders or a plain folder of images.",
)
@reader_options
@click.option(
    "--min-confidence",
    type=click.FloatRange(0, 1),
    default=None,
    help="Abstain where the predicted class's probability is below this.",
)
@click.option(
    "--target-precision",
    "target_precision",
    multiple=True,
    metavar="CLASS=P",
    help="Abstain on CLASS below the confidence at which its cross-validated "
    "predictions reach precision P (repeatable), e.g. uncertain=0.9.",
)
@click.option(
    "--problem",
    type=click.Choice(PROBLEM_NAMES),
    default=None,
    help="Refuse the bundle unless it was trained for this problem.",
)
@click.option(
    "--input-size",
    type=click.IntRange(min=4),
    default=None,
    help="Refuse the bundle unless its CNN takes this input size.",
)
@click.option(
    "--feature-set",
    type=click.Choice(_settings.FEATURE_SETS),
    default=None,
    help="Refuse the bundle unless its SVM uses this feature set.",
)
@click.option(
    "--group-by",
    "group_by",
    default=None,
    metavar="KEY",
    help="Also estimate each class's fraction per group of this meta key "
    "(micrograph, session, grid): raw counts, adjusted classify and count, and "
    "probabilistic adjusted count, with 95 % bootstrap intervals; written beside "
    "--out as NAME-fractions.csv.",
)
@click.option(
    "--coco-results",
    "coco_results",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE.json",
    help="Also write a COCO results file (a dataset made by `dataset import coco`): "
    "one object per classified particle with the source file's image id, the "
    "predicted class's category id, the score, bbox, RLE segmentation and the "
    "original annotation_id. Abstentions are left out. Loads with pycocotools' "
    "COCO.loadRes against the source annotations.",
)
@click.option(
    "--overlays",
    type=click.Path(file_okay=False),
    default=None,
    metavar="DIR",
    help="Also draw one PNG per micrograph (a dataset made by `dataset import`): each "
    "particle's mask outline coloured by its predicted class, abstentions dashed "
    "white with a '?'.",
)
@click.option(
    "--micrographs",
    "micrographs_dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    metavar="DIR",
    help="Folder of the micrographs for --overlays (default: the folder recorded at import).",
)
@jobs_option
@out_option("predictions.csv", "CSV file to write.")
@_fail_cleanly
def predict_command(
    model_dir,
    data,
    reader_options,
    min_confidence,
    target_precision,
    problem,
    input_size,
    feature_set,
    group_by,
    coco_results,
    overlays,
    micrographs_dir,
    jobs,
    out,
):
    """Classify particles with a model bundle, abstaining when unsure.

    Writes one row per particle: id, (label,) predicted class, the
    probability of each class, the confidence (probability of the predicted
    class) and abstained. When the particles have labels, prints the
    per-class metrics of the predictions (all, and those kept).

    \b
    Example: liposome-bench predict m --data new-particles --target-precision uncertain=0.9 --out p.csv
    Example: liposome-bench predict m --data ds --coco-results p.json --overlays overlays --out p.csv
    """
    from pathlib import Path

    from liposome_bench.deploy import predict, write_predictions
    from liposome_bench.outputs import check_apart
    from liposome_bench.placement import prepare_placement, write_placement

    if micrographs_dir is not None and overlays is None:
        raise UserError("--micrographs is the folder for --overlays; pass --overlays DIR too.")
    inputs = {"the model bundle": model_dir, "the data": data}
    for option, path in (("--coco-results", coco_results), ("--overlays", overlays)):
        if path is not None:
            check_apart(path, inputs, option)
    if group_by:  # the fractions table goes beside --out
        check_apart(
            Path(out).with_name(f"{Path(out).stem}-fractions.csv"),
            inputs,
        )
    with _live_reporter() as reporter:
        result = predict(
            model_dir,
            data,
            min_confidence=min_confidence,
            target_precision=target_precision,
            problem=problem,
            input_size=input_size,
            feature_set=feature_set,
            reader_options=reader_options,
            jobs=jobs,
            reporter=reporter,
            out=out,
        )
        # What the extra outputs need is checked before anything is written.
        placement = prepare_placement(
            result, coco_results=coco_results, overlays=overlays, micrographs_dir=micrographs_dir
        )
        path = write_predictions(result, out)
        fractions = fractions_path = None
        if group_by:
            from liposome_bench.deploy import group_fractions, write_fractions

            fractions = group_fractions(result, model_dir, group_by)
            fractions_path = write_fractions(
                fractions, path.with_name(f"{path.stem}-fractions.csv")
            )
        placed = write_placement(placement)
    _display().print_predictions(result, path)
    if fractions is not None:
        _display().print_fractions(fractions, group_by, fractions_path)
    if "coco_results" in placed:
        written, n = placed["coco_results"]
        click.echo(
            f"COCO results written to {written} ({n} particles; "
            f"{placement.abstained} abstention(s) left out)."
        )
    if "overlays" in placed:
        click.echo(f"{len(placed['overlays'])} overlay(s) drawn in {overlays}.")


@cli.command("export")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(_registry.export_formats()),
    default=_registry.export_formats()[0],
    show_default=True,
    help="Export format: an ONNX file, or (a CNN) a bioimage.io model package.",
)
@click.option(
    "--data",
    type=click.Path(exists=True),
    default=None,
    help="bioimageio: particles for the package's test input (the first 4); default "
    "the bundle's training data, where it still is.",
)
@click.option(
    "--author",
    default=None,
    help="bioimageio: the package's author (default: your login name).",
)
@click.option(
    "--license",
    "license_",
    default="MIT",
    show_default=True,
    help="bioimageio: SPDX license identifier of the package.",
)
@out_option(
    None,
    "File to write, e.g. model.onnx; for bioimageio a new folder, or a .zip file.",
    required=True,
)
@_fail_cleanly
def export_command(model_dir, fmt, data, author, license_, out):
    """Export a model bundle to ONNX for other software (C#, C++, ...), or a
    CNN bundle as a bioimage.io model package.

    A CNN becomes its network with softmax output: input "image", float32
    (batch, size, size, 1), prepared as the model card's input.preprocessing
    says. The SVM becomes its svm-scale scaling, the RBF one-vs-one decision
    values, LIBSVM's vote and the calibrated probabilities, in float64:
    input "features" (batch, n_features) in the card's feature order.
    docs/deploy.md shows how to run it from C#.

    --format bioimageio writes rdf.yaml (format 0.5), ONNX and Keras weights,
    a test input and output, the cross-validated per-class evaluation, the
    license, the citation and a README; it is validated with bioimageio.spec
    and the ONNX weights must reproduce liposome-bench's probabilities.

    \b
    Example: liposome-bench export m --format onnx --out m.onnx
    Example: liposome-bench export m --format bioimageio --out m-bioimageio.zip
    """
    if fmt == "bioimageio":
        from liposome_bench.bioimage_package import export_bioimageio

        done = export_bioimageio(model_dir, out, data=data, author=author, license=license_)
        click.echo(
            f"bioimage.io package written to {done['path']} (bioimageio.spec: "
            f"{done['status']}; ONNX within {done['max_difference']:.1e} of predict)."
        )
        return
    if data is not None or author is not None or license_ != "MIT":
        raise UserError("--data, --author and --license are for --format bioimageio.")
    from liposome_bench.export import export_onnx

    path = export_onnx(model_dir, out)
    click.echo(f"ONNX model written to {path}.")


# --- sweep ------------------------------------------------------------------


def _report_sweep(results, out, baseline, write_baseline_to) -> bool:
    """``report`` on a sweep folder: the sweep's report (True), else False."""
    from liposome_bench.sweep import is_sweep_folder, render_sweep_report

    if not is_sweep_folder(results):
        return False
    if baseline is not None or write_baseline_to is not None:
        raise UserError(
            f"{results} is a sweep folder; --baseline and --write-baseline work "
            "on a benchmark results folder (or one cell: RESULTS/cells/<cell>)."
        )
    path = render_sweep_report(results, out)
    click.echo(f"Report written to {path} (figures in {path.parent / (path.stem + '-figures')}).")
    return True


@cli.command("sweep")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@problem_option(required=False)
@data_option
@reader_options
@cache_option
@out_option(None, "Sweep folder. Default: results/sweep-<problem>-<config name>.")
@dask_options()
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the cells, the task count and an estimated time; run nothing.",
)
@click.option(
    "--save-models",
    is_flag=True,
    help="Keep each fold's trained CNN (.keras) in the cell's folder.",
)
@click.option(
    "--metrics",
    default="f1",
    show_default=True,
    metavar="METRIC[,METRIC...]",
    help="Metrics of the table: per class tpr, tnr, ppv, npv, f1, f1_thesis; "
    "overall accuracy, balanced_accuracy, macro_f1, mcc.",
)
@click.option(
    "--folds",
    "k",
    type=click.IntRange(min=2),
    default=None,
    help="Number of stratified folds (default: [sweep] folds, else 5).",
)
@click.option(
    "--fold-seed",
    type=int,
    default=None,
    help="Seed of the stored fold assignment (default: [sweep] fold_seed, else 0).",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Random seed of every cell (default: [sweep] seed, else 0).",
)
@group_by_option
@click.option(
    "--wait",
    is_flag=True,
    help="If another run is writing into --out, wait for it instead of stopping.",
)
@_fail_cleanly
def sweep_command(
    config,
    problem,
    data,
    reader_options,
    cache_dir,
    out,
    scheduler,
    connect_timeout,
    workers,
    dry_run,
    save_models,
    metrics,
    k,
    fold_seed,
    seed,
    group_by,
    wait,
):
    """Run a grid of CNN (and SVM) settings on Dask, every cell on the same folds.

    CONFIG is a TOML file whose lists are axes (model = ["lipnet-2",
    "lipnet-4"], input_mode = [...], augment = [...], balance = [...]) and
    whose scalars are fixed; benchmarks/thesis_grid.toml is the thesis's grid.
    Every cell is checked before any work and named by a hash of its settings;
    each (cell, fold) is one Dask task. Re-running skips finished folds, and a
    changed CONFIG runs only its new cells. Prints per-class F1 per cell and
    paired comparisons (corrected resampled t-test, Holm); `report OUT` draws
    the figures.

    Example: liposome-bench sweep benchmarks/thesis_grid.toml --problem lamellarity --dry-run
    """
    from pathlib import Path

    from rich.console import Console

    from liposome_bench import sweep as _sweep
    from liposome_bench.metrics import CLASS_METRICS, OVERALL_METRICS
    from liposome_bench.prepare import prepare_run

    chosen = [m.strip() for m in metrics.split(",") if m.strip()]
    known = (*CLASS_METRICS, *OVERALL_METRICS)
    bad = [m for m in chosen if m not in known]
    if bad or not chosen:
        raise UserError(
            f"Unknown metric {bad[0] if bad else metrics!r} in --metrics; "
            f"expected names from {', '.join(known)}."
        )
    plan_config = _sweep.load_sweep(config)
    _sweep.check_scheduler(scheduler)
    k = k or plan_config.folds or 5
    fold_seed = fold_seed if fold_seed is not None else (plan_config.fold_seed or 0)
    seed = seed if seed is not None else (plan_config.seed or 0)
    if group_by == "auto" and plan_config.group_by:
        group_by = plan_config.group_by  # the file's [sweep] group_by, unless a flag was given
    console = Console()

    def sweep_out(dataset):
        return Path(out or f"results/sweep-{dataset.problem.name}-{Path(config).stem}")

    with _live_reporter() as reporter:
        # A dry run writes nothing: its folder is not checked, its folds not made.
        prepared = prepare_run(
            data,
            problem,
            out=None if dry_run else out,
            default_out=None if dry_run else sweep_out,
            cache_dir=cache_dir,
            reader_options=reader_options,
            inputs={"the sweep file": config},
            k=None if dry_run else k,
            fold_seed=fold_seed,
            group_by=group_by,
            reporter=reporter,
        )
        dataset, folds = prepared.dataset, prepared.folds
        out = prepared.out or sweep_out(dataset)
        if dry_run:
            reporter.close()
            _display().print_sweep_plan(
                console, plan_config, _sweep.plan_sweep(plan_config, out, k), len(dataset)
            )
            return
        source = (
            _sweep.DatasetSource(
                root=str(dataset.root) if dataset.root else None,
                problem=dataset.problem.name if dataset.problem.codes is not None else None,
                builtin=data is None,
                reader_options=reader_options,
                fingerprint=folds.fingerprint,
            )
            if dataset.root
            else None
        )
        run = _sweep.run_sweep(
            plan_config,
            dataset,
            folds,
            out,
            seed=seed,
            scheduler=scheduler,
            n_workers=workers,
            save_models=save_models,
            source=source,
            reporter=reporter,
            wait=wait,
            connect_timeout=connect_timeout,
        )
    summary = _sweep.summarise_sweep(out, metrics=chosen)
    table_csv, comparisons_csv = _sweep.write_sweep_tables(out, summary)
    _display().print_sweep_summary(console, summary, chosen)
    click.echo(
        f"Ran {len(run.ran)} task(s), {run.skipped} already finished, in "
        f"{run.seconds:.0f} s. Tables: {table_csv}, {comparisons_csv}. "
        f"Figures: liposome-bench report {out}"
    )


# --- curve ------------------------------------------------------------------


def _report_curve(results, out, baseline, write_baseline_to) -> bool:
    """``report`` on a curve folder: the curve's report (True), else False."""
    from liposome_bench.curve import is_curve_folder, render_curve_report

    if not is_curve_folder(results):
        return False
    if baseline is not None or write_baseline_to is not None:
        raise UserError(
            f"{results} is a curve folder; --baseline and --write-baseline work "
            "on a benchmark results folder."
        )
    path = render_curve_report(results, out)
    click.echo(f"Report written to {path} (figures in {path.parent / (path.stem + '-figures')}).")
    return True


@cli.command("curve")
@problem_option(required=False)
@data_option
@reader_options
@cache_option
@click.option(
    "--cnn",
    default=None,
    metavar="MODEL[,MODEL...]",
    help="CNN(s) to compare with the SVM, comma-separated. Default: the "
    "benchmark's pick (lipnet-4 for lamellarity, lipnet-2 for encapsulation).",
)
@click.option(
    "--fractions",
    default=None,
    metavar="F[,F...]",
    help="Shares of each training fold to train on, in (0, 1]. Default: 0.1,0.25,0.5,1.",
)
@click.option(
    "--per-class",
    "per_class",
    default=None,
    metavar="N[,N...]",
    help="Training particles per class instead of --fractions.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Independent subsamples per size (more paired fold scores).",
)
@click.option(
    "--quick",
    is_flag=True,
    help="Smoke run: the benchmark's ~120-particle quick subsample, sizes 0.5 "
    "and 1, 2 CNN epochs; its own folder.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Maximum epochs of every CNN (early stopping still applies).",
)
@click.option("--dry-run", is_flag=True, help="Print the tasks and an estimated time; run nothing.")
@folds_option
@fold_seed_option
@group_by_option
@seed_option
@dask_options(connect_timeout=False)
@out_option(None, "Curve folder. Default: results/curve-<problem> (-quick with --quick).")
@wait_option
@_fail_cleanly
def curve_command(
    problem,
    data,
    reader_options,
    cache_dir,
    cnn,
    fractions,
    per_class,
    repeats,
    quick,
    epochs,
    dry_run,
    k,
    fold_seed,
    group_by,
    seed,
    scheduler,
    workers,
    out,
    wait,
):
    """Learning curves: SVM and CNN(s) trained on growing shares of each
    training fold, all tested on the same test folds.

    At each size: per-class and macro F1 of each model over folds and the
    paired verdict (corrected resampled t-test, Holm). Per class: a power law
    of the error fitted per model and where the SVM's and CNN's curves cross,
    with a bootstrap interval (docs/curve.md). Each (size, repeat, model,
    fold) is one Dask task; a re-run skips finished ones. `report OUT` draws
    the curves.

    Example: liposome-bench curve --problem lamellarity --quick
    """
    from pathlib import Path

    from rich.console import Console

    from liposome_bench import curve as _curve
    from liposome_bench.comparison import DEFAULT_CNN, QUICK_PARTICLES, quick_subset
    from liposome_bench.folds import load_or_make_folds
    from liposome_bench.prepare import prepare_run
    from liposome_bench.settings import CNNSettings
    from liposome_bench.sweep import DatasetSource, check_scheduler

    check_scheduler(scheduler)
    if quick and fractions is None and per_class is None:
        fractions = ",".join(f"{f:g}" for f in _curve.QUICK_FRACTIONS)
    points = _curve.parse_points(fractions, per_class)
    console = Console()

    def curve_out(dataset):
        return Path(out or f"results/curve-{dataset.problem.name}{'-quick' if quick else ''}")

    with _live_reporter() as reporter:
        # A dry run writes nothing: its folder is not checked. The folds are
        # made below, on the --quick subsample where there is one.
        prepared = prepare_run(
            data,
            problem,
            out=None if dry_run else out,
            default_out=None if dry_run else curve_out,
            cache_dir=cache_dir,
            reader_options=reader_options,
            reporter=reporter,
        )
        dataset = prepared.dataset
        name = dataset.problem.name
        models = (
            [m.strip() for m in cnn.split(",") if m.strip()]
            if cnn
            else list(DEFAULT_CNN.get(name, ("lipnet-4",)))
        )
        settings = CNNSettings()
        if epochs or quick:
            settings = settings.replace(epochs=epochs or _curve.QUICK_EPOCHS)
        cells = _curve.model_cells(models, settings)
        if quick and len(dataset) > QUICK_PARTICLES:
            dataset = quick_subset(dataset, seed=seed)
        out = prepared.out or curve_out(dataset)
        folds = load_or_make_folds(
            dataset, k=k, seed=fold_seed, group_by=group_by, reporter=reporter
        )
        plan = _curve.plan_curve(
            folds,
            dataset.y,
            list(dataset.problem.classes),
            out,
            cells,
            points,
            repeats=repeats,
            seed=seed,
        )
        if dry_run:
            reporter.close()
            _display().print_curve_plan(console, plan, _curve.estimate_seconds(plan), len(dataset))
            return
        source = (
            DatasetSource(
                root=str(dataset.root),
                problem=name if dataset.problem.codes is not None else None,
                builtin=data is None,
                reader_options=reader_options,
                fingerprint=folds.fingerprint,
            )
            if dataset.root
            else None
        )
        run = _curve.run_curve(
            plan,
            dataset,
            folds,
            seed=seed,
            scheduler=scheduler,
            n_workers=workers,
            source=source,
            reporter=reporter,
            wait=wait,
        )
    summary = _curve.summarise_curve(out)
    _display().print_curve_summary(console, summary)
    click.echo(
        f"Ran {run.ran} task(s), {run.skipped} already finished, in "
        f"{run.seconds:.0f} s. Summary: {out / _curve.SUMMARY_JSON}. "
        f"Figures: liposome-bench report {out}"
    )


def _seconds_range(low: float, high: float) -> str:
    """``"768 s"``, or ``"600 to 900 s"`` when the estimate is a range."""
    return f"{low:.0f} s" if round(low) == round(high) else f"{low:.0f} to {high:.0f} s"


def main():
    from liposome_bench.models import quiet_tensorflow

    quiet_tensorflow()
    cli(prog_name="liposome-bench")


if __name__ == "__main__":
    main()
