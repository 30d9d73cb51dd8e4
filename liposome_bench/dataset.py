"""Particle datasets: types, the lab export reader and writer, and dispatch.

A dataset is a list of particles. Each particle has an id, a label from its
problem's classes, a grayscale image that includes the particle's surround
(50 px on each side in the lab export, thesis section 3), a binary mask of the
particle, the pixel size in nm and the file it came from.

The lab export layout (what the lab's software writes and ``generate``
writes)::

    DIR/
      particles.json      one JSON object per particle (a JSON list, or
                          objects written one after another: both are read)
      images/<Image>      BMP, JPEG, PNG or TIFF, 8 or 16 bit
      masks/<stem>.png    the particle's mask, named after its image
      folds/k5-seed0.json the stored folds (see ``liposome_bench.folds``)
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liposome_bench.errors import DatasetError

EXPORT_JSON = "particles.json"
IMAGES_DIR = "images"
MASKS_DIR = "masks"


@dataclass(frozen=True)
class Problem:
    """A classification problem: its name, class names in a fixed order, and
    the lab export's integer codes for them (None for custom problems)."""

    name: str
    classes: tuple[str, ...]
    codes: dict[int, str] | None = None

    def code_of(self, label: str) -> int | None:
        if self.codes is None:
            return None
        return {v: k for k, v in self.codes.items()}[label]


LAMELLARITY = Problem(
    "lamellarity",
    ("unilamellar", "multilamellar", "uncertain"),
    {3: "unilamellar", 4: "multilamellar", 5: "uncertain"},
)
ENCAPSULATION = Problem(
    "encapsulation",
    ("full", "empty", "uncertain"),
    {8: "full", 7: "empty", 10: "uncertain"},
)
PROBLEMS = {p.name: p for p in (LAMELLARITY, ENCAPSULATION)}


def get_problem(name: str) -> Problem:
    """Return the preset problem called ``name``.

    Raises
    ------
    DatasetError
        If ``name`` is not a preset.
    """
    try:
        return PROBLEMS[name]
    except KeyError:
        raise DatasetError(
            f"Unknown problem {name!r}; expected one of {', '.join(PROBLEMS)}."
        ) from None


def custom_problem(classes) -> Problem:
    """A problem with the given class names (in this order) and no codes."""
    return Problem("custom", tuple(classes), None)


@dataclass
class Particle:
    """One particle: image with surround, mask, label and provenance.

    ``image`` is a 2-D array (uint8, uint16 or float32); ``mask`` a 2-D bool
    array of the same shape. ``features`` holds precomputed features from a
    lab export (key -> value as in the JSON), or None.
    """

    id: str
    label: str
    image: np.ndarray
    mask: np.ndarray
    pixel_size_nm: float = float("nan")
    source: str = ""
    mask_derived: bool = False
    features: dict | None = None


@dataclass
class Dataset:
    """A list of particles belonging to one problem, read from ``root``."""

    problem: Problem
    particles: list[Particle]
    root: Path | None = None
    description: str = ""
    synthetic: bool = False
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.particles)

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.particles]

    @property
    def y(self) -> np.ndarray:
        """Labels as class indices into ``problem.classes``."""
        index = {c: i for i, c in enumerate(self.problem.classes)}
        return np.array([index[p.label] for p in self.particles], dtype=np.int64)

    def class_counts(self) -> dict[str, int]:
        counts = {c: 0 for c in self.problem.classes}
        for p in self.particles:
            counts[p.label] += 1
        return counts

    def fingerprint(self) -> str:
        """SHA-256 over ids, labels, image and mask contents: any change to
        the particles changes it, so stored folds and results can be checked
        against the dataset they were made for."""
        h = hashlib.sha256()
        h.update(self.problem.name.encode())
        h.update("\0".join(self.problem.classes).encode())
        for p in self.particles:
            h.update(f"\0{p.id}\0{p.label}\0{p.image.shape}\0{p.image.dtype}".encode())
            h.update(np.ascontiguousarray(p.image).tobytes())
            h.update(np.packbits(p.mask).tobytes())
        return h.hexdigest()[:16]

    def subset(self, indices) -> "Dataset":
        """A new dataset with the particles at ``indices`` (same problem)."""
        return Dataset(
            self.problem,
            [self.particles[i] for i in indices],
            self.root,
            self.description,
            self.synthetic,
        )


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so a
    reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


# Lab export: writer ------------------------------------------------------------

def write_export(dataset: Dataset, out_dir, *, extra: dict | None = None) -> Path:
    """Write ``dataset`` in the lab export layout (see the module docstring).

    Images are written as PNG (8 or 16 bit, as the arrays are), masks as
    8-bit PNG (0 / 255). Everything is written into a temporary folder beside
    ``out_dir`` and renamed into place at the end, so an interrupted write
    leaves nothing half-written.

    Parameters
    ----------
    dataset : Dataset
    out_dir : path
        Must not exist yet, or be an empty folder.
    extra : dict, optional
        Extra keys written into every particle object (e.g. generator
        parameters), keyed by particle id.

    Returns
    -------
    Path of the written folder.

    Raises
    ------
    DatasetError
        If ``out_dir`` exists and is not empty.
    """
    import shutil

    from PIL import Image

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DatasetError(
            f"{out_dir} already exists and is not empty. Choose another --out or delete it."
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp"))
    try:
        (tmp / IMAGES_DIR).mkdir()
        (tmp / MASKS_DIR).mkdir()
        objects = []
        for p in dataset.particles:
            name = f"{p.id}.png"
            Image.fromarray(_to_pil_array(p.image)).save(tmp / IMAGES_DIR / name)
            Image.fromarray(p.mask.astype(np.uint8) * 255).save(tmp / MASKS_DIR / name)
            obj = {"Id": _json_id(p.id), "Image": name}
            code = dataset.problem.code_of(p.label)
            if code is not None:
                obj["Class"] = code
            else:
                obj["Label"] = p.label
            if np.isfinite(p.pixel_size_nm):
                obj["PixelSize"] = float(p.pixel_size_nm)
            if p.features:
                obj.update(p.features)
            if extra and p.id in extra:
                obj.update(extra[p.id])
            objects.append(obj)
        (tmp / EXPORT_JSON).write_text(json.dumps(objects, indent=1) + "\n", encoding="utf-8")
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _json_id(pid: str):
    return int(pid) if pid.isdigit() else pid


def _to_pil_array(image: np.ndarray) -> np.ndarray:
    if image.dtype in (np.uint8, np.uint16):
        return image
    return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


# Lab export: reader ------------------------------------------------------------

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


def resolve_dataset(data, problem: str | None, *, cache_dir=None, **reader_options) -> Dataset:
    """The dataset a command works on: ``data`` if given, else the built-in
    synthetic dataset of ``problem`` (generated once into the cache)."""
    if data is None:
        from liposome_bench.synth import default_dataset_path

        if problem is None:
            raise DatasetError("Without --data, --problem is needed to pick the built-in dataset.")
        data = default_dataset_path(problem, cache_dir)
    return load_dataset(data, problem, **reader_options)
