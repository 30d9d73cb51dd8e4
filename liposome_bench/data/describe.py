"""A dataset's summary as ``dataset info`` prints it: counts, image and
pixel sizes, particle sizes, surrounds."""

from __future__ import annotations

import numpy as np

from liposome_bench.data.types import Dataset


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
