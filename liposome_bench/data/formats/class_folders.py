"""A folder of class folders: ``DIR/<class name>/<images>`` (with
``labels="optional"``, also a plain folder of unlabelled images)."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from liposome_bench.data.images import IMAGE_EXTENSIONS, IMAGE_FORMATS, describe_path
from liposome_bench.data.kernel import (
    Entry,
    ReaderFormat,
    Report,
    as_problem,
    assign_labels,
    check_duplicate_ids,
    choose_problem,
    find_mask,
    finish_reading,
    index_masks,
    labels_optional,
    no_particles_error,
    read_entries,
    walk_folder,
)
from liposome_bench.data.types import EXPORT_JSON, FOLDS_DIR, IMAGES_DIR, MASKS_DIR, Dataset
from liposome_bench.errors import DatasetError


def _class_folders(root: Path, masks_dir: str) -> list[Path]:
    skip = {Path(masks_dir).parts[0] if Path(masks_dir).parts else masks_dir, FOLDS_DIR}
    return sorted(
        d
        for d in root.iterdir()
        if d.is_dir() and not d.name.startswith(".") and d.name not in skip
    )


def _read_folders(
    path, problem, *, masks_dir=MASKS_DIR, pixel_size_nm=None, reporter=None, labels="required", **_
):
    optional = labels_optional(labels)
    root = Path(path)
    report = Report()
    entries: list[Entry] = []
    mask_root = root / masks_dir
    mask_index = index_masks(mask_root) if mask_root.is_dir() else None
    for f in sorted(root.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS:
            i = len(entries)
            if optional:
                # A plain folder of images: unlabelled particles.
                e = Entry(
                    f.name,
                    f.name,
                    id=f.stem,
                    source=f.name,
                    unlabelled=True,
                    image_path=f,
                    image_name=f.name,
                )
                if mask_index is not None:
                    find_mask(e, mask_index, masks_dir, f.stem, report, i)
                    if e.mask_path is None:
                        report.unmasked.append(f.name)
            else:
                e = Entry(f.name, f.name)
                report.add(
                    i,
                    f"{f.name} is not inside a class folder. Move it into the folder of its class.",
                )
            entries.append(e)
    empty = []
    seen: dict[str, str] = {}

    def repeated(path: Path, first: str) -> None:
        report.add(
            len(entries),
            f"{path.relative_to(root).as_posix()}/ leads back to "
            f"{Path(first).relative_to(root).as_posix()}/, which is "
            "read already (a symbolic link loop or a second link to "
            "it). Remove the link.",
        )

    folders = _class_folders(root, masks_dir)
    # A link from one class folder into another is a repeat, not more particles.
    seen.update({os.path.realpath(folder): str(folder) for folder in folders})
    for folder in folders:
        files = []
        for dirpath, dirnames, filenames in walk_folder(folder, seen, repeated):
            files += [Path(dirpath) / f for f in filenames]
        if not files:
            empty.append(folder.name)
            continue
        for f in files:
            rel = f.relative_to(root).as_posix()
            e = Entry(rel, rel, id=f.stem, raw_label=folder.name, source=rel)
            i = len(entries)
            if f.suffix.lower() not in IMAGE_EXTENSIONS and not f.is_file():
                report.add(
                    i,
                    f"{rel} is {describe_path(f)}, not an image file. Remove it from the class folder.",
                )
            elif f.suffix.lower() not in IMAGE_EXTENSIONS:
                report.add(
                    i, f"{rel} is not a {IMAGE_FORMATS} image. Move it out of the class folder."
                )
            else:
                e.image_path, e.image_name = f, rel
                if mask_index is not None:
                    find_mask(e, mask_index, masks_dir, posixpath.splitext(rel)[0], report, i)
                    if e.mask_path is None:
                        report.unmasked.append(rel)
            entries.append(e)
    if not any(e.raw_label or e.unlabelled for e in entries):
        raise no_particles_error(f"{root} (a folder of class folders)")
    problem = choose_problem(as_problem(problem), entries, str(root))
    assign_labels(entries, problem, report, "class folder")
    check_duplicate_ids(
        entries,
        report,
        "id",
        "Rename one of the files (the id is the file name without extension).",
    )
    particles = read_entries(entries, report, pixel_size_nm, reporter, f"reading {root.name}")
    for name in empty:
        report.warnings.append(f"Class folder {name}/ is empty; it is not a class of this dataset.")
    return Dataset(problem, particles, root, f"class folders {root.name}"), report


def load_folders(
    path, problem=None, *, masks_dir=MASKS_DIR, pixel_size_nm=None, reporter=None, **_ignored
) -> Dataset:
    """Read a folder of class folders: ``DIR/<class name>/<images>``.

    Parameters
    ----------
    path : path
        The folder. Each subfolder (except ``masks_dir``, ``folds`` and hidden
        ones) is a class; images in it (and its subfolders) are its particles,
        with the file name without extension as id. Masks, if any, are in
        ``DIR/<masks_dir>/<class name>/<same stem>.*``; others are derived.
    problem : str or Problem, optional
        Default: the preset whose class names the folders are, else a custom
        problem with the folder names, sorted, as classes.
    masks_dir : str
    pixel_size_nm : float, optional
        The pixel size of every particle (unknown otherwise).
    reporter : progress reporter, optional

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        The first problem found (with how many more there are).
    """
    read = _read_folders(
        path, problem, masks_dir=masks_dir, pixel_size_nm=pixel_size_nm, reporter=reporter
    )
    return finish_reading(read, path, problem, IMAGES_DIR, masks_dir, pixel_size_nm)


def _claims_folder(path: Path, *, masks_dir: str, labels: str, file_suffixes) -> bool:
    """A folder with class folders in it (or, with ``labels="optional"``,
    images in it) is read as class folders. ``file_suffixes``: the endings
    of dataset files that have no folder form (a manifest, a stack)."""
    # A folder beside its manifest or MRC stack is not a folder of class
    # folders (its images/ would become a class): ask for the file instead.
    dataset_files = sorted(
        f.name for f in path.iterdir() if f.is_file() and f.suffix.lower() in file_suffixes
    )
    if dataset_files:
        raise DatasetError(
            f"{path} holds {', '.join(dataset_files)} but no {EXPORT_JSON}. "
            f"Pass the manifest or stack file itself, e.g. {path / dataset_files[0]}."
        )
    if _class_folders(path, masks_dir):
        return True
    # A plain folder of unlabelled images.
    return labels_optional(labels) and any(
        f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS for f in path.iterdir()
    )


FORMAT = ReaderFormat("class folders", _read_folders, (), _claims_folder)
