"""Near-identical particle images (issue 23): the same particle cut twice, a
rotated or flipped copy, or a re-noised duplicate, which lets a test fold
share a particle with its training folds.

Every particle's masked crop (its mask's bounding box, z-scored inside the
mask, zero outside, resized to ``CROP_SIDE`` px square) is hashed with
``imagehash.phash`` in all 8 orientations (4 rotations by 90 degrees, each
flipped). A pair is a candidate when some orientation of one crop's hash is
within ``MAX_HASH_DISTANCE`` bits of the other's upright hash; candidates are
found by exact matches on ``BANDS`` slices of the 64-bit hash (a pair within
``BANDS - 1`` bits shares at least one slice), so no loop visits every pair.
A candidate is a near-duplicate when the Pearson correlation of the two crops,
in the orientation that matches best, is at least ``MIN_CORRELATION``.

Pairs linking two groups (``--group-by`` values) are what matters for
cross-validation; :func:`suggest_grouping` joins every group linked by a pair
(connected components), so grouped folds keep each duplicate with its copy.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

import numpy as np

from liposome_bench.data.types import Dataset
from liposome_bench.io import atomic_write_text
from liposome_bench.folds import group_labels, resolve_group_by

#: Side of the square crop that is hashed and correlated (px).
CROP_SIDE = 32
#: The 64-bit hash is cut into this many 16-bit slices; a candidate agrees on
#: one, so every pair within ``BANDS - 1`` bits is found, and most pairs a
#: little further (each pair is looked up from both sides).
BANDS = 4
#: Candidates: at most this many differing hash bits (of 64), in the best orientation.
MAX_HASH_DISTANCE = 12
#: Near-duplicates: at least this Pearson correlation of the aligned crops'
#: fine detail (``detail``). On the built-in 14,169-particle lamellarity set
#: no two particles reach 0.81; rotated or flipped copies with added noise of
#: sd 2 % of the image's range reach 0.92 or more (docs/performance.md).
MIN_CORRELATION = 0.85
DETAIL_SIGMA = 1.0
#: The 8 orientations, by name: k quarter-turns counter-clockwise, then a left-right flip.
ORIENTATIONS = tuple(
    f"rot{90 * k}" + ("+flip" if flip else "") for flip in (False, True) for k in range(4)
)


@dataclass
class DuplicatePair:
    """Particles ``a`` < ``b`` (indices into the dataset) are near-identical:
    one is the other turned by ``orientation`` (``ORIENTATIONS``), the
    detail of the two correlating by ``correlation``."""

    a: int
    b: int
    orientation: str
    hash_distance: int
    correlation: float


@dataclass
class DuplicateReport:
    """The near-duplicate pairs of a dataset and what they do to a grouping."""

    pairs: list[DuplicatePair]
    group_by: str | None = None
    #: pairs whose particles lie in two different groups of ``group_by``
    cross_group: int = 0
    #: particle id -> suggested group (only when some pair crosses groups)
    suggested: dict = field(default_factory=dict)
    n_groups: int = 0
    n_suggested_groups: int = 0


def masked_crop(particle, side: int = CROP_SIDE) -> np.ndarray:
    """The particle's mask bounding box, z-scored inside the mask and zero
    outside, resized to ``side`` x ``side`` (float32)."""
    from PIL import Image

    mask = np.asarray(particle.mask, dtype=bool)
    if not mask.any():
        mask = np.ones_like(mask)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    crop, inside = np.asarray(particle.image)[box].astype(np.float32), mask[box]
    values = crop[inside]
    spread = float(values.std()) or 1.0
    crop = np.where(inside, (crop - float(values.mean())) / spread, 0.0).astype(np.float32)
    resized = Image.fromarray(crop, mode="F").resize((side, side), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def orient(crops: np.ndarray, index: int) -> np.ndarray:
    """``crops`` (..., H, W) in orientation ``ORIENTATIONS[index]``."""
    turned = np.rot90(crops, index % 4, axes=(-2, -1))
    return np.flip(turned, axis=-1) if index >= 4 else turned


def perceptual_hashes(crops: np.ndarray) -> np.ndarray:
    """The perceptual hash of every crop in every orientation: (n, 8) uint64,
    column ``o`` the hash of ``orient(crop, o)``, bit 63 first.

    It is ``imagehash.phash`` (hash size 8) of the crop as an 8-bit grey
    image, computed for all crops at once: the same two DCT-IIs of the
    32 x 32 image (``scipy.fftpack.dct``), the same 8 x 8 low frequencies
    above their median. ``tests/test_duplicates.py`` holds it equal to
    ``imagehash.phash``; one ``phash`` call per crop and orientation took
    31 s for 14,169 particles (docs/performance.md), this takes under 2 s.
    """
    from scipy.fftpack import dct

    if crops.shape[-2:] != (32, 32):
        raise ValueError(f"crops must be 32 x 32 (phash's image size); got {crops.shape[-2:]}.")
    # Crops are z-scores: [-4, 4] spans the grey levels hashed, as 8-bit
    # grey images (imagehash converts to mode "L").
    grey = np.clip((crops + 4.0) * (255.0 / 8.0), 0, 255).astype(np.uint8)
    weights = np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)
    out = np.zeros((len(crops), len(ORIENTATIONS)), dtype=np.uint64)
    for o in range(len(ORIENTATIONS)):
        pixels = orient(grey, o).astype(np.float64)
        low = dct(dct(pixels, axis=-2), axis=-1)[:, :8, :8].reshape(len(crops), 64)
        bits = low > np.median(low, axis=1, keepdims=True)
        out[:, o] = (bits * weights).sum(axis=1, dtype=np.uint64)
    return out


def _bit_count(values: np.ndarray) -> np.ndarray:
    """Set bits of every uint64 (numpy 1.26 has no ``bitwise_count``)."""
    as_bytes = np.ascontiguousarray(values, dtype=np.uint64).view(np.uint8)
    return np.unpackbits(as_bytes).reshape(len(values), 64).sum(axis=1, dtype=np.int64)


def candidate_pairs(hashes: np.ndarray, max_distance: int = MAX_HASH_DISTANCE):
    """Pairs (a, b, orientation, distance), a < b, where orientation ``o`` of
    ``a``'s hash is within ``max_distance`` bits of ``b``'s upright hash and
    the two agree exactly on one of the hash's ``BANDS`` 16-bit slices; each
    pair once, with its smallest distance. ``a`` and ``b`` are the query and
    the match, in either order."""
    n, n_orient = hashes.shape
    bits = np.unpackbits(hashes.astype(">u8").view(np.uint8).reshape(n, n_orient, 8), axis=-1)
    found = []
    for band in range(BANDS):
        keys = np.packbits(bits[..., band * 16 : (band + 1) * 16], axis=-1).view(">u2")[..., 0]
        by_key = np.argsort(keys[:, 0], kind="stable")
        sorted_keys = keys[by_key, 0]
        query = keys.ravel()
        left = np.searchsorted(sorted_keys, query, side="left")
        counts = np.searchsorted(sorted_keys, query, side="right") - left
        # Every (query, matching upright hash) pair, without a Python loop.
        source = np.repeat(np.arange(len(query)), counts)
        offset = np.arange(len(source)) - np.repeat(np.cumsum(counts) - counts, counts)
        b = by_key[np.repeat(left, counts) + offset]
        a, o = np.divmod(source, n_orient)
        keep = a != b
        found.append(np.stack([a[keep], b[keep], o[keep]], axis=1))
    cand = np.unique(np.concatenate(found), axis=0)
    distance = _bit_count(hashes[cand[:, 0], cand[:, 2]] ^ hashes[cand[:, 1], 0])
    cand = np.column_stack([cand, distance])[distance <= max_distance]
    # One row per unordered pair, its smallest distance first.
    lo, hi = np.minimum(cand[:, 0], cand[:, 1]), np.maximum(cand[:, 0], cand[:, 1])
    by_pair = np.lexsort((cand[:, 3], hi, lo))
    cand, lo, hi = cand[by_pair], lo[by_pair], hi[by_pair]
    first = np.ones(len(cand), dtype=bool)
    first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    return cand[first]


def detail(crops: np.ndarray) -> np.ndarray:
    """The crops' fine detail: each minus its Gaussian blur (sigma 1 px).
    Two particles of one shape agree on the blur; only a copy of one
    particle agrees on the detail."""
    from scipy import ndimage

    return crops - ndimage.gaussian_filter(crops, DETAIL_SIGMA, axes=(-2, -1))


def _correlations(crops: np.ndarray, a: np.ndarray, b: np.ndarray):
    """The best Pearson correlation over the 8 orientations of ``crops[a]``
    against ``crops[b]``, and that orientation's index.

    Turning or flipping a crop moves its pixels but keeps their mean and
    norm, so each pair is centred and normed once; only the dot product is
    taken per orientation, on a view of the turned crops (no copy)."""
    first, second = crops[a], crops[b]  # copies (fancy indexing), centred in place
    first -= first.mean(axis=(1, 2), keepdims=True)
    second -= second.mean(axis=(1, 2), keepdims=True)
    denominator = np.sqrt(np.einsum("ijk,ijk->i", first, first)) * np.sqrt(
        np.einsum("ijk,ijk->i", second, second)
    )
    denominator = np.where(denominator > 0, denominator, 1.0)
    best = np.full(len(a), -1.0)
    which = np.zeros(len(a), dtype=np.int64)
    for o in range(len(ORIENTATIONS)):
        r = np.einsum("ijk,ijk->i", orient(first, o), second) / denominator
        better = r > best
        best[better], which[better] = r[better], o
    return best, which


def find_near_duplicates(
    dataset: Dataset,
    *,
    max_distance: int = MAX_HASH_DISTANCE,
    min_correlation: float = MIN_CORRELATION,
    reporter=None,
) -> list[DuplicatePair]:
    """Every near-identical pair of particles (see the module docstring).

    Parameters
    ----------
    dataset : Dataset
    max_distance : int
        Hash bits (of 64) a candidate may differ by, in its best orientation.
    min_correlation : float
        Pearson correlation of the aligned crops a candidate needs.
    reporter : progress reporter, optional

    Returns
    -------
    list of DuplicatePair
        Sorted by particle index.
    """
    if reporter is not None:
        reporter.stage("near-duplicates", total=None)
    if len(dataset) < 2:
        return []
    crops = np.stack([masked_crop(p) for p in dataset.particles])
    hashes = perceptual_hashes(crops)
    cand = candidate_pairs(hashes, max_distance)
    if not len(cand):
        return []
    r, which = _correlations(detail(crops), cand[:, 0], cand[:, 1])
    pairs = [
        DuplicatePair(
            int(min(a, b)), int(max(a, b)), ORIENTATIONS[int(o)], int(d), round(float(c), 4)
        )
        for (a, b, _, d), c, o in zip(cand, r, which)
        if c >= min_correlation
    ]
    return sorted(pairs, key=lambda p: (p.a, p.b))


def suggest_grouping(groups, pairs) -> np.ndarray:
    """``groups`` (one value per particle) with every two groups that share a
    near-duplicate pair merged: each merged group takes the first (sorted)
    name of its members; an unlinked group keeps its name."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    names, index = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    a = index[[p.a for p in pairs]] if pairs else np.zeros(0, dtype=np.int64)
    b = index[[p.b for p in pairs]] if pairs else np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(names), len(names)))
    _, component = connected_components(graph, directed=False)
    # names are sorted, so the first member of a component is its smallest name.
    first = {}
    for i, c in enumerate(component):
        first.setdefault(c, names[i])
    return np.array([first[component[i]] for i in index], dtype=object)


def check_duplicates(dataset: Dataset, group_by: str | None = None, **options) -> DuplicateReport:
    """Near-duplicate pairs, how many cross the groups of ``group_by`` (the
    ``--group-by`` key, or ``micrograph`` when the particles have one), and
    the merged grouping that keeps every pair in one group.

    Parameters
    ----------
    dataset : Dataset
    group_by : str, optional
        A meta key, or ``"auto"`` (``folds.default_group_key``).
    **options
        Passed to :func:`find_near_duplicates`.

    Raises
    ------
    FoldError
        If a particle lacks the ``group_by`` key.
    """
    pairs = find_near_duplicates(dataset, **options)
    group_by = resolve_group_by(dataset, group_by, 2)  # "auto": the data's own key
    if group_by is None and all("micrograph" in p.meta for p in dataset.particles):
        group_by = "micrograph"
    report = DuplicateReport(pairs, group_by)
    if group_by is None:
        return report
    groups = group_labels(dataset, group_by)
    report.n_groups = int(len(set(groups)))
    report.cross_group = sum(groups[p.a] != groups[p.b] for p in pairs)
    if report.cross_group:
        merged = suggest_grouping(groups, pairs)
        report.suggested = dict(zip(dataset.ids, (str(g) for g in merged)))
        report.n_suggested_groups = int(len(set(merged)))
    return report


def pairs_across_folds(pairs, fold_of) -> int:
    """How many pairs have their two particles in different folds: a test
    fold holding one while a training fold holds the other."""
    fold_of = np.asarray(fold_of)
    return sum(int(fold_of[p.a] != fold_of[p.b]) for p in pairs)


def write_grouping(path, report: DuplicateReport) -> None:
    """The suggested grouping as a CSV of ``id,group`` (atomically), read
    back with ``--group-file`` (``read_grouping``)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["id", "group"])
    writer.writerows(report.suggested.items())
    atomic_write_text(path, text.getvalue())
