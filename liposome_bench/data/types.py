"""What a dataset is: problems and their classes, particles, the dataset, and
the names of the lab export's layout on disk (shared by readers, the writer,
folds and synth)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liposome_bench.errors import DatasetError

#: The lab export's layout (docs/data-formats.md): its particles JSON, the
#: folders of images and masks beside it, and the record ``write_export``
#: adds.
EXPORT_JSON = "particles.json"
IMAGES_DIR = "images"
MASKS_DIR = "masks"
META_JSON = "dataset.json"
#: The folder beside a dataset where ``folds`` stores its fold files (not a
#: class folder).
FOLDS_DIR = "folds"
#: A manifest's own columns; any other column is metadata.
MANIFEST_COLUMNS = ("image", "label", "mask", "id", "pixel_size_nm")


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
