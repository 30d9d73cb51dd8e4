"""An MRC particle stack (``.mrcs``/``.mrc``, one particle per slice) with a
``<stack stem>.csv`` of labels beside it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from liposome_bench.data.images import DECODE_ERRORS, BadImage, check_side
from liposome_bench.data.kernel import (
    Entry,
    ReaderFormat,
    Report,
    as_problem,
    assign_labels,
    check_duplicate_ids,
    choose_problem,
    finish_reading,
    labels_optional,
    read_csv_rows,
    read_entries,
)
from liposome_bench.data.types import IMAGES_DIR, MASKS_DIR, Dataset
from liposome_bench.errors import DatasetError

log = logging.getLogger("liposome_bench.dataset")  # one logger for the data layer (data/__init__)


#: File name endings read as MRC stacks (case-insensitive).
MRC_EXTENSIONS = (".mrc", ".mrcs")


def _read_mrc(path, problem, *, pixel_size_nm=None, reporter=None, labels="required", **_):
    import mrcfile

    path = Path(path)
    root, name = path.parent, path.name
    sidecar = path.with_suffix(".csv")
    try:
        with mrcfile.open(path, header_only=True) as mrc:
            nx, ny, nz = int(mrc.header.nx), int(mrc.header.ny), int(mrc.header.nz)
            voxel_angstrom = float(mrc.voxel_size.x)
    except DECODE_ERRORS as exc:
        log.debug("%s: %s", path, exc)
        raise DatasetError(
            f"{name} cannot be read as an MRC file (bad header). Re-export the stack."
        ) from None
    try:
        check_side(nx, ny, f"{name} (each slice)")
    except BadImage as bad:
        raise DatasetError(str(bad)) from None
    optional = labels_optional(labels)
    if not sidecar.is_file() and optional:
        header, rows = ["id"], [(n + 1, {}) for n in range(nz)]  # unlabelled slices 1..nz
    elif not sidecar.is_file():
        raise DatasetError(
            f"{name} needs its labels in {sidecar.name} beside it: a CSV with a label column "
            "(and optionally id), one row per slice in slice order. Write it; see "
            "docs/data-formats.md."
        )
    else:
        header, rows = read_csv_rows(sidecar)
    if "label" not in header and not optional:
        raise DatasetError(
            f"{sidecar.name} has no 'label' column (columns: {', '.join(header) or 'none'}). "
            "Expected columns label and optionally id, one row per slice."
        )
    if len(rows) != nz:
        raise DatasetError(
            f"{sidecar.name} has {len(rows)} row{'s' if len(rows) != 1 else ''} but {name} "
            f"holds {nz} slice{'s' if nz != 1 else ''}. "
            "Give one row per slice, in slice order."
        )
    try:
        with mrcfile.mmap(path, mode="r") as mrc:
            data = np.asarray(mrc.data)
            stack = data.reshape((1,) + data.shape) if data.ndim == 2 else data
            images = [np.array(s, dtype=np.float32) for s in stack]
    except DECODE_ERRORS as exc:
        log.debug("%s: %s", path, exc)
        raise DatasetError(
            f"{name} is truncated or corrupt: its header says {nz} slices of {nx}x{ny} px "
            "but they cannot be read. Re-export the stack."
        ) from None
    px = voxel_angstrom / 10.0 if voxel_angstrom > 0 else float("nan")
    report = Report()
    entries = []
    for i, ((line, row), image) in enumerate(zip(rows, images)):
        number = i + 1
        pid = row.get("id", "") or str(number)
        e = Entry(
            f"{name}, slice {number} ({sidecar.name}, line {line})",
            f"slice {number}",
            id=pid,
            image=image,
            image_name=f"{name}, slice {number}",
            pixel_size_nm=px,
            source=f"{name}[{number}]",
        )
        if row.get("label"):
            e.raw_label = row["label"]
        elif optional:
            e.unlabelled = True
        else:
            report.add(
                i,
                f"{sidecar.name}, line {line}: no label. Give slice {number}'s class "
                "in the label column.",
            )
        entries.append(e)
    problem = choose_problem(as_problem(problem), entries, sidecar.name)
    assign_labels(entries, problem, report, "label")
    check_duplicate_ids(entries, report, "id", f"Give every slice its own id in {sidecar.name}.")
    particles = read_entries(entries, report, pixel_size_nm, reporter, f"reading {name}")
    if not np.isfinite(px) and pixel_size_nm is None:
        report.warnings.append(f"{name} has no voxel size in its header.")
    return Dataset(problem, particles, root, f"MRC stack {name}"), report


def load_mrc(path, problem=None, *, pixel_size_nm=None, reporter=None, **_ignored) -> Dataset:
    """Read an MRC particle stack (``.mrcs`` or ``.mrc``) and its labels.

    Parameters
    ----------
    path : path
        The stack: one particle image per slice (a 2-D file is one particle).
        Labels are in ``<stack stem>.csv`` beside it: a ``label`` column and
        optionally an ``id`` column (default: the 1-based slice number), one
        row per slice in slice order. The pixel size is the header's voxel
        size (Å, converted to nm). Masks are derived.
    problem : str or Problem, optional
        Default: the preset whose class names the labels are, else custom.
    pixel_size_nm : float, optional
        Overrides the header's voxel size.
    reporter : progress reporter, optional

    Returns
    -------
    Dataset (images as float32)

    Raises
    ------
    DatasetError
        The first problem found (with how many more there are).
    """
    read = _read_mrc(path, problem, pixel_size_nm=pixel_size_nm, reporter=reporter)
    return finish_reading(read, path, problem, IMAGES_DIR, MASKS_DIR, pixel_size_nm)


FORMAT = ReaderFormat("MRC stack", _read_mrc, MRC_EXTENSIONS)
