"""What every reader shares: one ``Entry`` per particle as found, a
``Report`` of problem lines in particle order, label and problem assignment,
duplicate ids, mask lookup, reading every entry's image and mask
(``read_entries``), and ``finish_reading``, which raises the first problem.
Also the CSV rows of a manifest or an MRC stack's labels (``read_csv_rows``),
and the ``ReaderFormat`` entry each format module declares."""

from __future__ import annotations

import csv
import io
import logging
import os
import posixpath
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liposome_bench.data.images import (
    IMAGE_EXTENSIONS,
    BadImage,
    check_pixels,
    check_side,
    not_a_file_message,
    read_image,
)
from liposome_bench.data.masks import derive_mask
from liposome_bench.data.types import (
    IMAGES_DIR,
    MASKS_DIR,
    PROBLEMS,
    Dataset,
    Particle,
    Problem,
    custom_problem,
    get_problem,
)
from liposome_bench.errors import DatasetError
from liposome_bench.progress import NullReporter

log = logging.getLogger("liposome_bench.dataset")  # one logger for the data layer (data/__init__)


#: What a reader's ``labels`` argument accepts.
LABEL_POLICIES = ("required", "optional")


def labels_optional(labels: str) -> bool:
    """``labels``: "required" (training, cross-validation) or "optional"
    (``predict``: particles without a label are read as unlabelled)."""
    if labels not in LABEL_POLICIES:
        raise ValueError(f"labels must be one of {', '.join(LABEL_POLICIES)}; got {labels!r}.")
    return labels == "optional"


@dataclass
class Entry:
    """One particle as a reader found it, before its image is read."""

    where: str  # "particles.json, object 3 (Id 540003)": starts its problem lines
    short: str  # "object 3": names it in another particle's line
    id: str | None = None
    code: int | None = None  # a lab export Class code
    raw_label: str | None = None
    label: str | None = None
    image_path: Path | None = None
    image_name: str = ""  # path shown in messages, relative to the dataset root
    image_rel: str = ""  # path relative to the images folder
    image_field: str = ""  # what to correct when the image is missing
    image: np.ndarray | None = None  # already read (MRC slices)
    mask_path: Path | None = None
    mask_name: str = ""
    mask_field: str = ""
    pixel_size_nm: float = float("nan")
    features: dict | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)
    unlabelled: bool = False  # no label given, and labels="optional"


class Report:
    """Problem lines (kept in particle order) and warnings of one reading."""

    def __init__(self):
        self._problems: list[tuple[int, str]] = []
        self.warnings: list[str] = []
        self.colour: list[str] = []
        self.unmasked: list[str] = []

    def add(self, index: int, line: str) -> None:
        self._problems.append((index, line))

    @property
    def problems(self) -> list[str]:
        return [line for _, line in sorted(self._problems, key=lambda p: p[0])]

    def summarise(self, particles: list[Particle]) -> None:
        """Turn per-particle notes into warning lines."""
        if self.colour:
            self.warnings.append(
                f"{len(self.colour)} colour image(s) converted to grayscale "
                f"(first: {self.colour[0]})."
            )
        if self.unmasked:
            self.warnings.append(
                f"{len(self.unmasked)} particle(s) have no mask file; their masks were "
                f"derived from the image (first: {self.unmasked[0]})."
            )


def check_path(value: str) -> str | None:
    """``value`` as a normalised relative POSIX path inside its base folder,
    or None if it is absolute or leads outside it. Backslashes (Windows lab
    software) count as separators."""
    value = value.replace("\\", "/").strip()
    if not value or value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        return None
    norm = posixpath.normpath(value)
    if norm in (".", "..") or norm.startswith("../"):
        return None
    return norm


def show_folder(folder: str) -> str:
    """A folder option as shown in messages: 'images/', or './'."""
    folder = folder.replace("\\", "/").strip("/")
    return f"{folder or '.'}/"


def show_path(folder: str, rel: str) -> str:
    """``rel`` inside a folder option, as shown in messages ('images/a.png')."""
    folder = folder.replace("\\", "/").strip("/")
    return rel if folder in ("", ".") else f"{folder}/{rel}"


def walk_folder(folder: Path, seen: dict[str, str], on_repeat=None):
    """``os.walk`` that follows symbolic links to folders (as the docs
    promise), sorted, skipping hidden entries, and entering each real folder
    once: a link back to a folder already read (a loop, or a second way to
    the same files) is passed to ``on_repeat(path, first)`` instead."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen and seen[real] != dirpath:
            dirnames[:] = []
            if on_repeat is not None:
                on_repeat(Path(dirpath), seen[real])
            continue
        seen[real] = dirpath
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield dirpath, dirnames, [f for f in sorted(filenames) if not f.startswith(".")]


def index_masks(mask_root: Path) -> dict[str, list[Path]]:
    """Mask files under ``mask_root`` keyed by their relative path without
    extension ("sub/540017")."""
    index: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in walk_folder(mask_root, {}):
        for fname in sorted(filenames):
            if fname.startswith(".") or Path(fname).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            full = Path(dirpath) / fname
            key = full.relative_to(mask_root).with_suffix("").as_posix()
            index.setdefault(key, []).append(full)
    return index


def find_mask(entry: Entry, index, masks_dir: str, key: str, report: Report, i: int) -> None:
    """Set ``entry``'s mask from ``index_masks``'s ``index`` at ``key``; two
    masks for one image are a problem line."""
    found = index.get(key, [])
    if len(found) > 1:
        names = " and ".join(show_path(masks_dir, f"{key}{p.suffix}") for p in found)
        report.add(i, f"{names} are both masks of {entry.image_name}. Keep one of them.")
    elif found:
        entry.mask_path = found[0]
        entry.mask_name = show_path(masks_dir, f"{key}{found[0].suffix}")


def as_problem(problem) -> Problem | None:
    """A ``Problem``, a preset's name (looked up) or None, as a Problem or None."""
    if problem is None or isinstance(problem, Problem):
        return problem
    return get_problem(problem)


def choose_problem(problem: Problem | None, entries: list[Entry], source: str) -> Problem:
    """The given problem, else the one the codes or labels belong to."""
    if problem is not None:
        return problem
    codes = [e.code for e in entries if e.code is not None]
    if codes:
        fits = {name: sum(c in p.codes for c in codes) for name, p in PROBLEMS.items()}
        best = max(fits, key=fits.get)
        if fits[best] == 0:
            found = ", ".join(str(c) for c in sorted(set(codes)))
            raise DatasetError(
                f"{source}: Class codes {found} belong to neither lamellarity "
                "(3, 4, 5) nor encapsulation (7, 8, 10). Correct the codes."
            )
        return PROBLEMS[best]
    labels = {e.raw_label.strip() for e in entries if e.raw_label is not None}
    lowered = {label.lower() for label in labels}
    fits = [p for p in PROBLEMS.values() if lowered <= set(p.classes)]
    if len(fits) == 1:
        return fits[0]
    return custom_problem(sorted(labels))


def assign_labels(entries: list[Entry], problem: Problem, report: Report, label_field: str) -> None:
    """Map each entry's code or raw label to a class of ``problem``."""
    preset = problem.name in PROBLEMS
    for i, e in enumerate(entries):
        if e.code is not None:
            if problem.codes is not None and e.code in problem.codes:
                e.label = problem.codes[e.code]
            else:
                codes = ", ".join(str(c) for c in sorted(problem.codes or ()))
                report.add(
                    i, f"{e.where}: Class {e.code} is not {_a(problem.name)} code ({codes})."
                )
        elif e.raw_label is not None:
            raw = e.raw_label.strip()
            label = raw.lower() if preset else raw
            if label in problem.classes:
                e.label = label
            else:
                report.add(
                    i,
                    f"{e.where}: {label_field} {raw!r} is not {_a(problem.name)} class "
                    f"({', '.join(problem.classes)}).",
                )


def _a(word: str) -> str:
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def check_duplicate_ids(entries: list[Entry], report: Report, id_field: str, fix: str) -> None:
    """A problem line for every entry whose id an earlier entry has."""
    first: dict[str, Entry] = {}
    for i, e in enumerate(entries):
        if e.id is None:
            continue
        if e.id in first:
            report.add(
                i, f"{e.where}: {id_field} {e.id} is already used by {first[e.id].short}. {fix}"
            )
        else:
            first[e.id] = e


def read_entries(
    entries: list[Entry], report: Report, pixel_size_nm, reporter, stage: str
) -> list[Particle]:
    """Read and check every entry's image and mask; return the particles."""
    if pixel_size_nm is not None and positive_number(pixel_size_nm) is None:
        raise DatasetError(
            f"--pixel-size {pixel_size_nm!r} is not a positive number of nm per pixel. "
            "Pass the pixel size, e.g. --pixel-size 0.84, or leave it out."
        )
    reporter = reporter or NullReporter()
    reporter.stage(stage, total=len(entries))
    particles = []
    for i, e in enumerate(entries):
        particle = _read_entry(i, e, report, pixel_size_nm)
        if particle is not None:
            particles.append(particle)
        reporter.advance()
    report.summarise(particles)
    return particles


def _read_entry(i: int, e: Entry, report: Report, pixel_size_nm) -> Particle | None:
    image = e.image
    if image is None:
        if e.image_path is None:
            return None  # its path was refused already
        if not e.image_path.is_file():
            report.add(
                i, not_a_file_message(e.where, "image", e.image_name, e.image_path, e.image_field)
            )
            return None
        try:
            image, colour = read_image(e.image_path, e.image_name)
        except BadImage as bad:
            report.add(i, str(bad))
            return None
        if colour:
            report.colour.append(e.image_name)
            log.info("%s: colour image converted to grayscale", e.image_name)
    try:
        check_side(image.shape[1], image.shape[0], e.image_name)
        check_pixels(image, e.image_name)
    except BadImage as bad:
        report.add(i, str(bad))
        return None
    height, width = image.shape
    derived = e.mask_path is None
    if derived:
        mask = derive_mask(image)
        if not mask.any():
            report.add(
                i,
                f"{e.image_name}: no particle stands out from the background, "
                "so no mask can be derived. Add a mask for it.",
            )
            return None
    else:
        if not e.mask_path.is_file():
            report.add(
                i, not_a_file_message(e.where, "mask", e.mask_name, e.mask_path, e.mask_field)
            )
            return None
        try:
            mask_image, _ = read_image(e.mask_path, e.mask_name)
        except BadImage as bad:
            report.add(i, str(bad))
            return None
        mh, mw = mask_image.shape
        if (mh, mw) != (height, width):
            report.add(i, f"{e.mask_name} is {mw}x{mh} but its image is {width}x{height}.")
            return None
        mask = mask_image > 0
        if not mask.any():
            report.add(
                i,
                f"{e.mask_name} is empty (no particle pixels). "
                "Redraw the mask, or delete it to have it derived.",
            )
            return None
    if e.id is None or (e.label is None and not e.unlabelled):
        return None
    px = float(pixel_size_nm) if pixel_size_nm is not None else e.pixel_size_nm
    return Particle(e.id, e.label, image, mask, px, e.source, derived, e.features, e.meta)


def positive_number(value) -> float | None:
    """``value`` as a finite positive float (a pixel size), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def _check_command(path, problem, images_dir, masks_dir, pixel_size_nm) -> str:
    parts = ["liposome-bench", "dataset", "check", shlex.quote(str(path))]
    if isinstance(problem, str):
        parts += ["--problem", problem]
    if images_dir != IMAGES_DIR:
        parts += ["--images-dir", shlex.quote(images_dir)]
    if masks_dir != MASKS_DIR:
        parts += ["--masks-dir", shlex.quote(masks_dir)]
    if pixel_size_nm is not None:
        parts += ["--pixel-size", f"{pixel_size_nm:g}"]
    return " ".join(parts)


def finish_reading(read, path, problem, images_dir, masks_dir, pixel_size_nm) -> Dataset:
    """Return the dataset, or raise its first problem."""
    dataset, report = read
    problems = report.problems
    if problems:
        line = problems[0]
        if len(problems) > 1:
            command = _check_command(path, problem, images_dir, masks_dir, pixel_size_nm)
            line += f" (and {len(problems) - 1} more; run `{command}`)"
        raise DatasetError(line)
    for warning in report.warnings:
        log.warning("%s", warning)
    dataset.warnings = list(report.warnings)
    return dataset


def no_particles_error(source: str) -> DatasetError:
    """The error for a dataset file or folder with no particle in it."""
    return DatasetError(f"{source} holds no particles. Add at least one particle.")


def meta_of(record: dict, known) -> dict:
    """A record's other scalar keys, lower-cased, values as strings (empty
    values left out): the particle's metadata (micrograph, session, ...)."""
    meta = {}
    for key, value in record.items():
        if key in known or value is None or isinstance(value, (dict, list)):
            continue
        text = str(value).strip()
        if text:
            meta[str(key).strip().lower()] = text
    return meta


def read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """Header (lower-cased) and (line number, row) pairs of a CSV file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text. Save it as UTF-8 CSV.") from None
    except OSError as exc:
        raise DatasetError(
            f"{path}: cannot be read ({exc.strerror}). Check that it is a readable file."
        ) from None
    # strict: an unterminated quote is an error, not the rest of the file
    # swallowed into one cell.
    reader = csv.reader(io.StringIO(text), strict=True)
    start = 1  # the line the current record starts on
    try:
        header = next(reader, None)
        if header is None:
            return [], []
        _check_record(path, header, start)
        header = [h.strip().lower() for h in header]
        _check_header(path, header)
        rows = []
        while True:
            start = reader.line_num + 1
            cells = next(reader, None)
            if cells is None:
                break
            if not any(c.strip() for c in cells):
                continue
            _check_record(path, cells, start)
            extra = [c for c in cells[len(header) :] if c.strip()]
            if extra:
                raise DatasetError(
                    f"{path}, line {start}: {len(cells)} cells but the header names "
                    f"{len(header)} columns. Quote a cell that holds a comma, or name the "
                    "extra column in the header."
                )
            row = {h: (c.strip() if c else "") for h, c in zip(header, cells)}
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise DatasetError(
                f'{path}, line {start}: a quote (") opened in this record is never closed, '
                "so the rest of the file would be one cell. Close the quote or remove it."
            ) from None
        raise DatasetError(f"{path}, line {start}: not valid CSV ({exc}). Fix the file.") from None
    return header, rows


#: What str.splitlines splits at: none of it belongs in an id, label or path
#: (and a message quoting it would not be one line).
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def has_line_break(text: str) -> bool:
    """Whether ``text`` holds anything ``str.splitlines`` splits at."""
    return any(c in text for c in _LINE_BREAKS)


def _check_record(path: Path, cells: list[str], line: int) -> None:
    """One CSV record is one line: a line break inside a quoted cell is a
    stray quote, not a particle's value."""
    if any(has_line_break(c) for c in cells):
        raise DatasetError(
            f"{path}, line {line}: a cell holds a line break (a quoted cell running over "
            "several lines, or a control character); expected one line per record. Remove "
            'the line break or the stray quote (").'
        )


def _check_header(path: Path, header: list[str]) -> None:
    """Refuse a column named twice: every row would take one of the two
    values silently."""
    seen: dict[str, list[int]] = {}
    for number, name in enumerate(header, start=1):
        if name:
            seen.setdefault(name, []).append(number)
    for name, numbers in seen.items():
        if len(numbers) > 1:
            raise DatasetError(
                f"{path}: the column {name!r} appears {len(numbers)} times in the header "
                f"(columns {', '.join(map(str, numbers))}). Keep one of them, or rename "
                "the others."
            )


@dataclass(frozen=True)
class ReaderFormat:
    """One dataset format in the reader table (``liposome_bench.data.readers``).

    ``read(path, problem, *, images_dir, masks_dir, pixel_size_nm, reporter,
    labels)`` returns ``(Dataset, Report)`` without raising on a particle's
    problem; ``suffixes`` are the file endings it reads; ``claims_folder(path,
    *, masks_dir, labels, file_suffixes)`` says whether a folder is of this
    format (or raises a ``DatasetError`` on one that almost is).
    """

    name: str
    read: Callable
    suffixes: tuple[str, ...] = ()
    claims_folder: Callable | None = None
