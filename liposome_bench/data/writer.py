"""The lab export writer (``write_export``), which can read what it wrote
back through ``load_dataset`` before the rename (``check_read_back``)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from liposome_bench import __version__
from liposome_bench.data.images import to_pil_array
from liposome_bench.data.readers import load_dataset
from liposome_bench.data.types import EXPORT_JSON, IMAGES_DIR, MASKS_DIR, META_JSON, Dataset
from liposome_bench.errors import DatasetError
from liposome_bench.io import UMASK, clean_stale_staging, staging_prefix


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
            Image.fromarray(to_pil_array(p.image)).save(tmp / IMAGES_DIR / name)
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
