"""The reader table and ``load_dataset``, which picks a format from what the
path is: a file by its ending, a folder by the first format that claims it
(a lab export by its particles.json, then class folders)."""

from __future__ import annotations

from pathlib import Path

from liposome_bench.data.formats import class_folders, lab_export, manifest, mrc_stack
from liposome_bench.data.groups import (
    check_group_sources,
    compile_group_pattern,
    set_groups,
    set_groups_from_file,
)
from liposome_bench.data.images import describe_path
from liposome_bench.data.kernel import ReaderFormat, finish_reading
from liposome_bench.data.types import EXPORT_JSON, IMAGES_DIR, MASKS_DIR, Dataset
from liposome_bench.errors import DatasetError

#: Every format ``load_dataset`` reads, in the order folders are offered to
#: them.
READERS: tuple[ReaderFormat, ...] = (
    lab_export.FORMAT,
    manifest.FORMAT,
    class_folders.FORMAT,
    mrc_stack.FORMAT,
)
#: What ``load_dataset`` reads, as its messages name it.
ACCEPTED = (
    "a lab export folder (with particles.json) or its .json file, a manifest .csv, "
    "an .mrc/.mrcs stack, or a folder of class folders"
)


def reader_for(path: Path, masks_dir: str, labels: str = "required") -> ReaderFormat:
    """The format in ``READERS`` that reads ``path``: a file by its ending, a
    folder by the first format that claims it.

    Raises
    ------
    DatasetError
        If ``path`` is no dataset any format reads, naming what it is.
    """
    by_suffix = {suffix: fmt for fmt in READERS for suffix in fmt.suffixes}
    if not path.exists():
        raise DatasetError(f"{path} does not exist. Expected {ACCEPTED}.")
    if path.is_file():
        fmt = by_suffix.get(path.suffix.lower())
        if fmt is None:
            raise DatasetError(f"{path} is not a dataset file. Expected {ACCEPTED}.")
        return fmt
    if not path.is_dir():
        raise DatasetError(
            f"{path} is {describe_path(path)}, not a dataset file or folder. Expected {ACCEPTED}."
        )
    if path.suffix.lower() in by_suffix:
        raise DatasetError(
            f"{path} is a folder, not a {path.suffix} file. Pass the {path.suffix} file itself, "
            f"or the folder holding it."
        )
    # Files of a format with no folder form (a manifest, a stack) found in a
    # folder mean the file was meant, not the folder.
    file_suffixes = tuple(
        suffix for fmt in READERS if fmt.claims_folder is None for suffix in fmt.suffixes
    )
    for fmt in READERS:
        if fmt.claims_folder is not None and fmt.claims_folder(
            path, masks_dir=masks_dir, labels=labels, file_suffixes=file_suffixes
        ):
            return fmt
    raise DatasetError(
        f"{path} holds neither {EXPORT_JSON} nor class folders. Expected {ACCEPTED}."
    )


def load_dataset(
    path,
    problem=None,
    *,
    images_dir=IMAGES_DIR,
    masks_dir=MASKS_DIR,
    pixel_size_nm=None,
    reporter=None,
    labels="required",
    group_pattern=None,
    group_file=None,
) -> Dataset:
    """Read the dataset at ``path`` with the reader its kind needs.

    An export folder (holding particles.json) or a ``.json`` file goes to
    ``load_export``, a ``.csv`` to ``load_manifest``, an ``.mrc``/``.mrcs``
    to ``load_mrc``, a folder of class folders to ``load_folders``.

    Parameters
    ----------
    path : path
    problem : str or Problem, optional
        Default: inferred from the class codes or labels.
    images_dir, masks_dir : str
        Folder names of a lab export (``masks_dir`` also for class folders).
    pixel_size_nm : float, optional
        Overrides every particle's pixel size.
    reporter : progress reporter, optional
    labels : {"required", "optional"}
        "optional" (``predict``) reads particles without a label as
        unlabelled (``Particle.label`` None): a lab export without ``Class``,
        a manifest without a ``label`` column or cell, an MRC stack without
        its CSV, a plain folder of images. Training needs "required".
    group_pattern : str, optional
        Sets every particle's ``meta["group"]`` from its micrograph's file
        name (``set_groups``), for ``--group-by group``.
    group_file : path, optional
        Sets every particle's ``meta["group"]`` from a CSV of ``id,group``
        (``set_groups_from_file``); not with ``group_pattern``.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        If ``path`` is not a dataset, or on the first problem found in it.
    """
    path = Path(path)
    reader = reader_for(path, masks_dir, labels).read
    check_group_sources(group_pattern, group_file)
    if group_pattern is not None:
        compile_group_pattern(group_pattern)  # fail before reading
    read = reader(
        path,
        problem,
        images_dir=images_dir,
        masks_dir=masks_dir,
        pixel_size_nm=pixel_size_nm,
        reporter=reporter,
        labels=labels,
    )
    dataset = finish_reading(read, path, problem, images_dir, masks_dir, pixel_size_nm)
    if group_pattern is not None:
        set_groups(dataset.particles, group_pattern)
    if group_file is not None:
        set_groups_from_file(dataset.particles, group_file)
    return dataset
