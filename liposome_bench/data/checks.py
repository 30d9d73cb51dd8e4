"""Every problem of a dataset at once (``inspect_dataset``,
``check_dataset``) and the class counts a run needs (``check_trainable``)."""

from __future__ import annotations

import logging
from pathlib import Path

from liposome_bench.data.groups import check_group_sources, set_groups, set_groups_from_file
from liposome_bench.data.readers import reader_for
from liposome_bench.data.types import IMAGES_DIR, MASKS_DIR, Dataset
from liposome_bench.errors import ConfigError, DatasetError

log = logging.getLogger("liposome_bench.dataset")  # one logger for the data layer (data/__init__)


def class_count_problems(dataset: Dataset, folds: int | None = 5) -> list[str]:
    """Class counts that make cross-validation impossible, one line each:
    fewer than two classes with particles, or (with ``folds``) a class with
    fewer particles than folds (each fold needs one of every class)."""
    counts = {c: n for c, n in dataset.class_counts().items() if n}
    where = dataset.root.name if dataset.root is not None else dataset.description
    lines = []
    if len(counts) < 2:
        only = ", ".join(f"{c!r} ({n})" for c, n in counts.items()) or "none"
        lines.append(
            f"{where}: every particle is of one class ({only}); a classifier needs particles "
            "of at least 2 classes. Add particles of the other classes."
        )
    for name, count in counts.items():
        if folds and count < folds:
            fix = (
                f"Use --folds {count}, or add particles of that class."
                if count >= 2
                else "Add particles of that class, or remove it."
            )
            lines.append(
                f"{where}: {folds} folds need at least {folds} particles per class; "
                f"{name!r} has {count}. {fix}"
            )
    return lines


def check_trainable(dataset: Dataset) -> None:
    """Refuse a dataset no classifier can be trained on (fewer than two
    classes with particles) before any work.

    Raises
    ------
    DatasetError
    """
    problems = class_count_problems(dataset, folds=None)
    if problems:
        raise DatasetError(problems[0])


def inspect_dataset(
    path,
    problem=None,
    *,
    images_dir=IMAGES_DIR,
    masks_dir=MASKS_DIR,
    pixel_size_nm=None,
    reporter=None,
    folds: int | None = None,
    group_pattern=None,
    group_file=None,
) -> tuple[Dataset | None, list[str]]:
    """Read the dataset at ``path`` and collect every problem in it.

    Takes the same arguments as ``load_dataset``. A problem that stops
    reading altogether (no such file, JSON that cannot be parsed) is the only
    line. With ``folds`` (``dataset check`` passes 5, the default of every
    command), class counts that make ``folds``-fold cross-validation
    impossible are problems too (``class_count_problems``).

    Returns
    -------
    dataset : Dataset or None
        The dataset (with its ``warnings``) if there is no problem, else None.
    problems : list of str
        One line per problem, in particle order; empty if the dataset reads
        cleanly.
    """
    try:
        path = Path(path)
        reader = reader_for(path, masks_dir).read
        dataset, report = reader(
            path,
            problem,
            images_dir=images_dir,
            masks_dir=masks_dir,
            pixel_size_nm=pixel_size_nm,
            reporter=reporter,
        )
    except DatasetError as exc:
        return None, [str(exc)]
    problems = report.problems
    if not problems and folds is not None:
        problems = class_count_problems(dataset, folds)
    if not problems and (group_pattern is not None or group_file is not None):
        try:
            check_group_sources(group_pattern, group_file)
            if group_pattern is not None:
                set_groups(dataset.particles, group_pattern)
            else:
                set_groups_from_file(dataset.particles, group_file)
        except (ConfigError, DatasetError) as exc:
            problems = [str(exc)]
    if problems:
        return None, problems
    dataset.warnings = list(report.warnings)
    return dataset, []


def check_dataset(
    path,
    problem=None,
    *,
    images_dir=IMAGES_DIR,
    masks_dir=MASKS_DIR,
    pixel_size_nm=None,
    reporter=None,
    folds: int | None = None,
) -> list[str]:
    """Every problem in the dataset at ``path``, one line each.

    Takes the same arguments as ``load_dataset``. A problem that stops
    reading altogether (no such file, JSON that cannot be parsed) is the only
    line. With ``folds``, class counts that make ``folds``-fold
    cross-validation impossible are problems too (``class_count_problems``).
    Warnings (colour images converted, derived masks) are not problems:
    they are logged.

    Returns
    -------
    list of str
        Empty if the dataset reads cleanly.
    """
    dataset, problems = inspect_dataset(
        path,
        problem,
        images_dir=images_dir,
        masks_dir=masks_dir,
        pixel_size_nm=pixel_size_nm,
        reporter=reporter,
        folds=folds,
    )
    for warning in dataset.warnings if dataset is not None else ():
        log.warning("%s", warning)
    return problems
