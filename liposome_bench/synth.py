"""Synthetic cryo-TEM liposome particles (thesis section 4.8.4; issue 2, section 3).

The thesis drew artificial liposomes as distorted circles on Perlin noise.
This generator instead images a simple physical model of each particle, so
that the pictures look like cryo-TEM and the classes differ for the reasons
they differ in real micrographs:

1. **Projected potential.** A lipid bilayer is a thin ellipsoidal shell
   (4-5 nm thick). Its projection along the beam is the path length through
   the shell, which is largest where the beam runs tangentially through the
   membrane: the rim-darkened ring of a vesicle. Multilamellar vesicles are
   2-5 such shells 6-7 nm apart (sometimes off-centre, sometimes smaller
   vesicles inside a larger one); a doxorubicin precipitate is a bundle of
   parallel fibres, a denser rod that can stretch its liposome.
2. **Contrast transfer.** The projected potential is filtered by the
   weak-phase contrast transfer function of a 200 kV microscope at 2-5 um
   underfocus (10 % amplitude contrast, a Gaussian envelope for blur), which
   makes electron-dense matter dark with a faint bright Fresnel fringe.
3. **Ice and detector.** Vitreous ice adds a low-frequency thickness
   variation (a fractional Brownian field, built in Fourier space); ice
   crystals are nearly opaque dark blobs; neighbouring vesicles crowd the
   50 px surround; the electrons arrive as shot noise at a given dose
   (e-/A^2, detective quantum efficiency 0.15).
4. **What makes real data hard** (version 2): annotator ambiguity
   (borderline particles that look like another class with a trace of
   their own, :data:`AMBIGUITY`), touching neighbours, masks that are off by
   a pixel or two or merged with a neighbour, particles cut by the
   micrograph's edge, textured ice, and imaging conditions shared by the
   particles of one micrograph (``Particle.meta["micrograph"]``).

At the default difficulty 0.5 the lab's SVM gives about the thesis's
Tables 7 and 8 on this data (``benchmarks/calibrate_synth.py``).

Particles are rendered in batches of similar size with numpy and scipy.fft,
so the full encapsulation set (24,918 particles) takes about a minute on two
cores; ``benchmarks/bench_synth.py`` measures it. Everything is drawn from
generators seeded by ``seed``: the same arguments give the same images.
``docs/synthetic-data.md`` explains the model with example montages.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.fft
from scipy.special import ndtri

from liposome_bench.data.types import EXPORT_JSON, Dataset, Particle, get_problem
from liposome_bench.data.writer import write_export
from liposome_bench.errors import ConfigError, DatasetError
from liposome_bench.machine import usable_cores
from liposome_bench.progress import NullReporter
from liposome_bench.plotting import plot_montage

logger = logging.getLogger(__name__)

#: Bumped whenever the same arguments would give different images; part of
#: the built-in dataset's cache folder name, so an old cache is never reused.
GENERATOR_VERSION = 2

#: Pixels of surround on each side of the particle's mask (thesis section 3).
SURROUND_PX = 50

#: Particle counts of the thesis's data sets (Tables 1 and 2).
THESIS_COUNTS = {
    "lamellarity": {"unilamellar": 12368, "multilamellar": 1717, "uncertain": 84},
    "encapsulation": {"full": 24255, "empty": 161, "uncertain": 502},
}

DEFAULT_PIXEL_SIZE_NM = 1.6
DEFAULT_DOSE = 10.0
DEFAULT_DIFFICULTY = 0.5
DEFAULT_BATCH_SIZE = 8  # arrays stay in the CPU cache: the fastest measured

# Microscope and sample constants ------------------------------------------
WAVELENGTH_NM = 2.508e-3  # electrons at 200 kV
AMPLITUDE_CONTRAST = 0.10
DQE = 0.15  # detected fraction of the dose
MEMBRANE_NM = (4.0, 5.0)  # bilayer thickness
LAMELLA_SPACING_NM = (6.0, 7.0)  # repeat distance of stacked bilayers
CONTRAST_PER_NM = 0.024  # phase contrast per nm of lipid-equivalent path
DIAMETER_CLIP_NM = (48.0, 176.0)

# Log-normal diameters (median nm, sigma of log) of each class's vesicles.
# Multilamellar vesicles are larger (thesis section 10.1: their images are
# generally over 100x100 px), but the classes overlap widely (Figures 3-4):
# size helps, it does not decide. Loaded doxorubicin liposomes are ~85 nm.
DIAMETERS_NM = {
    "lamellarity": {
        "unilamellar": (86.0, 0.30),
        "multilamellar": (116.0, 0.22),
        "uncertain": (98.0, 0.30),
    },
    "encapsulation": {
        "full": (86.0, 0.20),
        "empty": (80.0, 0.24),
        "uncertain": (84.0, 0.24),
    },
}

#: Annotator ambiguity at the calibrated point (difficulty 0.5): for a
#: (label, look-alike) pair, the share of the label's particles that are
#: borderline, drawn as the faintest form of the look-alike class with a
#: trace of their own (a faint partial inner bilayer, a faint short drug
#: bundle, an ice crystal at the edge), so that an annotator who saw the
#: trace chose the label while the image mostly shows the other class.
#: Fitted by ``benchmarks/calibrate_synth.py --search`` so that the lab's
#: SVM reproduces the thesis's Tables 7 and 8; scaled by 2 x difficulty.
AMBIGUITY = {
    "lamellarity": {
        ("unilamellar", "multilamellar"): 0.043,
        ("unilamellar", "uncertain"): 0.0,
        ("multilamellar", "unilamellar"): 0.0,
        ("multilamellar", "uncertain"): 0.0,
        ("uncertain", "unilamellar"): 0.0,
        ("uncertain", "multilamellar"): 0.073,
    },
    "encapsulation": {
        ("full", "empty"): 0.0,
        ("full", "uncertain"): 0.07,
        ("empty", "full"): 0.0,
        ("empty", "uncertain"): 0.08,
        ("uncertain", "empty"): 0.06,
        ("uncertain", "full"): 0.0,
    },
}

#: Particles per micrograph (uniform whole numbers): particles of one
#: micrograph share its ice thickness, defocus, dose and exposure.
MICROGRAPH_PARTICLES = (8, 40)

MAX_SHELLS = 6  # slot 0 the vesicle, 1-4 inner lamellae, 5 an overlapping partner
PARTNER = 5
MAX_BUNDLES = 2
MAX_NEIGHBOURS = 3
MAX_BLOBS = 2
BLOB_LUMPS = 4

_SHELL_KEYS = ("cx", "cy", "a", "b", "c", "th", "t", "dens", "cut_psi", "cut_o")
_BUNDLE_KEYS = ("cx", "cy", "phi", "hl", "hw", "dens", "period", "bend")
_CLOUD_KEYS = ("cx", "cy", "sigma", "dens")
_NEIGHBOUR_KEYS = ("dist", "angle", "r", "t", "dens", "inner", "xdens", "xphi", "xhl", "xhw")
_BLOB_KEYS = ("cx", "cy", "r", "opacity", "tex_phi", "tex_period", "tex_amp")

# Normal quantiles on a 65,536-point grid: drawing 16-bit uniforms and looking
# them up is three times faster than numpy's normal sampler and, for 8-bit
# images, indistinguishable from it.
_NORMAL_LUT = ndtri((np.arange(65536) + 0.5) / 65536).astype(np.float32)


# Class counts ----------------------------------------------------------------


def allocate_counts(problem: str, n: int | None = None) -> dict[str, int]:
    """Split ``n`` particles over the classes in the thesis's proportions.

    Largest-remainder rounding: each class gets the floor of its share of
    ``n`` and the particles left over go to the largest fractional parts, so
    the counts sum to ``n`` and each differs from its exact share by less
    than one.

    Parameters
    ----------
    problem : {"lamellarity", "encapsulation"}
    n : int, optional
        Number of particles; default the thesis's data set size (14,169 for
        lamellarity, 24,918 for encapsulation).

    Returns
    -------
    dict
        Class name -> count, in the problem's class order.

    Raises
    ------
    ConfigError
        If ``n`` is below 1.
    """
    spec = get_problem(problem)
    thesis = THESIS_COUNTS[spec.name]
    total = sum(thesis.values())
    if n is None:
        return {c: thesis[c] for c in spec.classes}
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"--n must be a positive number of particles; got {n!r}.")
    shares = {c: n * thesis[c] / total for c in spec.classes}
    counts = {c: int(np.floor(s)) for c, s in shares.items()}
    left = n - sum(counts.values())
    # Ties go to the class listed first.
    order = sorted(spec.classes, key=lambda c: (-(shares[c] - counts[c]), spec.classes.index(c)))
    for c in order[:left]:
        counts[c] += 1
    return counts


def _check_counts(spec, counts: dict) -> dict[str, int]:
    unknown = [c for c in counts if c not in spec.classes]
    if unknown:
        raise ConfigError(
            f"counts has class {unknown[0]!r}, which is not a {spec.name} class "
            f"({', '.join(spec.classes)})."
        )
    out = {}
    for c in spec.classes:
        v = counts.get(c, 0)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ConfigError(f"counts[{c!r}] must be a whole number >= 0; got {v!r}.")
        out[c] = int(v)
    if sum(out.values()) < 1:
        raise ConfigError("counts asks for no particles at all; give at least one class a count.")
    return out


# Generation ------------------------------------------------------------------


@dataclass
class _Scenes:
    """Everything drawn about each particle before rendering: arrays over
    particles (and slots), in nm unless the name says px."""

    n: int
    shells: dict = field(default_factory=dict)  # key -> (n, MAX_SHELLS)
    mask_slot: np.ndarray = None  # (n, MAX_SHELLS) bool: part of the particle mask
    bundles: dict = field(default_factory=dict)  # key -> (n, MAX_BUNDLES)
    clouds: dict = field(default_factory=dict)  # key -> (n,)
    neighbours: dict = field(default_factory=dict)  # key -> (n, MAX_NEIGHBOURS)
    blobs: dict = field(default_factory=dict)  # key -> (n, MAX_BLOBS)
    lumps: np.ndarray = None  # (n, MAX_BLOBS, BLOB_LUMPS, 4): dx, dy, radius, opacity factors
    merge: np.ndarray = None  # (n,) bool: the mask takes in neighbour 0 (a segmentation error)
    micrograph: np.ndarray = None  # (n,) micrograph index
    defocus: np.ndarray = None
    blur: np.ndarray = None
    contrast: np.ndarray = None
    ice: np.ndarray = None
    level: np.ndarray = None
    electrons: np.ndarray = None  # (n,) detected electrons per pixel
    jitter: np.ndarray = None  # (n, 2) px
    extent: np.ndarray = None  # nm from the centre to the farthest edge of the particle
    mask_shift: np.ndarray = None  # (n, 2) px: the mask is off by this much
    mask_grow: np.ndarray = None  # (n,) px: the mask is this much too large (< 0: small)
    cut_side: np.ndarray = None  # (n,) -1, or the side (0-3) where the micrograph ends
    cut_keep: np.ndarray = None  # (n,) fraction of the mask's extent left on that side


def generate_dataset(
    problem: str,
    n: int | None = None,
    seed: int = 0,
    *,
    counts: dict[str, int] | None = None,
    difficulty: float = DEFAULT_DIFFICULTY,
    label_noise: float = 0.0,
    dose: float = DEFAULT_DOSE,
    pixel_size_nm: float = DEFAULT_PIXEL_SIZE_NM,
    batch_size: int = DEFAULT_BATCH_SIZE,
    reporter=None,
    ambiguity: dict | None = None,
) -> Dataset:
    """Generate a synthetic cryo-TEM liposome data set in memory.

    Parameters
    ----------
    problem : {"lamellarity", "encapsulation"}
    n : int, optional
        Number of particles, split over the classes in the thesis's
        proportions (Tables 1 and 2, largest-remainder rounding). Default the
        thesis's size: 14,169 (lamellarity) or 24,918 (encapsulation).
    seed : int
        Seed of every random draw (>= 0). The same arguments give the same
        images.
    counts : dict, optional
        Exact number of particles per class instead of ``n`` (classes left
        out get none).
    difficulty : float
        0 (easy) to 1 (hard); 0.5 is the point calibrated against the
        thesis's SVM (Tables 7 and 8). Lowers contrast and raises blur, ice
        variation, crowding, touching neighbours, segmentation errors and
        the share of borderline particles (annotator ambiguity, scaled by
        2 x difficulty; two-shell multilamellar vesicles with a faint inner
        bilayer; small or faint drug crystals).
    label_noise : float
        Fraction of particles (0 to 0.9) whose picture is drawn from another
        class than their label, as annotation mistakes; the label counts stay
        as asked.
    dose : float
        Electron dose in e-/A^2; lower is noisier.
    pixel_size_nm : float
        Pixel size in nm/px (0.5 to 5), recorded in every particle.
    batch_size : int
        Particles rendered together (1: particle by particle). It changes
        only the speed: every particle draws from its own random stream, so
        the images are the same for any batch size.
    reporter : progress reporter, optional
        Receives a ``generate`` stage advanced per batch.
    ambiguity : dict, optional
        (label, look-alike class) -> share of borderline particles at
        difficulty 0.5, replacing :data:`AMBIGUITY` (for calibration).

    Returns
    -------
    Dataset
        ``synthetic=True`` and ``root=None``; particle ids are "1", "2", ...
        in a random class order; images are uint8 with the particle's mask
        bounding box plus 50 px on each side (less where the particle lies
        on the micrograph's edge); ``meta["micrograph"]`` names the
        particle's micrograph.

    Raises
    ------
    ConfigError
        If an option is out of range or ``n`` and ``counts`` disagree.
    """
    spec = get_problem(problem)
    _check_options(seed, difficulty, label_noise, dose, pixel_size_nm, batch_size)
    if counts is not None:
        class_counts = _check_counts(spec, counts)
        if n is not None and n != sum(class_counts.values()):
            raise ConfigError(
                f"n={n} but counts add up to {sum(class_counts.values())}; give one or the other."
            )
    else:
        class_counts = allocate_counts(spec.name, n)
    reporter = reporter or NullReporter()
    total = sum(class_counts.values())

    rng, labels, appearance, borderline = plan_appearance(
        spec.name,
        class_counts,
        seed,
        difficulty=difficulty,
        label_noise=label_noise,
        ambiguity=ambiguity,
    )
    scenes = _draw_scenes(
        spec, labels, appearance, borderline, rng, difficulty, pixel_size_nm, dose
    )

    reporter.stage(f"generate {spec.name}", total=total)
    images, masks = _render_all(scenes, seed, dose, pixel_size_nm, batch_size, reporter)
    source = f"synthetic:{spec.name}:v{GENERATOR_VERSION}:seed{seed}"
    particles = [
        Particle(
            id=str(i + 1),
            label=spec.classes[labels[i]],
            image=images[i],
            mask=masks[i],
            pixel_size_nm=float(pixel_size_nm),
            source=source,
            meta={"micrograph": f"M{scenes.micrograph[i] + 1:04d}"},
        )
        for i in range(total)
    ]
    description = (
        f"synthetic {spec.name} (generator v{GENERATOR_VERSION}, seed {seed}, "
        f"difficulty {difficulty:g}, label noise {label_noise:g}, dose {dose:g} e/A^2, "
        f"{pixel_size_nm:g} nm/px)"
    )
    return Dataset(spec, particles, root=None, description=description, synthetic=True)


def plan_appearance(
    problem, class_counts, seed, *, difficulty=DEFAULT_DIFFICULTY, label_noise=0.0, ambiguity=None
):
    """Labels and what each particle shows, the first draws of a data set.

    Parameters
    ----------
    problem : str
    class_counts : dict
        Class -> count.
    seed, difficulty, label_noise, ambiguity :
        As for :func:`generate_dataset`.

    Returns
    -------
    rng : numpy.random.Generator
        The scene generator, ready for the next draws.
    labels, appearance : int arrays
        Class index of each particle's label and of the class it looks like.
    borderline : bool array
        Particles drawn as annotator-ambiguous (label != appearance, faint
        form with a trace of the label); label noise is not borderline.
    """
    spec = get_problem(problem)
    k = len(spec.classes)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    labels = np.repeat(np.arange(k), [class_counts.get(c, 0) for c in spec.classes])
    labels = rng.permutation(labels)
    total = len(labels)
    appearance = labels.copy()
    # Annotator ambiguity: per label, the borderline particles and the class
    # each resembles.
    rates = np.zeros((k, k))
    table = AMBIGUITY.get(spec.name, {}) if ambiguity is None else ambiguity
    for (label, other), rate in table.items():
        if label in spec.classes and other in spec.classes and label != other:
            rates[spec.classes.index(label), spec.classes.index(other)] = rate
    rates *= 2 * difficulty
    rates /= max(1.0, rates.sum(axis=1).max())
    u = rng.random(total)
    cumulative = np.cumsum(rates, axis=1)[labels]
    other = (u[:, None] >= cumulative).sum(axis=1)
    borderline = other < k
    appearance[borderline] = other[borderline]
    flip = rng.random(total) < label_noise
    if flip.any() and k > 1:
        # Another class, uniformly: the picture lies about the label.
        step = rng.integers(1, k, size=int(flip.sum()))
        appearance[flip] = (labels[flip] + step) % k
        borderline &= ~flip
    return rng, labels, appearance, borderline


def _check_options(seed, difficulty, label_noise, dose, pixel_size_nm, batch_size):
    checks = [
        (
            isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0,
            f"seed must be a whole number >= 0; got {seed!r}.",
        ),
        (0.0 <= difficulty <= 1.0, f"difficulty must be between 0 and 1; got {difficulty!r}."),
        (0.0 <= label_noise <= 0.9, f"label noise must be between 0 and 0.9; got {label_noise!r}."),
        (
            dose > 0 and np.isfinite(dose),
            f"dose must be a positive number of e-/A^2; got {dose!r}.",
        ),
        (
            0.5 <= pixel_size_nm <= 5.0,
            f"pixel size must be between 0.5 and 5 nm/px; got {pixel_size_nm!r}.",
        ),
        (
            isinstance(batch_size, (int, np.integer)) and batch_size >= 1,
            f"batch size must be a whole number >= 1; got {batch_size!r}.",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


# Drawing the scenes ------------------------------------------------------------


def _draw_scenes(spec, labels, appearance, borderline, rng, d, px, dose) -> _Scenes:
    """Draw every particle's geometry and imaging conditions (vectorised per
    class). ``appearance`` holds class indices of what each particle shows;
    ``borderline`` particles show a harder form of that class (drawn at
    ``d`` where plain particles are drawn at ``d**2``) with a trace of their
    label's class."""
    n = len(appearance)
    s = _Scenes(n)
    s.shells = {k: np.zeros((n, MAX_SHELLS)) for k in _SHELL_KEYS}
    s.shells["cut_o"][:] = np.nan
    s.mask_slot = np.zeros((n, MAX_SHELLS), dtype=bool)
    s.bundles = {k: np.zeros((n, MAX_BUNDLES)) for k in _BUNDLE_KEYS}
    s.clouds = {k: np.zeros(n) for k in _CLOUD_KEYS}
    s.neighbours = {k: np.zeros((n, MAX_NEIGHBOURS)) for k in _NEIGHBOUR_KEYS}
    s.blobs = {k: np.zeros((n, MAX_BLOBS)) for k in _BLOB_KEYS}
    s.lumps = np.zeros((n, MAX_BLOBS, BLOB_LUMPS, 4))
    spacing = rng.uniform(*LAMELLA_SPACING_NM, size=n)

    names = np.array(spec.classes)[appearance]
    for label in spec.classes:
        idx = np.flatnonzero(names == label)
        if len(idx) == 0:
            continue
        median, sigma = DIAMETERS_NM[spec.name][label]
        radius = _draw_diameters(rng, median, sigma, len(idx)) / 2
        round_only = label in ("empty", "unilamellar")
        _set_vesicle(s, rng, idx, radius, max_aspect=1.08 if round_only else 1.15)
        draw = _DRAW_CLASS[(spec.name, label)]
        plain = ~borderline[idx]
        # Plain particles: the class's own hard cases grow as difficulty^2
        # (few at the calibrated 0.5, where ambiguity is the borderline
        # particles' business); borderline ones are drawn at difficulty.
        draw(s, rng, idx[plain], spacing[idx[plain]], d * d)
        draw(s, rng, idx[~plain], spacing[idx[~plain]], d)
    for label in spec.classes:
        trace = _TRACE.get(label)
        idx = np.flatnonzero(borderline & (np.array(spec.classes)[labels] == label))
        if trace is not None and len(idx):
            trace(s, rng, idx, spacing[idx])

    _set_extent(s)
    _draw_surround(s, rng, spec, d)
    _draw_micrographs(s, rng, d, px, dose)
    s.jitter = rng.uniform(-0.5, 0.5, size=(n, 2))
    _draw_segmentation(s, rng, d, px)
    return s


def _draw_micrographs(s, rng, d, px, dose):
    """Imaging conditions shared by the particles of one micrograph.

    Particles are taken in order into micrographs of 8-40. Each micrograph
    has an ice thickness (relative, 0.7 to 1.3 + 0.4 x difficulty: thicker
    ice scatters more, so less contrast, fewer electrons and a darker
    exposure), a defocus, a blur (drift) and a dose (+-25 %); the particles
    of a micrograph differ only slightly (their height in the ice).
    """
    n = s.n
    sizes = rng.integers(
        MICROGRAPH_PARTICLES[0], MICROGRAPH_PARTICLES[1] + 1, size=n // MICROGRAPH_PARTICLES[0] + 1
    )
    s.micrograph = np.repeat(np.arange(len(sizes)), sizes)[:n]
    m = len(sizes)
    mic = s.micrograph
    thickness = rng.uniform(0.7, 1.3 + 0.4 * d, size=m)
    defocus = rng.uniform(2000.0, 3500.0 + 1000.0 * d, size=m)
    blur = rng.uniform(0.5, 0.8 + 0.7 * d, size=m)
    ice = rng.uniform(0.01, 0.03 + 0.05 * d, size=m) * thickness
    level = rng.uniform(150.0, 195.0, size=m) * np.exp(-0.35 * (thickness - 1))
    dose_factor = rng.uniform(0.75, 1.25, size=m) * np.exp(-0.4 * (thickness - 1))
    s.defocus = defocus[mic] + rng.normal(0.0, 60.0, size=n)
    s.blur = px * blur[mic] * rng.uniform(0.9, 1.1, size=n)
    s.contrast = (
        CONTRAST_PER_NM * (1.25 - 0.5 * d) / np.sqrt(thickness[mic]) * rng.uniform(0.9, 1.1, size=n)
    )
    s.ice = ice[mic]
    s.level = level[mic] + rng.normal(0.0, 2.0, size=n)
    s.electrons = dose * (10.0 * px) ** 2 * DQE * dose_factor[mic]


def _draw_segmentation(s, rng, d, px):
    """How an automatic segmenter gets the mask wrong, and where the
    micrograph's edge cuts the particle.

    The mask is off by a pixel or two and one to two pixels too large or
    small; for particles whose first neighbour touches them, it sometimes
    takes the neighbour in (``s.merge``, drawn with the neighbours). A few
    particles lie on the micrograph's edge: the crop stops there, inside the
    particle, and the mask touches the image border.
    """
    n = s.n
    s.mask_shift = np.clip(np.rint(rng.normal(0.0, 0.3 + 0.5 * d, size=(n, 2))), -2, 2).astype(int)
    s.mask_grow = rng.choice([-1, 0, 1, 2], size=n, p=[0.1, 0.55, 0.3, 0.05])
    cut = rng.random(n) < 0.01 + 0.02 * d
    s.cut_side = np.where(cut, rng.integers(0, 4, size=n), -1)
    s.cut_keep = rng.uniform(0.6, 0.92, size=n)


def _draw_diameters(rng, median, sigma, size):
    d = median * np.exp(sigma * rng.standard_normal(size))
    return np.clip(d, *DIAMETER_CLIP_NM)


def _set_shell(s, idx, slot, *, cx=0.0, cy=0.0, a, b, c=None, th, t, dens=1.0, mask=False):
    sh = s.shells
    sh["cx"][idx, slot] = cx
    sh["cy"][idx, slot] = cy
    sh["a"][idx, slot] = a
    sh["b"][idx, slot] = b
    sh["c"][idx, slot] = (np.asarray(a) + np.asarray(b)) / 2 if c is None else c
    sh["th"][idx, slot] = th
    sh["t"][idx, slot] = t
    sh["dens"][idx, slot] = dens
    s.mask_slot[idx, slot] = mask


def _set_vesicle(s, rng, idx, radius, max_aspect):
    """The particle's own (outer) bilayer in shell slot 0."""
    aspect = rng.uniform(1.0, max_aspect, size=len(idx))
    t = rng.uniform(*MEMBRANE_NM, size=len(idx))
    _set_shell(
        s,
        idx,
        0,
        a=radius * np.sqrt(aspect),
        b=radius / np.sqrt(aspect),
        c=radius,
        th=rng.uniform(0, np.pi, size=len(idx)),
        t=t,
        mask=True,
    )


def _add_lamellae(s, rng, idx, spacing, count, d, off_centre_p=0.3):
    """Inner bilayers 1..count-1 stacked inside shell 0, ``spacing`` apart;
    sometimes off-centre (the stack touches the outer bilayer on one side)."""
    sh = s.shells
    m = len(idx)
    a0, b0, c0, th = sh["a"][idx, 0], sh["b"][idx, 0], sh["c"][idx, 0], sh["th"][idx, 0]
    off = np.where(rng.random(m) < off_centre_p, rng.uniform(0.3, 0.9, size=m), 0.0)
    omega = rng.uniform(0, 2 * np.pi, size=m)
    for k in range(1, 5):
        shrink = k * spacing * (1 + off)
        has = (count > k) & (np.minimum(a0, b0) - shrink > 9.0)
        if not has.any():
            continue
        shift = k * spacing * off
        j = idx[has]
        _set_shell(
            s,
            j,
            k,
            cx=(shift * np.cos(omega))[has],
            cy=(shift * np.sin(omega))[has],
            a=(a0 - shrink)[has],
            b=(b0 - shrink)[has],
            c=(c0 - shrink)[has],
            th=th[has],
            t=rng.uniform(*MEMBRANE_NM, size=int(has.sum())),
            dens=rng.uniform(1.0 - 0.55 * d * d, 1.0, size=int(has.sum())),
        )


def _add_inner_vesicles(s, rng, idx, d):
    """Oligo/multivesicular: one or two smaller vesicles loose inside."""
    sh = s.shells
    a0, b0 = sh["a"][idx, 0], sh["b"][idx, 0]
    room = np.minimum(a0, b0) - sh["t"][idx, 0] - 2.0
    nin = rng.integers(1, 3, size=len(idx))
    for k in (1, 2):
        has = (nin >= k) & (room > 22.0)
        j = idx[has]
        if len(j) == 0:
            continue
        r = rng.uniform(0.3, 0.62, size=len(j)) * room[has]
        r = np.maximum(r, 10.0)
        reach = np.maximum(room[has] - r, 0.0) * rng.uniform(0.2, 1.0, size=len(j))
        ang = rng.uniform(0, 2 * np.pi, size=len(j))
        if k == 2:  # opposite side of the first, so they do not cross
            ang = (
                np.arctan2(sh["cy"][j, 1], sh["cx"][j, 1]) + np.pi + rng.uniform(-0.6, 0.6, len(j))
            )
            r = np.minimum(
                r,
                np.maximum(
                    room[has] - np.hypot(sh["cx"][j, 1], sh["cy"][j, 1]) - sh["a"][j, 1], 6.0
                )
                * 0.9,
            )
            r = np.maximum(r, 8.0)
            reach = np.maximum(room[has] - r, 0.0)
        _set_shell(
            s,
            j,
            k,
            cx=reach * np.cos(ang),
            cy=reach * np.sin(ang),
            a=r,
            b=r,
            c=r,
            th=0.0,
            t=rng.uniform(*MEMBRANE_NM, size=len(j)),
            dens=rng.uniform(1.0 - 0.4 * d, 1.0, size=len(j)),
        )


def _add_partner(s, rng, idx, *, mask=True):
    """A second vesicle overlapping the particle (shell slot PARTNER)."""
    sh = s.shells
    m = len(idx)
    r0 = (sh["a"][idx, 0] + sh["b"][idx, 0]) / 2
    r = r0 * rng.uniform(0.6, 1.05, size=m)
    dist = (r0 + r) * rng.uniform(0.35, 0.7, size=m)
    ang = rng.uniform(0, 2 * np.pi, size=m)
    _set_shell(
        s,
        idx,
        PARTNER,
        cx=dist * np.cos(ang),
        cy=dist * np.sin(ang),
        a=r,
        b=r * rng.uniform(0.92, 1.0, size=m),
        c=r,
        th=rng.uniform(0, np.pi, size=m),
        t=rng.uniform(*MEMBRANE_NM, size=m),
        mask=mask,
    )


def _add_partial_lamella(s, rng, idx, spacing, d):
    """A faint inner bilayer along only part of the circumference."""
    sh = s.shells
    m = len(idx)
    a0, b0, c0 = sh["a"][idx, 0], sh["b"][idx, 0], sh["c"][idx, 0]
    _set_shell(
        s,
        idx,
        1,
        a=a0 - spacing,
        b=b0 - spacing,
        c=c0 - spacing,
        th=sh["th"][idx, 0],
        t=rng.uniform(*MEMBRANE_NM, size=m),
        dens=rng.uniform(0.25, 0.6, size=m),
    )
    sh["cut_psi"][idx, 1] = rng.uniform(0, 2 * np.pi, size=m)
    # Keep the part beyond a chord: between ~1/3 and ~2/3 of the circle.
    sh["cut_o"][idx, 1] = (a0 + b0) / 2 * rng.uniform(-0.45, 0.5, size=m)


def _add_ice_over(s, rng, idx):
    """An ice crystal covering part of the particle (blob slot 0)."""
    sh = s.shells
    m = len(idx)
    r0 = (sh["a"][idx, 0] + sh["b"][idx, 0]) / 2
    ang = rng.uniform(0, 2 * np.pi, size=m)
    dist = r0 * rng.uniform(0.55, 1.05, size=m)
    _set_blob(
        s,
        rng,
        idx,
        0,
        cx=dist * np.cos(ang),
        cy=dist * np.sin(ang),
        r=r0 * rng.uniform(0.6, 1.0, size=m),
    )


def _set_blob(s, rng, idx, slot, *, cx, cy, r):
    """An ice crystal: a main body with smaller lumps of their own opacity on
    its edge, crossed by facet striations; 30 % are thinner, greyer
    contamination rather than nearly opaque crystals."""
    m = len(idx)
    s.blobs["cx"][idx, slot] = cx
    s.blobs["cy"][idx, slot] = cy
    s.blobs["r"][idx, slot] = r
    thin = rng.random(m) < 0.3
    s.blobs["opacity"][idx, slot] = np.where(
        thin, rng.uniform(0.35, 0.65, size=m), rng.uniform(0.75, 0.95, size=m)
    )
    s.blobs["tex_phi"][idx, slot] = rng.uniform(0, np.pi, size=m)
    s.blobs["tex_period"][idx, slot] = rng.uniform(4.0, 9.0, size=m)
    s.blobs["tex_amp"][idx, slot] = rng.uniform(0.15, 0.4, size=m)
    ang = rng.uniform(0, 2 * np.pi, size=(m, BLOB_LUMPS))
    # A main body and smaller lumps on its edge.
    off = rng.uniform(0.3, 0.65, size=(m, BLOB_LUMPS))
    off[:, 0] = rng.uniform(0.0, 0.15, size=m)
    radius = rng.uniform(0.3, 0.6, size=(m, BLOB_LUMPS))
    radius[:, 0] = rng.uniform(0.75, 1.0, size=m)
    shade = rng.uniform(0.55, 1.0, size=(m, BLOB_LUMPS))
    shade[:, 0] = 1.0
    s.lumps[idx, slot, :, 0] = off * np.cos(ang)
    s.lumps[idx, slot, :, 1] = off * np.sin(ang)
    s.lumps[idx, slot, :, 2] = radius
    s.lumps[idx, slot, :, 3] = shade


def _add_crystal(s, rng, idx, slot, *, length, dens, deform, host=0, centre=None, phi=None):
    """A doxorubicin-sulfate fibre bundle inside shell ``host``.

    ``length`` is a fraction of the host's inner diameter. Where the bundle
    is longer than the liposome along its axis and ``deform`` is set, the
    liposome is stretched along the bundle (area kept), as loaded liposomes
    are in cryo-TEM; the bundle is then shortened to fit inside.
    """
    sh, bu = s.shells, s.bundles
    m = len(idx)
    if phi is None:
        phi = rng.uniform(0, np.pi, size=m)
    hw = rng.uniform(4.0, 10.5, size=m)
    inner = (sh["a"][idx, host] + sh["b"][idx, host]) / 2 - sh["t"][idx, host]
    hl = length * inner
    if deform:
        r = (sh["a"][idx, host] + sh["b"][idx, host]) / 2
        a = np.maximum(r, hl + sh["t"][idx, host] + 2.5)
        b = np.maximum(r * r / a, hw + sh["t"][idx, host] + 4.0)
        sh["a"][idx, host], sh["b"][idx, host] = a, b
        sh["c"][idx, host] = np.sqrt(a * b)
        sh["th"][idx, host] = phi
    if centre is None:
        cx, cy = sh["cx"][idx, host].copy(), sh["cy"][idx, host].copy()
    else:
        cx, cy = centre
    bend = rng.uniform(-1, 1, size=m) * 0.004
    bu["cx"][idx, slot], bu["cy"][idx, slot] = cx, cy
    bu["phi"][idx, slot] = phi
    bu["hw"][idx, slot] = hw
    bu["hl"][idx, slot] = _fit_half_length(s, idx, host, cx, cy, phi, hw, hl, bend)
    bu["dens"][idx, slot] = dens
    bu["period"][idx, slot] = rng.uniform(4.5, 6.5, size=m)
    bu["bend"][idx, slot] = bend


def _fit_half_length(s, idx, host, cx, cy, phi, hw, hl_wanted, bend):
    """The longest half-length up to ``hl_wanted`` for which the bundle's four
    corners lie inside the host's inner bilayer with 1.5 nm to spare."""
    sh = s.shells
    a = sh["a"][idx, host] - sh["t"][idx, host] - 1.5
    b = sh["b"][idx, host] - sh["t"][idx, host] - 1.5
    hx, hy, th = sh["cx"][idx, host], sh["cy"][idx, host], sh["th"][idx, host]

    def inside(hl):
        ok = np.ones(len(idx), dtype=bool)
        for sgn_s in (-1, 1):
            for sgn_d in (-1, 1):
                along = sgn_s * hl
                across = sgn_d * hw + bend * hl * hl
                x = cx + along * np.cos(phi) - across * np.sin(phi) - hx
                y = cy + along * np.sin(phi) + across * np.cos(phi) - hy
                u = x * np.cos(th) + y * np.sin(th)
                v = -x * np.sin(th) + y * np.cos(th)
                ok &= (u / a) ** 2 + (v / b) ** 2 <= 1.0
        return ok

    lo, hi = np.zeros(len(idx)), np.asarray(hl_wanted, dtype=float).copy()
    full = inside(hi)
    for _ in range(18):
        mid = (lo + hi) / 2
        ok = inside(mid)
        lo = np.where(ok, mid, lo)
        hi = np.where(ok, hi, mid)
    return np.where(full, hl_wanted, lo)


# One drawing function per (problem, class): what the class looks like.


def _draw_unilamellar(s, rng, idx, spacing, d):
    pass  # a single bilayer: shell 0 only


def _draw_multilamellar(s, rng, idx, spacing, d):
    m = len(idx)
    # Oligovesicular and two-bilayer vesicles are the hard ones: none at
    # difficulty 0, 5 % each at the calibrated 0.5, 20 % and 40 % at 1.
    oligo = rng.random(m) < 0.2 * d * d
    p2 = 0.4 * d**3
    rest = np.array([0.1, 0.4, 0.5]) * (1 - p2)
    count = rng.choice([2, 3, 4, 5], size=m, p=np.concatenate([[p2], rest]))
    _add_lamellae(s, rng, idx[~oligo], spacing[~oligo], count[~oligo], d)
    _add_inner_vesicles(s, rng, idx[oligo], d)


def _draw_lamellarity_uncertain(s, rng, idx, spacing, d):
    m = len(idx)
    faint = 0.08 * d
    kind = rng.choice(3, size=m, p=[0.4 - faint / 2, 0.6 - faint / 2, faint])  # overlap, ice, faint
    multi = rng.random(m) < np.where(kind == 1, 0.5, 0.3)
    j = idx[(kind == 0)]
    _add_partner(s, rng, j)
    k = multi & (kind != 2)
    _add_lamellae(s, rng, idx[k], spacing[k], rng.integers(2, 4, size=int(k.sum())), d)
    _add_ice_over(s, rng, idx[kind == 1])
    f = kind == 2
    _add_partial_lamella(s, rng, idx[f], spacing[f], d)
    # Not as faint as a borderline trace: 0.5-0.9 of a bilayer's density at 0.5.
    s.shells["dens"][idx[f], 1] = rng.uniform(0.75 - 0.5 * d, 1.15 - 0.5 * d, size=int(f.sum()))


def _draw_full(s, rng, idx, spacing, d):
    m = len(idx)
    bilamellar = rng.random(m) < 0.05
    _add_lamellae(
        s, rng, idx[bilamellar], spacing[bilamellar], np.full(int(bilamellar.sum()), 2), d, 0.0
    )
    host = np.where(bilamellar, 1, 0)
    for h in (0, 1):
        j = idx[host == h]
        if len(j) == 0:
            continue
        # Smaller, fainter crystals are likelier when harder.
        length = rng.uniform(0.55 - 0.3 * d, 1.2, size=len(j))
        dens = rng.uniform(3.5, 5.0, size=len(j)) * (1 - 0.45 * d * rng.random(len(j)))
        _add_crystal(s, rng, j, 0, length=length, dens=dens, deform=h == 0, host=h)
        second = j[rng.random(len(j)) < 0.25]
        if len(second):
            phi = s.bundles["phi"][second, 0] + rng.uniform(-0.35, 0.35, size=len(second))
            gap = s.bundles["hw"][second, 0] + rng.uniform(5.0, 12.0, size=len(second))
            side = rng.choice([-1.0, 1.0], size=len(second))
            cx = s.bundles["cx"][second, 0] - side * gap * np.sin(phi)
            cy = s.bundles["cy"][second, 0] + side * gap * np.cos(phi)
            _add_crystal(
                s,
                rng,
                second,
                1,
                length=rng.uniform(0.3, 0.9, size=len(second)),
                dens=s.bundles["dens"][second, 0],
                deform=False,
                host=h,
                centre=(cx, cy),
                phi=phi,
            )


def _draw_empty(s, rng, idx, spacing, d):
    m = len(idx)
    bilamellar = rng.random(m) < 0.02
    _add_lamellae(
        s, rng, idx[bilamellar], spacing[bilamellar], np.full(int(bilamellar.sum()), 2), d, 0.0
    )


def _draw_encapsulation_uncertain(s, rng, idx, spacing, d):
    m = len(idx)
    kind = rng.choice(4, size=m, p=[0.08, 0.07, 0.42, 0.43])  # faint, partial, overlap, ice
    sh = s.shells
    # Faint: a crystal, or an amorphous cloud, at a fraction of full density.
    faint = idx[kind == 0]
    cloud = rng.random(len(faint)) < 0.4
    fc, fb = faint[cloud], faint[~cloud]
    if len(fb):
        _add_crystal(
            s,
            rng,
            fb,
            0,
            length=rng.uniform(0.4, 1.0, size=len(fb)),
            dens=rng.uniform(1.4, 2.4, size=len(fb)),
            deform=False,
        )
    if len(fc):
        inner = np.minimum(sh["a"][fc, 0], sh["b"][fc, 0]) - sh["t"][fc, 0]
        s.clouds["sigma"][fc] = inner * rng.uniform(0.25, 0.45, size=len(fc))
        ang = rng.uniform(0, 2 * np.pi, size=len(fc))
        off = inner * rng.uniform(0.0, 0.3, size=len(fc))
        s.clouds["cx"][fc], s.clouds["cy"][fc] = off * np.cos(ang), off * np.sin(ang)
        s.clouds["dens"][fc] = rng.uniform(9.0, 14.0, size=len(fc))
    # Partial: a short stub of crystal against the membrane.
    part = idx[kind == 1]
    if len(part):
        inner = np.minimum(sh["a"][part, 0], sh["b"][part, 0]) - sh["t"][part, 0]
        ang = rng.uniform(0, 2 * np.pi, size=len(part))
        off = inner * rng.uniform(0.35, 0.6, size=len(part))
        _add_crystal(
            s,
            rng,
            part,
            0,
            length=rng.uniform(0.12, 0.3, size=len(part)),
            dens=rng.uniform(1.8, 3.2, size=len(part)),
            deform=False,
            centre=(off * np.cos(ang), off * np.sin(ang)),
            phi=ang + np.pi / 2,
        )
    # Overlap: two vesicles, one of them loaded.
    over = idx[kind == 2]
    if len(over):
        _add_partner(s, rng, over)
        loaded = rng.random(len(over)) < 0.8
        j = over[loaded]
        if len(j):
            on_partner = rng.random(len(j)) < 0.5
            for host, jj in ((PARTNER, j[on_partner]), (0, j[~on_partner])):
                if len(jj):
                    _add_crystal(
                        s,
                        rng,
                        jj,
                        0,
                        length=rng.uniform(0.4, 0.9, size=len(jj)),
                        dens=rng.uniform(1.8, 3.4, size=len(jj)),
                        deform=False,
                        host=host,
                    )
    # Ice: a crystal over the interior of a loaded or empty liposome.
    ice = idx[kind == 3]
    if len(ice):
        loaded = ice[rng.random(len(ice)) < 0.8]
        if len(loaded):
            _add_crystal(
                s,
                rng,
                loaded,
                0,
                length=rng.uniform(0.5, 1.0, size=len(loaded)),
                dens=rng.uniform(2.4, 3.6, size=len(loaded)),
                deform=True,
            )
        _add_ice_over(s, rng, ice)


# Traces: what a borderline particle keeps of its label's class.


def _trace_multilamellar(s, rng, idx, spacing):
    """A faint inner bilayer along part of the circumference."""
    free = s.shells["dens"][idx, 1] == 0
    if free.any():
        _add_partial_lamella(s, rng, idx[free], spacing[free], 1.0)


def _trace_uncertain(s, rng, idx, spacing):
    """A small, thin ice crystal just outside the particle's edge."""
    j = idx[s.blobs["opacity"][idx, 0] == 0]
    if len(j) == 0:
        return
    r0 = (s.shells["a"][j, 0] + s.shells["b"][j, 0]) / 2
    ang = rng.uniform(0, 2 * np.pi, size=len(j))
    r = r0 * rng.uniform(0.15, 0.3, size=len(j))
    dist = r0 + r * rng.uniform(0.6, 1.0, size=len(j))
    _set_blob(s, rng, j, 0, cx=dist * np.cos(ang), cy=dist * np.sin(ang), r=r)
    s.blobs["opacity"][j, 0] = rng.uniform(0.3, 0.6, size=len(j))


def _trace_full(s, rng, idx, spacing):
    """A faint, short drug bundle."""
    for slot in range(MAX_BUNDLES):
        j = idx[
            (s.bundles["dens"][idx, slot] == 0) & ((slot == 0) | (s.bundles["dens"][idx, 0] > 0))
        ]
        if len(j):
            _add_crystal(
                s,
                rng,
                j,
                slot,
                length=rng.uniform(0.15, 0.4, size=len(j)),
                dens=rng.uniform(0.4, 1.2, size=len(j)),
                deform=False,
            )


_TRACE = {
    "multilamellar": _trace_multilamellar,
    "uncertain": _trace_uncertain,
    "full": _trace_full,
}

_DRAW_CLASS = {
    ("lamellarity", "unilamellar"): _draw_unilamellar,
    ("lamellarity", "multilamellar"): _draw_multilamellar,
    ("lamellarity", "uncertain"): _draw_lamellarity_uncertain,
    ("encapsulation", "full"): _draw_full,
    ("encapsulation", "empty"): _draw_empty,
    ("encapsulation", "uncertain"): _draw_encapsulation_uncertain,
}


def _set_extent(s):
    sh = s.shells
    reach = np.hypot(sh["cx"], sh["cy"]) + np.maximum(sh["a"], sh["b"])
    s.extent = np.where(sh["dens"] > 0, reach, 0.0).max(axis=1) + 1.0


def _draw_surround(s, rng, spec, d):
    """Neighbouring vesicles and ice crystals in the 50 px surround."""
    n = s.n
    ne = s.neighbours
    count = np.minimum(rng.poisson(0.5 + 1.3 * d, size=n), MAX_NEIGHBOURS)
    majority = spec.classes[0]
    median, sigma = DIAMETERS_NM[spec.name][majority]
    s.merge = np.zeros(n, dtype=bool)
    for k in range(MAX_NEIGHBOURS):
        has = count > k
        m = int(has.sum())
        if m == 0:
            continue
        r = _draw_diameters(rng, median, sigma, m) / 2
        ne["r"][has, k] = r
        ne["t"][has, k] = rng.uniform(*MEMBRANE_NM, size=m)
        ne["dens"][has, k] = 1.0
        gap = rng.uniform(2.0, 45.0, size=m)
        if k == 0:
            # The first neighbour touches (or slightly overlaps) the particle
            # in crowded micrographs; a segmenter sometimes merges the two.
            touch = rng.random(m) < 0.15 + 0.3 * d
            gap = np.where(touch, rng.uniform(-5.0, 1.0, size=m), gap)
            s.merge[has] = touch & (gap < -1.0) & (rng.random(m) < 0.03 + 0.06 * d)
        ne["dist"][has, k] = s.extent[has] + r + gap
        ne["angle"][has, k] = rng.uniform(0, 2 * np.pi, size=m)
        if spec.name == "lamellarity":
            ne["inner"][has, k] = rng.random(m) < 0.12
        else:
            loaded = rng.random(m) < 0.85
            ne["xdens"][has, k] = np.where(loaded, rng.uniform(2.4, 3.6, size=m), 0.0)
            ne["xphi"][has, k] = rng.uniform(0, np.pi, size=m)
            ne["xhw"][has, k] = rng.uniform(4.0, 9.0, size=m)
            # A bundle fits a round vesicle along any axis up to this length.
            room = r - ne["t"][has, k] - 2.0
            ne["xhl"][has, k] = np.sqrt(
                np.maximum(room**2 - ne["xhw"][has, k] ** 2, 0)
            ) * rng.uniform(0.5, 0.95, size=m)
    # Ice crystal blobs in the surround (slot 1; slot 0 is ice over the particle).
    has = rng.random(n) < 0.04 + 0.12 * d
    m = int(has.sum())
    if m:
        r = rng.uniform(12.0, 45.0, size=m)
        dist = s.extent[has] + r * rng.uniform(0.6, 2.0, size=m)
        ang = rng.uniform(0, 2 * np.pi, size=m)
        _set_blob(s, rng, np.flatnonzero(has), 1, cx=dist * np.cos(ang), cy=dist * np.sin(ang), r=r)
    # A merged neighbour belongs to the mask, so the canvas must hold it.
    merged = s.merge
    s.extent[merged] = np.maximum(
        s.extent[merged], ne["dist"][merged, 0] + ne["r"][merged, 0] + 1.0
    )


# Rendering ---------------------------------------------------------------------


def _render_all(scenes, seed, dose, px, batch_size, reporter):
    """Render every particle on a canvas sized for it; particles with the
    same canvas size are rendered together, ``batch_size`` at a time.

    Each particle draws its noise from its own stream
    (``SeedSequence([seed, 1, index])``) and every step is pixel-wise, so a
    particle comes out the same whatever else shares its batch.
    """
    n = scenes.n
    images: list = [None] * n
    masks: list = [None] * n
    sizes = np.array([_canvas_size(e, px) for e in scenes.extent])
    order = np.lexsort((np.arange(n), sizes))
    starts = np.flatnonzero(np.r_[True, sizes[order][1:] != sizes[order][:-1]])
    for first, end in zip(starts, np.r_[starts[1:], n]):
        for start in range(first, end, batch_size):
            batch = order[start : min(start + batch_size, end)]
            rngs = [np.random.default_rng(np.random.SeedSequence([seed, 1, int(i)])) for i in batch]
            rendered = _render_batch(scenes, batch, sizes[batch[0]], rngs, dose, px)
            for i, image, mask in zip(batch, *rendered):
                images[i], masks[i] = image, mask
            reporter.advance(len(batch))
    return images, masks


def _canvas_size(extent_nm, px):
    """Side of the square canvas for a particle reaching ``extent_nm`` from
    its centre: the particle, 50 px of surround each side and a margin
    against the FFT's wrap-around, rounded up to a fast FFT length."""
    reach = 2 * int(np.ceil(extent_nm / px))
    return scipy.fft.next_fast_len(reach + 2 * SURROUND_PX + 12, real=True)


def _render_batch(s, batch, S, rngs, dose, px):
    """Images and masks of the particles ``batch`` (indices into ``s``), all
    on S x S canvases; ``rngs`` holds one generator per particle."""
    B = len(batch)
    ext_px = s.extent[batch].max() / px
    W = 2 * int(np.ceil(ext_px)) + 6  # the particles' window
    c = S // 2
    jit = s.jitter[batch] * px  # nm

    # Projected potential (nm of lipid-equivalent path) of the particle.
    grid = (np.arange(W, dtype=np.float32) - W // 2) * np.float32(px)
    X, Y = grid[None, None, :], grid[None, :, None]
    window = np.zeros((B, W, W), dtype=np.float32)
    mask = np.zeros((B, W, W), dtype=bool)
    for j in range(MAX_SHELLS):
        sub = np.flatnonzero(s.shells["dens"][batch, j] > 0)
        if len(sub) == 0:
            continue
        p = {k: s.shells[k][batch[sub], j] for k in _SHELL_KEYS}
        p["cx"], p["cy"] = p["cx"] + jit[sub, 0], p["cy"] + jit[sub, 1]
        path, inside = _shell_path(X, Y, p)
        window[sub] += path
        keep = s.mask_slot[batch[sub], j]
        if keep.any():
            mask[sub[keep]] |= inside[keep]
    for j in range(MAX_BUNDLES):
        sub = np.flatnonzero(s.bundles["dens"][batch, j] > 0)
        if len(sub):
            p = {k: s.bundles[k][batch[sub], j] for k in _BUNDLE_KEYS}
            p["cx"], p["cy"] = p["cx"] + jit[sub, 0], p["cy"] + jit[sub, 1]
            window[sub] += _bundle_path(X, Y, p)
    sub = np.flatnonzero(s.clouds["dens"][batch] > 0)
    if len(sub):
        p = {k: s.clouds[k][batch[sub]] for k in _CLOUD_KEYS}
        p["cx"], p["cy"] = p["cx"] + jit[sub, 0], p["cy"] + jit[sub, 1]
        window[sub] += _cloud_path(X, Y, p)

    potential = np.zeros((B, S, S), dtype=np.float32)
    potential[:, c - W // 2 : c - W // 2 + W, c - W // 2 : c - W // 2 + W] = window
    full_mask = np.zeros((B, S, S), dtype=bool)
    full_mask[:, c - W // 2 : c - W // 2 + W, c - W // 2 : c - W // 2 + W] = mask
    _paste_neighbours(potential, s, batch, c, px, full_mask)

    # Contrast transfer and ice thickness, in Fourier space.
    spectrum = scipy.fft.rfft2(potential, workers=_workers())
    spectrum *= _ctf(S, px, s.defocus[batch], s.blur[batch], s.contrast[batch])
    _add_ice(spectrum, S, px, s.ice[batch], rngs)
    transmission = scipy.fft.irfft2(spectrum, s=(S, S), workers=_workers())
    transmission += 1.0
    opacity = _paste_blobs(s, batch, c, px, S)
    if opacity is not None:
        transmission *= 1.0 - opacity
    np.maximum(transmission, 0.02, out=transmission)

    # Shot noise: Poisson counts, normal-approximated (>= ~100 e-/px).
    electrons = s.electrons[batch].astype(np.float32)[:, None, None]
    noise = np.empty((B, S, S), dtype=np.float32)
    for k, rng in enumerate(rngs):
        noise[k] = _standard_normal(rng, (S, S))
    noise *= np.sqrt(transmission / electrons)
    transmission += noise
    transmission *= s.level[batch].astype(np.float32)[:, None, None]
    transmission += 0.5
    gray = np.clip(transmission, 0, 255, out=transmission).astype(np.uint8)

    images, masks = [], []
    for k, i in enumerate(batch):
        m = _segment(full_mask[k], s.mask_shift[i], s.mask_grow[i])
        r = np.flatnonzero(m.any(axis=1))
        q = np.flatnonzero(m.any(axis=0))
        top, bottom = r[0] - SURROUND_PX, r[-1] + 1 + SURROUND_PX
        left, right = q[0] - SURROUND_PX, q[-1] + 1 + SURROUND_PX
        side = s.cut_side[i]
        if side >= 0:
            # The micrograph ends inside the particle: the crop stops there.
            lose = int((1 - s.cut_keep[i]) * (r[-1] - r[0] if side < 2 else q[-1] - q[0]))
            if side == 0:
                top = r[0] + lose
            elif side == 1:
                bottom = r[-1] + 1 - lose
            elif side == 2:
                left = q[0] + lose
            else:
                right = q[-1] + 1 - lose
        images.append(gray[k, top:bottom, left:right].copy())
        masks.append(m[top:bottom, left:right].copy())
    return images, masks


def _segment(mask, shift, grow):
    """The mask as an automatic segmenter gives it: off by ``shift`` px and
    ``grow`` px too large (negative: too small). Works on the mask's bounding
    box with a margin, so it costs little on a large canvas."""
    if not shift.any() and grow == 0:
        return mask
    from scipy import ndimage

    r = np.flatnonzero(mask.any(axis=1))
    q = np.flatnonzero(mask.any(axis=0))
    margin = 5
    r0, r1 = max(r[0] - margin, 0), min(r[-1] + 1 + margin, mask.shape[0])
    q0, q1 = max(q[0] - margin, 0), min(q[-1] + 1 + margin, mask.shape[1])
    box = mask[r0:r1, q0:q1]
    if grow > 0:
        box = ndimage.binary_dilation(box, iterations=int(grow))
    elif grow < 0:
        eroded = ndimage.binary_erosion(box, iterations=int(-grow))
        box = eroded if eroded.any() else box
    box = np.roll(box, (int(shift[1]), int(shift[0])), axis=(0, 1))
    out = np.zeros_like(mask)
    out[r0:r1, q0:q1] = box
    return out


def _workers():
    """FFT threads: at most 2, and no more than the cores this process may
    use (its affinity; ``os.cpu_count`` counts the machine's)."""
    return min(2, usable_cores())


def _rotate(X, Y, p, angle_key):
    dx = X - p["cx"].astype(np.float32)[:, None, None]
    dy = Y - p["cy"].astype(np.float32)[:, None, None]
    cos = np.cos(p[angle_key]).astype(np.float32)[:, None, None]
    sin = np.sin(p[angle_key]).astype(np.float32)[:, None, None]
    return dx * cos + dy * sin, dy * cos - dx * sin, dx, dy


def _shell_path(X, Y, p):
    """Path length through an ellipsoidal shell along the beam, and the
    in-plane inside of its outer surface.

    Through an ellipsoid with semi-axes (a, b, c) the beam travels
    2c * sqrt(1 - u^2/a^2 - v^2/b^2); the shell is the outer ellipsoid minus
    the inner one (axes shortened by the thickness t). At the rim the beam
    grazes the bilayer for ~2 sqrt(2 R t), which is why vesicles are
    dark rings rather than discs.
    """
    u, v, dx, dy = _rotate(X, Y, p, "th")
    f = np.float32
    a, b, c, t = (p[k].astype(f)[:, None, None] for k in ("a", "b", "c", "t"))
    uu, vv = u * u, v * v
    q_out = uu / (a * a) + vv / (b * b)
    inside = q_out <= 1
    path = np.sqrt(np.maximum(1 - q_out, 0)) * (2 * c)
    ai, bi = a - t, b - t
    q_in = uu / (ai * ai) + vv / (bi * bi)
    path -= np.sqrt(np.maximum(1 - q_in, 0)) * (2 * (c - t))
    cut = np.isfinite(p["cut_o"])
    if cut.any():
        # A partial bilayer: faded out on one side of a chord.
        psi = np.where(cut, p["cut_psi"], 0.0)
        o = np.where(cut, p["cut_o"], -1e6).astype(f)[:, None, None]
        along = (
            dx * np.cos(psi).astype(f)[:, None, None] + dy * np.sin(psi).astype(f)[:, None, None]
        )
        path *= np.clip((along - o) / f(6.0) + f(0.5), 0, 1)
    path *= p["dens"].astype(f)[:, None, None]
    return path, inside


def _bundle_path(X, Y, p):
    """Projected density of a drug fibre bundle: a (slightly bent) rod of
    round cross-section whose parallel fibres show as striations."""
    f = np.float32
    along, across, _, _ = _rotate(X, Y, p, "phi")
    across = across - p["bend"].astype(f)[:, None, None] * along * along
    hw, hl = p["hw"].astype(f)[:, None, None], p["hl"].astype(f)[:, None, None]
    path = np.sqrt(np.maximum(1 - (across / hw) ** 2, 0)) * (2 * hw)
    path *= np.clip((hl - np.abs(along)) / (0.6 * hw) + f(0.5), 0, 1)
    period = p["period"].astype(f)[:, None, None]
    path *= f(0.7) + f(0.3) * np.cos(f(2 * np.pi) * across / period) ** 2
    path *= p["dens"].astype(f)[:, None, None]
    return path


def _cloud_path(X, Y, p):
    """Diffuse, amorphous interior density (a Gaussian cloud)."""
    f = np.float32
    _, _, dx, dy = _rotate(X, Y, {**p, "th": np.zeros_like(p["cx"])}, "th")
    sigma = p["sigma"].astype(f)[:, None, None]
    return np.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma)) * p["dens"].astype(f)[:, None, None]


def _stamp_grid(centres_px, w, px):
    """Local coordinates (nm) of ``w`` x ``w`` stamps around sub-pixel centres,
    with the integer top-left corner of each stamp on the canvas."""
    f = np.float32
    ic = np.floor(centres_px).astype(int)
    frac = (centres_px - ic).astype(f)
    base = np.arange(w, dtype=f) - w // 2
    X = (base[None, None, :] - frac[:, 0, None, None]) * f(px)
    Y = (base[None, :, None] - frac[:, 1, None, None]) * f(px)
    return X, Y, ic - w // 2


def _paste(canvas, k, stamp, y0, x0, combine=np.add):
    """Add (or max) ``stamp`` into ``canvas[k]`` at (y0, x0), clipped."""
    S0, S1 = canvas.shape[1:]
    h, w = stamp.shape
    ya, xa = max(y0, 0), max(x0, 0)
    yb, xb = min(y0 + h, S0), min(x0 + w, S1)
    if ya >= yb or xa >= xb:
        return
    region = canvas[k, ya:yb, xa:xb]
    combine(region, stamp[ya - y0 : yb - y0, xa - x0 : xb - x0], out=region)


def _paste_neighbours(potential, s, batch, c, px, mask):
    ne = s.neighbours
    k_b, k_n = np.nonzero(ne["dens"][batch] > 0)
    if len(k_b) == 0:
        return
    g = {key: ne[key][batch[k_b], k_n] for key in _NEIGHBOUR_KEYS}
    jit = s.jitter[batch[k_b]]
    centres = np.stack(
        [
            c + jit[:, 0] + g["dist"] * np.cos(g["angle"]) / px,
            c + jit[:, 1] + g["dist"] * np.sin(g["angle"]) / px,
        ],
        axis=1,
    )
    w = 2 * int(np.ceil(g["r"].max() / px)) + 6
    X, Y, corner = _stamp_grid(centres, w, px)
    zero = np.zeros(len(k_b))
    shell = {
        "cx": zero,
        "cy": zero,
        "a": g["r"],
        "b": g["r"],
        "c": g["r"],
        "th": zero,
        "t": g["t"],
        "dens": g["dens"],
        "cut_psi": zero,
        "cut_o": np.full(len(k_b), np.nan),
    }
    stamps, insides = _shell_path(X, Y, shell)
    inner = g["inner"] > 0
    if inner.any():
        r_in = g["r"][inner] - 6.5
        p = {k: v[inner] for k, v in shell.items()}
        p.update(a=r_in, b=r_in, c=r_in)
        stamps[inner] += _shell_path(X[inner], Y[inner], p)[0]
    loaded = g["xdens"] > 0
    if loaded.any():
        z = np.zeros(int(loaded.sum()))
        p = {
            "cx": z,
            "cy": z,
            "phi": g["xphi"][loaded],
            "hl": g["xhl"][loaded],
            "hw": g["xhw"][loaded],
            "dens": g["xdens"][loaded],
            "period": z + 5.5,
            "bend": z,
        }
        stamps[loaded] += _bundle_path(X[loaded], Y[loaded], p)
    merged = (k_n == 0) & s.merge[batch[k_b]]
    for i in range(len(k_b)):
        _paste(potential, k_b[i], stamps[i], corner[i, 1], corner[i, 0])
        if merged[i]:
            _paste(mask, k_b[i], insides[i], corner[i, 1], corner[i, 0], combine=np.logical_or)


def _paste_blobs(s, batch, c, px, S):
    """Opacity (0-1) of ice crystals: lumpy, nearly black, soft-edged."""
    bl = s.blobs
    k_b, k_n = np.nonzero(bl["opacity"][batch] > 0)
    if len(k_b) == 0:
        return None
    f = np.float32
    idx = batch[k_b]
    jit = s.jitter[idx]
    centres = np.stack(
        [c + jit[:, 0] + bl["cx"][idx, k_n] / px, c + jit[:, 1] + bl["cy"][idx, k_n] / px], axis=1
    )
    r = bl["r"][idx, k_n]
    w = 2 * int(np.ceil(1.5 * r.max() / px)) + 6
    X, Y, corner = _stamp_grid(centres, w, px)
    cover = np.zeros((len(k_b), w, w), dtype=f)
    lumps = s.lumps[idx, k_n]
    for j in range(BLOB_LUMPS):
        cx = (lumps[:, j, 0] * r).astype(f)[:, None, None]
        cy = (lumps[:, j, 1] * r).astype(f)[:, None, None]
        rr = (lumps[:, j, 2] * r).astype(f)[:, None, None]
        q = ((X - cx) ** 2 + (Y - cy) ** 2) / (rr * rr)
        lump = np.clip((1 - q) * rr / f(3.0 * px), 0, 1) * lumps[:, j, 3].astype(f)[:, None, None]
        np.maximum(cover, lump, out=cover)
    # Texture: crossed facet striations modulate the crystal's opacity.
    phi = bl["tex_phi"][idx, k_n]
    cos, sin = np.cos(phi).astype(f)[:, None, None], np.sin(phi).astype(f)[:, None, None]
    period = bl["tex_period"][idx, k_n].astype(f)[:, None, None]
    along, across = X * cos + Y * sin, Y * cos - X * sin
    texture = (f(0.5) + f(0.5) * np.cos(f(2 * np.pi) * along / period)) * (
        f(0.6) + f(0.4) * np.cos(f(2 * np.pi) * across / (f(1.9) * period))
    )
    cover *= f(1) - bl["tex_amp"][idx, k_n].astype(f)[:, None, None] * texture
    cover *= bl["opacity"][idx, k_n].astype(f)[:, None, None]
    opacity = np.zeros((len(batch), S, S), dtype=f)
    for i in range(len(k_b)):
        _paste(opacity, k_b[i], cover[i], corner[i, 1], corner[i, 0], combine=np.maximum)
    return opacity


def _ctf(S, px, defocus, blur, contrast):
    """-contrast * (weak-phase CTF with amplitude contrast) * Gaussian
    envelope, on the rfft2 grid. Positive potential comes out dark.

    chi = pi * lambda * defocus * k^2 (spherical aberration is negligible
    at these spatial frequencies, below 0.5 nm^-1).
    """
    f = np.float32
    ky = scipy.fft.fftfreq(S, d=px).astype(f)
    kx = scipy.fft.rfftfreq(S, d=px).astype(f)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    chi = f(np.pi * WAVELENGTH_NM) * defocus.astype(f)[:, None, None] * k2
    # sqrt(1 - w^2) sin(chi) + w cos(chi) = sin(chi + arcsin(w)).
    chi += f(np.arcsin(AMPLITUDE_CONTRAST))
    h = np.sin(chi)
    h *= np.exp(-f(2 * np.pi**2) * (blur.astype(f) ** 2)[:, None, None] * k2)
    h *= -contrast.astype(f)[:, None, None]
    return h


def _add_ice(spectrum, S, px, amplitude, rngs):
    """Low-frequency ice thickness variation: fractional Brownian noise
    (power ~ k^-3.4) on the lowest spatial frequencies, scaled to a relative
    transmission standard deviation of ``amplitude``."""
    K = max(3, S // 24)
    ky = np.concatenate([np.arange(K), np.arange(-K + 1, 0)])
    kx = np.arange(K)
    kk = np.hypot(ky[:, None], kx[None, :])
    kk[0, 0] = np.inf  # no change of the mean
    filt = (kk**-1.7).astype(np.float32)
    # Parseval over the half spectrum: variance = 2 * sum |F|^2 / S^4.
    scale = amplitude * S * S / np.sqrt(2 * (filt**2).sum())
    noise = np.stack([rng.standard_normal((2 * K - 1, K, 2), dtype=np.float32) for rng in rngs])
    noise /= np.float32(np.sqrt(2))
    field = (noise[..., 0] + 1j * noise[..., 1]) * filt * scale.astype(np.float32)[:, None, None]
    spectrum[:, :K, :K] += field[:, :K]
    spectrum[:, S - K + 1 :, :K] += field[:, K:]


def _standard_normal(rng, shape):
    """Standard normal float32 samples by inverse-CDF lookup of 16-bit uniforms."""
    count = int(np.prod(shape))
    bits = np.frombuffer(rng.bytes(2 * count), dtype=np.uint16)
    return _NORMAL_LUT[bits].reshape(shape)


# Export ----------------------------------------------------------------------------


def generate_export(
    problem: str,
    out_dir,
    *,
    n: int | None = None,
    seed: int = 0,
    montage=None,
    reporter=None,
    **options,
) -> Dataset:
    """Generate a synthetic data set and write it as a lab export folder.

    Parameters
    ----------
    problem : {"lamellarity", "encapsulation"}
    out_dir : path
        Folder to create; it must not exist or be empty (checked before
        generating, so a mistake costs no time).
    n, seed :
        As for :func:`generate_dataset`.
    montage : path, optional
        Also write a PNG montage of examples per class there.
    reporter : progress reporter, optional
    **options :
        ``difficulty``, ``label_noise``, ``dose``, ``pixel_size_nm``,
        ``counts``, ``batch_size``: as for :func:`generate_dataset`.

    Returns
    -------
    Dataset
        The generated data set (in memory).

    Raises
    ------
    DatasetError
        If ``out_dir`` exists and is not empty.
    ConfigError
        If an option is out of range.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DatasetError(
            f"{out_dir} already exists and is not empty. Choose another --out or delete it."
        )
    reporter = reporter or NullReporter()
    dataset = generate_dataset(problem, n, seed, reporter=reporter, **options)
    reporter.message(f"Writing {len(dataset)} particles to {out_dir} ...")
    write_export(dataset, out_dir)
    if montage is not None:
        write_montage(dataset, montage, seed=seed)
    return dataset


# Built-in default ----------------------------------------------------------------


def default_cache_dir(cache_dir=None) -> Path:
    """``cache_dir``, else $LIPOSOME_BENCH_CACHE, else ~/.cache/liposome-bench."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("LIPOSOME_BENCH_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "liposome-bench"


def builtin_dataset_path(problem: str, cache_dir=None) -> Path:
    """Where :func:`default_dataset_path` keeps the built-in data set of
    ``problem`` (nothing is generated here)."""
    name = get_problem(problem).name
    return default_cache_dir(cache_dir) / f"{name}-synthetic-v{GENERATOR_VERSION}-seed0"


def default_dataset_path(problem: str, cache_dir=None, *, reporter=None) -> Path:
    """The built-in synthetic data set of ``problem`` as a lab export folder.

    The thesis-sized set (seed 0, default options) is generated once into
    ``<cache>/<problem>-synthetic-v<GENERATOR_VERSION>-seed0/`` and reused by
    later runs. Two processes generating at once are fine: the export is
    written to a temporary folder and renamed, and whoever finishes second
    uses the first one's folder.

    Parameters
    ----------
    problem : {"lamellarity", "encapsulation"}
    cache_dir : path, optional
        Default $LIPOSOME_BENCH_CACHE, else ~/.cache/liposome-bench.
    reporter : progress reporter, optional
        Told that generation starts, and shows its progress.

    Returns
    -------
    Path of the export folder (it holds particles.json).

    Raises
    ------
    DatasetError
        If the folder exists without a particles.json (a broken cache).
    """
    spec = get_problem(problem)
    path = builtin_dataset_path(spec.name, cache_dir)
    if (path / EXPORT_JSON).is_file():
        return path
    _check_cache_folder(path)
    n = sum(THESIS_COUNTS[spec.name].values())
    text = (
        f"Generating the built-in synthetic {spec.name} data set ({n} particles) "
        f"into {path}; this takes a minute or two, once."
    )
    if reporter is not None:
        reporter.message(text)
    else:
        logger.warning(text)
    dataset = generate_dataset(spec.name, seed=0, reporter=reporter)
    try:
        write_export(dataset, path)
    except (DatasetError, OSError):
        # Another process finished first: use its folder.
        if (path / EXPORT_JSON).is_file():
            return path
        raise
    return path


def _check_cache_folder(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise DatasetError(
            f"The cache folder {path} exists but holds no {EXPORT_JSON}; "
            "delete it so the built-in data set is generated again."
        )


# Montage ---------------------------------------------------------------------------


def write_montage(dataset: Dataset, path, per_class: int = 8, seed: int = 0) -> Path:
    """Write a PNG grid of example particles, one row per class.

    Images are shown at a common scale (padded with white to the largest
    one shown), so sizes compare across the grid; each row is labelled with
    its class and count.

    Parameters
    ----------
    dataset : Dataset
    path : path of the PNG file to write (atomically).
    per_class : int
        Examples per row (at most that many; fewer if the class is smaller).
    seed : int
        Seed of the choice of examples.

    Returns
    -------
    Path of the written file.

    Raises
    ------
    ConfigError
        If ``per_class`` is below 1 or the data set is empty.
    """
    if per_class < 1:
        raise ConfigError(f"per_class must be at least 1; got {per_class}.")
    if len(dataset) == 0:
        raise ConfigError("The data set has no particles to show in a montage.")
    rng = np.random.default_rng(seed)
    classes = dataset.problem.classes
    y = dataset.y
    chosen = []
    for ci in range(len(classes)):
        members = np.flatnonzero(y == ci)
        take = min(per_class, len(members))
        chosen.append(np.sort(rng.choice(members, size=take, replace=False)) if take else members)
    shown = [dataset.particles[i].image for row in chosen for i in row]
    H = max(im.shape[0] for im in shown)
    W = max(im.shape[1] for im in shown)
    counts = dataset.class_counts()

    rows = [[_pad_to(_as_uint8(dataset.particles[i].image), H, W) for i in row] for row in chosen]
    labels = [f"{name}\n({counts[name]})" for name in classes]
    return plot_montage(rows, labels, path, per_class=per_class)


def _as_uint8(image):
    """8-bit view of an image of any dtype (real data sets may be 16-bit)."""
    if image.dtype == np.uint8:
        return image
    image = image.astype(np.float64)
    low, high = np.percentile(image, [0.5, 99.5])
    return (np.clip((image - low) / max(high - low, 1e-12), 0, 1) * 255).astype(np.uint8)


def _pad_to(image, H, W):
    """Centre ``image`` on a white H x W canvas, so that every image in the
    montage is drawn at the same scale and its own edges stay visible."""
    out = np.full((H, W), 255, dtype=np.uint8)
    top, left = (H - image.shape[0]) // 2, (W - image.shape[1]) // 2
    out[top : top + image.shape[0], left : left + image.shape[1]] = image
    return out
