"""Predictions put back on their micrographs (``predict --coco-results``,
``predict --overlays``), for a dataset made by ``dataset import``.

The import records where each particle was (particles.json: its
``Micrograph``, mask bounding box ``BBox``, ``Crop`` box, and from COCO the
source file's ``Annotation``, ``ImageId`` and ``CategoryId``) and each
micrograph's file, folder and size (dataset.json's ``source``, with the
COCO file's categories). From these:

* a COCO results file: a JSON list, one object per classified particle,
  ``{"image_id", "category_id", "score", "bbox", "segmentation",
  "annotation_id", "particle_id"}`` with the source file's own image,
  category and annotation ids; ``segmentation`` is the particle's mask over
  its whole micrograph as compressed RLE (pycocotools). Abstentions are left
  out: they are not predictions (the CSV keeps them with the model's guess),
  and a viewer or ``COCOeval`` then counts them as not found;
* one overlay PNG per micrograph (``plotting.plot_micrograph_predictions``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liposome_bench.errors import ConfigError, DatasetError
from liposome_bench.io import atomic_write_text
from liposome_bench.importers import read_micrograph
from liposome_bench.plotting import plot_micrograph_predictions

REIMPORT = "Import it again with `liposome-bench dataset import coco` (or `labels`, `star`)."


@dataclass
class PlacedParticle:
    """One predicted particle where it was in its micrograph."""

    id: str
    micrograph: str
    crop: list  # [x, y, width, height] px in the micrograph
    bbox: list  # the mask's bounding box, [x, y, width, height]
    mask: np.ndarray  # bool, the crop's shape
    predicted: str
    confidence: float
    abstained: bool
    annotation_id: object = None
    image_id: object = None


def place_predictions(predictions, option: str) -> tuple[list[PlacedParticle], dict]:
    """The predicted particles with their places, and dataset.json's
    ``source`` (micrographs and COCO categories).

    Parameters
    ----------
    predictions : deploy.Predictions
        Of a dataset written by ``dataset import`` (its ``dataset.root``).
    option : str
        The option that needs it, for the error message.

    Raises
    ------
    DatasetError
        One line when the data is not an import, or was imported before
        the import recorded where its particles were.
    """
    dataset = predictions.dataset
    root = Path(dataset.root) if dataset.root is not None else None
    meta_path = root / "dataset.json" if root is not None else None
    if meta_path is None or not meta_path.is_file():
        raise DatasetError(
            f"{option} needs a dataset made by `liposome-bench dataset import`; "
            f"{root or dataset.description} is not one (no dataset.json). "
            "Import the micrographs' annotations first."
        )
    try:
        source = json.loads(meta_path.read_text(encoding="utf-8")).get("source")
        objects = json.loads((root / "particles.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, AttributeError) as exc:
        raise DatasetError(f"{root}: cannot read dataset.json or particles.json ({exc}).") from None
    if not isinstance(source, dict) or not isinstance(source.get("micrographs"), dict):
        raise DatasetError(
            f"{option}: {root} records no micrographs (imported before liposome-bench kept "
            f"where each particle was, or not imported). {REIMPORT}"
        )
    by_id = {str(o.get("Id")): o for o in objects if isinstance(o, dict)}
    placed = []
    table = predictions.table
    for k, particle in enumerate(dataset.particles):
        obj = by_id.get(particle.id, {})
        mid, crop, bbox = obj.get("Micrograph"), obj.get("Crop"), obj.get("BBox")
        if mid not in source["micrographs"] or not (
            isinstance(crop, list) and len(crop) == 4 and isinstance(bbox, list)
        ):
            raise DatasetError(
                f"{option}: particle {particle.id} in {root / 'particles.json'} has no "
                f"Micrograph, Crop and BBox of a recorded micrograph. {REIMPORT}"
            )
        if tuple(particle.mask.shape) != (int(crop[3]), int(crop[2])):
            raise DatasetError(
                f"{option}: particle {particle.id}'s mask is {particle.mask.shape[1]}x"
                f"{particle.mask.shape[0]} px but its Crop is {crop[2]}x{crop[3]}. {REIMPORT}"
            )
        placed.append(
            PlacedParticle(
                particle.id,
                mid,
                [int(v) for v in crop],
                [float(v) for v in bbox],
                np.asarray(particle.mask, dtype=bool),
                str(table["predicted"].iloc[k]),
                float(table["confidence"].iloc[k]),
                bool(table["abstained"].iloc[k]),
                obj.get("Annotation"),
                obj.get("ImageId"),
            )
        )
    return placed, source


def coco_results_for(predictions) -> tuple[list[dict], str]:
    """The COCO results of ``predictions`` (see the module docstring) and
    the COCO file whose ids they use.

    Raises
    ------
    DatasetError
        When the data was not imported from one COCO file.
    """
    import pycocotools.mask as mask_utils

    option = "--coco-results"
    placed, source = place_predictions(predictions, option)
    files = {source["micrographs"][p.micrograph].get("annotations") for p in placed}
    coco = source.get("coco") or {}
    if None in files or not files or not set(files) <= set(coco):
        raise DatasetError(
            f"{option} needs a dataset imported from COCO annotations (it writes their "
            f"image and category ids); {predictions.dataset.root} records none. "
            "Import it with `liposome-bench dataset import coco`."
        )
    if len(files) > 1:
        raise DatasetError(
            f"{option}: {predictions.dataset.root} was imported from {len(files)} COCO files, "
            "whose ids overlap; a results file names one file's ids. Import each COCO file "
            "into its own dataset and predict each."
        )
    (annotations,) = files
    classes = list(predictions.dataset.problem.classes)
    class_category = coco[annotations].get("class_category", {})
    missing = [c for c in classes if c not in class_category]
    if missing:
        raise DatasetError(
            f"{option}: {annotations} has no category for the class {missing[0]!r} "
            f"(categories of {', '.join(class_category) or 'no class'}). Predict with a "
            "model of the import's classes."
        )
    results = []
    for p in placed:
        if p.abstained:
            continue
        mic = source["micrographs"][p.micrograph]
        full = np.zeros((int(mic["height"]), int(mic["width"])), dtype=np.uint8, order="F")
        x, y, w, h = p.crop
        full[y : y + h, x : x + w] = p.mask
        rle = mask_utils.encode(full)
        results.append(
            {
                "image_id": mic["image_id"],
                "category_id": class_category[p.predicted],
                "score": round(p.confidence, 6),
                "bbox": p.bbox,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "annotation_id": p.annotation_id,
                "particle_id": p.id,
            }
        )
    return results, annotations


def write_coco_results(results: list[dict], out) -> Path:
    """Write :func:`coco_results_for`' list as JSON, atomically."""
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--coco-results {out} is a folder; pass a file name such as p.json.")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(results) + "\n")
    return out


@dataclass
class OverlayPlan:
    """The overlays to draw: per micrograph, its file and its particles."""

    classes: list
    micrographs: dict  # micrograph id -> (path of the micrograph, [PlacedParticle])


def plan_overlays(predictions, *, micrographs_dir=None) -> OverlayPlan:
    """Find every micrograph with predicted particles before anything is
    drawn.

    Parameters
    ----------
    predictions : deploy.Predictions
    micrographs_dir : path, optional
        Where the micrographs are now; default the folder recorded at import.

    Raises
    ------
    DatasetError
        When a micrograph is not where it should be (one line, with the fix).
    """
    option = "--overlays"
    placed, source = place_predictions(predictions, option)
    plan = OverlayPlan(list(predictions.dataset.problem.classes), {})
    for p in placed:
        if p.micrograph not in plan.micrographs:
            mic = source["micrographs"][p.micrograph]
            folder = Path(micrographs_dir) if micrographs_dir is not None else Path(mic["folder"])
            path = folder / mic["file"]
            if not path.is_file():
                raise DatasetError(
                    f"{option}: micrograph {mic['file']} is not in {folder}"
                    + (" (the folder recorded at import)" if micrographs_dir is None else "")
                    + ". Pass the folder holding the micrographs with --micrographs DIR."
                )
            plan.micrographs[p.micrograph] = (path, [])
        plan.micrographs[p.micrograph][1].append(p)
    return plan


def write_overlays(plan: OverlayPlan, out_dir) -> list[Path]:
    """One PNG per micrograph of ``plan`` (:func:`plan_overlays`), named after
    the micrograph (``m01.png``; a subfolder's ``/`` becomes ``__``)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--overlays {out_dir} is a file; pass a folder for the PNGs.")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for mid, (path, particles) in plan.micrographs.items():
        image, _, _ = read_micrograph(path)
        n_abstained = sum(p.abstained for p in particles)
        written.append(
            plot_micrograph_predictions(
                image,
                [
                    {
                        "crop": p.crop,
                        "mask": p.mask,
                        "predicted": p.predicted,
                        "abstained": p.abstained,
                    }
                    for p in particles
                ],
                out_dir / (mid.replace("/", "__").replace(os.sep, "__") + ".png"),
                classes=plan.classes,
                title=f"{mid}: {len(particles)} particles, {n_abstained} abstained",
            )
        )
    return written


@dataclass
class Placement:
    """What ``predict --coco-results`` and ``--overlays`` will write, checked
    before anything is written (:func:`prepare_placement`)."""

    coco_results: Path | None
    results: list | None
    overlays: Path | None
    plan: OverlayPlan | None
    abstained: int


def prepare_placement(
    predictions, *, coco_results=None, overlays=None, micrographs_dir=None
) -> Placement:
    """Build the COCO results and find the micrographs, so that a missing
    record or micrograph is refused before the predictions are written.

    Raises
    ------
    DatasetError, ConfigError
        One line naming what is missing and the fix.
    """
    if micrographs_dir is not None and overlays is None:
        raise ConfigError("--micrographs is the folder for --overlays; pass --overlays DIR too.")
    results = coco_results_of = None
    if coco_results is not None:
        coco_results_of = Path(coco_results)
        if coco_results_of.is_dir():
            raise ConfigError(
                f"--coco-results {coco_results} is a folder; pass a file name such as p.json."
            )
        results, _ = coco_results_for(predictions)
    plan = None
    if overlays is not None:
        if Path(overlays).exists() and not Path(overlays).is_dir():
            raise ConfigError(f"--overlays {overlays} is a file; pass a folder for the PNGs.")
        plan = plan_overlays(predictions, micrographs_dir=micrographs_dir)
    return Placement(
        coco_results_of,
        results,
        Path(overlays) if overlays is not None else None,
        plan,
        int(np.sum(predictions.abstained)),
    )


def write_placement(placement: Placement) -> dict:
    """Write what :func:`prepare_placement` prepared.

    Returns
    -------
    dict
        ``coco_results`` (path, number of results) and ``overlays`` (the
        PNG paths), for what was asked.
    """
    done = {}
    if placement.results is not None:
        path = write_coco_results(placement.results, placement.coco_results)
        done["coco_results"] = (path, len(placement.results))
    if placement.plan is not None:
        done["overlays"] = write_overlays(placement.plan, placement.overlays)
    return done
