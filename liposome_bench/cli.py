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
from liposome_bench import settings as _settings
from liposome_bench.errors import LiposomeBenchError

PROBLEM_NAMES = ("lamellarity", "encapsulation")


def _fail_cleanly(func):
    """Turn user mistakes into ``Error: <one line>`` and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except LiposomeBenchError as exc:
            raise UserError(str(exc)) from None
        except KeyboardInterrupt:
            click.echo(
                "Interrupted. Finished folds are saved; run the same command again to resume.",
                err=True,
            )
            sys.exit(130)

    return wrapper


class UserError(click.ClickException):
    """Printed as ``Error: <message>``; exit code 2, like click's usage errors."""

    exit_code = 2


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
        help_text += (" Picks the built-in dataset; with --data it is inferred from "
                      "the labels (other class sets are custom problems).")

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
        "--seed", type=int, default=0, show_default=True, help="Random seed."
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
        help="Seed of the stored fold assignment.",
    )(func)


def out_option(default, help_text, required=False):
    # Click 8.3+ counts an explicit default=None as a value, which would
    # satisfy required=True: pass a default only when there is one.
    defaults = {} if default is None else {"default": default, "show_default": True}

    def decorate(func):
        return click.option(
            "--out", type=click.Path(), required=required, help=help_text, **defaults
        )(func)

    return decorate


def reader_options(func):
    """Add --images-dir, --masks-dir and --pixel-size, passed to the command
    as one ``reader_options`` dict for ``resolve_dataset(..., **reader_options)``."""

    @functools.wraps(func)
    def wrapper(*args, images_dir, masks_dir, pixel_size_nm, **kwargs):
        kwargs["reader_options"] = {
            "images_dir": images_dir,
            "masks_dir": masks_dir,
            "pixel_size_nm": pixel_size_nm,
        }
        return func(*args, **kwargs)

    wrapper = click.option(
        "--pixel-size",
        "pixel_size_nm",
        type=click.FloatRange(min=0, min_open=True),
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
@click.option("--n", "n", type=click.IntRange(min=1), default=None,
              help="Number of particles, split in the thesis's class proportions "
              "(Tables 1-2). Default the thesis's size: 14169 or 24918.")
@seed_option
@out_option(None, "Folder to write the lab export into (must not exist, or be empty).",
            required=True)
@click.option("--montage", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG grid of examples per class.")
@click.option("--difficulty", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="0 easy to 1 hard: lower contrast, more blur, ice and crowding, "
              "more borderline particles and mask errors. 0.5 is calibrated so the "
              "lab's SVM gives about the thesis's Tables 7-8.")
@click.option("--label-noise", type=click.FloatRange(0, 0.9), default=0.0, show_default=True,
              help="Fraction of particles whose image shows another class than their label.")
@click.option("--dose", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Electron dose in e-/A^2 (lower is noisier).")
@click.option("--pixel-size", "pixel_size_nm", type=click.FloatRange(0.5, 5), default=1.6,
              show_default=True, help="Pixel size in nm/px, recorded in the export.")
@_fail_cleanly
def generate_command(problem, n, seed, out, montage, difficulty, label_noise, dose,
                     pixel_size_nm):
    """Generate a synthetic cryo-TEM liposome dataset as a lab export.

    Each particle is a projected lipid bilayer shell (multilamellar: 2-5
    stacked shells; full: a dark doxorubicin crystal bundle inside) imaged
    through a contrast transfer function, on vitreous ice with neighbours,
    ice crystals and shot noise. Writes particles.json, images/ (with the
    50 px surround) and masks/; docs/synthetic-data.md explains the model.

    \b
    Example: liposome-bench generate --problem encapsulation --n 3000 --seed 1 --out d
    """
    from rich.console import Console
    from rich.table import Table

    from liposome_bench.synth import THESIS_COUNTS, generate_export

    with _live_reporter() as reporter:
        dataset = generate_export(
            problem, out, n=n, seed=seed, montage=montage, difficulty=difficulty,
            label_noise=label_noise, dose=dose, pixel_size_nm=pixel_size_nm, reporter=reporter,
        )
    counts, thesis = dataset.class_counts(), THESIS_COUNTS[problem]
    table = Table(title=f"{len(dataset)} synthetic {problem} particles in {out}")
    for column in ("class", "code", "particles", "share", "thesis"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name in dataset.problem.classes:
        table.add_row(
            name, str(dataset.problem.code_of(name)), str(counts[name]),
            f"{100 * counts[name] / len(dataset):.2f}%",
            f"{100 * thesis[name] / sum(thesis.values()):.2f}%",
        )
    console = Console()
    console.print(table)
    if montage is not None:
        console.print(f"Montage: {montage}")

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
@_fail_cleanly
def dataset_info_command(path, problem, reader_options, cache_dir, as_json):
    """Show a dataset: class counts and shares (as the thesis's Tables 1-2),
    image sizes overall and per class, pixel size, masks, stored folds.

    Without PATH, describes the built-in synthetic dataset of --problem
    (generated once into the cache).

    Example: liposome-bench dataset info my-export
    """
    import json

    from liposome_bench.dataset import describe_dataset, resolve_dataset

    if path is None and problem is None:
        raise UserError(
            "Give a dataset PATH, or --problem to describe the built-in synthetic dataset."
        )
    with _live_reporter() as reporter:
        dataset = resolve_dataset(path, problem, cache_dir=cache_dir, reporter=reporter,
                                  **reader_options)
    info = describe_dataset(dataset)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        _print_dataset_info(info)


def _print_dataset_info(info):
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    say = functools.partial(console.print, soft_wrap=True)
    n = info["n_particles"]
    say(f"[bold]{escape(info['root'] or '(in memory)')}[/bold]: {escape(info['description'])}")
    say(f"Problem {info['problem']}, {n} particles, fingerprint {info['fingerprint']}")
    classes = Table(title="Classes")
    classes.add_column("Class")
    classes.add_column("Particles", justify="right")
    classes.add_column("Share", justify="right")
    # Largest class first, as in the thesis's Tables 1 and 2.
    for row in sorted(info["class_counts"], key=lambda r: -r["count"]):
        classes.add_row(row["class"], str(row["count"]), f"{row['percent']:.2f}%")
    classes.add_row("Total", str(n), "100.00%" if n else "-", style="bold")
    console.print(classes)
    sizes = Table(title="Image size (px): min / median / max")
    sizes.add_column("Class")
    sizes.add_column("Width", justify="right")
    sizes.add_column("Height", justify="right")

    def span(stats):
        return f"{stats['min']} / {stats['median']:g} / {stats['max']}"

    per_class = [(c, s) for c, s in info["image_size"]["per_class"].items()]
    for name, stats in per_class + [("All", info["image_size"]["all"])]:
        if stats is None:
            sizes.add_row(name, "-", "-")
        else:
            sizes.add_row(name, span(stats["width"]), span(stats["height"]),
                          style="bold" if name == "All" else None)
    console.print(sizes)
    px = info["pixel_size_nm"]
    if px["min"] is None:
        say("Pixel size: unknown (pass --pixel-size)")
    elif px["min"] == px["max"]:
        say(f"Pixel size: {px['min']:g} nm/px"
                      + (f"; unknown for {px['unknown']}" if px["unknown"] else ""))
    else:
        say(f"Pixel size: {px['min']:g}-{px['max']:g} nm/px, median {px['median']:g}"
                      + (f"; unknown for {px['unknown']}" if px["unknown"] else ""))
    derived = info["masks_derived"]
    say(f"Masks: {n - derived} from files, {derived} derived from the image")
    if info["folds"]:
        for f in info["folds"]:
            state = ("unreadable" if f.get("unreadable")
                     else "matches this dataset" if f["matches"] else "made for another dataset")
            say(f"Folds: {f['file']} (k={f['k']}, seed {f['seed']}): {state}")
    else:
        say("Folds: none stored yet (made and stored on first use)")
    for warning in info["warnings"]:
        say(f"Warning: {warning}", markup=False)


@dataset_group.command("check")
@click.argument("path", type=click.Path(exists=True))
@problem_option(required=False)
@reader_options
@_fail_cleanly
def dataset_check_command(path, problem, reader_options):
    """Validate a dataset and list every problem found, one per line.

    Checks every image and mask (missing, unreadable, truncated, too large,
    mask shape, empty mask), class codes and labels, ids and paths. Exits
    with code 2 if there is any problem.

    Example: liposome-bench dataset check my-export
    """
    from liposome_bench.dataset import inspect_dataset

    with _live_reporter() as reporter:
        dataset, problems = inspect_dataset(path, problem, reporter=reporter, **reader_options)
    for line in problems:
        click.echo(line)
    if problems:
        raise UserError(f"{len(problems)} problem(s) found in {path}.")
    click.echo(f"OK: {len(dataset)} particles ({dataset.problem.name}), no problems found.")
    for warning in dataset.warnings:
        click.echo(f"Warning: {warning}")


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
@folds_option
@fold_seed_option
@jobs_option
@_fail_cleanly
def features_command(problem, data, reader_options, cache_dir, out, feature_set, source, k,
                     fold_seed, jobs):
    """Write the handcrafted features of every particle to a table.

    One row per particle: id, label, fold (of the dataset's stored folds)
    and the feature columns; docs/features.md defines every column. The
    file is written whole or not at all.

    Example: liposome-bench features --problem lamellarity --out features.parquet
    """
    from liposome_bench.dataset import resolve_dataset
    from liposome_bench.features import check_table_path, write_feature_table
    from liposome_bench.folds import load_or_make_folds

    out = check_table_path(out)
    with _live_reporter() as reporter:
        dataset = resolve_dataset(data, problem, cache_dir=cache_dir, reporter=reporter,
                                  **reader_options)
        folds = load_or_make_folds(dataset, k=k, seed=fold_seed)
        table = write_feature_table(dataset, folds, out, feature_set=feature_set,
                                    source=source, reporter=reporter, jobs=jobs)
    click.echo(
        f"Wrote {len(table)} particles x {table.shape[1] - 3} features "
        f"({feature_set}, {source}) to {out}."
    )

# --- svm (svm) --------------------------------------------------------------

@cli.command("svm")
@problem_option(required=False)
@data_option
@reader_options
@cache_option
@click.option(
    "--feature-set",
    type=click.Choice(_settings.FEATURE_SETS),
    default="vironova",
    show_default=True,
    help="Features: the lab's set (area, circularity, moments, edge density "
    "profile, histogram; thesis section 4.1) or every feature.",
)
@click.option(
    "--source",
    type=click.Choice(_settings.FEATURE_SOURCES),
    default="computed",
    show_default=True,
    help="Compute features from the images, or use those stored in the lab export.",
)
@click.option(
    "--grid",
    type=click.Choice(_settings.GRID_NAMES),
    default="coarse",
    show_default=True,
    help="C/gamma grid: coarse (16 points, 3 inner folds on a 2,000-particle "
    "subsample) or full (LIBSVM grid.py's 110 points, 5 inner folds; slow).",
)
@click.option(
    "--C",
    "C",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Fix the SVM's C instead of searching it.",
)
@click.option(
    "--gamma",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Fix the RBF kernel's gamma instead of searching it.",
)
@folds_option
@fold_seed_option
@jobs_option
@seed_option
@out_option(None, "Results folder. Default: results/svm-<problem>.")
@_fail_cleanly
def svm_command(problem, data, reader_options, cache_dir, feature_set, source, grid, C,
                gamma, k, fold_seed, jobs, seed, out):
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

    from liposome_bench.dataset import resolve_dataset
    from liposome_bench.display import fold_table, print_model_summary
    from liposome_bench.folds import load_or_make_folds
    from liposome_bench.metrics import summarise_folds
    from liposome_bench.results import ResultsDir
    from liposome_bench.svm import check_svm_options, run_svm

    svm_settings = _settings.SVMSettings(feature_set=feature_set, source=source, grid=grid,
                                         C=C, gamma=gamma)
    check_svm_options(jobs=jobs)
    with _live_reporter() as reporter:
        dataset = resolve_dataset(data, problem, cache_dir=cache_dir, reporter=reporter,
                                  **reader_options)
        folds = load_or_make_folds(dataset, k=k, seed=fold_seed)
        results = ResultsDir(out or f"results/svm-{dataset.problem.name}")
        fold_results = run_svm(dataset, folds, results, svm_settings, jobs=jobs, seed=seed,
                               reporter=reporter)
    console = Console()
    print_model_summary(
        console, "SVM (LIBSVM C-SVC, RBF)", summarise_folds(fold_results, dataset.problem.classes)
    )
    console.print(fold_table(fold_results, ("C", "gamma", "grid_score"),
                             ("grid_s", "fit_s", "predict_s"), title="SVM: folds"))
    console.print(f"Results in {results.path / 'svm'}", soft_wrap=True)
    console.print(
        "  fold-<i>.csv: predictions and decision values; fold-<i>.json: C, gamma, "
        "timings; models/: LIBSVM model files for svm-predict (docs/svm.md).",
        soft_wrap=True,
    )


# --- cnn (cnn) --------------------------------------------------------------

@cli.command("cnn")
@problem_option(required=False)
@click.option(
    "--model",
    type=click.Choice(_settings.MODEL_NAMES),
    default="lipnet-4",
    show_default=True,
    help="LipNet architecture (thesis section 7; docs/models.md).",
)
@data_option
@reader_options
@cache_option
@click.option(
    "--input-mode",
    type=click.Choice(_settings.INPUT_MODES),
    default="masked",
    show_default=True,
    help="Whole image with its surround, the particle's bounding box, or the "
    "box with everything outside the mask set to background (section 8.5).",
)
@click.option(
    "--input-size",
    type=click.IntRange(min=4),
    default=None,
    help="Image side in pixels. Default: the model's (28; 32 for lipnet-6; a "
    "48 px canvas for lipnet-fcn).",
)
@click.option(
    "--augment",
    default="all",
    show_default=True,
    help="Random augmentation while training: all, none, or a comma-separated "
    "list of rotation, shear, shift, zoom, flip (section 5.5).",
)
@click.option(
    "--balance",
    type=click.Choice(_settings.BALANCE_METHODS),
    default="oversample",
    show_default=True,
    help="Class balancing of the training folds (section 4.8); test folds are "
    "never resampled.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=_settings.DEFAULT_EPOCHS,
    show_default=True,
    help="Maximum epochs per fold. An epoch is one class-balanced draw as large as "
    "the fit part (oversample, smote) or one pass over it (docs/cnn.md).",
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=_settings.DEFAULT_PATIENCE,
    show_default=True,
    help="Stop after this many epochs without a better validation loss "
    "(validation split carved from the training folds).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=_settings.DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Images per training step (section 8.1).",
)
@click.option(
    "--optimizer",
    type=click.Choice(_settings.OPTIMIZERS),
    default="adam",
    show_default=True,
    help="Adam, or SGD with Nesterov momentum (section 4.5).",
)
@click.option(
    "--learning-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Learning rate (constant). Default: 1e-3 for adam, 1e-2 for sgd.",
)
@click.option(
    "--l2",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="L2 weight decay on the dense/classifier layers (section 5.1).",
)
@click.option(
    "--mixed-precision",
    is_flag=True,
    help="Compute in float16 on a GPU (bfloat16 on a CPU); weights stay float32.",
)
@folds_option
@fold_seed_option
@seed_option
@out_option(None, "Results folder. Default: results/cnn-<problem>.")
@_fail_cleanly
def cnn_command(problem, model, data, reader_options, cache_dir, input_mode, input_size,
                augment, balance, epochs, patience, batch_size, optimizer, learning_rate,
                l2, mixed_precision, k, fold_seed, seed, out):
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

    from liposome_bench.cnn import run_cnn
    from liposome_bench.dataset import resolve_dataset
    from liposome_bench.display import fold_table, print_model_summary
    from liposome_bench.folds import load_or_make_folds
    from liposome_bench.metrics import summarise_folds
    from liposome_bench.results import ResultsDir

    cnn_settings = _settings.CNNSettings(
        model=model, input_mode=input_mode, input_size=input_size, augment=augment,
        balance=balance, epochs=epochs, patience=patience, batch_size=batch_size,
        optimizer=optimizer, learning_rate=learning_rate, l2=l2,
        mixed_precision=mixed_precision,
    )
    with _live_reporter() as reporter:
        dataset = resolve_dataset(data, problem, cache_dir=cache_dir, reporter=reporter,
                                  **reader_options)
        folds = load_or_make_folds(dataset, k=k, seed=fold_seed)
        results = ResultsDir(out or f"results/cnn-{dataset.problem.name}")
        fold_results = run_cnn(dataset, folds, results, cnn_settings, seed=seed,
                               reporter=reporter)
    console = Console()
    print_model_summary(console, model, summarise_folds(fold_results, dataset.problem.classes))
    console.print(fold_table(fold_results, ("epochs", "epochs_run"),
                             ("train_s", "predict_s"), title=f"{model}: folds"))
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
    help="CNN(s) to compare with the SVM, comma-separated (lipnet-1, lipnet-2, "
    "lipnet-4, lipnet-4c, lipnet-6, lipnet-fcn). Default: the thesis's pick "
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
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Maximum epochs of every CNN (overrides --config).")
@click.option("--input-mode", type=click.Choice(_settings.INPUT_MODES), default=None,
              help="Input mode of every CNN (overrides --config).")
@click.option("--grid", type=click.Choice(_settings.GRID_NAMES), default=None,
              help="The SVM's C/gamma grid (overrides --config).")
@folds_option
@fold_seed_option
@seed_option
@jobs_option
@out_option(None, "Results folder. Default: results/benchmark-<problem> "
            "(results/benchmark-<problem>-quick with --quick).")
@_fail_cleanly
def benchmark_command(problem, data, reader_options, cache_dir, cnn, quick, repeats, config,
                      epochs, input_mode, grid, k, fold_seed, seed, jobs, out):
    """Compare the LIBSVM baseline with LipNet CNN(s) on identical folds.

    Runs the SVM and each CNN on the dataset's stored stratified folds,
    then prints, per class, TPR / TNR / PPV / NPV / F1 of every model side by
    side (mean ± std over folds, 95 % bootstrap interval over particles, the
    higher mean marked), macro F1, balanced accuracy and MCC, each model's
    fold-averaged normalised confusion matrix, and a paired test (McNemar;
    bootstrap interval of the F1 difference) saying where the difference is
    not significant. Writes summary.json and predictions.csv to --out.
    With a GPU, the CNN trains on it while the SVM uses the CPU cores
    (--jobs workers); on a CPU-only machine they run one after the other.
    Re-running the same command resumes at the first unfinished fold.

    Example: liposome-bench benchmark --problem lamellarity
    """
    from rich.console import Console

    from liposome_bench.benchmark import print_benchmark, run_benchmark

    cnn_models = [m.strip() for m in cnn.split(",") if m.strip()] if cnn else None
    with _live_reporter() as reporter:
        summary = run_benchmark(
            problem, data, cnn_models=cnn_models, out=out, quick=quick, repeats=repeats,
            folds=k, fold_seed=fold_seed, seed=seed, jobs=jobs, cache_dir=cache_dir,
            reader_options=reader_options, config=config, svm_options={"grid": grid},
            cnn_options={"epochs": epochs, "input_mode": input_mode},
            reporter=reporter, command=_command_line(),
        )
    console = Console()
    print_benchmark(summary, console)
    where = summary["settings"]["out"]
    click.echo(
        f"Results in {where}: summary.json, predictions.csv, one folder per model. "
        f"Wall time {summary['timings']['total_s']:.0f} s. "
        f"Markdown report: liposome-bench report {where}"
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
    "\"overrides\" do not set one.",
)
@click.option(
    "--write-baseline",
    "write_baseline_to",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a baseline file from RESULTS (for a later --baseline).",
)
@_fail_cleanly
def report_command(results, out, baseline, tolerance, write_baseline_to):
    """Write a markdown report with plots from a results folder.

    Reads saved results only (nothing is retrained): dataset summary, the
    protocol run, side-by-side metric tables with intervals and the paired
    test, confusion matrices, per-class metric bars, confusion heatmaps, CNN
    training curves and the command that reproduces the run. With
    --baseline it is also a regression gate: it prints what moved and exits
    with status 1 naming each metric that fell by more than the tolerance
    (status 2 is bad input).

    Example: liposome-bench report results/benchmark-lamellarity
    """
    from rich.console import Console
    from rich.table import Table

    from liposome_bench.report import (
        compare_to_baseline,
        read_baseline,
        render_report,
        write_baseline,
    )

    if baseline is not None:
        read_baseline(baseline)  # a bad baseline fails before any work
    console = Console()
    path = render_report(results, out)
    click.echo(f"Report written to {path} (plots in {path.parent / (path.stem + '-figures')}).")
    if write_baseline_to:
        click.echo(f"Baseline written to {write_baseline(results, write_baseline_to)}.")
    if baseline is None:
        return
    changes = compare_to_baseline(results, baseline, tolerance)
    moved = [c for c in changes if c.regressed or c.delta is None or abs(c.delta) >= 0.0005]
    table = Table(title=f"against baseline {baseline}: {len(moved)} of {len(changes)} "
                        "metrics moved")
    for name in ("model", "class", "metric", "baseline", "measured", "change", "tolerance",
                 "status"):
        table.add_column(name, justify="right" if name in ("baseline", "measured", "change",
                                                           "tolerance") else "left")
    for c in moved:
        status = ("[bold red]REGRESSED[/bold red]" if c.regressed
                  else "not checked" if c.baseline is None
                  else "up" if c.delta is not None and c.delta > 0 else "down, within tolerance")
        table.add_row(
            c.model, c.cls, c.metric,
            "—" if c.baseline is None else f"{c.baseline:.3f}",
            "—" if c.measured is None else f"{c.measured:.3f}",
            "—" if c.delta is None else f"{c.delta:+.3f}",
            f"{c.tolerance:g}", status,
        )
    if moved:
        console.print(table)
    regressions = [c for c in changes if c.regressed]
    if regressions:
        for c in regressions:
            click.echo(f"Regression: {c.describe()}", err=True)
        click.echo(
            f"{len(regressions)} metric(s) fell by more than the tolerance below {baseline}.",
            err=True,
        )
        sys.exit(EXIT_REGRESSION)
    click.echo(f"No metric fell by more than its tolerance below {baseline} "
               f"({len(changes)} checked).")


def main():
    cli(prog_name="liposome-bench")


if __name__ == "__main__":
    main()
