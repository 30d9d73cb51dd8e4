"""Reading one particle image: decoding (Pillow, tifffile), grayscale
conversion, and the guards every image passes (size from the header before
decoding, finite pixels). A refused image raises ``BadImage`` with its
problem line; the readers collect those lines."""

from __future__ import annotations

import errno
import logging
import os
import stat
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

log = logging.getLogger("liposome_bench.dataset")  # one logger for the data layer (data/__init__)


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
#: The image formats read, as messages name them.
IMAGE_FORMATS = "BMP, JPEG, PNG or TIFF"


class BadImage(Exception):
    """One problem line about one particle, collected by the readers."""


def check_side(width: int, height: int, name: str) -> None:
    """Refuse an image wider or taller than ``MAX_IMAGE_SIDE`` (from its
    header, before decoding), empty, or under ``MIN_IMAGE_SIDE`` a side
    (``BadImage``)."""
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise BadImage(
            f"{name} is {width}x{height} px, over the {MAX_IMAGE_SIDE} px a side "
            "allowed for one particle image (decompression-bomb guard). "
            "Crop it to the particle and its surround."
        )
    if width < 1 or height < 1:
        raise BadImage(f"{name} is {width}x{height} px. Replace it with a valid image file.")
    if width < MIN_IMAGE_SIDE or height < MIN_IMAGE_SIDE:
        raise BadImage(
            f"{name} is {width}x{height} px, under the {MIN_IMAGE_SIDE} px a side a particle "
            "image needs (the particle and its surround). Replace it with the particle's "
            "full image."
        )


def describe_path(path: Path) -> str:
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


def not_a_file_message(where: str, kind: str, name: str, path: Path, field_name: str) -> str:
    """The problem line for an image or mask path that is not a regular file."""
    what = describe_path(path)
    name = name if name.isprintable() else repr(name)
    if not field_name:  # a file found in a folder, named by its path alone
        return f"{name} is {what}, not an image file. Replace it with the image file, or remove it."
    if what == "missing":
        return f"{where}: {kind} {name} does not exist. Add the file or correct {field_name}."
    return (
        f"{where}: {kind} {name} is {what}, not an image file. Put the {kind} file "
        f"there or correct {field_name}."
    )


def check_pixels(image: np.ndarray, name: str) -> None:
    """Refuse NaN or infinite intensities (float TIFF and MRC images), which
    every later step (normalisation, features, training) would spread."""
    if image.dtype.kind != "f":
        return
    bad = int(image.size - np.count_nonzero(np.isfinite(image)))
    if bad:
        raise BadImage(
            f"{name} has {bad} of {image.size} pixels NaN or infinite; expected finite "
            "intensities. Re-export the image with those pixels filled in."
        )


def _unreadable(name: str) -> BadImage:
    return BadImage(
        f"{name} cannot be read as a {IMAGE_FORMATS} image. Replace it with a valid image file."
    )


def _truncated(name: str, width: int, height: int) -> BadImage:
    return BadImage(
        f"{name} is truncated or corrupt: its header says {width}x{height} px "
        "but its pixels cannot be decoded. Re-export the image."
    )


def read_image(path: Path, name: str) -> tuple[np.ndarray, bool]:
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
    BadImage
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
        raise BadImage(
            f"{name} has more pixels than Pillow's decompression-bomb limit "
            f"({Image.MAX_IMAGE_PIXELS} px), far over one particle image "
            "(decompression-bomb guard). Crop it to the particle and its surround."
        ) from None
    except DECODE_ERRORS as exc:
        log.debug("%s: %s", path, exc)
        raise _unreadable(name) from None
    with im:
        width, height = im.size
        check_side(width, height, name)
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
            check_side(width, height, name)
            if n_pages > 1:
                raise BadImage(
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
        raise BadImage(
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


def to_pil_array(image: np.ndarray) -> np.ndarray:
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
