"""The lab particle export (what the lab's software and ``generate`` write)::

DIR/
  particles.json      one JSON object per particle (a JSON list, or
                      objects written one after another: both are read)
  images/<Image>      BMP, JPEG, PNG or TIFF, 8 or 16 bit
  masks/<stem>.png    the particle's mask, named after its image
  dataset.json        optional, written by ``write_export``
  folds/k5-seed0.json the stored folds (see ``liposome_bench.folds``)
"""

from __future__ import annotations

import json
import os
import posixpath
import shlex
from pathlib import Path

from liposome_bench.data.images import describe_path
from liposome_bench.data.kernel import (
    Entry,
    ReaderFormat,
    Report,
    as_problem,
    assign_labels,
    check_duplicate_ids,
    check_path,
    choose_problem,
    find_mask,
    finish_reading,
    has_line_break,
    index_masks,
    labels_optional,
    meta_of,
    no_particles_error,
    positive_number,
    read_entries,
    show_folder,
    show_path,
)
from liposome_bench.data.types import (
    EXPORT_JSON,
    FOLDS_DIR,
    IMAGES_DIR,
    MASKS_DIR,
    META_JSON,
    PROBLEMS,
    Dataset,
    custom_problem,
)
from liposome_bench.errors import DatasetError

#: Precomputed features of the lab export (thesis section 3), kept as-is in
#: ``Particle.features``.
EXPORT_FEATURE_KEYS = (
    "Area",
    "Circularity",
    "Perimeter",
    "Diameter",
    "Length",
    "MaximumWidth",
    "SignalToNoise",
    "Moments",
    "Histogram",
    "RadialDensityProfile",
    "EdgeDensityProfile",
)
#: Keys of a lab export particle object that are not features or metadata.
EXPORT_KEYS = {"Id", "Class", "Label", "Image", "Bmp", "Mask", "PixelSize"}


def parse_export_json(text: str, path) -> list[dict]:
    """Parse a particles JSON file: a JSON list of objects, or objects written
    one after another with no commas and no enclosing brackets (older lab
    exports)."""
    decoder = json.JSONDecoder()
    text = text.lstrip("\ufeff")
    pos, n = 0, len(text)
    objects: list[dict] = []
    while True:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n:
            break
        try:
            value, pos = decoder.raw_decode(text, pos)
        except RecursionError:
            raise DatasetError(
                f"{path}: its JSON nests lists or objects too deeply to read (thousands of "
                "levels). Expected a list of particle objects or objects one after another; "
                "fix or re-export the file."
            ) from None
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno} "
                f"({exc.msg}). Expected a list of particle objects or objects one "
                "after another; fix or re-export the file."
            ) from None
        if isinstance(value, list):
            objects.extend(value)
        else:
            objects.append(value)
    return objects


def _read_export(
    path,
    problem,
    *,
    images_dir=IMAGES_DIR,
    masks_dir=MASKS_DIR,
    pixel_size_nm=None,
    reporter=None,
    labels="required",
):
    path = Path(path)
    json_path = path / EXPORT_JSON if path.is_dir() else path
    root = json_path.parent
    name = json_path.name
    try:
        text = json_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(
            f"{path} holds no {EXPORT_JSON}. Pass a lab export folder or its particles JSON file."
        ) from None
    except UnicodeDecodeError:
        raise DatasetError(f"{json_path}: not UTF-8 text. Re-export it as UTF-8 JSON.") from None
    except OSError as exc:
        raise DatasetError(
            f"{json_path}: cannot be read ({exc.strerror}). Check that it is a readable file."
        ) from None
    objects = parse_export_json(text, name)
    if not objects:
        raise no_particles_error(name)
    image_root = root / images_dir
    if not image_root.is_dir():
        raise DatasetError(
            f"{name} names its images in the folder {show_folder(images_dir)} beside it, "
            "which does not exist. Pass --images-dir (e.g. '.' for images beside "
            f"{name})."
        )
    mask_root = root / masks_dir
    mask_index = index_masks(mask_root) if mask_root.is_dir() else None
    meta = _read_export_meta(root)
    report = Report()
    entries = []
    for i, obj in enumerate(objects):
        entries.append(
            _export_entry(
                i, obj, name, images_dir, image_root, report, optional=labels_optional(labels)
            )
        )
    problem = as_problem(problem)
    if problem is None and meta.get("problem") in PROBLEMS:
        problem = PROBLEMS[meta["problem"]]
    elif problem is None and meta.get("classes") and not any(e.code is not None for e in entries):
        problem = custom_problem(meta["classes"])
    problem = choose_problem(problem, entries, name)
    assign_labels(entries, problem, report, "Label")
    check_duplicate_ids(entries, report, "Id", "Give every particle its own Id.")
    for i, e in enumerate(entries):
        if e.image_path is not None and mask_index is not None:
            find_mask(e, mask_index, masks_dir, posixpath.splitext(e.image_rel)[0], report, i)
            if e.mask_path is None:
                report.unmasked.append(e.image_name)
    _suggest_images_dir(entries, root, image_root, images_dir, mask_root, name)
    particles = read_entries(entries, report, pixel_size_nm, reporter, f"reading {name}")
    if mask_index is None:
        report.warnings.append(
            f"No {show_folder(masks_dir)} folder beside {name}; every mask was derived "
            "from its image (see docs/data-formats.md). Pass --masks-dir if the masks "
            "are elsewhere."
        )
    bmp = any(isinstance(o, dict) and "Bmp" in o and "Image" not in o for o in objects)
    keys = "Bmp" if bmp else "Image"
    description = meta.get("description") or f"lab export {name} ({keys} keys)"
    dataset = Dataset(problem, particles, root, description, bool(meta.get("synthetic", False)))
    return dataset, report


def _suggest_images_dir(
    entries, root: Path, image_root: Path, images_dir: str, mask_root: Path, name: str
) -> None:
    """When images are missing from the images folder but every one of them
    is in one other folder under the export (``images/particles/``, or
    beside the JSON), say which ``--images-dir`` reads them."""
    missing = [e for e in entries if e.image_path is not None and not os.path.lexists(e.image_path)]
    if not missing:
        return
    skip = {os.path.realpath(image_root), os.path.realpath(mask_root)}
    found = None
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and d != FOLDS_DIR
            and depth < 3
            and os.path.realpath(here / d) != os.path.realpath(mask_root)
        )
        if os.path.realpath(here) in skip or not (here / missing[0].image_rel).is_file():
            continue
        if all((here / e.image_rel).is_file() for e in missing):
            found = here
            break
    if found is None:
        return
    option = found.relative_to(root).as_posix() or "."
    raise DatasetError(
        f"{name}: {len(missing)} of {len(entries)} images are not in {show_folder(images_dir)} "
        f"(first: {missing[0].image_name}), but all of them are in {show_folder(option)}. "
        f"Pass --images-dir {shlex.quote(option)}."
    )


def _read_export_meta(root: Path) -> dict:
    """The export's dataset.json (written by ``write_export``), or {}."""
    path = root / META_JSON
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        ok = (
            isinstance(meta, dict)
            and all(isinstance(meta.get(key, ""), str) for key in ("problem", "description"))
            and isinstance(meta.get("synthetic", False), bool)
            and (
                "classes" not in meta
                or (
                    isinstance(meta["classes"], list)
                    and all(isinstance(c, str) for c in meta["classes"])
                )
            )
        )
    except (OSError, ValueError, RecursionError):
        ok = False
    if not ok:
        raise DatasetError(
            f"{META_JSON} is not what write_export writes (a JSON object with problem and "
            f"classes). Fix it, or delete it: it only records the class order and origin."
        )
    return meta


def _export_entry(
    i: int,
    obj,
    name: str,
    images_dir: str,
    image_root: Path,
    report: Report,
    optional: bool = False,
) -> Entry:
    number = i + 1
    short = f"object {number}"
    if not isinstance(obj, dict):
        e = Entry(f"{name}, {short}", short)
        report.add(
            i,
            f"{e.where}: expected a JSON object with Id, Image and Class; "
            f"got {type(obj).__name__}. Fix or remove it.",
        )
        return e
    pid = obj.get("Id")
    if (
        isinstance(pid, bool)
        or not isinstance(pid, (int, str))
        or str(pid).strip() == ""
        or has_line_break(str(pid))
    ):
        e = Entry(f"{name}, {short}", short)
        if "Id" not in obj:
            report.add(i, f'{e.where}: no "Id". Give every particle its own Id.')
        elif isinstance(pid, str) and pid.strip():
            report.add(
                i,
                f"{e.where}: Id {pid!r} holds a line break. Give every particle an Id on one line.",
            )
        else:
            report.add(
                i,
                f"{e.where}: Id {pid!r} is not an integer or a string. "
                "Give every particle its own Id.",
            )
    else:
        pid = str(pid).strip()
        e = Entry(f"{name}, {short} (Id {pid})", short, id=pid)
    e.source = f"{name}#{number}"
    # Class code (preset problems) or Label (custom problems, as write_export writes them)
    if "Class" in obj and not (optional and obj["Class"] in (None, "")):
        code = obj["Class"]
        if isinstance(code, str) and code.strip().lstrip("-").isdigit():
            code = int(code)
        elif isinstance(code, float) and code.is_integer():
            code = int(code)
        if isinstance(code, bool) or not isinstance(code, int):
            report.add(
                i,
                f"{e.where}: Class {obj['Class']!r} is not an integer code "
                "(3, 4, 5 for lamellarity; 7, 8, 10 for encapsulation).",
            )
        else:
            e.code = code
    elif isinstance(obj.get("Label"), str) and has_line_break(obj["Label"]):
        report.add(
            i,
            f"{e.where}: Label {obj['Label']!r} holds a line break. Write the "
            "class name on one line.",
        )
    elif isinstance(obj.get("Label"), str) and obj["Label"].strip():
        e.raw_label = obj["Label"]
    elif optional and obj.get("Label") in (None, ""):
        e.unlabelled = True  # no Class (or a null one) and no Label
    else:
        report.add(
            i,
            f'{e.where}: no "Class" code. Add it (3, 4, 5 for lamellarity; '
            "7, 8, 10 for encapsulation).",
        )
    # Image file name: "Image", or "Bmp" in older exports
    key = "Image" if "Image" in obj else "Bmp"
    value = obj.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        report.add(
            i, f'{e.where}: no "Image" (or "Bmp") file name. Add the name of its image file.'
        )
    elif not isinstance(value, str) or has_line_break(value):
        report.add(
            i, f"{e.where}: {key} {value!r} is not a file name. Give the name of its image file."
        )
    else:
        rel = check_path(value)
        if rel is None:
            report.add(
                i,
                f"{e.where}: image path {value!r} leads outside the "
                f"{show_folder(images_dir)} folder. Use a path inside it.",
            )
        else:
            e.image_path, e.image_rel = image_root / rel, rel
            e.image_name = show_path(images_dir, rel)
            e.image_field = f'its "{key}" name'
            e.source = e.image_name
    if "PixelSize" in obj:
        px = positive_number(obj["PixelSize"])
        if px is None:
            report.add(
                i,
                f"{e.where}: PixelSize {obj['PixelSize']!r} is not a positive "
                "number of nm per pixel. Correct it or leave it out.",
            )
        else:
            e.pixel_size_nm = px
    features = {k: obj[k] for k in EXPORT_FEATURE_KEYS if k in obj}
    e.features = features or None
    e.meta = meta_of(obj, EXPORT_KEYS | set(EXPORT_FEATURE_KEYS))
    return e


def load_export(
    path,
    problem=None,
    *,
    images_dir=IMAGES_DIR,
    masks_dir=MASKS_DIR,
    pixel_size_nm=None,
    reporter=None,
) -> Dataset:
    """Read a lab particle export.

    Parameters
    ----------
    path : path
        The export folder (holding ``particles.json``) or the JSON file itself.
        The JSON is a list of particle objects, or objects written one after
        another (older exports). Each object has ``Id``, the image file name
        under ``Image`` (``Bmp`` in older exports), ``Class`` (3 unilamellar,
        4 multilamellar, 5 uncertain; 7 empty, 8 full, 10 uncertain) or
        ``Label`` (custom problems), and optionally ``PixelSize`` (nm/px) and
        the precomputed features in ``EXPORT_FEATURE_KEYS``.
    problem : str or Problem, optional
        Default: inferred from the class codes.
    images_dir, masks_dir : str
        Folders of the images and masks, relative to the JSON file. A mask is
        the file in ``masks_dir`` with its image's stem (any image format);
        particles without one get a derived mask.
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
    read = _read_export(
        path,
        problem,
        images_dir=images_dir,
        masks_dir=masks_dir,
        pixel_size_nm=pixel_size_nm,
        reporter=reporter,
    )
    return finish_reading(read, path, problem, images_dir, masks_dir, pixel_size_nm)


def _claims_folder(path: Path, **_) -> bool:
    """A folder holding particles.json is a lab export."""
    export_json = path / EXPORT_JSON
    if export_json.is_file():
        return True
    if export_json.exists() or export_json.is_symlink():
        raise DatasetError(
            f"{export_json} is {describe_path(export_json)}, not the export's JSON file. "
            f"Replace it with the particles JSON file, or rename it if the folder is not "
            "a lab export."
        )
    return False


FORMAT = ReaderFormat("lab export", _read_export, (".json",), _claims_folder)
