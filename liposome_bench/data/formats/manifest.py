"""A manifest CSV: columns ``image``, ``label`` and optionally ``mask``,
``id``, ``pixel_size_nm`` (``MANIFEST_COLUMNS``); any other column is
metadata."""

from __future__ import annotations

import posixpath
from pathlib import Path

from liposome_bench.data.kernel import (
    Entry,
    ReaderFormat,
    Report,
    as_problem,
    assign_labels,
    check_duplicate_ids,
    check_path,
    choose_problem,
    finish_reading,
    labels_optional,
    meta_of,
    no_particles_error,
    positive_number,
    read_csv_rows,
    read_entries,
)
from liposome_bench.data.types import IMAGES_DIR, MANIFEST_COLUMNS, MASKS_DIR, Dataset
from liposome_bench.errors import DatasetError


def _read_manifest(path, problem, *, pixel_size_nm=None, reporter=None, labels="required", **_):
    optional = labels_optional(labels)
    path = Path(path)
    root, name = path.parent, path.name
    header, rows = read_csv_rows(path)
    missing = [c for c in ("image",) + (() if optional else ("label",)) if c not in header]
    if missing:
        raise DatasetError(
            f"{name} has no {' or '.join(repr(c) for c in missing)} column (columns: "
            f"{', '.join(header) or 'none'}). Expected columns image, label and "
            "optionally mask, id, pixel_size_nm."
        )
    if not rows:
        raise no_particles_error(name)
    report = Report()
    entries = []
    for i, (line, row) in enumerate(rows):
        where = f"{name}, line {line}"
        e = Entry(where, f"line {line}", source=f"{name}:{line}")
        value = row.get("image", "")
        rel = check_path(value) if value else None
        if not value:
            report.add(i, f"{where}: no image. Give the image path, relative to {name}.")
        elif rel is None:
            report.add(
                i,
                f"{where}: image path {value!r} leads outside the folder of {name}. "
                f"Use a path relative to {name}, inside its folder.",
            )
        else:
            e.image_path, e.image_name, e.image_field = root / rel, rel, "the image column"
            e.source = rel
        pid = row.get("id", "") or (posixpath.splitext(posixpath.basename(rel))[0] if rel else "")
        e.id = pid or None
        if row.get("label"):
            e.raw_label = row["label"]
        elif optional:
            e.unlabelled = True
        else:
            report.add(i, f"{where}: no label. Give the particle's class in the label column.")
        mask_value = row.get("mask", "")
        if mask_value:
            mask_rel = check_path(mask_value)
            if mask_rel is None:
                report.add(
                    i,
                    f"{where}: mask path {mask_value!r} leads outside the folder "
                    f"of {name}. Use a path relative to {name}, inside its folder.",
                )
                e.image_path = None
            else:
                e.mask_path, e.mask_name = root / mask_rel, mask_rel
                e.mask_field = "the mask column"
        e.meta = meta_of(row, MANIFEST_COLUMNS)
        if row.get("pixel_size_nm", ""):
            px = positive_number(row["pixel_size_nm"])
            if px is None:
                report.add(
                    i,
                    f"{where}: pixel_size_nm {row['pixel_size_nm']!r} is not a positive "
                    "number. Correct it or leave the cell empty.",
                )
            else:
                e.pixel_size_nm = px
        entries.append(e)
    problem = choose_problem(as_problem(problem), entries, name)
    assign_labels(entries, problem, report, "label")
    check_duplicate_ids(entries, report, "id", "Give every particle its own id (id column).")
    particles = read_entries(entries, report, pixel_size_nm, reporter, f"reading {name}")
    return Dataset(problem, particles, root, f"manifest {name}"), report


def load_manifest(path, problem=None, *, pixel_size_nm=None, reporter=None, **_ignored) -> Dataset:
    """Read a manifest CSV.

    Parameters
    ----------
    path : path
        A CSV file with a header row and columns ``image`` and ``label``, and
        optionally ``mask``, ``id`` (default: the image's file name without
        extension) and ``pixel_size_nm``. Paths are relative to the CSV file
        and must stay inside its folder. Rows without a mask get a derived one.
    problem : str or Problem, optional
        Default: the preset whose class names the labels are, else a custom
        problem with the labels' sorted names as classes.
    pixel_size_nm : float, optional
        Overrides every particle's pixel size.
    reporter : progress reporter, optional

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        The first problem found (with how many more there are).
    """
    read = _read_manifest(path, problem, pixel_size_nm=pixel_size_nm, reporter=reporter)
    return finish_reading(read, path, problem, IMAGES_DIR, MASKS_DIR, pixel_size_nm)


FORMAT = ReaderFormat("manifest", _read_manifest, (".csv",))
