"""Particle datasets from annotated micrographs (``dataset import``).

Many labs have no per-particle export, only micrographs with annotations:

- **COCO** JSON (CVAT, Roboflow, Labelbox): ``import_coco`` reads polygons,
  RLE masks (compressed or not, decoded with ``pycocotools``) and boxes
  (masks only with ``box_masks="box"`` or ``"ellipse"``);
- **instance label images** (ilastik, Cellpose, CellProfiler): ``import_labels``
  reads one label image per micrograph (uint8/16/32 TIFF or PNG, 0 =
  background, each other value one particle) and a CSV of each
  (micrograph, label)'s class.

Both cut one crop per particle (its mask's bounding box plus ``surround`` px
each side, clipped at the micrograph's edge; thesis section 3 has 50 px),
keep each particle's own mask (overlapping instances keep theirs), and write
the lab export layout with ``dataset.write_export``: every particle records
its ``Micrograph`` (the group key of ``--group-by micrograph``), its
``BBox`` [x, y, width, height] in the micrograph (px, COCO's order), its
``Crop`` box and whether the micrograph's edge cuts it (``EdgeCut``). The
pixel size comes from the micrograph's TIFF or MRC metadata, else from
``pixel_size_nm``. Every inconsistency is one line; all of them are
collected and nothing is written if there is any. docs/data-formats.md
("From micrographs") describes both inputs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liposome_bench.annotations import check_coco, check_micrograph_pixels
from liposome_bench.data.groups import (
    CVAT_GROUP_PATTERN,  # noqa: F401  (documented here, beside the importers)
    ROBOFLOW_GROUP_PATTERN,  # noqa: F401
    compile_group_pattern,
    set_groups,
)
from liposome_bench.data.images import (
    DECODE_ERRORS,
    IMAGE_EXTENSIONS,
    MIN_IMAGE_SIDE,
    gray_dtype,
    pil_to_array,
    rgb_to_gray,
)
from liposome_bench.data.kernel import check_path, read_csv_rows
from liposome_bench.data.types import PROBLEMS, Dataset, Particle, Problem, custom_problem
from liposome_bench.data.writer import write_export
from liposome_bench.errors import ConfigError, DatasetError
from liposome_bench.outputs import check_apart
from liposome_bench.progress import NullReporter

log = logging.getLogger(__name__)

#: Default surround (px) around each particle's bounding box: the lab
#: export's 50 px (thesis section 3).
DEFAULT_SURROUND_PX = 50
#: Micrograph files read (case-insensitive endings).
MICROGRAPH_EXTENSIONS = IMAGE_EXTENSIONS + (".mrc", ".dm3", ".dm4")
#: Largest micrograph side read (px); larger files are refused from their
#: header before their pixels are decoded (decompression-bomb guard).
MAX_MICROGRAPH_SIDE = 12000
#: How a box-only COCO annotation becomes a mask.
BOX_MASKS = ("box", "ellipse")
#: A TIFF's standard resolution tags give a pixel size only up to this many
#: nm/px: larger values are the 72 or 300 dpi that image software writes by
#: default, not a microscope's sampling.
MAX_TAG_PIXEL_SIZE_NM = 100.0
#: A polygon or box may reach this far (px) past its image's edge (annotation
#: tools round to the pixel's far side); farther is "outside its image".
EDGE_TOLERANCE_PX = 1.0
#: Name endings of a label image beside its micrograph's stem ("m01_masks.png"
#: for "m01.tif"), as Cellpose and others write them; the bare stem also works.
LABEL_SUFFIXES = ("", "_labels", "_label", "_masks", "_mask", "_cp_masks", "_seg")


class ImportProblems(DatasetError):
    """Inconsistent annotations: ``problems`` holds every line; the message
    is the first, with how many more there are."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        more = len(self.problems) - 1
        super().__init__(self.problems[0] + (f" (and {more} more)" if more else ""))


@dataclass
class MicrographSummary:
    """What one micrograph gave."""

    micrograph: str
    file: str
    width: int
    height: int
    pixel_size_nm: float
    pixel_size_from: str  # "TIFF metadata", "MRC header", "DM metadata", "--pixel-size", "unknown"
    particles: int = 0
    edge_cut: int = 0  # kept and flagged
    dropped: int = 0  # edge-cut and dropped (drop_edge)
    widened: int = 0  # crop widened to the readers' MIN_IMAGE_SIDE
    too_small: int = 0  # dropped: the micrograph is under MIN_IMAGE_SIDE a side
    folder: str = ""  # the images folder ``file`` is in (absolute)
    image_id: object = None  # COCO: the image's id in its annotations file
    annotations: str | None = None  # COCO: the annotations file (absolute)


@dataclass
class ImportResult:
    """The written dataset and what the import did."""

    dataset: Dataset
    out: Path
    micrographs: list[MicrographSummary]
    skipped_crowd: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def per_class(self) -> dict[str, int]:
        return self.dataset.class_counts()

    @property
    def edge_cut(self) -> int:
        return sum(m.edge_cut for m in self.micrographs)

    @property
    def dropped(self) -> int:
        return sum(m.dropped for m in self.micrographs)

    @property
    def widened(self) -> int:
        return sum(m.widened for m in self.micrographs)

    @property
    def too_small(self) -> int:
        return sum(m.too_small for m in self.micrographs)


# Reading micrographs --------------------------------------------------------


def read_micrograph(path) -> tuple[np.ndarray, float, str]:
    """Read a micrograph and its pixel size.

    TIFF, PNG, JPEG, BMP, MRC or Gatan DM3/DM4 (with ``ncempy``); colour images are converted to gray as the
    readers of ``liposome_bench.dataset`` do; float images (MRC) are
    stretched from their minimum to their maximum over 16 bit, once for the
    whole micrograph, so every crop of it shares one grey scale.

    The pixel size (nm/px) is read from an MRC header's voxel size (Å), a
    TIFF's ImageJ metadata (unit nm, µm or Å with the X resolution), or a
    TIFF's standard resolution tags (cm or inch) when they give at most
    ``MAX_TAG_PIXEL_SIZE_NM``, or a DM file's calibration (Scale in nm, µm or
    Å per pixel). Otherwise it is NaN.

    Returns
    -------
    image : ndarray, 2-D, uint8 or uint16 (float32 never leaves this function)
    pixel_size_nm : float (NaN if unknown)
    source : str
        "TIFF metadata", "MRC header", "DM metadata" or "" (unknown).

    Raises
    ------
    DatasetError
        If the file cannot be read, is too large or is not one 2-D image.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    px, source = float("nan"), ""
    if suffix == ".mrc":
        image, px = _read_mrc_micrograph(path)
        source = "MRC header" if np.isfinite(px) else ""
    elif suffix in (".tif", ".tiff"):
        image, px = _read_tiff_micrograph(path)
        source = "TIFF metadata" if np.isfinite(px) else ""
    elif suffix in (".dm3", ".dm4"):
        image, px = _read_dm_micrograph(path)
        source = "DM metadata" if np.isfinite(px) else ""
    else:
        image = _read_pil_micrograph(path)
    check_micrograph_pixels(image, path.name)
    if image.dtype not in (np.uint8, np.uint16):
        image = gray_dtype(image)
        if image.dtype == np.float32:
            image = _stretch_to_uint16(image)
    return image, px, source


def _stretch_to_uint16(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    lo, hi = float(np.min(image)), float(np.max(image))
    if not hi > lo:
        return np.zeros(image.shape, dtype=np.uint16)
    return ((image - lo) / (hi - lo) * 65535 + 0.5).astype(np.uint16)


def _check_micrograph_side(width: int, height: int, name: str) -> None:
    if width > MAX_MICROGRAPH_SIDE or height > MAX_MICROGRAPH_SIDE:
        raise DatasetError(
            f"{name} is {width}x{height} px, over the {MAX_MICROGRAPH_SIDE} px a side read "
            "for one micrograph (decompression-bomb guard). Bin or tile it first."
        )


def _read_pil_micrograph(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
            with im:
                _check_micrograph_side(*im.size, path.name)
                im.load()
                image, _colour = pil_to_array(im)
    except DatasetError:
        raise
    except (*DECODE_ERRORS, Image.DecompressionBombError) as exc:
        log.debug("%s: %s", path, exc)
        raise DatasetError(
            f"{path.name} cannot be read as a BMP, JPEG, PNG or TIFF image. "
            "Replace it with a valid image file."
        ) from None
    return image


def _single_page(tif, path: Path, expected: str, fix: str):
    """The only page of an open TIFF, its size checked; a stack of several
    images is a one-line error saying what was ``expected`` and the ``fix``."""
    page = tif.pages[0]
    _check_micrograph_side(int(page.imagewidth), int(page.imagelength), path.name)
    if len(tif.pages) > 1:
        raise DatasetError(f"{path.name} holds {len(tif.pages)} images; expected {expected}. {fix}")
    return page


def _read_tiff_micrograph(path: Path) -> tuple[np.ndarray, float]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = _single_page(
                tif, path, "one micrograph per file", "Save the frames' sum, or split the stack."
            )
            array = page.asarray()
            planar = getattr(page, "planarconfig", 1) == 2
            px = _tiff_pixel_size(page, tif.imagej_metadata or {})
    except DatasetError:
        raise
    except DECODE_ERRORS as exc:
        log.debug("%s: %s", path, exc)
        raise DatasetError(
            f"{path.name} cannot be read as a TIFF image. Replace it with a valid image file."
        ) from None
    if array.ndim == 3 and planar and array.shape[0] in (3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array, _ = rgb_to_gray(array[..., :3])
    if array.ndim != 2:
        raise DatasetError(
            f"{path.name} has array shape {array.shape}; expected one 2-D grayscale "
            "micrograph. Re-export it as a single grayscale image."
        )
    return array, px


# ImageJ's unit names -> nm per unit.
_UNITS_NM = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "micron": 1e3,
    "um": 1e3,
    "µm": 1e3,
    "\u03bcm": 1e3,
    "\\u00b5m": 1e3,
    "microns": 1e3,
    "a": 0.1,
    "å": 0.1,
    "angstrom": 0.1,
    "mm": 1e6,
}


def _tiff_pixel_size(page, imagej: dict) -> float:
    """nm/px from a TIFF's ImageJ unit or resolution tags; NaN if absent."""
    tag = page.tags.get("XResolution")
    if tag is None:
        return float("nan")
    try:
        num, den = tag.value
        per_unit = num / den  # pixels per unit
    except (TypeError, ValueError, ZeroDivisionError):
        return float("nan")
    if not (math.isfinite(per_unit) and per_unit > 0):
        return float("nan")
    unit = str(imagej.get("unit", "")).strip().lower()
    if unit in _UNITS_NM:
        return _UNITS_NM[unit] / per_unit
    res_unit = page.tags.get("ResolutionUnit")
    res_unit = int(res_unit.value) if res_unit is not None else 2
    nm_per_unit = {2: 2.54e7, 3: 1e7}.get(res_unit)
    if nm_per_unit is None:
        return float("nan")
    px = nm_per_unit / per_unit
    return px if px <= MAX_TAG_PIXEL_SIZE_NM else float("nan")


def _read_mrc_micrograph(path: Path) -> tuple[np.ndarray, float]:
    import mrcfile

    try:
        with mrcfile.open(path, header_only=True, permissive=False) as mrc:
            nx, ny, nz = int(mrc.header.nx), int(mrc.header.ny), int(mrc.header.nz)
            angstrom = float(mrc.voxel_size.x)
        _check_micrograph_side(nx, ny, path.name)
        if nz != 1:
            raise DatasetError(
                f"{path.name} holds {nz} sections; expected one 2-D micrograph. "
                "Save the frames' sum as a 2-D .mrc."
            )
        with mrcfile.open(path, permissive=False) as mrc:
            array = np.array(mrc.data, dtype=np.float32).reshape(ny, nx)
    except DatasetError:
        raise
    except DECODE_ERRORS as exc:
        log.debug("%s: %s", path, exc)
        raise DatasetError(
            f"{path.name} cannot be read as an MRC file. Re-export the micrograph."
        ) from None
    return array, (angstrom / 10.0 if angstrom > 0 else float("nan"))


#: nm per unit of a DM calibration's Units.
_DM_UNITS_NM = {"nm": 1.0, "µm": 1000.0, "um": 1000.0, "å": 0.1, "a": 0.1, "angstrom": 0.1}


def _read_dm_micrograph(path: Path) -> tuple[np.ndarray, float]:
    """A Gatan DM3/DM4 micrograph (``ncempy.io.dm``) and its pixel size from
    its calibration (NaN when its unit is not a length or the two axes differ)."""
    try:
        from ncempy.io import dm
    except ImportError:
        raise DatasetError(
            f"{path.name}: reading DM3/DM4 micrographs needs ncempy. "
            "Install it with: pip install 'liposome-bench[dm]'."
        ) from None
    try:
        if path.stat().st_size < 16:  # ncempy's own clean-up fails on so short a file
            raise ValueError("shorter than a DM header")
        # on_memory=False: reading into a memory map left ncempy unable to close it.
        with dm.fileDM(str(path), on_memory=False) as f:
            if f.numObjects < 1:
                raise DatasetError(f"{path.name} holds no image. Save the micrograph again.")
            shape = (f.zSize[-1], f.ySize[-1], f.xSize[-1])
            if shape[0] != 1 or f.zSize2[-1] != 1:
                raise DatasetError(
                    f"{path.name} holds a stack of {shape[0]} images; expected one 2-D "
                    "micrograph. Save the frames' sum as one image."
                )
            _check_micrograph_side(int(shape[2]), int(shape[1]), path.name)
            found = f.getDataset(0)
        array = np.array(found["data"])
        scales = [float(v) for v in found.get("pixelSize", [])]
        units = [str(u).strip().lower() for u in found.get("pixelUnit", [])]
    except DatasetError:
        raise
    except Exception as exc:  # ncempy raises IOError, AssertionError, IndexError, ...
        log.debug("%s: %s", path, exc)
        raise DatasetError(
            f"{path.name} cannot be read as a DM3/DM4 file ({type(exc).__name__}). "
            "Save the micrograph again from DigitalMicrograph."
        ) from None
    if array.ndim != 2:
        raise DatasetError(
            f"{path.name} holds a {array.ndim}-D dataset; expected one 2-D micrograph."
        )
    px = float("nan")
    if len(scales) >= 2 and len(set(units[:2])) == 1 and units[0] in _DM_UNITS_NM:
        sizes = [scale * _DM_UNITS_NM[units[0]] for scale in scales[:2]]
        if all(np.isfinite(sizes)) and sizes[0] > 0 and abs(sizes[0] - sizes[1]) <= 1e-3 * sizes[0]:
            # Scales are float32: 0.0025 µm reads as 2.4999999 nm.
            px = float(f"{sizes[0]:.6g}")
    return array, px


# Cutting particles out of a micrograph ----------------------------------------


@dataclass
class _Instance:
    """One particle's mask inside its micrograph: a bool array covering the
    mask's bounding box, at column x0 and row y0."""

    id: str
    label: str
    box: np.ndarray
    x0: int
    y0: int
    extra: dict = field(default_factory=dict)


def _trim(mask: np.ndarray, x0: int = 0, y0: int = 0) -> tuple[np.ndarray, int, int] | None:
    """``mask`` cut to its bounding box, with the box's offset; None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return np.ascontiguousarray(mask[r0:r1, c0:c1]), x0 + int(c0), y0 + int(r0)


def _widen(lo: int, hi: int, size: int) -> tuple[int, int]:
    """``[lo, hi)`` grown about its middle to at least ``MIN_IMAGE_SIDE``,
    shifted to stay inside ``[0, size)`` (``size >= MIN_IMAGE_SIDE``)."""
    need = MIN_IMAGE_SIDE - (hi - lo)
    if need <= 0:
        return lo, hi
    lo = max(lo - (need + 1) // 2, 0)
    hi = min(lo + MIN_IMAGE_SIDE, size)
    return max(hi - MIN_IMAGE_SIDE, 0), hi


def _cut_particles(
    micrograph_id: str,
    image: np.ndarray,
    instances: list[_Instance],
    pixel_size_nm: float,
    source: str,
    surround: int,
    drop_edge: bool,
    summary: MicrographSummary,
    extra: dict,
) -> list[Particle]:
    """One particle per instance: the crop of ``image`` around its mask's
    bounding box with ``surround`` px each side (clipped at the edge), and
    the mask inside that crop. A crop under the readers' ``MIN_IMAGE_SIDE``
    (a small particle at an edge or corner) is widened inside the
    micrograph and counted in ``summary.widened``; on a micrograph under
    ``MIN_IMAGE_SIDE`` a side no crop can be, so its particles are dropped
    and counted in ``summary.too_small``."""
    height, width = image.shape
    particles = []
    for inst in instances:
        h, w = inst.box.shape
        x1, y1 = inst.x0 + w, inst.y0 + h
        cut = inst.x0 == 0 or inst.y0 == 0 or x1 == width or y1 == height
        if cut and drop_edge:
            summary.dropped += 1
            continue
        cx0, cy0 = max(inst.x0 - surround, 0), max(inst.y0 - surround, 0)
        cx1, cy1 = min(x1 + surround, width), min(y1 + surround, height)
        if width < MIN_IMAGE_SIDE or height < MIN_IMAGE_SIDE:
            # No crop of this micrograph reaches the readers' minimum.
            summary.too_small += 1
            continue
        if cx1 - cx0 < MIN_IMAGE_SIDE or cy1 - cy0 < MIN_IMAGE_SIDE:
            cx0, cx1 = _widen(cx0, cx1, width)
            cy0, cy1 = _widen(cy0, cy1, height)
            summary.widened += 1
        crop = image[cy0:cy1, cx0:cx1].copy()
        mask = np.zeros(crop.shape, dtype=bool)
        mask[inst.y0 - cy0 : inst.y0 - cy0 + h, inst.x0 - cx0 : inst.x0 - cx0 + w] = inst.box
        particles.append(
            Particle(
                inst.id,
                inst.label,
                crop,
                mask,
                pixel_size_nm,
                source,
                meta={"micrograph": micrograph_id},
            )
        )
        extra[inst.id] = {
            "BBox": [inst.x0, inst.y0, w, h],
            "Crop": [cx0, cy0, cx1 - cx0, cy1 - cy0],
            "EdgeCut": bool(cut),
            **inst.extra,
        }
        summary.particles += 1
        summary.edge_cut += int(cut)
    return particles


def _pixel_size(px: float, source: str, given, name: str, notes: list[str]) -> tuple[float, str]:
    """The micrograph's own pixel size when it has one, else ``given``."""
    if np.isfinite(px):
        if given is not None and abs(px - given) > 0.01 * px:
            notes.append(
                f"{name}: its {source} says {px:g} nm/px, not the --pixel-size "
                f"{given:g}; the metadata's value is used."
            )
        return float(px), source
    if given is not None:
        return float(given), "--pixel-size"
    return float("nan"), "unknown"


def _problem_of(labels: list[str]) -> Problem:
    """The preset whose class names the labels are (case-insensitively),
    else a custom problem with the labels in the given order."""
    lowered = {label.lower() for label in labels}
    fits = [p for p in PROBLEMS.values() if lowered <= set(p.classes)]
    if len(fits) == 1:
        return fits[0]
    return custom_problem(labels)


def _finish_import(
    particles,
    problem,
    out,
    extra,
    micrographs,
    description,
    skipped_crowd=0,
    notes=(),
    group_pattern=None,
    coco=None,
) -> ImportResult:
    if not particles:
        raise DatasetError(
            "No particles to write: "
            + (
                "every annotated particle is cut by the micrograph's edge and --drop-edge "
                "drops them, or is on a micrograph under "
                f"{MIN_IMAGE_SIDE} px a side."
                if any(m.dropped or m.too_small for m in micrographs)
                else "the annotations hold none."
            )
            + " Check the inputs."
        )
    if group_pattern is not None:
        set_groups(particles, group_pattern)
    preset = problem.name in PROBLEMS
    for p in particles:
        if preset:
            p.label = p.label.lower()
    used = {p.label for p in particles}
    if not preset:
        problem = custom_problem([c for c in problem.classes if c in used])
    dataset = Dataset(problem, particles, None, description)
    unknown = sum(1 for p in particles if not np.isfinite(p.pixel_size_nm))
    notes = list(notes)
    if unknown:
        notes.append(
            f"{unknown} particle(s) have no pixel size (no TIFF or MRC metadata); the default "
            "features are in nm. Import again with --pixel-size NM, or run with --units px."
        )
    if preset and coco:
        for record in coco.values():
            record["class_category"] = {
                c.lower(): cid for c, cid in record["class_category"].items()
            }
    path = write_export(
        dataset,
        out,
        extra=extra,
        source=import_source(micrographs, coco),
        read_back=True,
    )
    dataset.root = Path(path)
    return ImportResult(dataset, Path(path), micrographs, skipped_crowd, notes)


def import_source(micrographs, coco=None) -> dict:
    """Where an import's particles came from, as dataset.json's ``source``:
    each micrograph's file, folder and size (and, from COCO, its image id and
    annotations file), and each COCO file's categories with the category id
    of every class. ``predict --coco-results`` and ``--overlays`` read it
    (``liposome_bench.placement``)."""
    return {
        "micrographs": {
            m.micrograph: {
                "file": m.file,
                "folder": m.folder,
                "width": m.width,
                "height": m.height,
                **({"image_id": m.image_id, "annotations": m.annotations} if m.annotations else {}),
            }
            for m in micrographs
        },
        "coco": coco or {},
    }


def _check_out(out, inputs: dict) -> Path:
    """Refuse an ``--out`` that is not new or empty, or that is, holds or
    lies inside one of the ``inputs`` ({what: path}; symlinks followed):
    crops written into the micrographs' folder would be read as micrographs
    by the next import."""
    check_apart(out, inputs)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(
            f"{out} already exists and is not empty. Choose another --out or delete it."
        )
    return out


def _safe_id(text: str) -> str:
    """A particle id usable as a file name (write_export names files by id)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "particle"


# COCO ---------------------------------------------------------------------------


def parse_class_map(spec) -> dict[str, str | int] | None:
    """``--classes name=code,...``: category name -> lab export class code
    (an integer) or class name.

    Raises
    ------
    ConfigError
        On a malformed entry or a name given twice.
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return None
    if isinstance(spec, dict):
        return dict(spec)
    out: dict[str, str | int] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ConfigError(
                f"--classes entry {part.strip()!r} is not name=code; expected e.g. "
                "--classes uni=3,multi=4,unsure=5 (codes) or vesicle=unilamellar (names)."
            )
        if name in out:
            raise ConfigError(f"--classes names {name!r} twice; give each category once.")
        out[name] = int(value) if re.fullmatch(r"-?\d+", value) else value
    return out or None


def _class_problem(class_map: dict) -> tuple[dict[str, str], Problem | None]:
    """--classes as category name -> class name, and the preset its codes
    belong to (None when it names classes)."""
    codes = {k: v for k, v in class_map.items() if isinstance(v, int)}
    if not codes:
        return {k: str(v) for k, v in class_map.items()}, None
    if len(codes) != len(class_map):
        raise ConfigError(
            "--classes mixes codes and class names; give every category a code "
            "(3, 4, 5 lamellarity; 7, 8, 10 encapsulation) or every category a name."
        )
    for problem in PROBLEMS.values():
        if set(codes.values()) <= set(problem.codes):
            return {k: problem.codes[v] for k, v in codes.items()}, problem
    found = ", ".join(str(c) for c in sorted(set(codes.values())))
    raise ConfigError(
        f"--classes codes {found} are not all codes of one problem: lamellarity (3, 4, 5) "
        "or encapsulation (7, 8, 10)."
    )


def _load_coco(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist. Pass the COCO annotations JSON file.") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path.name}: not UTF-8 text. Re-export it as UTF-8 JSON.") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{path.name}: not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg}). "
            "Re-export the COCO annotations."
        ) from None
    except RecursionError:
        raise DatasetError(
            f"{path.name}: nested too deeply to be COCO annotations. "
            "Re-export the COCO annotations."
        ) from None
    lists = ("images", "annotations", "categories")
    if not isinstance(data, dict) or any(not isinstance(data.get(k), list) for k in lists):
        raise DatasetError(
            f"{path.name} is not COCO annotations: expected a JSON object with lists "
            "'images', 'annotations' and 'categories'. Export the annotations in COCO format."
        )
    return data


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


#: Folder names that say which split a COCO file is (Roboflow's
#: train/valid/test/_annotations.coco.json).
SPLIT_FOLDERS = ("train", "training", "valid", "val", "validation", "test", "testing")


def coco_split(path) -> str:
    """The split a COCO file is: its folder's name when that is one of
    ``SPLIT_FOLDERS`` (Roboflow's layout), else the file's stem."""
    path = Path(path)
    folder = path.resolve().parent.name
    return folder if folder.lower() in SPLIT_FOLDERS else path.name.split(".")[0]


def import_coco(
    annotations,
    images_dir,
    out,
    *,
    surround=DEFAULT_SURROUND_PX,
    classes=None,
    box_masks=None,
    drop_edge=False,
    pixel_size_nm=None,
    reporter=None,
    group_pattern=None,
    _parts=False,
) -> ImportResult:
    """Cut the particles annotated in a COCO file out of their micrographs
    and write them as a lab export.

    Parameters
    ----------
    annotations : path or list of paths
        COCO JSON: ``images`` (id, file_name, width, height), ``categories``
        (id, name) and ``annotations`` (id, image_id, category_id and a
        ``segmentation``: polygons, or RLE with ``counts`` as a list or a
        compressed string; or only a ``bbox`` [x, y, width, height]).
        ``iscrowd`` annotations cover groups, not particles: they are skipped
        and counted. Several files (a Roboflow export's train, valid and
        test) make one dataset: each particle's id and micrograph are
        prefixed with its file's split (``coco_split``) so they stay
        unique, and it records its COCO file's name and split
        (``meta["annotations"]``, ``meta["split"]``; ``Annotations`` and
        ``Split`` in particles.json).
    images_dir : path or list of paths, optional
        Folder of the micrographs; ``file_name`` is relative to it. With
        several files, one folder per file, or one for all; None: each COCO
        file's own folder.
    out : path
        The export folder to write (must not exist, or be empty).
    surround : int
        Pixels around each particle's bounding box (50 in the lab export).
    classes : str or dict, optional
        ``name=code,...``: category names to lab export codes (3, 4, 5
        lamellarity; 7, 8, 10 encapsulation) or to class names. Default: the
        category names are the classes. Every annotated category must be in it.
    box_masks : {"box", "ellipse"}, optional
        How an annotation with only a box gets a mask: the box itself, or the
        ellipse inscribed in it. Without it, a box-only annotation is a problem.
    drop_edge : bool
        Drop particles cut by the micrograph's edge (default: keep them,
        flagged ``EdgeCut``).
    pixel_size_nm : float, optional
        nm/px of micrographs whose TIFF or MRC metadata gives none.
    reporter : progress reporter, optional
    group_pattern : str, optional
        Regular expression; its first capture group in the micrograph's
        file name is the particle's ``meta["group"]`` (for ``--group-by
        group``): ``ROBOFLOW_GROUP_PATTERN``, ``CVAT_GROUP_PATTERN``.

    Returns
    -------
    ImportResult

    Raises
    ------
    ImportProblems
        Every inconsistent annotation, one line each (nothing is written).
    DatasetError, ConfigError
        On unreadable input or bad options.
    """
    import pycocotools.mask as mask_utils

    reporter = reporter or NullReporter()
    if group_pattern is not None:
        compile_group_pattern(group_pattern)  # fail early
    if not isinstance(annotations, (str, os.PathLike)):
        return _import_coco_files(
            list(annotations),
            images_dir,
            out,
            surround=surround,
            classes=classes,
            box_masks=box_masks,
            drop_edge=drop_edge,
            pixel_size_nm=pixel_size_nm,
            reporter=reporter,
            group_pattern=group_pattern,
        )
    if images_dir is None:
        images_dir = Path(annotations).parent
    annotations, images_dir = Path(annotations), Path(images_dir)
    _check_options(surround, pixel_size_nm)
    if box_masks is not None and box_masks not in BOX_MASKS:
        raise ConfigError(f"Unknown --box-masks {box_masks!r}; expected box or ellipse.")
    if not images_dir.is_dir():
        raise DatasetError(
            f"--images {images_dir} is not a folder. Pass the folder of the "
            "micrographs the annotations name."
        )
    out = (
        None
        if _parts
        else _check_out(out, {"the annotations": annotations, "--images": images_dir})
    )
    class_map = parse_class_map(classes)
    names, preset = _class_problem(class_map) if class_map else ({}, None)
    data = _load_coco(annotations)
    name = annotations.name
    problems: list[str] = check_coco(data, name)  # the whole file, before any work
    if problems:
        raise ImportProblems(problems)

    categories: dict = {}
    for c in data["categories"]:
        if not isinstance(c, dict) or "id" not in c or not str(c.get("name", "")).strip():
            problems.append(f"{name}: category {c!r} has no id or no name. Fix the categories.")
        else:
            categories[c["id"]] = str(c["name"]).strip()
    if class_map:
        known = set(categories.values())
        for cname in class_map:
            if cname not in known:
                problems.append(
                    f"--classes names category {cname!r}, which {name} does not have "
                    f"(categories: {', '.join(sorted(known))})."
                )
    images: dict = {}
    for im in data["images"]:
        ok = (
            isinstance(im, dict)
            and "id" in im
            and isinstance(im.get("file_name"), str)
            and im["file_name"].strip()
        )
        if not ok:
            problems.append(f"{name}: image {im!r} has no id or no file_name. Fix the images list.")
            continue
        if im["id"] in images:
            problems.append(
                f"{name}: image id {im['id']} is used twice. Give each image its own id."
            )
            continue
        images[im["id"]] = im

    per_image: dict = {}
    seen_ids = set()
    skipped_crowd = 0
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            problems.append(f"{name}: annotation {k + 1} is not a JSON object. Fix or remove it.")
            continue
        aid = ann.get("id", f"#{k + 1}")
        where = f"{name}, annotation {aid}"
        if aid in seen_ids:
            problems.append(f"{where}: id {aid} is used twice. Give each annotation its own id.")
            continue
        seen_ids.add(aid)
        if ann.get("iscrowd"):
            skipped_crowd += 1
            continue
        cid = ann.get("category_id")
        if cid not in categories:
            ids = ", ".join(str(c) for c in sorted(categories, key=str))
            problems.append(
                f"{where}: category_id {cid!r} is not in categories (ids: {ids}). "
                "Correct the annotation or add the category."
            )
            continue
        if class_map and categories[cid] not in class_map:
            problems.append(
                f"{where}: category {categories[cid]!r} has no class in --classes. "
                f"Add {categories[cid]}=CODE (or =NAME) to --classes."
            )
            continue
        if ann.get("image_id") not in images:
            problems.append(
                f"{where}: image_id {ann.get('image_id')!r} is not in images. "
                "Correct the annotation or add the image."
            )
            continue
        im = images[ann["image_id"]]
        line = _check_geometry(ann, im, where, box_masks)
        if line:
            problems.append(line)
            continue
        per_image.setdefault(ann["image_id"], []).append(ann)

    files = {}
    for iid in per_image:
        im = images[iid]
        rel = check_path(im["file_name"])
        if rel is None:
            problems.append(
                f"{name}: image {iid} file_name {im['file_name']!r} leads outside "
                f"--images {images_dir}. Use a path inside it."
            )
        elif not (images_dir / rel).is_file():
            problems.append(
                f"{name}: image {iid} file {rel} does not exist in {images_dir}. "
                "Add the micrograph, or pass the folder holding it as --images."
            )
        else:
            files[iid] = rel
    if problems:
        raise ImportProblems(problems)

    reporter.stage("import coco", total=len(per_image))
    particles, extra, summaries, notes = [], {}, [], []
    order = [iid for iid in images if iid in per_image]
    for iid in order:
        im, rel = images[iid], files[iid]
        image, px, source = read_micrograph(images_dir / rel)
        height, width = image.shape
        mid = os.path.splitext(rel)[0]
        if (
            _number(im.get("width"))
            and _number(im.get("height"))
            and (int(im["width"]), int(im["height"])) != (width, height)
        ):
            problems.append(
                f"{name}: image {iid} ({rel}) is {width}x{height} px but the annotations say "
                f"{int(im['width'])}x{int(im['height'])}. Annotate this file, or correct its "
                "width and height."
            )
            reporter.advance()
            continue
        px, px_from = _pixel_size(px, source, pixel_size_nm, rel, notes)
        summary = MicrographSummary(mid, rel, width, height, px, px_from)
        summary.folder, summary.image_id = str(images_dir.resolve()), iid
        summary.annotations = str(annotations.resolve())
        summaries.append(summary)
        instances = []
        for ann in per_image[iid]:
            where = f"{name}, annotation {ann.get('id')}"
            try:
                full = _coco_mask(ann, height, width, box_masks, mask_utils)
            except _Outside as exc:
                problems.append(f"{where}: {exc} Correct the annotation or its image_id.")
                continue
            trimmed = _trim(full)
            if trimmed is None:
                problems.append(
                    f"{where}: its {_kind(ann)} covers no pixel of {rel}. Redraw "
                    "it, or delete the annotation."
                )
                continue
            label = categories[ann["category_id"]]
            label = names.get(label, label) if class_map else label
            pid = str(ann["id"]) if "id" in ann else _safe_id(f"{mid}-{len(instances) + 1}")
            # The source file's own ids: predict --coco-results writes them back.
            ids = {"Annotation": ann.get("id"), "ImageId": iid, "CategoryId": ann["category_id"]}
            instances.append(_Instance(_safe_id(pid), label, *trimmed, extra=ids))
        particles += _cut_particles(
            mid, image, instances, px, f"{rel}", surround, drop_edge, summary, extra
        )
        reporter.advance()
    if problems:
        raise ImportProblems(problems)
    # Categories with particles, in category order (an unused "background"
    # category must not turn a preset's class names into a custom problem).
    labelled = {categories[a["category_id"]] for anns in per_image.values() for a in anns}
    used = [name_ for name_ in categories.values() if name_ in labelled]
    if class_map:
        ordered = [names[c] for c in used if c in names]
        problem = preset or _problem_of(list(dict.fromkeys(ordered)))
    else:
        problem = _problem_of(list(dict.fromkeys(used)))
    # Each class's category id in this file (the first category that maps to
    # it), for predict --coco-results.
    class_category: dict = {}
    for cid, cname in categories.items():
        if cname in used:
            class_category.setdefault(names.get(cname, cname) if class_map else cname, cid)
    coco = {
        str(annotations.resolve()): {
            "categories": [{"id": cid, "name": cname} for cid, cname in categories.items()],
            "class_category": class_category,
        }
    }
    if _parts:
        return particles, extra, summaries, problem, skipped_crowd, notes, coco
    description = f"imported from COCO {name} ({len(summaries)} micrographs)"
    return _finish_import(
        particles,
        problem,
        out,
        extra,
        summaries,
        description,
        skipped_crowd,
        notes,
        group_pattern,
        coco=coco,
    )


class _Outside(Exception):
    """An annotation that does not fit its image."""


def _import_coco_files(
    files, images_dirs, out, *, reporter, group_pattern=None, **options
) -> ImportResult:
    """Several COCO files as one dataset (see ``import_coco``)."""
    if not files:
        raise ConfigError("No COCO file given. Pass one or more annotation files.")
    if len(files) == 1:
        one = images_dirs[0] if isinstance(images_dirs, (list, tuple)) else images_dirs
        return import_coco(
            files[0], one, out, reporter=reporter, group_pattern=group_pattern, **options
        )
    if images_dirs is None or isinstance(images_dirs, (str, os.PathLike)):
        images_dirs = [images_dirs] * len(files)
    images_dirs = list(images_dirs)
    if len(images_dirs) != len(files):
        raise ConfigError(
            f"{len(files)} COCO files but {len(images_dirs)} --images folders. "
            "Give one --images per file, in the same order, or none."
        )
    splits = [coco_split(f) for f in files]
    if len(set(splits)) != len(splits):
        splits = [f"{s}{k + 1}" for k, s in enumerate(splits)]
    out = _check_out(
        out,
        {
            **{f"the annotations (file {i + 1})": f for i, f in enumerate(files)},
            **{
                f"the micrographs (file {i + 1})": d if d is not None else Path(f).parent
                for i, (f, d) in enumerate(zip(files, images_dirs))
            },
        },
    )
    particles, extra, summaries, notes, problems, skipped, classes = [], {}, [], [], [], 0, []
    coco: dict = {}
    for path, folder, split in zip(files, images_dirs, splits):
        try:
            got = import_coco(path, folder, None, reporter=reporter, _parts=True, **options)
        except ImportProblems as exc:
            problems += exc.problems
            continue
        parts, more, mics, problem, crowd, lines, coco_file = got
        coco.update(coco_file)
        for p in parts:
            old_id = p.id
            p.id = _safe_id(f"{split}-{old_id}")
            p.meta["micrograph"] = f"{split}/{p.meta['micrograph']}"
            p.meta["annotations"], p.meta["split"] = Path(path).name, split
            extra[p.id] = more[old_id]
        for m in mics:
            m.micrograph = f"{split}/{m.micrograph}"
        particles += parts
        summaries += mics
        notes += lines
        skipped += crowd
        classes += [c for c in problem.classes if c not in classes]
    if problems:
        raise ImportProblems(problems)
    problem = _problem_of(classes)
    description = (
        f"imported from COCO {', '.join(Path(f).name for f in files)} "
        f"({len(summaries)} micrographs)"
    )
    return _finish_import(
        particles, problem, out, extra, summaries, description, skipped, notes, group_pattern, coco
    )


def _kind(ann) -> str:
    seg = ann.get("segmentation")
    if isinstance(seg, list) and seg:
        return "polygon"
    if isinstance(seg, dict):
        return "RLE mask"
    return "box"


def _check_geometry(ann, im, where: str, box_masks) -> str | None:
    """A problem line about an annotation's shape, or None (checked before
    any micrograph is read)."""
    seg = ann.get("segmentation")
    width, height = im.get("width"), im.get("height")
    sized = _number(width) and _number(height)
    if isinstance(seg, list) and seg:
        for j, poly in enumerate(seg, 1):
            if not isinstance(poly, list) or len(poly) % 2 or not all(_number(v) for v in poly):
                return (
                    f"{where}: polygon {j} is not a flat list of x, y numbers. "
                    "Re-export the annotations."
                )
            if len(poly) < 6:
                return (
                    f"{where}: polygon {j} has {len(poly) // 2} point(s); a polygon needs "
                    "at least 3. Redraw it, or delete the annotation."
                )
            xs, ys = poly[0::2], poly[1::2]
            if sized and _outside(xs, ys, width, height):
                return (
                    f"{where}: polygon {j} reaches ({_far(xs, width)}, {_far(ys, height)}), "
                    f"outside its image {im['file_name']} ({int(width)}x{int(height)} px). "
                    "Correct the annotation or its image_id."
                )
            area = 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))
            if area == 0:
                return (
                    f"{where}: polygon {j} is empty (zero area). Redraw it, or delete the "
                    "annotation."
                )
        return None
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if (
            not isinstance(size, list)
            or len(size) != 2
            or not isinstance(counts, (list, str))
            or not counts
        ):
            return (
                f"{where}: its RLE segmentation needs 'size' [height, width] and 'counts'. "
                "Re-export the annotations."
            )
        if sized and [int(size[0]), int(size[1])] != [int(height), int(width)]:
            return (
                f"{where}: its RLE mask is {size[1]}x{size[0]} px (size [h, w] = {size}) but "
                f"its image {im['file_name']} is {int(width)}x{int(height)} px. Correct the "
                "annotation or its image_id."
            )
        return None
    if seg not in (None, [], {}):
        return f"{where}: segmentation {str(seg)[:40]!r} is neither polygons nor RLE."
    box = ann.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)):
        return (
            f"{where}: no segmentation and no bbox [x, y, width, height]. Redraw it, or "
            "delete the annotation."
        )
    if box[2] <= 0 or box[3] <= 0:
        return f"{where}: its bbox {box} is empty. Redraw it, or delete the annotation."
    if box_masks is None:
        return (
            f"{where}: it has a box but no segmentation; pass --box-masks box (the box is "
            "the mask) or --box-masks ellipse (the ellipse inscribed in the box)."
        )
    xs, ys = [box[0], box[0] + box[2]], [box[1], box[1] + box[3]]
    if sized and _outside(xs, ys, width, height):
        return (
            f"{where}: its bbox {box} reaches outside its image {im['file_name']} "
            f"({int(width)}x{int(height)} px). Correct the annotation or its image_id."
        )
    return None


def _outside(xs, ys, width, height) -> bool:
    t = EDGE_TOLERANCE_PX
    return min(xs) < -t or min(ys) < -t or max(xs) > width + t or max(ys) > height + t


def _far(values, limit) -> str:
    low, high = min(values), max(values)
    return f"{high:g}" if high > limit else f"{low:g}"


def _coco_mask(ann, height: int, width: int, box_masks, mask_utils) -> np.ndarray:
    """The annotation's mask over its whole micrograph (bool, H x W)."""
    seg = ann.get("segmentation")
    if isinstance(seg, list) and seg:
        xs = [v for poly in seg for v in poly[0::2]]
        ys = [v for poly in seg for v in poly[1::2]]
        if _outside(xs, ys, width, height):
            raise _Outside(f"its polygon reaches outside its image ({width}x{height} px).")
        rles = mask_utils.frPyObjects(seg, height, width)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    if isinstance(seg, dict):
        h, w = int(seg["size"][0]), int(seg["size"][1])
        if (h, w) != (height, width):
            raise _Outside(f"its RLE mask is {w}x{h} px but its image is {width}x{height} px.")
        counts = seg["counts"]
        if isinstance(counts, str):
            counts = rle_string_counts(counts)
        # pycocotools does not check that the runs fill the mask (it would
        # write past its buffer): check here, and decode the runs directly.
        if (
            counts is None
            or not all(isinstance(c, int) and c >= 0 for c in counts)
            or sum(counts) != h * w
        ):
            raise _Outside(f"its RLE counts do not add up to its size {w}x{h} px ({h * w} pixels).")
        flat = np.repeat(np.arange(len(counts)) % 2 == 1, counts)
        return flat.reshape(w, h).T  # COCO runs go down the columns
    x, y, w, h = (float(v) for v in ann["bbox"])
    if _outside([x, x + w], [y, y + h], width, height):
        raise _Outside(f"its bbox reaches outside its image ({width}x{height} px).")
    # Pixel (row i, column j) covers [j, j+1) x [i, i+1): it is in the box or
    # ellipse when its centre is.
    cols = np.arange(width) + 0.5
    rows = np.arange(height) + 0.5
    if box_masks == "box":
        return ((rows >= y) & (rows < y + h))[:, None] & ((cols >= x) & (cols < x + w))[None, :]
    u = (cols - (x + w / 2)) / (w / 2)
    v = (rows - (y + h / 2)) / (h / 2)
    return (v[:, None] ** 2 + u[None, :] ** 2) <= 1.0


def rle_string_counts(text: str) -> list[int] | None:
    """The run lengths of a compressed COCO RLE string (pycocotools'
    ``rleFrString``: 6-bit characters from '0', 5 bits of value each, the
    0x20 bit continuing a number, runs from the third on stored as the
    difference to the run two before). None if ``text`` is not such a string."""
    counts: list[int] = []
    p, n = 0, len(text)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                return None
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _check_options(surround, pixel_size_nm) -> None:
    if isinstance(surround, bool) or not isinstance(surround, (int, np.integer)) or surround < 0:
        raise ConfigError(f"--surround must be a whole number of pixels >= 0; got {surround!r}.")
    if pixel_size_nm is not None and not (_number(pixel_size_nm) and pixel_size_nm > 0):
        raise ConfigError(
            f"--pixel-size must be a positive number of nm/px; got {pixel_size_nm!r}."
        )


# Instance label images -------------------------------------------------------------


def _index_files(root: Path, extensions) -> dict[str, Path]:
    """Files under ``root`` with one of ``extensions``, keyed by their path
    relative to ``root`` without extension ("sub/m01")."""
    index: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(filenames):
            if fname.startswith(".") or Path(fname).suffix.lower() not in extensions:
                continue
            full = Path(dirpath) / fname
            index.setdefault(full.relative_to(root).with_suffix("").as_posix(), []).append(full)
    return index


def read_label_image(path) -> np.ndarray:
    """An instance label image as an unsigned integer array (0 = background).

    Raises
    ------
    DatasetError
        If it cannot be read, is not 2-D, holds colour or negative or
        fractional values.
    """
    import tifffile
    from PIL import Image

    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tif:
                array = _single_page(
                    tif,
                    path,
                    "one label image per micrograph",
                    "Split it, one file per micrograph.",
                ).asarray()
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    _check_micrograph_side(*im.size, path.name)
                    if im.mode not in ("L", "I", "I;16", "I;16B", "I;16L", "1", "P"):
                        raise DatasetError(
                            f"{path.name} is a {im.mode} image; a label image holds one "
                            "integer label per pixel (8, 16 or 32-bit gray). Re-export it "
                            "as a grayscale label image."
                        )
                    array = np.array(im)
    except DatasetError:
        raise
    except (*DECODE_ERRORS, Image.DecompressionBombError) as exc:
        log.debug("%s: %s", path, exc)
        raise DatasetError(
            f"{path.name} cannot be read as a TIFF or PNG label image. Re-export it."
        ) from None
    if array.ndim != 2:
        raise DatasetError(
            f"{path.name} has array shape {array.shape}; expected one 2-D label image "
            "(0 = background, 1, 2, ... one value per particle)."
        )
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise DatasetError(
                f"{path.name} holds fractional values; a label image holds "
                "whole numbers (0 = background). Re-export it as integers."
            )
        array = array.astype(np.int64)
    if array.dtype.kind not in "uib":
        raise DatasetError(f"{path.name} holds {array.dtype} values; expected integer labels.")
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise DatasetError(
            f"{path.name} holds negative labels; expected 0 for background and "
            "positive labels for particles."
        )
    return array.astype(np.uint64, copy=False) if array.dtype.kind != "u" else array


def _read_class_table(path: Path):
    """(micrograph, label) -> (class, line) from the classes CSV."""
    header, rows = read_csv_rows(path)
    missing = [c for c in ("micrograph", "label", "class") if c not in header]
    if missing:
        raise DatasetError(
            f"{path.name} has no {' or '.join(repr(c) for c in missing)} column (columns: "
            f"{', '.join(header) or 'none'}). Expected columns micrograph, label, class: one "
            "row per particle."
        )
    if not rows:
        raise DatasetError(
            f"{path.name} holds no rows. Give one row per particle: micrograph, label, class."
        )
    table, problems = {}, []
    for line, row in rows:
        where = f"{path.name}, line {line}"
        mic, label, cls = row.get("micrograph", ""), row.get("label", ""), row.get("class", "")
        if not re.fullmatch(r"\d+", label) or int(label) == 0:
            problems.append(
                f"{where}: label {label!r} is not a positive whole number. Give the "
                "particle's value in its label image."
            )
            continue
        if not mic or not cls:
            problems.append(
                f"{where}: no {'micrograph' if not mic else 'class'}. Fill in every column."
            )
            continue
        key = (mic, int(label))
        if key in table:
            problems.append(
                f"{where}: micrograph {mic!r} label {label} is already on line "
                f"{table[key][1]}. Give each particle one row."
            )
            continue
        table[key] = (cls, line)
    return table, problems


def import_labels(
    images_dir,
    labels_dir,
    classes_csv,
    out,
    *,
    surround=DEFAULT_SURROUND_PX,
    drop_edge=False,
    pixel_size_nm=None,
    reporter=None,
    group_pattern=None,
) -> ImportResult:
    """Cut the particles of instance label images out of their micrographs
    and write them as a lab export.

    Parameters
    ----------
    images_dir : path
        Folder of the micrographs (TIFF, PNG, JPEG, BMP or MRC; subfolders
        allowed). A micrograph's id is its path in the folder without
        extension ("m01", "day2/m07").
    labels_dir : path
        Folder of the label images, one per micrograph, at the same relative
        path with the same stem, optionally ending in one of
        ``LABEL_SUFFIXES`` ("m01_masks.png"): 8, 16 or 32-bit TIFF or PNG,
        0 = background, every other value one particle.
    classes_csv : path
        Columns ``micrograph`` (its id, or its file name), ``label`` (the
        value in the label image) and ``class``: one row per particle.
    out, surround, drop_edge, pixel_size_nm, reporter, group_pattern
        As for :func:`import_coco`.

    Returns
    -------
    ImportResult

    Raises
    ------
    ImportProblems
        Every inconsistency, one line each (nothing is written).
    DatasetError, ConfigError
    """
    from scipy import ndimage as ndi

    reporter = reporter or NullReporter()
    images_dir, labels_dir, classes_csv = Path(images_dir), Path(labels_dir), Path(classes_csv)
    _check_options(surround, pixel_size_nm)
    if group_pattern is not None:
        compile_group_pattern(group_pattern)  # fail early
    for option, folder in (("--images", images_dir), ("--labels", labels_dir)):
        if not folder.is_dir():
            raise DatasetError(f"{option} {folder} is not a folder.")
    if not classes_csv.is_file():
        raise DatasetError(
            f"--classes {classes_csv} does not exist. Pass the CSV with columns "
            "micrograph, label, class."
        )
    out = _check_out(
        out, {"--images": images_dir, "--labels": labels_dir, "--classes": classes_csv}
    )
    problems: list[str] = []
    micrographs = _index_files(images_dir, MICROGRAPH_EXTENSIONS)
    labels = _index_files(labels_dir, (".png", ".tif", ".tiff"))
    if not micrographs:
        raise DatasetError(
            f"--images {images_dir} holds no micrographs (TIFF, PNG, JPEG, BMP or MRC)."
        )
    for key, found in sorted(micrographs.items()):
        if len(found) > 1:
            problems.append(
                f"{' and '.join(f.name for f in found)} are both micrograph {key}. "
                "Keep one of them."
            )
    pairs, claimed = {}, set()
    for key in sorted(micrographs):
        candidates = [(s, f) for s in LABEL_SUFFIXES for f in labels.get(key + s, [])]
        if not candidates:
            problems.append(
                f"micrograph {micrographs[key][0].relative_to(images_dir).as_posix()} "
                f"has no label image in {labels_dir} (expected {key}.png or "
                f"{key}.tif, or {key}_masks.png). Add it."
            )
        elif len(candidates) > 1:
            names = " and ".join(f.relative_to(labels_dir).as_posix() for _, f in candidates)
            problems.append(f"{names} are both label images of micrograph {key}. Keep one.")
        else:
            pairs[key] = candidates[0][1]
            claimed.add(candidates[0][1])
    for found in labels.values():
        for f in found:
            if f not in claimed:
                problems.append(
                    f"label image {f.relative_to(labels_dir).as_posix()} has no "
                    f"micrograph in {images_dir}. Add it, or move the label image away."
                )
    table, table_problems = _read_class_table(classes_csv)
    problems += table_problems
    # The table may name a micrograph by its id or its file name.
    by_name = {}
    for key, found in micrographs.items():
        by_name[key] = key
        by_name[found[0].relative_to(images_dir).as_posix()] = key
    rows: dict[str, dict[int, tuple[str, int]]] = {}
    for (mic, label), (cls, line) in table.items():
        if mic not in by_name:
            problems.append(
                f"{classes_csv.name}, line {line}: micrograph {mic!r} is not in "
                f"{images_dir}. Correct the name (its file name, with or without "
                "extension)."
            )
            continue
        rows.setdefault(by_name[mic], {})[label] = (cls, line)
    if problems:
        raise ImportProblems(problems)

    reporter.stage("import labels", total=len(pairs))
    particles, extra, summaries, notes = [], {}, [], []
    class_order: list[str] = []
    for key in sorted(pairs):
        mic_path = micrographs[key][0]
        rel = mic_path.relative_to(images_dir).as_posix()
        lab_rel = pairs[key].relative_to(labels_dir).as_posix()
        image, px, source = read_micrograph(mic_path)
        lab = read_label_image(pairs[key])
        height, width = image.shape
        if lab.shape != image.shape:
            problems.append(
                f"label image {lab_rel} is {lab.shape[1]}x{lab.shape[0]} px but its "
                f"micrograph {rel} is {width}x{height} px. Export the labels at the "
                "micrograph's size."
            )
            reporter.advance()
            continue
        values, compact = np.unique(lab, return_inverse=True)
        compact = compact.reshape(lab.shape)
        if values[0] != 0:  # no background: every value is a particle
            compact = compact + 1
            values = np.concatenate([[0], values])
        present = [int(v) for v in values[1:]]
        wanted = rows.get(key, {})
        for value in present:
            if value not in wanted:
                problems.append(
                    f"label {value} in {lab_rel} has no row in {classes_csv.name}. "
                    f"Add a row: {key},{value},CLASS."
                )
        for value, (_, line) in sorted(wanted.items()):
            if value not in set(present):
                problems.append(
                    f"{classes_csv.name}, line {line}: label {value} does not occur "
                    f"in {lab_rel}. Correct the label, or remove the row."
                )
        px, px_from = _pixel_size(px, source, pixel_size_nm, rel, notes)
        summary = MicrographSummary(key, rel, width, height, px, px_from)
        summary.folder = str(images_dir.resolve())
        summaries.append(summary)
        instances = []
        for index, box in enumerate(ndi.find_objects(compact.astype(np.int32)), start=1):
            if box is None or index >= len(values):
                continue
            value = int(values[index])
            if value not in wanted:
                continue
            cls = wanted[value][0]
            class_order.append(cls)
            rs, cs = box
            instances.append(
                _Instance(
                    _safe_id(f"{key}-{value}"),
                    cls,
                    compact[rs, cs] == index,
                    cs.start,
                    rs.start,
                    extra={"InstanceLabel": value},
                )
            )
        particles += _cut_particles(
            key, image, instances, px, rel, surround, drop_edge, summary, extra
        )
        reporter.advance()
    if problems:
        raise ImportProblems(problems)
    problem = _problem_of(sorted(dict.fromkeys(class_order)))
    description = f"imported from label images {labels_dir.name} ({len(summaries)} micrographs)"
    return _finish_import(
        particles, problem, out, extra, summaries, description, 0, notes, group_pattern
    )


# RELION STAR ----------------------------------------------------------------

#: Columns a RELION particles table needs for ``import_star``.
STAR_COLUMNS = ("rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnClassNumber")


def _star_tables(path: Path):
    """The particles table and the optics table (or None) of a STAR file."""
    import starfile

    try:
        blocks = starfile.read(path, always_dict=True)
    except (OSError, ValueError, KeyError, IndexError, TypeError, EOFError) as exc:
        log.debug("%s: %s", path, exc)
        raise DatasetError(
            f"{path.name} cannot be read as a STAR file ({exc}). "
            "Export the particles from RELION again."
        ) from None
    tables = [t for t in blocks.values() if hasattr(t, "columns")]
    particles = [t for t in tables if "rlnCoordinateX" in t.columns]
    if not particles:
        raise DatasetError(
            f"{path.name} has no table with rlnCoordinateX: expected a RELION "
            "particles (or coordinates) STAR file."
        )
    table = particles[0]
    missing = [c for c in STAR_COLUMNS if c not in table.columns]
    if missing:
        raise DatasetError(
            f"{path.name}'s particles table lacks {', '.join(missing)}. "
            "Export the particles with their micrograph, coordinates and class."
        )
    optics = [t for t in tables if "rlnOpticsGroup" in t.columns and t is not table]
    return table, (optics[0] if optics else None)


def _star_pixel_size_nm(optics) -> float:
    """The optics table's micrograph pixel size (Angstrom) in nm, or NaN."""
    if optics is None:
        return float("nan")
    for column in ("rlnMicrographPixelSize", "rlnMicrographOriginalPixelSize", "rlnImagePixelSize"):
        if column in optics.columns and len(optics):
            value = float(optics[column].iloc[0])
            if math.isfinite(value) and value > 0:
                return value / 10.0
    return float("nan")


def _disk(x: float, y: float, diameter: float, width: int, height: int):
    """A disk of ``diameter`` px centred at (x, y), trimmed to its box."""
    r = diameter / 2.0
    x0, y0 = max(math.floor(x - r), 0), max(math.floor(y - r), 0)
    x1, y1 = min(math.ceil(x + r), width), min(math.ceil(y + r), height)
    if x1 <= x0 or y1 <= y0:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1]
    mask = (xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 <= r * r
    return _trim(mask, x0, y0)


def import_star(
    star,
    images_dir,
    out,
    *,
    diameter_px,
    surround=DEFAULT_SURROUND_PX,
    classes=None,
    drop_edge=False,
    pixel_size_nm=None,
    reporter=None,
    group_pattern=None,
) -> ImportResult:
    """Cut the particles of a RELION STAR file out of their micrographs and
    write them as a lab export.

    Parameters
    ----------
    star : path
        STAR file with a particles table (``rlnMicrographName``,
        ``rlnCoordinateX``, ``rlnCoordinateY`` in px, ``rlnClassNumber``)
        and optionally an optics table (``rlnMicrographPixelSize`` in
        Angstrom).
    images_dir : path
        Folder of the micrographs; ``rlnMicrographName`` is relative to it
        (else its base name is looked up there).
    out : path
    diameter_px : float
        Particles are picked as points: each gets a disk mask of this
        diameter (px) at its coordinate.
    surround, classes, drop_edge, reporter, group_pattern
        As for :func:`import_coco`; ``classes`` maps class numbers
        (``1=unilamellar,2=multilamellar``). Default: the class numbers are
        the class names.
    pixel_size_nm : float, optional
        nm/px where neither the micrograph's metadata nor the optics table
        gives one. A micrograph's own metadata wins over the optics table.

    Returns
    -------
    ImportResult
    """
    reporter = reporter or NullReporter()
    star, images_dir = Path(star), Path(images_dir)
    _check_options(surround, pixel_size_nm)
    if group_pattern is not None:
        compile_group_pattern(group_pattern)
    if not (
        isinstance(diameter_px, (int, float)) and math.isfinite(diameter_px) and diameter_px > 0
    ):
        raise ConfigError(f"--diameter must be a positive number of px; got {diameter_px!r}.")
    if not images_dir.is_dir():
        raise DatasetError(
            f"--images {images_dir} is not a folder. Pass the folder of the "
            "micrographs the STAR file names."
        )
    out = _check_out(out, {"the STAR file": star, "--images": images_dir})
    class_map = parse_class_map(classes)
    names, preset = _class_problem(class_map) if class_map else ({}, None)
    table, optics = _star_tables(star)
    star_px = _star_pixel_size_nm(optics)
    given = (
        pixel_size_nm
        if pixel_size_nm is not None
        else (star_px if math.isfinite(star_px) else None)
    )
    problems, files = [], {}
    for name in dict.fromkeys(str(v) for v in table["rlnMicrographName"]):
        rel = check_path(name)
        if rel is not None and (images_dir / rel).is_file():
            files[name] = rel
        elif (images_dir / Path(name).name).is_file():
            files[name] = Path(name).name
        else:
            problems.append(
                f"{star.name}: micrograph {name} is not in {images_dir}. Add it, "
                "or pass the folder holding it as --images."
            )
    labels = []
    for k, value in enumerate(table["rlnClassNumber"]):
        label = (
            str(int(value))
            if isinstance(value, (int, float, np.number)) and float(value).is_integer()
            else str(value)
        )
        if class_map and label not in class_map:
            problems.append(
                f"{star.name}, particle {k + 1}: class {label} has no class in "
                f"--classes. Add {label}=CODE (or =NAME) to --classes."
            )
        labels.append(label)
    if problems:
        raise ImportProblems(problems)
    reporter.stage("import star", total=len(files))
    particles, extra, summaries, notes = [], {}, [], []
    for name, rel in files.items():
        image, px, source = read_micrograph(images_dir / rel)
        height, width = image.shape
        mid = os.path.splitext(rel)[0]
        px, px_from = _pixel_size(px, source, given, rel, notes)
        if px_from == "--pixel-size" and pixel_size_nm is None:
            px_from = "STAR optics"
        summary = MicrographSummary(mid, rel, width, height, px, px_from)
        summary.folder = str(images_dir.resolve())
        summaries.append(summary)
        instances = []
        rows = np.flatnonzero(table["rlnMicrographName"].astype(str).to_numpy() == name)
        for k in rows:
            x, y = float(table["rlnCoordinateX"].iloc[k]), float(table["rlnCoordinateY"].iloc[k])
            trimmed = _disk(x, y, float(diameter_px), width, height)
            if trimmed is None:
                problems.append(
                    f"{star.name}, particle {k + 1}: ({x:g}, {y:g}) is outside "
                    f"{rel} ({width}x{height} px). Correct its coordinates."
                )
                continue
            label = labels[k]
            label = names.get(label, label) if class_map else label
            instances.append(
                _Instance(
                    _safe_id(f"{mid}-{k + 1}"), label, *trimmed, extra={"StarRow": int(k + 1)}
                )
            )
        particles += _cut_particles(
            mid, image, instances, px, rel, surround, drop_edge, summary, extra
        )
        reporter.advance()
    if problems:
        raise ImportProblems(problems)
    if class_map:
        problem = preset or _problem_of(
            list(dict.fromkeys(names[c] for c in dict.fromkeys(labels)))
        )
    else:
        problem = _problem_of(list(dict.fromkeys(labels)))
    description = f"imported from STAR {star.name} ({len(summaries)} micrographs)"
    return _finish_import(
        particles, problem, out, extra, summaries, description, 0, notes, group_pattern
    )
