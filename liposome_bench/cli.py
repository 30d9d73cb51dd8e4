"""The ``liposome-bench`` command line: the only module that imports click.

Each command parses its options, calls one library function, and turns a
``LiposomeBenchError`` into a one-line ``Error:`` message with exit code 2.
"""

from __future__ import annotations

import functools
import logging
import sys

import click

from liposome_bench import __version__
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
    def decorate(func):
        return click.option(
            "--problem",
            type=click.Choice(PROBLEM_NAMES),
            required=required,
            help="Classification problem (thesis section 2).",
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


def out_option(default, help_text):
    def decorate(func):
        return click.option(
            "--out",
            type=click.Path(),
            default=default,
            show_default=default is not None,
            help=help_text,
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

# --- dataset (dataset) ------------------------------------------------------

# --- features (features) ----------------------------------------------------

# --- svm (svm) --------------------------------------------------------------

@cli.command("svm")
@problem_option()
@data_option
@reader_options
@cache_option
@click.option(
    "--feature-set",
    type=click.Choice(["vironova", "all"]),
    default="vironova",
    show_default=True,
    help="Features: the lab's set (area, circularity, moments, edge density "
    "profile, histogram; thesis section 4.1) or every feature.",
)
@click.option(
    "--source",
    type=click.Choice(["computed", "export"]),
    default="computed",
    show_default=True,
    help="Compute features from the images, or use those stored in the lab export.",
)
@click.option(
    "--grid",
    type=click.Choice(["coarse", "full"]),
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
    from liposome_bench.progress import RichReporter
    from liposome_bench.results import ResultsDir
    from liposome_bench.svm import check_svm_options, run_svm

    check_svm_options(grid=grid, C=C, gamma=gamma, jobs=jobs)
    dataset = resolve_dataset(data, problem, cache_dir=cache_dir, **reader_options)
    folds = load_or_make_folds(dataset, k=k, seed=fold_seed)
    results = ResultsDir(out or f"results/svm-{dataset.problem.name}")
    fold_results = run_svm(
        dataset, folds, results, feature_set=feature_set, source=source, grid=grid,
        C=C, gamma=gamma, jobs=jobs, seed=seed, reporter=RichReporter(),
    )
    console = Console()
    print_model_summary(
        console, "SVM (LIBSVM C-SVC, RBF)", summarise_folds(fold_results, dataset.problem.classes)
    )
    console.print(fold_table(fold_results, ("C", "gamma", "grid_score"),
                             ("grid_s", "fit_s", "predict_s"), title="SVM: folds"))
    console.print(
        f"Results in {results.path}/svm: fold-<i>.csv (predictions, decision values), "
        "fold-<i>.json (C, gamma, timings), models/ (LIBSVM model files for svm-predict)."
    )


# --- cnn (cnn) --------------------------------------------------------------

# --- benchmark and report (benchmark, report) -------------------------------


def main():
    cli(prog_name="liposome-bench")


if __name__ == "__main__":
    main()
