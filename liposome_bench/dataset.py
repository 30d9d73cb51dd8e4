"""Particle datasets: types, readers, validation, the lab export writer.

A dataset is a list of particles. Each particle has an id, a label from its
problem's classes, a grayscale image that includes the particle's surround
(50 px on each side in the lab export, thesis section 3), a binary mask of the
particle, the pixel size in nm and the file it came from.

Readers (``load_dataset`` picks one from what the path is; every layout is
described in docs/data-formats.md):

- ``load_export``: the lab particle export (what the lab's software writes and
  ``generate`` writes)::

      DIR/
        particles.json      one JSON object per particle (a JSON list, or
                            objects written one after another: both are read)
        images/<Image>      BMP, JPEG, PNG or TIFF, 8 or 16 bit
        masks/<stem>.png    the particle's mask, named after its image
                            (same stem; any of those formats)
        dataset.json        optional, written by ``write_export``: problem,
                            class order, description, synthetic or not
        folds/k5-seed0.json the stored folds (see ``liposome_bench.folds``)

- ``load_manifest``: a CSV with columns ``image``, ``label`` and optionally
  ``mask``, ``id``, ``pixel_size_nm``.
- ``load_folders``: ``DIR/<class name>/<images>``.
- ``load_mrc``: an MRC particle stack with a ``<stack stem>.csv`` of labels.

Every reader validates every particle and never drops one silently: each
problem is one line naming the file or JSON object and the fix; a reader
raises ``DatasetError`` with the first, ``check_dataset`` returns them all.
Where no mask is given one is derived (``derive_mask``) and
``Particle.mask_derived`` records it.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import shlex
import shutil
import stat
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liposome_bench import __version__
from liposome_bench.errors import ConfigError, DatasetError
from liposome_bench.io import UMASK, clean_stale_staging, staging_prefix
from liposome_bench.progress import NullReporter

EXPORT_JSON = "particles.json"
IMAGES_DIR = "images"
MASKS_DIR = "masks"
META_JSON = "dataset.json"

log = logging.getLogger(__name__)


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
    lab export (key -> value as in the JSON), or None. ``meta`` holds the
    particle's other keys as strings (a lab export's extra keys, a
    manifest's extra columns, e.g. ``{"micrograph": "m0003"}``): what
    ``--group-by`` groups folds by. Keys are lower-case.
    """

    id: str
    label: str | None  # None: an unlabelled particle (read with labels="optional")
    image: np.ndarray
    mask: np.ndarray
    pixel_size_nm: float = float("nan")
    source: str = ""
    mask_derived: bool = False
    features: dict | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class Dataset:
    """A list of particles belonging to one problem, read from ``root``."""

    problem: Problem
    particles: list[Particle]
    root: Path | None = None
    description: str = ""
    synthetic: bool = False
    warnings: list[str] = field(default_factory=list)
    # fingerprint()'s cache: (the objects it was computed from, the value).
    _fingerprint: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.particles)

    @property
    def labelled(self) -> bool:
        """Whether every particle has a label (readers called with
        ``labels="optional"`` may return unlabelled particles)."""
        return all(p.label is not None for p in self.particles)

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.particles]

    @property
    def labels(self) -> list[str]:
        """Every particle's class name, in order."""
        return [p.label for p in self.particles]

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
        against the dataset they were made for.

        Hashing every pixel is computed once (:func:`hash_particles`) and
        kept while the problem, the particle list, and each particle's id,
        label, image and mask are the same objects; replacing any of them
        computes it again. (Pixels changed in place, inside the same arrays,
        are not noticed: replace the array instead.)
        """
        sources = (
            self.problem,
            self.particles,
            *(x for p in self.particles for x in (p, p.id, p.label, p.image, p.mask)),
        )
        cached = self._fingerprint
        if (
            cached is not None
            and len(cached[0]) == len(sources)
            and all(a is b for a, b in zip(cached[0], sources))
        ):
            return cached[1]
        value = hash_particles(self.problem, self.particles)
        self._fingerprint = (sources, value)
        return value

    def subset(self, indices) -> "Dataset":
        """A new dataset with the particles at ``indices`` (same problem)."""
        return Dataset(
            self.problem,
            [self.particles[i] for i in indices],
            self.root,
            self.description,
            self.synthetic,
        )


def hash_particles(problem: Problem, particles) -> str:
    """The fingerprint of ``particles`` of ``problem`` (``Dataset.fingerprint``,
    which caches it): SHA-256 over the problem, ids, labels, image and mask
    contents, 16 hex digits."""
    h = hashlib.sha256()
    h.update(problem.name.encode())
    h.update("\0".join(problem.classes).encode())
    for p in particles:
        h.update(f"\0{p.id}\0{p.label}\0{p.image.shape}\0{p.image.dtype}".encode())
        h.update(np.ascontiguousarray(p.image).tobytes())
        h.update(np.packbits(p.mask).tobytes())
    return h.hexdigest()[:16]


# Lab export: writer ------------------------------------------------------------


def write_export(
    dataset: Dataset,
    out_dir,
    *,
    extra: dict | None = None,
    source: dict | None = None,
    read_back: bool = False,
) -> Path:
    """Write ``dataset`` in the lab export layout (see the module docstring).

    Images are written as PNG (8 or 16 bit, as the arrays are), masks as
    8-bit PNG (0 / 255). ``dataset.json`` records the problem, its class
    order, the description and whether the data are synthetic. Everything
    is written into a temporary folder beside ``out_dir`` and renamed into
    place at the end, so an interrupted write leaves nothing half-written.

    Parameters
    ----------
    dataset : Dataset
    out_dir : path
        Must not exist yet, or be an empty folder.
    extra : dict, optional
        Extra keys written into every particle object (e.g. generator
        parameters), keyed by particle id.
    source : dict, optional
        Where the particles came from (``dataset import``: the micrographs
        and the COCO ids), written to dataset.json as ``source``.
    read_back : bool
        Before the rename, read the written folder back with
        :func:`load_dataset` (the reader every command uses) and check that
        it holds the same particles, labels, image sizes and masks
        (``dataset import``); if not, nothing is left behind.

    Returns
    -------
    Path of the written folder.

    Raises
    ------
    DatasetError
        If ``out_dir`` exists and is not empty, or (``read_back``) the
        written folder does not read back as ``dataset``.
    """
    from PIL import Image

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DatasetError(
            f"{out_dir} already exists and is not empty. Choose another --out or delete it."
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(out_dir)  # what a killed run left (io.clean_stale_staging)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=staging_prefix(out_dir)))
    os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes it 0700
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
            for key, value in p.meta.items():
                obj[key.capitalize() if key.isalpha() else key] = value
            if extra and p.id in extra:
                obj.update(extra[p.id])
            objects.append(obj)
        (tmp / EXPORT_JSON).write_text(json.dumps(objects, indent=1) + "\n", encoding="utf-8")
        meta = _export_meta(dataset)
        if source:
            meta["source"] = source
        meta = json.dumps(meta, indent=1) + "\n"
        (tmp / META_JSON).write_text(meta, encoding="utf-8")
        if read_back:
            check_read_back(dataset, tmp, out_dir)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def check_read_back(dataset: Dataset, folder, out_dir) -> None:
    """Read the export just written to ``folder`` (the staging folder of
    ``out_dir``) with :func:`load_dataset` and compare it with ``dataset``:
    the same particle ids in order, labels, image sizes and masks.

    Raises
    ------
    DatasetError
        Naming the first difference, or what the reader refused, with the
        paths given as under ``out_dir``.
    """
    folder, out_dir = Path(folder), Path(out_dir)
    fail = (
        f"The export written to {out_dir} does not read back as what was imported ({{}}); "
        "nothing was written. Please report this with the command you ran."
    )
    try:
        back = load_dataset(folder, dataset.problem)
    except DatasetError as exc:
        raise DatasetError(fail.format(str(exc).replace(str(folder), str(out_dir)))) from None
    if len(back) != len(dataset):
        raise DatasetError(fail.format(f"{len(back)} particles instead of {len(dataset)}"))
    for want, got in zip(dataset.particles, back.particles):
        if got.id != want.id:
            problem = f"particle {want.id} reads back as {got.id}"
        elif got.label != want.label:
            problem = f"particle {want.id} reads back as {got.label!r}, not {want.label!r}"
        elif np.shape(got.image) != np.shape(want.image):
            problem = (
                f"the image of particle {want.id} reads back as "
                f"{np.shape(got.image)}, not {np.shape(want.image)}"
            )
        elif not np.array_equal(got.mask, np.asarray(want.mask, dtype=bool)):
            problem = f"the mask of particle {want.id} reads back changed"
        else:
            continue
        raise DatasetError(fail.format(problem))


def _export_meta(dataset: Dataset) -> dict:
    return {
        "problem": dataset.problem.name,
        "classes": list(dataset.problem.classes),
        "description": dataset.description,
        "synthetic": bool(dataset.synthetic),
        "written_by": f"liposome-bench {__version__}",
    }


def _json_id(pid: str):
    return int(pid) if pid.isdigit() else pid


def _to_pil_array(image: np.ndarray) -> np.ndarray:
    """8 or 16-bit pixels for a PNG: integer images as they are, float images
    in [0, 1] scaled to 8 bit, other float images (an MRC stack's densities)
    stretched from their minimum to their maximum over 16 bit."""
    if image.dtype in (np.uint8, np.uint16):
        return image
    image = np.asarray(image, dtype=np.float64)
    lo, hi = float(np.min(image)), float(np.max(image))
    if lo >= 0.0 and hi <= 1.0:
        return (image * 255 + 0.5).astype(np.uint8)
    if hi <= lo:
        return np.zeros(image.shape, dtype=np.uint16)
    return ((image - lo) / (hi - lo) * 65535 + 0.5).astype(np.uint16)


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


# Reading images ------------------------------------------------------------------

#: File name endings read as images (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
#: Decompression-bomb guard: an image wider or taller than this is refused
#: from its header, before its pixels are decoded. A particle image with its
#: 50 px surround is a few hundred pixels a side (thesis section 3, Figure 3).
MAX_IMAGE_SIDE = 4096
#: The smallest particle image accepted, in px a side: a particle of a few
#: pixels plus some surround. Below this, mask derivation (smoothing, closing)
#: and the shape features have nothing to measure; the lab export's images
#: (particle plus 50 px surround, thesis section 3) are far larger.
MIN_IMAGE_SIDE = 16
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
MRC_EXTENSIONS = (".mrc", ".mrcs")
#: The folder beside a dataset where ``folds`` stores its fold files (not a
#: class folder).
FOLDS_DIR = "folds"

#: What image decoders raise on a corrupt or truncated file (shared with
#: ``importers``, which decodes the same formats).
DECODE_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    SyntaxError,
    IndexError,
    KeyError,
    TypeError,
    RuntimeError,
    MemoryError,
    struct.error,
    zlib.error,
)
_FORMATS = "BMP, JPEG, PNG or TIFF"


class _Bad(Exception):
    """One problem line about one particle, collected by the readers."""


def _check_side(width: int, height: int, name: str) -> None:
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise _Bad(
            f"{name} is {width}x{height} px, over the {MAX_IMAGE_SIDE} px a side "
            "allowed for one particle image (decompression-bomb guard). "
            "Crop it to the particle and its surround."
        )
    if width < 1 or height < 1:
        raise _Bad(f"{name} is {width}x{height} px. Replace it with a valid image file.")
    if width < MIN_IMAGE_SIDE or height < MIN_IMAGE_SIDE:
        raise _Bad(
            f"{name} is {width}x{height} px, under the {MIN_IMAGE_SIDE} px a side a particle "
            "image needs (the particle and its surround). Replace it with the particle's "
            "full image."
        )


def _what_is(path: Path) -> str:
    """What ``path`` is, for a message about something that is not the
    readable file it should be."""
    try:
        st = os.stat(path)
    except ValueError:  # an embedded NUL character
        return "not a valid path (it holds a NUL character)"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop (links pointing at each other)"
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return f"a symbolic link to {target}, which does not exist"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return "not readable (permission denied)"
        return "missing"
    if stat.S_ISREG(st.st_mode):
        return "a file"
    if stat.S_ISDIR(st.st_mode):
        return "a folder"
    link = f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return f"a device{link}"
    if stat.S_ISFIFO(st.st_mode):
        return f"a named pipe{link}"
    return f"a special file{link}"


def _not_a_file(where: str, kind: str, name: str, path: Path, field_name: str) -> str:
    """The problem line for an image or mask path that is not a regular file."""
    what = _what_is(path)
    name = name if name.isprintable() else repr(name)
    if not field_name:  # a file found in a folder, named by its path alone
        return f"{name} is {what}, not an image file. Replace it with the image file, or remove it."
    if what == "missing":
        return f"{where}: {kind} {name} does not exist. Add the file or correct {field_name}."
    return (
        f"{where}: {kind} {name} is {what}, not an image file. Put the {kind} file "
        f"there or correct {field_name}."
    )


def _check_pixels(image: np.ndarray, name: str) -> None:
    """Refuse NaN or infinite intensities (float TIFF and MRC images), which
    every later step (normalisation, features, training) would spread."""
    if image.dtype.kind != "f":
        return
    bad = int(image.size - np.count_nonzero(np.isfinite(image)))
    if bad:
        raise _Bad(
            f"{name} has {bad} of {image.size} pixels NaN or infinite; expected finite "
            "intensities. Re-export the image with those pixels filled in."
        )


def _unreadable(name: str) -> _Bad:
    return _Bad(f"{name} cannot be read as a {_FORMATS} image. Replace it with a valid image file.")


def _truncated(name: str, width: int, height: int) -> _Bad:
    return _Bad(
        f"{name} is truncated or corrupt: its header says {width}x{height} px "
        "but its pixels cannot be decoded. Re-export the image."
    )


def _read_image(path: Path, name: str) -> tuple[np.ndarray, bool]:
    """Read one image file as a 2-D array.

    The size is checked from the header before any pixel is decoded. Colour
    images are converted to grayscale (ITU-R 601-2 luma, as Pillow does).

    Returns
    -------
    image : ndarray, 2-D, uint8, uint16 or float32
    colour : bool
        True if the file held a colour image (channels not all equal).

    Raises
    ------
    _Bad
        With the problem line (``name`` is the path shown in it).
    """
    if path.suffix.lower() in (".tif", ".tiff"):
        return _read_tiff(path, name)
    return _read_pil(path, name)


def _read_pil(path: Path, name: str) -> tuple[np.ndarray, bool]:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _Bad(
            f"{name} has more pixels than Pillow's decompression-bomb limit "
            f"({Image.MAX_IMAGE_PIXELS} px), far over one particle image "
            "(decompression-bomb guard). Crop it to the particle and its surround."
        ) from None
    except DECODE_ERRORS as exc:
        log.debug("%s: %s", path, exc)
        raise _unreadable(name) from None
    with im:
        width, height = im.size
        _check_side(width, height, name)
        try:
            im.load()
        except DECODE_ERRORS as exc:
            log.debug("%s: %s", path, exc)
            raise _truncated(name, width, height) from None
        return pil_to_array(im)


def pil_to_array(im) -> tuple[np.ndarray, bool]:
    """A decoded PIL image as a grayscale array (uint8, uint16 or float32) and
    whether it had colour (then converted as by
    :func:`rgb_to_gray`)."""
    mode = im.mode
    if mode == "L":
        return np.array(im), False
    if mode.startswith("I;16"):
        return np.array(im).astype(np.uint16), False
    if mode in ("I", "F"):
        return gray_dtype(np.array(im)), False
    if mode == "1":
        return np.array(im).astype(np.uint8) * 255, False
    if mode == "LA":
        return np.array(im.getchannel("L")), False
    rgb = np.array(im.convert("RGB"))
    return rgb_to_gray(rgb)


def _read_tiff(path: Path, name: str) -> tuple[np.ndarray, bool]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            n_pages = len(tif.pages)
            if n_pages == 0:
                raise _unreadable(name)
            page = tif.pages[0]
            width, height = int(page.imagewidth), int(page.imagelength)
            _check_side(width, height, name)
            if n_pages > 1:
                raise _Bad(
                    f"{name} holds {n_pages} images; expected one particle image per "
                    "file. Split it, or pass the stack as an .mrcs file."
                )
            try:
                array = page.asarray()
            except DECODE_ERRORS as exc:
                log.debug("%s: %s", path, exc)
                raise _truncated(name, width, height) from None
            planar = getattr(page, "planarconfig", 1) == 2
    except DECODE_ERRORS as exc:
        log.debug("%s: %s", path, exc)
        raise _unreadable(name) from None
    if array.ndim == 3 and planar and array.shape[0] in (3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        return rgb_to_gray(array[..., :3])
    if array.ndim != 2:
        raise _Bad(
            f"{name} has array shape {array.shape}; expected one 2-D grayscale image. "
            "Re-export it as a single grayscale image."
        )
    return gray_dtype(array), False


def gray_dtype(array: np.ndarray) -> np.ndarray:
    """uint8 and uint16 as they are; other integers as uint16 if they fit,
    else float32; floats as float32; bool as 0/255."""
    if array.dtype in (np.uint8, np.uint16):
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        if array.size and array.min() >= 0 and array.max() <= 65535:
            return array.astype(np.uint16)
    return array.astype(np.float32)


def rgb_to_gray(rgb: np.ndarray) -> tuple[np.ndarray, bool]:
    """An (H, W, 3) array as grayscale, and whether its channels differed
    (equal channels are kept exactly; otherwise ITU-R 601 luma,
    0.299 R + 0.587 G + 0.114 B)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if np.array_equal(r, g) and np.array_equal(g, b):
        return gray_dtype(r.copy()), False
    r, g, b = (c.astype(np.float64) for c in (r, g, b))
    gray = (299 * r + 587 * g + 114 * b) / 1000
    if rgb.dtype in (np.uint8, np.uint16):
        return np.round(gray).astype(rgb.dtype), True
    return gray.astype(np.float32), True


# Mask derivation -------------------------------------------------------------------


def derive_mask(image) -> np.ndarray:
    """Segment the particle at the centre of ``image``.

    Used by the readers where no mask is given (they set
    ``Particle.mask_derived``). The method, for a particle image with a
    surround of background around it (thesis section 3):

    1. scale intensities to the 0.5-99.5 percentile range and smooth with a
       Gaussian (sigma = max(1, side / 64) px) against shot noise;
    2. take the background level as the median of the image border, and the
       absolute deviation from it, so dark membranes on light ice and bright
       particles on dark stain are both found;
    3. threshold the deviation with Otsu's method, close gaps in the membrane
       ring (disk of radius max(1, side / 40) px) and fill holes, so a
       vesicle's ring becomes its whole disc;
    4. keep the connected region containing the centre, or the one nearest
       to it, and fill its holes.

    Parameters
    ----------
    image : array, 2-D

    Returns
    -------
    mask : bool array of ``image``'s shape; all False when nothing stands
        out from the background (a flat image).
    """
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu
    from skimage.morphology import disk

    img = np.asarray(image, dtype=np.float32)
    height, width = img.shape
    lo, hi = np.percentile(img, [0.5, 99.5])
    empty = np.zeros(img.shape, dtype=bool)
    if not hi > lo:
        return empty
    img = np.clip((img - lo) / (hi - lo), 0.0, 1.0)
    side = min(height, width)
    smooth = ndi.gaussian_filter(img, sigma=max(1.0, side / 64))
    border = np.concatenate([smooth[0], smooth[-1], smooth[1:-1, 0], smooth[1:-1, -1]])
    deviation = np.abs(smooth - np.median(border))
    if not deviation.max() > deviation.min():
        return empty
    foreground = deviation > threshold_otsu(deviation)
    radius = max(1, int(round(side / 40)))
    # Pad before closing so regions touching the border are not eroded.
    padded = np.pad(foreground, radius)
    padded = ndi.binary_closing(padded, structure=disk(radius))
    foreground = ndi.binary_fill_holes(padded[radius:-radius, radius:-radius])
    labels, n = ndi.label(foreground)
    if n == 0:
        return empty
    cy, cx = (height - 1) / 2, (width - 1) / 2
    centre = labels[int(round(cy)), int(round(cx))]
    if centre == 0:
        yy, xx = np.nonzero(labels)
        nearest = np.argmin((yy - cy) ** 2 + (xx - cx) ** 2)
        centre = labels[yy[nearest], xx[nearest]]
    return ndi.binary_fill_holes(labels == centre)


# Collecting problems ---------------------------------------------------------------


@dataclass
class _Entry:
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


class _Report:
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
        # No warning for particles without a pixel size: a run that needs
        # one (features in nm) refuses them with the fix
        # (features.pixel_size_problems), and one in px (cnn, --units px) does
        # not need it (issue 23, item 8).


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


def _folder(folder: str) -> str:
    """A folder option as shown in messages: 'images/', or './'."""
    folder = folder.replace("\\", "/").strip("/")
    return f"{folder or '.'}/"


def _display(folder: str, rel: str) -> str:
    folder = folder.replace("\\", "/").strip("/")
    return rel if folder in ("", ".") else f"{folder}/{rel}"


def _walk(folder: Path, seen: dict[str, str], on_repeat=None):
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


def _index_masks(mask_root: Path) -> dict[str, list[Path]]:
    """Mask files under ``mask_root`` keyed by their relative path without
    extension ("sub/540017")."""
    index: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in _walk(mask_root, {}):
        for fname in sorted(filenames):
            if fname.startswith(".") or Path(fname).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            full = Path(dirpath) / fname
            key = full.relative_to(mask_root).with_suffix("").as_posix()
            index.setdefault(key, []).append(full)
    return index


def _find_mask(entry: _Entry, index, masks_dir: str, key: str, report: _Report, i: int) -> None:
    found = index.get(key, [])
    if len(found) > 1:
        names = " and ".join(_display(masks_dir, f"{key}{p.suffix}") for p in found)
        report.add(i, f"{names} are both masks of {entry.image_name}. Keep one of them.")
    elif found:
        entry.mask_path = found[0]
        entry.mask_name = _display(masks_dir, f"{key}{found[0].suffix}")


def _as_problem(problem) -> Problem | None:
    if problem is None or isinstance(problem, Problem):
        return problem
    return get_problem(problem)


def _choose_problem(problem: Problem | None, entries: list[_Entry], source: str) -> Problem:
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


def _assign_labels(
    entries: list[_Entry], problem: Problem, report: _Report, label_field: str
) -> None:
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


def _check_duplicate_ids(entries: list[_Entry], report: _Report, id_field: str, fix: str) -> None:
    first: dict[str, _Entry] = {}
    for i, e in enumerate(entries):
        if e.id is None:
            continue
        if e.id in first:
            report.add(
                i, f"{e.where}: {id_field} {e.id} is already used by {first[e.id].short}. {fix}"
            )
        else:
            first[e.id] = e


def _read_entries(
    entries: list[_Entry], report: _Report, pixel_size_nm, reporter, stage: str
) -> list[Particle]:
    """Read and check every entry's image and mask; return the particles."""
    if pixel_size_nm is not None and _positive_number(pixel_size_nm) is None:
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


def _read_entry(i: int, e: _Entry, report: _Report, pixel_size_nm) -> Particle | None:
    image = e.image
    if image is None:
        if e.image_path is None:
            return None  # its path was refused already
        if not e.image_path.is_file():
            report.add(i, _not_a_file(e.where, "image", e.image_name, e.image_path, e.image_field))
            return None
        try:
            image, colour = _read_image(e.image_path, e.image_name)
        except _Bad as bad:
            report.add(i, str(bad))
            return None
        if colour:
            report.colour.append(e.image_name)
            log.info("%s: colour image converted to grayscale", e.image_name)
    try:
        _check_side(image.shape[1], image.shape[0], e.image_name)
        _check_pixels(image, e.image_name)
    except _Bad as bad:
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
            report.add(i, _not_a_file(e.where, "mask", e.mask_name, e.mask_path, e.mask_field))
            return None
        try:
            mask_image, _ = _read_image(e.mask_path, e.mask_name)
        except _Bad as bad:
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


def _positive_number(value) -> float | None:
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


def _finish(read, path, problem, images_dir, masks_dir, pixel_size_nm) -> Dataset:
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


def _no_particles(source: str) -> DatasetError:
    return DatasetError(f"{source} holds no particles. Add at least one particle.")


# Lab export --------------------------------------------------------------------------


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
        raise _no_particles(name)
    image_root = root / images_dir
    if not image_root.is_dir():
        raise DatasetError(
            f"{name} names its images in the folder {_folder(images_dir)} beside it, "
            "which does not exist. Pass --images-dir (e.g. '.' for images beside "
            f"{name})."
        )
    mask_root = root / masks_dir
    mask_index = _index_masks(mask_root) if mask_root.is_dir() else None
    meta = _read_export_meta(root)
    report = _Report()
    entries = []
    for i, obj in enumerate(objects):
        entries.append(
            _export_entry(
                i, obj, name, images_dir, image_root, report, optional=_labels_optional(labels)
            )
        )
    problem = _as_problem(problem)
    if problem is None and meta.get("problem") in PROBLEMS:
        problem = PROBLEMS[meta["problem"]]
    elif problem is None and meta.get("classes") and not any(e.code is not None for e in entries):
        problem = custom_problem(meta["classes"])
    problem = _choose_problem(problem, entries, name)
    _assign_labels(entries, problem, report, "Label")
    _check_duplicate_ids(entries, report, "Id", "Give every particle its own Id.")
    for i, e in enumerate(entries):
        if e.image_path is not None and mask_index is not None:
            _find_mask(e, mask_index, masks_dir, posixpath.splitext(e.image_rel)[0], report, i)
            if e.mask_path is None:
                report.unmasked.append(e.image_name)
    _suggest_images_dir(entries, root, image_root, images_dir, mask_root, name)
    particles = _read_entries(entries, report, pixel_size_nm, reporter, f"reading {name}")
    if mask_index is None:
        report.warnings.append(
            f"No {_folder(masks_dir)} folder beside {name}; every mask was derived "
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
        f"{name}: {len(missing)} of {len(entries)} images are not in {_folder(images_dir)} "
        f"(first: {missing[0].image_name}), but all of them are in {_folder(option)}. "
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
    report: _Report,
    optional: bool = False,
) -> _Entry:
    number = i + 1
    short = f"object {number}"
    if not isinstance(obj, dict):
        e = _Entry(f"{name}, {short}", short)
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
        or _has_line_break(str(pid))
    ):
        e = _Entry(f"{name}, {short}", short)
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
        e = _Entry(f"{name}, {short} (Id {pid})", short, id=pid)
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
    elif isinstance(obj.get("Label"), str) and _has_line_break(obj["Label"]):
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
    elif not isinstance(value, str) or _has_line_break(value):
        report.add(
            i, f"{e.where}: {key} {value!r} is not a file name. Give the name of its image file."
        )
    else:
        rel = check_path(value)
        if rel is None:
            report.add(
                i,
                f"{e.where}: image path {value!r} leads outside the "
                f"{_folder(images_dir)} folder. Use a path inside it.",
            )
        else:
            e.image_path, e.image_rel = image_root / rel, rel
            e.image_name = _display(images_dir, rel)
            e.image_field = f'its "{key}" name'
            e.source = e.image_name
    if "PixelSize" in obj:
        px = _positive_number(obj["PixelSize"])
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
    e.meta = _meta_of(obj, EXPORT_KEYS | set(EXPORT_FEATURE_KEYS))
    return e


#: Keys of a lab export particle object that are not features or metadata.
EXPORT_KEYS = {"Id", "Class", "Label", "Image", "Bmp", "Mask", "PixelSize"}


def _meta_of(record: dict, known) -> dict:
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
    return _finish(read, path, problem, images_dir, masks_dir, pixel_size_nm)


# Manifest CSV ------------------------------------------------------------------------

#: A manifest's own columns; any other column is metadata.
MANIFEST_COLUMNS = ("image", "label", "mask", "id", "pixel_size_nm")


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


def _has_line_break(text: str) -> bool:
    return any(c in text for c in _LINE_BREAKS)


def _check_record(path: Path, cells: list[str], line: int) -> None:
    """One CSV record is one line: a line break inside a quoted cell is a
    stray quote, not a particle's value."""
    if any(_has_line_break(c) for c in cells):
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


def _read_manifest(path, problem, *, pixel_size_nm=None, reporter=None, labels="required", **_):
    optional = _labels_optional(labels)
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
        raise _no_particles(name)
    report = _Report()
    entries = []
    for i, (line, row) in enumerate(rows):
        where = f"{name}, line {line}"
        e = _Entry(where, f"line {line}", source=f"{name}:{line}")
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
        e.meta = _meta_of(row, MANIFEST_COLUMNS)
        if row.get("pixel_size_nm", ""):
            px = _positive_number(row["pixel_size_nm"])
            if px is None:
                report.add(
                    i,
                    f"{where}: pixel_size_nm {row['pixel_size_nm']!r} is not a positive "
                    "number. Correct it or leave the cell empty.",
                )
            else:
                e.pixel_size_nm = px
        entries.append(e)
    problem = _choose_problem(_as_problem(problem), entries, name)
    _assign_labels(entries, problem, report, "label")
    _check_duplicate_ids(entries, report, "id", "Give every particle its own id (id column).")
    particles = _read_entries(entries, report, pixel_size_nm, reporter, f"reading {name}")
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
    return _finish(read, path, problem, IMAGES_DIR, MASKS_DIR, pixel_size_nm)


# Folder per class --------------------------------------------------------------------


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
    optional = _labels_optional(labels)
    root = Path(path)
    report = _Report()
    entries: list[_Entry] = []
    mask_root = root / masks_dir
    mask_index = _index_masks(mask_root) if mask_root.is_dir() else None
    for f in sorted(root.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS:
            i = len(entries)
            if optional:
                # A plain folder of images: unlabelled particles.
                e = _Entry(
                    f.name,
                    f.name,
                    id=f.stem,
                    source=f.name,
                    unlabelled=True,
                    image_path=f,
                    image_name=f.name,
                )
                if mask_index is not None:
                    _find_mask(e, mask_index, masks_dir, f.stem, report, i)
                    if e.mask_path is None:
                        report.unmasked.append(f.name)
            else:
                e = _Entry(f.name, f.name)
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
        for dirpath, dirnames, filenames in _walk(folder, seen, repeated):
            files += [Path(dirpath) / f for f in filenames]
        if not files:
            empty.append(folder.name)
            continue
        for f in files:
            rel = f.relative_to(root).as_posix()
            e = _Entry(rel, rel, id=f.stem, raw_label=folder.name, source=rel)
            i = len(entries)
            if f.suffix.lower() not in IMAGE_EXTENSIONS and not f.is_file():
                report.add(
                    i,
                    f"{rel} is {_what_is(f)}, not an image file. Remove it from the class folder.",
                )
            elif f.suffix.lower() not in IMAGE_EXTENSIONS:
                report.add(i, f"{rel} is not a {_FORMATS} image. Move it out of the class folder.")
            else:
                e.image_path, e.image_name = f, rel
                if mask_index is not None:
                    _find_mask(e, mask_index, masks_dir, posixpath.splitext(rel)[0], report, i)
                    if e.mask_path is None:
                        report.unmasked.append(rel)
            entries.append(e)
    if not any(e.raw_label or e.unlabelled for e in entries):
        raise _no_particles(f"{root} (a folder of class folders)")
    problem = _choose_problem(_as_problem(problem), entries, str(root))
    _assign_labels(entries, problem, report, "class folder")
    _check_duplicate_ids(
        entries,
        report,
        "id",
        "Rename one of the files (the id is the file name without extension).",
    )
    particles = _read_entries(entries, report, pixel_size_nm, reporter, f"reading {root.name}")
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
    return _finish(read, path, problem, IMAGES_DIR, masks_dir, pixel_size_nm)


# MRC particle stacks -----------------------------------------------------------------


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
        _check_side(nx, ny, f"{name} (each slice)")
    except _Bad as bad:
        raise DatasetError(str(bad)) from None
    optional = _labels_optional(labels)
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
    report = _Report()
    entries = []
    for i, ((line, row), image) in enumerate(zip(rows, images)):
        number = i + 1
        pid = row.get("id", "") or str(number)
        e = _Entry(
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
    problem = _choose_problem(_as_problem(problem), entries, sidecar.name)
    _assign_labels(entries, problem, report, "label")
    _check_duplicate_ids(entries, report, "id", f"Give every slice its own id in {sidecar.name}.")
    particles = _read_entries(entries, report, pixel_size_nm, reporter, f"reading {name}")
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
    return _finish(read, path, problem, IMAGES_DIR, MASKS_DIR, pixel_size_nm)


# Dispatch, check, describe -------------------------------------------------------------

_ACCEPTED = (
    "a lab export folder (with particles.json) or its .json file, a manifest .csv, "
    "an .mrc/.mrcs stack, or a folder of class folders"
)


def _labels_optional(labels: str) -> bool:
    """``labels``: "required" (training, cross-validation) or "optional"
    (``predict``: particles without a label are read as unlabelled)."""
    if labels not in LABEL_POLICIES:
        raise ValueError(f"labels must be one of {', '.join(LABEL_POLICIES)}; got {labels!r}.")
    return labels == "optional"


#: What a reader's ``labels`` argument accepts.
LABEL_POLICIES = ("required", "optional")


def _reader_for(path: Path, masks_dir: str, labels: str = "required"):
    if not path.exists():
        raise DatasetError(f"{path} does not exist. Expected {_ACCEPTED}.")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".json":
            return _read_export
        if suffix == ".csv":
            return _read_manifest
        if suffix in MRC_EXTENSIONS:
            return _read_mrc
        raise DatasetError(f"{path} is not a dataset file. Expected {_ACCEPTED}.")
    if not path.is_dir():
        raise DatasetError(
            f"{path} is {_what_is(path)}, not a dataset file or folder. Expected {_ACCEPTED}."
        )
    if path.suffix.lower() in (".json", ".csv", *MRC_EXTENSIONS):
        raise DatasetError(
            f"{path} is a folder, not a {path.suffix} file. Pass the {path.suffix} file itself, "
            f"or the folder holding it."
        )
    export_json = path / EXPORT_JSON
    if export_json.is_file():
        return _read_export
    if export_json.exists() or export_json.is_symlink():
        raise DatasetError(
            f"{export_json} is {_what_is(export_json)}, not the export's JSON file. "
            f"Replace it with the particles JSON file, or rename it if the folder is not "
            "a lab export."
        )
    # A folder beside its manifest or MRC stack is not a folder of class
    # folders (its images/ would become a class): ask for the file instead.
    dataset_files = sorted(
        f.name
        for f in path.iterdir()
        if f.is_file() and f.suffix.lower() in (".csv", *MRC_EXTENSIONS)
    )
    if dataset_files:
        raise DatasetError(
            f"{path} holds {', '.join(dataset_files)} but no {EXPORT_JSON}. "
            f"Pass the manifest or stack file itself, e.g. {path / dataset_files[0]}."
        )
    if _class_folders(path, masks_dir):
        return _read_folders
    if _labels_optional(labels) and any(
        f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS for f in path.iterdir()
    ):
        return _read_folders  # a plain folder of unlabelled images
    raise DatasetError(
        f"{path} holds neither {EXPORT_JSON} nor class folders. Expected {_ACCEPTED}."
    )


#: Group keys from Roboflow's file names ("m01_jpg.rf.3f2a....jpg": the
#: source image "m01", shared by its augmented copies).
ROBOFLOW_GROUP_PATTERN = r"^(.*)_(?:jpg|png)\.rf\."
#: Group keys from CVAT frame names of a video or series ("s12_frame_000031.png": "s12").
CVAT_GROUP_PATTERN = r"^(.*)_frame_\d+"


def compile_group_pattern(pattern):
    """``pattern`` compiled; it must have a capture group (the group key).

    Raises
    ------
    ConfigError
        On a pattern that is not a regular expression or has no group.
    """
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(
            f"--group-pattern {pattern!r} is not a regular expression ({exc}). "
            "Fix it, e.g. '^(.*)_(?:jpg|png)\\.rf\\.' for Roboflow."
        ) from None
    if regex.groups < 1:
        raise ConfigError(
            f"--group-pattern {pattern!r} has no capture group; the first group "
            "is the group key. Put ( ) around the part naming the source."
        )
    return regex


def group_key(pattern, file_name: str) -> str | None:
    """The first capture group of ``pattern`` in ``file_name``'s base name
    (``re.search``), or None when it does not match or captures nothing."""
    regex = pattern if isinstance(pattern, re.Pattern) else compile_group_pattern(pattern)
    found = regex.search(Path(str(file_name)).name)
    return found.group(1) if found and found.group(1) else None


def set_groups(particles, pattern) -> None:
    """Set each particle's ``meta["group"]`` to ``group_key(pattern, NAME)``
    of its micrograph's file name (``meta["micrograph"]``, else its image's
    ``source``).

    Raises
    ------
    ConfigError
        On a bad pattern (see ``compile_group_pattern``).
    DatasetError
        When the pattern does not match some particle's name.
    """
    regex = compile_group_pattern(pattern)
    missed = []
    for p in particles:
        name = p.meta.get("micrograph") or p.source
        key = group_key(regex, name)
        if key is None:
            missed.append(Path(str(name)).name)
        else:
            p.meta["group"] = key
    if missed:
        names = sorted(set(missed))
        raise DatasetError(
            f"--group-pattern {pattern!r} does not match micrograph {names[0]!r}"
            + (f" (and {len(names) - 1} more)" if len(names) > 1 else "")
            + ". Fix the pattern so its first group captures every file's source."
        )


def set_groups_from_file(particles, path) -> None:
    """Set each particle's ``meta["group"]`` from a CSV of ``id,group`` (what
    ``dataset check --write-grouping`` writes), for ``--group-by group``.

    Raises
    ------
    DatasetError
        On a file that is not such a CSV, or one that lacks a particle.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"--group-file {path}: cannot be read ({exc}).") from None
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["id", "group"]:
        raise DatasetError(
            f"--group-file {path}: expected a CSV with the header 'id,group'; got "
            f"{','.join(rows[0]) if rows else 'an empty file'!r}. "
            "Write one with: liposome-bench dataset check DATA --write-grouping FILE."
        )
    group_of = {r[0].strip(): r[1].strip() for r in rows[1:] if len(r) >= 2 and r[1].strip()}
    missing = [p.id for p in particles if p.id not in group_of]
    if missing:
        raise DatasetError(
            f"--group-file {path} has no group for particle {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + ". Write it again from this dataset with dataset check --write-grouping."
        )
    for p in particles:
        p.meta["group"] = group_of[p.id]


def _check_group_sources(group_pattern, group_file) -> None:
    if group_pattern is not None and group_file is not None:
        raise ConfigError(
            "--group-pattern and --group-file both set each particle's group; give one."
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
    reader = _reader_for(path, masks_dir, labels)
    _check_group_sources(group_pattern, group_file)
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
    dataset = _finish(read, path, problem, images_dir, masks_dir, pixel_size_nm)
    if group_pattern is not None:
        set_groups(dataset.particles, group_pattern)
    if group_file is not None:
        set_groups_from_file(dataset.particles, group_file)
    return dataset


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
        reader = _reader_for(path, masks_dir)
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
            _check_group_sources(group_pattern, group_file)
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


def _size_stats(values) -> dict | None:
    values = np.asarray(values)
    if values.size == 0:
        return None
    return {"min": int(values.min()), "median": float(np.median(values)), "max": int(values.max())}


def describe_dataset(dataset: Dataset) -> dict:
    """Summary of a dataset, as ``dataset info`` prints it.

    Returns
    -------
    dict with keys ``root``, ``description``, ``problem``, ``classes``,
    ``n_particles``, ``class_counts`` (list of {class, count, percent}, in
    class order; thesis Tables 1-2), ``image_size`` ({"all": ..., "per_class":
    {class: ...}}, each {"width": {min, median, max}, "height": ...} in px, or
    None for an empty class), ``pixel_size_nm`` ({min, median, max, unknown}),
    ``masks_derived`` (count), ``fingerprint``, ``synthetic``, ``warnings``,
    ``particle_size`` (see ``particle_sizes``) and ``surround_px`` (see
    ``surrounds``).
    """
    n = len(dataset)
    counts = dataset.class_counts()
    widths = np.array([p.image.shape[1] for p in dataset.particles], dtype=np.int64)
    heights = np.array([p.image.shape[0] for p in dataset.particles], dtype=np.int64)
    labels = np.array([p.label for p in dataset.particles], dtype=object)

    def sizes(select):
        if not np.any(select):
            return None
        return {"width": _size_stats(widths[select]), "height": _size_stats(heights[select])}

    px = np.array([p.pixel_size_nm for p in dataset.particles], dtype=np.float64)
    known = px[np.isfinite(px)]
    fingerprint = dataset.fingerprint()
    return {
        "root": str(dataset.root) if dataset.root is not None else None,
        "description": dataset.description,
        "problem": dataset.problem.name,
        "classes": list(dataset.problem.classes),
        "n_particles": n,
        "class_counts": [
            {"class": c, "count": k, "percent": 100.0 * k / n if n else 0.0}
            for c, k in counts.items()
        ],
        "image_size": {
            "all": sizes(np.ones(n, dtype=bool)),
            "per_class": {c: sizes(labels == c) for c in dataset.problem.classes},
        },
        "pixel_size_nm": {
            "min": float(known.min()) if known.size else None,
            "median": float(np.median(known)) if known.size else None,
            "max": float(known.max()) if known.size else None,
            "unknown": int(n - known.size),
        },
        "masks_derived": int(sum(p.mask_derived for p in dataset.particles)),
        "fingerprint": fingerprint,
        "synthetic": dataset.synthetic,
        "warnings": list(dataset.warnings),
        "particle_size": particle_sizes(dataset),
        "surround_px": surrounds(dataset),
    }


#: The surround of the lab export's crops (thesis section 3).
THESIS_SURROUND_PX = 50
#: ``dataset info`` warns when the median surround is below this (half the
#: thesis's) and the CNN input mode shows the surround.
LOW_SURROUND_PX = 25


def _float_stats(values) -> dict | None:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return None
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "max": float(values.max()),
    }


def _per_class(dataset: Dataset, values) -> dict:
    values = np.asarray(values, dtype=np.float64)
    labels = np.array([p.label for p in dataset.particles], dtype=object)
    return {
        "all": _float_stats(values),
        "per_class": {c: _float_stats(values[labels == c]) for c in dataset.problem.classes},
    }


def particle_sizes(dataset: Dataset) -> dict:
    """Particle size distribution: each mask's equivalent diameter (the
    diameter of the disc of its area), in nm when every particle has a pixel
    size, else in px.

    Returns
    -------
    dict with ``unit`` ("nm" or "px"), ``all`` and ``per_class`` ({class:
    {min, median, max} or None}).
    """
    area = np.array([np.count_nonzero(p.mask) for p in dataset.particles], dtype=np.float64)
    diameter = 2.0 * np.sqrt(area / np.pi)
    px = np.array([p.pixel_size_nm for p in dataset.particles], dtype=np.float64)
    unit = "nm" if px.size and np.all(np.isfinite(px) & (px > 0)) else "px"
    if unit == "nm":
        diameter = diameter * px
    return {"unit": unit, **_per_class(dataset, diameter)}


def surrounds(dataset: Dataset) -> dict:
    """The surround of each crop: the fewest pixels between the mask's
    bounding box and the image's edge, over the four sides (50 in the lab
    export, thesis section 3).

    Returns
    -------
    dict with ``all`` and ``per_class`` ({min, median, max} px or None) and
    ``below`` (particles with less than ``LOW_SURROUND_PX``).
    """
    values = []
    for p in dataset.particles:
        rows = np.flatnonzero(p.mask.any(axis=1))
        cols = np.flatnonzero(p.mask.any(axis=0))
        if rows.size == 0:
            values.append(0)
            continue
        h, w = p.mask.shape
        values.append(min(rows[0], cols[0], h - 1 - rows[-1], w - 1 - cols[-1]))
    values = np.asarray(values, dtype=np.float64)
    return {**_per_class(dataset, values), "below": int(np.sum(values < LOW_SURROUND_PX))}


def surround_warning(info: dict, input_mode: str) -> str | None:
    """A warning when the median surround (of ``describe_dataset``'s
    ``info``) is far below the thesis's 50 px and ``input_mode`` shows the
    surround to the CNN; None otherwise."""
    stats = info.get("surround_px", {}).get("all")
    if input_mode != "surrounding" or stats is None or stats["median"] >= LOW_SURROUND_PX:
        return None
    return (
        f"the median surround is {stats['median']:g} px, far below the thesis's "
        f"{THESIS_SURROUND_PX} px, and input mode 'surrounding' feeds it to the CNN: its "
        "results are not comparable with the thesis's section 8.5. Re-import with "
        f"--surround {THESIS_SURROUND_PX}, or use --input-mode cropped or masked."
    )
