"""Checks of annotation files and micrographs before an import does any work
(``dataset import coco``): every problem is collected and named, one line
each, with the image, category or annotation id it concerns.

``check_coco`` validates a whole COCO file: types, finite numbers, unique
ids of images, categories and annotations, unique category names, unique
file stems, and annotation ids that stay distinct once written (the lab
export writes an id of digits as a number, so ``7`` and ``"007"`` would be
one particle, and names files by a file-safe form of the id, so ``a/b`` and
``a_b`` would be one file). An importer must never write what the readers
refuse.

``check_micrograph_pixels`` refuses a float micrograph with non-finite
pixels or a single value everywhere: the grey-scale stretch would turn it into black
crops.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
import reprlib

import numpy as np

from liposome_bench.errors import DatasetError

_REPR = reprlib.Repr()
_REPR.maxstring = 40
_REPR.maxother = 40
_REPR.maxlist = 6
_REPR.maxdict = 4
_REPR.maxlevel = 2


def _short(value) -> str:
    return _REPR.repr(value)


def _id_ok(value) -> bool:
    """A COCO id: an integer or a non-empty string on one line."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return (
        isinstance(value, str) and value.strip() != "" and "\n" not in value and "\r" not in value
    )


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(value) -> bool:
    return _number(value) and value > 0 and float(value).is_integer()


def written_id(value) -> str:
    """The id a particle gets in the lab export written for a COCO
    annotation id: file-safe (as the importer names files), and a string of
    digits as the number it is written as (``"007"`` is ``7``)."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", str(value)).strip("._") or "particle"
    return str(int(text)) if text.isdigit() else text


def check_coco(data: dict, name: str) -> list[str]:
    """Every problem of a parsed COCO annotation file, one line each.

    Parameters
    ----------
    data : dict
        The parsed file: a JSON object with lists ``images``,
        ``annotations`` and ``categories``.
    name : str
        The file name, for the messages.

    Returns
    -------
    list of str
        Empty if the file is well formed. Geometry against the images
        (polygons outside, RLE sizes against widths) is the importer's.
    """
    problems: list[str] = []
    add = problems.append

    # Categories: id, name; both unique.
    category_ids: dict = {}
    category_names: dict = {}
    for k, c in enumerate(data.get("categories", []), 1):
        if not isinstance(c, dict):
            add(f"{name}: category {k} is {_short(c)}, not a JSON object. Fix the categories.")
            continue
        cid, cname = c.get("id"), c.get("name")
        where = f"{name}: category {_short(cid) if _id_ok(cid) else k}"
        if not _id_ok(cid):
            add(
                f"{where}: id {_short(cid)} is not an integer or a string. Give each category "
                "its own id."
            )
            continue
        if not isinstance(cname, str) or not cname.strip() or not cname.isprintable():
            add(
                f"{where}: name {_short(cname)} is not a non-empty string on one line. Name "
                "the category."
            )
            continue
        if cid in category_ids:
            add(
                f"{where}: id {cid!r} is used twice ({category_ids[cid]!r} and {cname!r}). Give "
                "each category its own id."
            )
            continue
        category_ids[cid] = cname
        if cname.strip() in category_names:
            add(
                f"{where}: name {cname.strip()!r} is also category "
                f"{category_names[cname.strip()]!r}'s; the two would be one class. Merge them "
                "or rename one."
            )
            continue
        category_names[cname.strip()] = cid

    # Images: id, file_name, optional width and height; ids and file stems unique.
    image_ids: set = set()
    stems: dict = {}
    for k, im in enumerate(data.get("images", []), 1):
        if not isinstance(im, dict):
            add(f"{name}: image {k} is {_short(im)}, not a JSON object. Fix the images list.")
            continue
        iid = im.get("id")
        where = f"{name}: image {_short(iid) if _id_ok(iid) else k}"
        if not _id_ok(iid):
            add(
                f"{where}: id {_short(iid)} is not an integer or a string. Give each image its "
                "own id."
            )
            continue
        if iid in image_ids:
            add(f"{where}: id {iid!r} is used twice. Give each image its own id.")
            continue
        image_ids.add(iid)
        file_name = im.get("file_name")
        if not isinstance(file_name, str) or not file_name.strip():
            add(f"{where}: file_name {_short(file_name)} is not a file name. Fix the images list.")
        else:
            stem = os.path.splitext(posixpath.normpath(file_name.replace("\\", "/").strip()))[0]
            if stem in stems:
                add(
                    f"{where}: file {file_name!r} has the stem {stem!r} of image "
                    f"{stems[stem]!r}'s file; the particles of both would share names. "
                    "Rename one of the files."
                )
            else:
                stems[stem] = iid
        for key in ("width", "height"):
            if key in im and im[key] is not None and not _positive_int(im[key]):
                add(
                    f"{where}: {key} {_short(im[key])} is not a positive whole number of "
                    "pixels. Correct it, or leave it out."
                )

    # Annotations.
    ids: dict = {}
    written: dict = {}
    for k, ann in enumerate(data.get("annotations", []), 1):
        if not isinstance(ann, dict):
            add(f"{name}: annotation {k} is {_short(ann)}, not a JSON object. Fix or remove it.")
            continue
        aid = ann.get("id", f"#{k}")
        where = f"{name}, annotation {_short(aid) if _id_ok(aid) else '#' + str(k)}"
        if "id" in ann:
            if not _id_ok(aid):
                add(
                    f"{where}: id {_short(aid)} is not an integer or a string. Give each "
                    "annotation its own id."
                )
            elif aid in ids:
                add(f"{where}: id {aid!r} is used twice. Give each annotation its own id.")
            else:
                ids[aid] = k
                w = written_id(aid)
                if w in written:
                    add(
                        f"{where}: id {aid!r} is written as particle {w!r}, as is annotation "
                        f"{written[w]!r}; they would be one particle. Give them ids that "
                        "differ in digits or letters."
                    )
                else:
                    written[w] = aid
        for key in ("image_id", "category_id"):
            if not _id_ok(ann.get(key)):
                add(
                    f"{where}: {key} {_short(ann.get(key))} is not an integer or a string. "
                    "Correct the annotation."
                )
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1) and not isinstance(crowd, bool):
            add(f"{where}: iscrowd {_short(crowd)} is not 0 or 1. Correct the annotation.")
        if "bbox" in ann and ann["bbox"] is not None:
            box = ann["bbox"]
            if not (isinstance(box, list) and len(box) == 4 and all(map(_number, box))):
                add(
                    f"{where}: bbox {_short(box)} is not 4 finite numbers [x, y, width, "
                    "height]. Re-export the annotations."
                )
        if "area" in ann and ann["area"] is not None and not _number(ann["area"]):
            add(
                f"{where}: area {_short(ann['area'])} is not a finite number. Re-export the "
                "annotations."
            )
        line = _segmentation_problem(ann.get("segmentation"))
        if line:
            add(f"{where}: {line}")
    return problems


def _segmentation_problem(seg) -> str | None:
    if seg is None or seg == [] or seg == {}:
        return None
    if isinstance(seg, list):
        for j, poly in enumerate(seg, 1):
            if not isinstance(poly, list) or not all(map(_number, poly)):
                return (
                    f"polygon {j} is {_short(poly)}, not a flat list of finite x, y "
                    "numbers. Re-export the annotations."
                )
        return None
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(map(_positive_int, size))):
            return (
                f"its RLE size {_short(size)} is not [height, width] in whole pixels. "
                "Re-export the annotations."
            )
        if isinstance(counts, str):
            return None if counts else "its RLE counts are empty. Re-export the annotations."
        if not (
            isinstance(counts, list)
            and counts
            and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)
        ):
            return (
                f"its RLE counts {_short(counts)} are not a list of non-negative integers "
                "or a compressed string. Re-export the annotations."
            )
        return None
    return f"segmentation {_short(seg)} is neither polygons nor RLE. Re-export the annotations."


def check_micrograph_pixels(image: np.ndarray, name) -> None:
    """Refuse a float micrograph whose pixels are not all finite, or all one
    value: its grey-scale stretch (minimum to maximum over 16 bit) would
    make every crop black. Integer micrographs are kept as they are, so
    they pass.

    Raises
    ------
    DatasetError
        One line naming the file: how many pixels are NaN or infinite, or
        the single value.
    """
    image = np.asarray(image)
    if image.dtype.kind not in "fc":
        return
    bad = int(np.count_nonzero(~np.isfinite(image)))
    if bad:
        raise DatasetError(
            f"{name}: {bad} pixel(s) are NaN or infinite; the grey scale cannot be "
            "stretched and every crop would be black. Fix or replace the micrograph "
            "(e.g. set those pixels to the image's mean)."
        )
    if image.size and image.min() == image.max():
        raise DatasetError(
            f"{name}: every pixel is {image.flat[0].item()!r}; there is nothing to cut out "
            "and every crop would be black. Pass the micrograph itself, not an empty or "
            "blank image."
        )
