"""Handcrafted particle features: the inputs of the lab's LIBSVM baseline.

Thesis section 3 lists the features the lab's software exports with every
particle and section 4.1 the subset its SVM uses. This module computes them
from a particle's image, mask and pixel size (``source="computed"``), or maps
the values a lab export already carries in ``Particle.features`` onto the same
columns (``source="export"``). Every definition, unit and normalisation is
spelled out in ``docs/features.md``; the short version:

===================  ==========================================================
column               definition
===================  ==========================================================
``area_px``          number of mask pixels
``area_nm2``         ``area_px * pixel_size**2``
``perimeter_px``     Crofton perimeter of the mask (4 directions)
``perimeter_nm``     ``perimeter_px * pixel_size``
``circularity``      ``4 pi area_px / perimeter_px**2`` (1 for a disc)
``diameter_px``      maximum Feret diameter: greatest distance between two
                     mask pixel centres (the major axis for an ellipse)
``length_nm``        ``diameter_px * pixel_size``
``max_width_nm``     ``2 max(EDT) * pixel_size``: the diameter of the largest
                     disc inside the mask, EDT being the Euclidean distance
                     from each mask pixel centre to the nearest background
                     pixel centre
``mu20`` ...         central moments of the binary mask, px**(p+q+2), x the
``mu03``             column and y the row coordinate (Hu 1962), unnormalised
``snr``              variance across the membrane / variance along it
``hist_00``..        32-bin histogram of the intensities inside the mask over
                     the dtype's range (float images: their own), summing to 1
``rdp_00``..         radial density profile, 32 points from the centre to
                     1.2 times the particle's outer radius
``edp_00``..         edge density profile, 32 points at signed distances
                     -52, -50, ..., +10 nm from the membrane (mask boundary)
===================  ==========================================================

Example
-------
>>> from liposome_bench.features import extract_features
>>> X = extract_features(dataset, "vironova")          # doctest: +SKIP
"""

from __future__ import annotations

import math

import numpy as np

from liposome_bench.io import atomic_write
from liposome_bench.errors import ConfigError, DatasetError
from liposome_bench.progress import NullReporter
from liposome_bench.settings import SVMSettings

# Geometry of the outputs ---------------------------------------------------

HIST_BINS = 32
"""Bins of the intensity histogram (thesis section 3: 32 bins)."""

PROFILE_POINTS = 32
"""Points each density profile is resampled to, so every particle gives the
SVM the same number of inputs whatever its size."""

EDP_GRID_NM = np.linspace(-52.0, 10.0, PROFILE_POINTS)
"""Signed distances (nm) from the membrane at which the edge density profile
is sampled: 2 nm apart, negative inside the particle. A fixed physical window
keeps bilayers (4-5 nm thick, 6-7 nm apart in multilamellar liposomes) at the
same columns for particles of every size."""

RDP_EXTENT = 1.2
"""The radial density profile runs from the centre to this multiple of the
particle's outer radius, so the membrane lies inside the profile, not at
its end."""

SNR_BAND_NM = 8.0
"""Half-width (nm) of the band around the membrane used for SignalToNoise."""

SOURCES = ("computed", "export")

UNITS = ("nm", "px")
"""``nm``: lengths in nm from each particle's pixel size (the default, as
the lab's software); ``px``: every length in pixels, no pixel size needed."""

EDP_GRID_PX = np.linspace(-52.0, 10.0, PROFILE_POINTS)
"""With ``units="px"``: signed distances (px) from the membrane at which the
edge density profile is sampled, 2 px apart: the nm window's numbers read in
pixels (what the nm features give at 1 nm/px)."""

SNR_BAND_PX = 8.0
"""With ``units="px"``: half-width (px) of the band around the membrane used
for SignalToNoise."""

# With units="px" these columns are renamed (or merged with the px column
# they then equal), so that no column name claims nm.
_PX_NAMES = {
    "area_nm2": "area_px",
    "perimeter_nm": "perimeter_px",
    "length_nm": "diameter_px",
    "max_width_nm": "max_width_px",
}
# ... and computed as these columns of ALL_COLUMNS at 1 "nm" per pixel.
_PX_SOURCE = {"max_width_px": "max_width_nm"}

# Columns -------------------------------------------------------------------

SCALAR_COLUMNS = (
    "area_px",
    "area_nm2",
    "perimeter_px",
    "perimeter_nm",
    "circularity",
    "diameter_px",
    "length_nm",
    "max_width_nm",
    "mu20",
    "mu02",
    "mu30",
    "mu03",
    "snr",
)
HIST_COLUMNS = tuple(f"hist_{i:02d}" for i in range(HIST_BINS))
RDP_COLUMNS = tuple(f"rdp_{i:02d}" for i in range(PROFILE_POINTS))
EDP_COLUMNS = tuple(f"edp_{i:02d}" for i in range(PROFILE_POINTS))
MOMENT_COLUMNS = ("mu20", "mu02", "mu30", "mu03")
ALL_COLUMNS = SCALAR_COLUMNS + HIST_COLUMNS + RDP_COLUMNS + EDP_COLUMNS

FEATURE_SETS: dict[str, tuple[str, ...]] = {
    # Section 4.1: area, circularity, moments, edge density profile and
    # histogram. The lab's sixth feature, internal segmentation variance, is
    # not in the data (as in the thesis), so it is not here either.
    "vironova": ("area_nm2", "circularity") + MOMENT_COLUMNS + EDP_COLUMNS + HIST_COLUMNS,
    "all": ALL_COLUMNS,
}
"""Feature set name -> the columns ``extract_features`` returns, in order."""

_COLUMN_INDEX = {name: i for i, name in enumerate(ALL_COLUMNS)}

# Which export keys each column is read from (source="export").
_EXPORT_KEY = {
    "area_px": "Area",
    "area_nm2": "Area",
    "perimeter_px": "Perimeter",
    "perimeter_nm": "Perimeter",
    "circularity": "Circularity",
    "diameter_px": "Diameter",
    "length_nm": "Length",
    "max_width_nm": "MaximumWidth",
    "snr": "SignalToNoise",
    **{c: "Moments" for c in MOMENT_COLUMNS},
    **{c: "Histogram" for c in HIST_COLUMNS},
    **{c: "RadialDensityProfile" for c in RDP_COLUMNS},
    **{c: "EdgeDensityProfile" for c in EDP_COLUMNS},
}
# Columns the export gives in nm only: turning them into px needs the pixel size.
_PX_FROM_NM = {"area_px": 2, "perimeter_px": 1}


# One particle ----------------------------------------------------------------


def compute_particle_features(image, mask, pixel_size_nm, feature_set="all") -> dict:
    """Compute one particle's features from its image and mask.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Grayscale image: uint8, uint16, another integer type, or float.
    mask : ndarray of bool, shape (H, W)
        The particle's pixels; must not be empty.
    pixel_size_nm : float
        Pixel size in nm/px (positive and finite).
    feature_set : str
        A key of ``FEATURE_SETS``; only its columns are computed.

    Returns
    -------
    dict
        Column name -> float, in the order of ``FEATURE_SETS[feature_set]``.

    Raises
    ------
    ValueError
        If the mask is empty, the shapes differ or the pixel size is not a
        positive number. (``extract_features`` reports these per particle as
        ``DatasetError``.)
    """
    columns = _columns_of(feature_set)
    values = _compute_vector(
        np.asarray(image), np.asarray(mask, dtype=bool), float(pixel_size_nm), set(columns)
    )
    return {c: float(values[_COLUMN_INDEX[c]]) for c in columns}


def compute_profiles(image, mask, pixel_size_nm) -> dict:
    """One particle's density profiles before resampling, in the lab export's
    format.

    Returns
    -------
    dict
        ``"RadialDensityProfile"`` and ``"EdgeDensityProfile"``: arrays of
        shape (n, 2) of [mean intensity, distance in nm] pairs, one per
        1-px ring around the mask's centroid (radial; first pair at the
        centre) or 1-px band of signed distance from the mask boundary
        (edge; negative inside).
    """
    image, mask = np.asarray(image), np.asarray(mask, dtype=bool)
    geometry = _Geometry(image, mask, float(pixel_size_nm))
    return {
        "RadialDensityProfile": geometry.radial_profile(),
        "EdgeDensityProfile": geometry.edge_profile(),
    }


def resample_profile(profile, grid) -> np.ndarray:
    """Resample a density profile onto equally spaced distances.

    Each output point is the mean of the profile's intensities whose
    distance lies within half a grid step of it; where none does, the
    profile is linearly interpolated (and held constant beyond its ends).

    Parameters
    ----------
    profile : array-like, shape (n, 2)
        [intensity, distance] pairs, in any order.
    grid : ndarray, shape (m,)
        Increasing, equally spaced distances (same unit as the profile's).

    Returns
    -------
    ndarray, shape (m,)
    """
    profile = np.asarray(profile, dtype=np.float64)
    grid = np.asarray(grid, dtype=np.float64)
    order = np.argsort(profile[:, 1], kind="stable")
    intensity, distance = profile[order, 0], profile[order, 1]
    out = np.interp(grid, distance, intensity)
    step = grid[1] - grid[0]
    if step > 0:
        index = np.floor((distance - grid[0]) / step + 0.5).astype(np.int64)
        inside = (index >= 0) & (index < grid.size)
        counts = np.bincount(index[inside], minlength=grid.size)
        sums = np.bincount(index[inside], weights=intensity[inside], minlength=grid.size)
        hit = counts > 0
        out[hit] = sums[hit] / counts[hit]
    return out


def radial_grid(profile) -> np.ndarray:
    """The distances a radial density profile is resampled at:
    ``PROFILE_POINTS`` points from 0 to the profile's largest distance."""
    far = float(np.max(np.asarray(profile, dtype=np.float64)[:, 1]))
    return np.linspace(0.0, far, PROFILE_POINTS)


def feature_columns(feature_set: str, units: str = "nm") -> tuple[str, ...]:
    """The columns ``extract_features`` returns for ``feature_set`` in
    ``units``: ``FEATURE_SETS[feature_set]`` in nm; in px, the nm columns
    renamed to their px twins (``area_nm2`` -> ``area_px``, ``perimeter_nm``
    -> ``perimeter_px``, ``length_nm`` -> ``diameter_px``, ``max_width_nm``
    -> ``max_width_px``), each once."""
    columns = _columns_of(feature_set)
    _check_units(units)
    if units == "nm":
        return columns
    return tuple(dict.fromkeys(_PX_NAMES.get(c, c) for c in columns))


def _check_units(units: str) -> None:
    if units not in UNITS:
        raise ConfigError(f"Unknown units {units!r}; expected one of {', '.join(UNITS)}.")


def _columns_of(feature_set: str) -> tuple[str, ...]:
    try:
        return FEATURE_SETS[feature_set]
    except KeyError:
        raise ConfigError(
            f"Unknown feature set {feature_set!r}; expected one of {', '.join(FEATURE_SETS)}."
        ) from None


# Crofton perimeter weights of the 16 configurations of a 2x2 window, for 4
# directions: the table of skimage.measure.perimeter_crofton, applied here to
# the mask's bounding box with array slices instead of a convolution (4x
# faster on particle-sized masks, identical values; tested).
_CROFTON_4 = np.array(
    [
        0,
        np.pi / 4 * (1 + 1 / np.sqrt(2)),
        np.pi / (4 * np.sqrt(2)),
        np.pi / (2 * np.sqrt(2)),
        0,
        np.pi / 4 * (1 + 1 / np.sqrt(2)),
        0,
        np.pi / (4 * np.sqrt(2)),
        np.pi / 4,
        np.pi / 2,
        np.pi / (4 * np.sqrt(2)),
        np.pi / (4 * np.sqrt(2)),
        np.pi / 4,
        np.pi / 2,
        0,
        0,
    ]
)

# Directions (unit vectors) along which the Feret diameter is searched, 1
# degree apart. The answer is the exact distance between two pixel centres;
# one direction lies within 0.5 deg of the true diameter's, along which the
# two extreme pixels are at least D cos(0.5 deg) apart, so the answer is at
# most 1 - cos(0.5 deg) = 0.004 % below the true maximum D.
_FERET_DIRECTIONS = np.stack(
    [np.cos(np.radians(np.arange(180))), np.sin(np.radians(np.arange(180)))]
)


class _Geometry:
    """One particle's mask measured once: bounding box, projections,
    centroid, and (on demand) a crop around it holding the signed distance
    of every pixel to the membrane. Every feature starts from here."""

    def __init__(self, image: np.ndarray, mask: np.ndarray, pixel_size: float):
        if image.ndim != 2 or image.shape != mask.shape:
            raise ValueError(
                f"the image is {'x'.join(map(str, image.shape))} px but its mask is "
                f"{'x'.join(map(str, mask.shape))} px; expected two 2-D arrays of the same shape"
            )
        if not (math.isfinite(pixel_size) and pixel_size > 0):
            raise ValueError(f"the pixel size {pixel_size} nm/px is not a positive number")
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            raise ValueError("the mask is empty")
        self.image, self.mask, self.pixel_size = image, mask, pixel_size
        self.r0, self.r1 = int(rows[0]), int(rows[-1]) + 1
        self.c0, self.c1 = int(cols[0]), int(cols[-1]) + 1
        self.box = mask[self.r0 : self.r1, self.c0 : self.c1]
        # The projections give area, centroid and every central moment of
        # the mask: mu_p0 = sum_x n(x) (x - cx)^p, n(x) the pixels in column x.
        self.row_counts = self.box.sum(axis=1, dtype=np.int64)
        self.col_counts = self.box.sum(axis=0, dtype=np.int64)
        self.area = int(self.row_counts.sum())
        ys = np.arange(self.r1 - self.r0, dtype=np.float64)
        xs = np.arange(self.c1 - self.c0, dtype=np.float64)
        self.cy = float(self.row_counts @ ys) / self.area  # centroid in box coordinates
        self.cx = float(self.col_counts @ xs) / self.area
        self.dy, self.dx = ys - self.cy, xs - self.cx
        self._extremes = None
        self._crop = None

    def moments(self) -> tuple[float, float, float, float]:
        """Central moments mu20, mu02, mu30, mu03 of the mask (x = column)."""
        dx2, dy2 = self.dx * self.dx, self.dy * self.dy
        return (
            float(self.col_counts @ dx2),
            float(self.row_counts @ dy2),
            float(self.col_counts @ (dx2 * self.dx)),
            float(self.row_counts @ (dy2 * self.dy)),
        )

    def perimeter(self) -> float:
        """Crofton perimeter (px) of the mask, 4 directions."""
        padded = np.zeros((self.box.shape[0] + 2, self.box.shape[1] + 2), np.uint8)
        padded[1:-1, 1:-1] = self.box
        code = 8 * padded[:-1, :-1] + 2 * padded[:-1, 1:] + 4 * padded[1:, :-1] + padded[1:, 1:]
        return float(_CROFTON_4 @ np.bincount(code.ravel(), minlength=16))

    def extremes(self) -> np.ndarray:
        """(y, x) box coordinates of the first and last mask pixel of every
        row: they include every vertex of the convex hull of the mask's
        pixel centres, which is all the Feret diameter and outer radius need."""
        if self._extremes is None:
            has = self.row_counts > 0
            rows = np.flatnonzero(has).astype(np.float64)
            box = self.box[has]
            first = np.argmax(box, axis=1)
            last = box.shape[1] - 1 - np.argmax(box[:, ::-1], axis=1)
            self._extremes = np.concatenate(
                [np.stack([rows, first], axis=1), np.stack([rows, last], axis=1)]
            )
        return self._extremes

    def outer_radius(self) -> float:
        """Largest distance (px) from the centroid to a mask pixel centre."""
        pts = self.extremes()
        return float(np.sqrt(np.max((pts[:, 0] - self.cy) ** 2 + (pts[:, 1] - self.cx) ** 2)))

    def feret_diameter(self) -> float:
        """Greatest distance (px) between two mask pixel centres: for each
        direction the two most distant points along it, the longest pair."""
        pts = self.extremes()
        along = pts @ _FERET_DIRECTIONS
        far, near = pts[np.argmax(along, axis=0)], pts[np.argmin(along, axis=0)]
        return float(np.sqrt(np.max(((far - near) ** 2).sum(axis=1))))

    def crop(self, outer_px: float = 0.0):
        """The image and mask around the particle with at least
        ``max(outer_px, reach)`` px of surround (reach: what the edge profile
        and SignalToNoise look at outside), the distance map ``dist`` and the
        signed distance ``signed`` (px) of every pixel to the membrane.

        ``dist`` is the Euclidean distance from a pixel centre to the
        nearest pixel centre on the other side of the mask boundary (for a
        mask pixel: the EDT of the mask; where the mask touches the image
        border, the pixels beyond it count as background). ``signed`` is
        ``dist - 0.5`` outside and ``0.5 - dist`` inside, so the boundary,
        half way between the last pixel inside and the first outside, is
        at 0."""
        reach = (EDP_GRID_NM[-1] + 0.5 * (EDP_GRID_NM[1] - EDP_GRID_NM[0]), SNR_BAND_NM)
        margin = int(math.ceil(max(max(reach) / self.pixel_size, outer_px))) + 2
        if self._crop is None or self._crop[-1] < margin:
            import edt

            h, w = self.mask.shape
            R0, R1 = max(self.r0 - margin, 0), min(self.r1 + margin, h)
            C0, C1 = max(self.c0 - margin, 0), min(self.c1 + margin, w)
            mask = self.mask[R0:R1, C0:C1]
            image = self.image[R0:R1, C0:C1]
            # Label 1 inside, 2 outside: one multi-label EDT gives the
            # distance to the other side for both.
            labels = 2 - mask.view(np.uint8)
            if self.r0 == 0 or self.c0 == 0 or self.r1 == h or self.c1 == w:
                # The particle is cut by the image border: the border counts
                # as background (a ring of outside labels around the crop).
                labels = np.pad(labels, 1, constant_values=2)
                dist = edt.edt(labels, black_border=False, parallel=1)[1:-1, 1:-1]
            else:
                dist = edt.edt(labels, black_border=False, parallel=1)
            signed = dist - np.float32(0.5)
            np.negative(signed, out=signed, where=mask)
            self._crop = (image, mask, dist, signed, R0 - self.r0, C0 - self.c0, margin)
        return self._crop

    def radial_margin(self) -> float:
        """Surround (px) beyond the bounding box that holds every ring of
        the radial profile whole."""
        h, w = self.box.shape
        nearest_edge = min(self.cy, h - 1 - self.cy, self.cx, w - 1 - self.cx)
        return math.ceil(RDP_EXTENT * self.outer_radius()) - nearest_edge

    def radial_profile(self) -> np.ndarray:
        """[mean intensity, distance nm] of every 1-px ring around the
        centroid (ring k: pixels whose centre lies k +- 0.5 px from it, ties
        to the even k), out to ``RDP_EXTENT`` times the outer radius; all
        pixels count, inside the mask or not."""
        last = int(math.ceil(RDP_EXTENT * self.outer_radius()))
        image, _, _, _, dr, dc, _ = self.crop(self.radial_margin())
        yy = (np.arange(image.shape[0]) + dr - self.cy) ** 2
        xx = (np.arange(image.shape[1]) + dc - self.cx) ** 2
        ring = np.rint(np.sqrt(yy[:, None] + xx[None, :])).astype(np.intp).ravel()
        counts = np.bincount(ring, minlength=last + 1)[: last + 1]
        sums = np.bincount(ring, weights=image.ravel(), minlength=last + 1)[: last + 1]
        k = np.flatnonzero(counts)
        return np.stack([sums[k] / counts[k], k * self.pixel_size], axis=1)

    def edge_bands(self):
        """Statistics of the 1-px bands of signed distance (band k holds the
        pixels with k <= signed < k + 1): centres in nm, counts, sums and
        sums of squares of the intensities."""
        image, _, _, signed, _, _, _ = self.crop()
        low = math.floor(float(signed.min()))
        band = (signed - np.float32(low)).astype(np.intp).ravel()
        values = image.ravel().astype(np.float64)
        counts = np.bincount(band)
        sums = np.bincount(band, weights=values)
        squares = np.bincount(band, weights=values * values)
        k = np.flatnonzero(counts)
        centres = (k + low + 0.5) * self.pixel_size
        return centres, counts[k], sums[k], squares[k]

    def edge_profile(self) -> np.ndarray:
        """[mean intensity, signed distance nm] of every 1-px band."""
        centres, counts, sums, _ = self.edge_bands()
        return np.stack([sums / counts, centres], axis=1)


def _intensity_range(image) -> tuple[float, float, float]:
    """(low, high, one grey level) of an image: the histogram's range.

    Integer images span their dtype (0-256 for 8 bit, 0-65536 for 16 bit);
    float images (MRC stacks) have no fixed range and span their own
    minimum to maximum, surround included, in 65536 grey levels."""
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return float(info.min), float(info.max) + 1.0, 1.0
    low, high = float(np.min(image)), float(np.max(image))
    if not high > low:
        high = low + 1.0
    return low, high, (high - low) / 65536.0


def _histogram(image, box, mask) -> np.ndarray:
    """Histogram of ``box[mask]`` over the range of the whole ``image``,
    divided by the number of mask pixels."""
    values = box[mask]
    if image.dtype == np.uint8:
        index = values >> 3
    elif image.dtype == np.uint16:
        index = values >> 11
    else:
        low, high, _ = _intensity_range(image)
        scaled = (values.astype(np.float64) - low) * (HIST_BINS / (high - low))
        index = np.clip(np.floor(scaled), 0, HIST_BINS - 1).astype(np.intp)
    return np.bincount(index, minlength=HIST_BINS) / values.size


def _signal_to_noise(centres, counts, sums, squares, image) -> float:
    """Variance across the membrane over the variance along it.

    Within +-``SNR_BAND_NM`` of the boundary, the 1-px bands of equal
    signed distance run along the membrane. Across = variance of the band
    means (the edge profile through the membrane); along = pooled variance
    of the intensities within the bands. (A one-way ANOVA ratio.)"""
    near = np.abs(centres) <= SNR_BAND_NM
    if np.count_nonzero(near) < 2:  # pixels larger than the band
        near = np.argsort(np.abs(centres))[:2]
    n, s, q = counts[near], sums[near], squares[near]
    means = s / n
    across = float(np.var(means))
    dof = float(np.sum(n - 1))
    along = float(np.sum(q - s * means)) / dof if dof > 0 else 0.0
    # A noiseless image has no variance along the membrane; floor it at the
    # quantisation noise of one grey level (step**2 / 12).
    step = _intensity_range(image)[2]
    return across / max(along, step * step / 12.0)


_EDGE_COLUMNS = frozenset(EDP_COLUMNS) | {"snr"}
_PERIMETER_COLUMNS = frozenset({"perimeter_px", "perimeter_nm", "circularity"})
_HIST_SET, _RDP_SET = frozenset(HIST_COLUMNS), frozenset(RDP_COLUMNS)


def _compute_vector(image, mask, pixel_size, wanted: set) -> np.ndarray:
    """Every column of ``ALL_COLUMNS`` as one float vector; only the groups
    that ``wanted`` needs are computed, the others stay NaN (and are never
    returned by the callers)."""
    g = _Geometry(image, mask, pixel_size)
    ps = pixel_size
    if wanted & _RDP_SET:
        g.crop(g.radial_margin())  # one crop (and one EDT) wide enough for all
    out = np.full(len(ALL_COLUMNS), np.nan)
    out[0] = g.area
    out[1] = g.area * ps * ps
    if wanted & _PERIMETER_COLUMNS:
        perimeter = g.perimeter()
        out[2], out[3] = perimeter, perimeter * ps
        out[4] = 4.0 * math.pi * g.area / (perimeter * perimeter)
    if wanted & {"diameter_px", "length_nm"}:
        out[5] = g.feret_diameter()
        out[6] = out[5] * ps
    if "max_width_nm" in wanted:
        _, crop_mask, dist, *_ = g.crop()
        out[7] = 2.0 * float(np.max(dist, where=crop_mask, initial=0.0)) * ps
    i = _COLUMN_INDEX["mu20"]
    out[i : i + 4] = g.moments()
    if wanted & _EDGE_COLUMNS:
        centres, counts, sums, squares = g.edge_bands()
        if "snr" in wanted:
            out[_COLUMN_INDEX["snr"]] = _signal_to_noise(centres, counts, sums, squares, image)
        i = _COLUMN_INDEX[EDP_COLUMNS[0]]
        profile = np.stack([sums / counts, centres], axis=1)
        out[i : i + PROFILE_POINTS] = resample_profile(profile, EDP_GRID_NM)
    if wanted & _HIST_SET:
        i = _COLUMN_INDEX[HIST_COLUMNS[0]]
        out[i : i + HIST_BINS] = _histogram(image, image[g.r0 : g.r1, g.c0 : g.c1], g.box)
    if wanted & _RDP_SET:
        profile = g.radial_profile()
        i = _COLUMN_INDEX[RDP_COLUMNS[0]]
        out[i : i + PROFILE_POINTS] = resample_profile(profile, radial_grid(profile))
    return out


# Precomputed features of a lab export --------------------------------------


def map_export_features(
    features, pixel_size_nm, feature_set="vironova", *, particle_id="?"
) -> dict:
    """Map the features a lab export carries onto ``FEATURE_SETS`` columns.

    The export's ``Area`` is read as nm² and ``Perimeter``, ``Length`` and
    ``MaximumWidth`` as nm, ``Diameter`` as px (thesis section 3 gives these
    units for Length, MaximumWidth and Diameter); ``area_px`` and
    ``perimeter_px`` divide Area and Perimeter by the pixel size. The
    histogram is divided by its sum (an export may hold counts); the
    profiles are resampled exactly like computed ones.

    Parameters
    ----------
    features : dict or None
        ``Particle.features``: export key -> value.
    pixel_size_nm : float
        Needed only for the ``*_px`` columns (feature set ``all``).
    feature_set : str
    particle_id : str
        Named in error messages.

    Returns
    -------
    dict
        Column name -> float, in the order of ``FEATURE_SETS[feature_set]``.

    Raises
    ------
    DatasetError
        If a needed key is missing or malformed, or the pixel size is
        needed and unknown.
    """
    columns = _columns_of(feature_set)
    features = features or {}
    vectors: dict[str, np.ndarray] = {}

    def vector(key: str) -> np.ndarray:
        """The export's value for ``key``, checked and put on the columns' scale."""
        if key not in vectors:
            v = _read_export_value(features, key, particle_id, feature_set)
            if key == "Histogram":
                v = v / v.sum()
            elif key == "RadialDensityProfile":
                v = resample_profile(v, radial_grid(v))
            elif key == "EdgeDensityProfile":
                v = resample_profile(v, EDP_GRID_NM)
            vectors[key] = v
        return vectors[key]

    out = {}
    for column in columns:
        key = _EXPORT_KEY[column]
        v = vector(key)
        if column in _PX_FROM_NM:
            if not (math.isfinite(pixel_size_nm) and pixel_size_nm > 0):
                raise DatasetError(
                    f"Particle {particle_id} has no pixel size (nm/px), which {column} "
                    f"(from the export's {key} in nm) needs. Pass --pixel-size NM, or use "
                    "--feature-set vironova."
                )
            out[column] = float(v[0]) / pixel_size_nm ** _PX_FROM_NM[column]
        else:
            group = _GROUP_OF_KEY.get(key)
            out[column] = float(v[group.index(column)] if group else v[0])
    return out


_GROUP_OF_KEY = {
    "Moments": MOMENT_COLUMNS,
    "Histogram": HIST_COLUMNS,
    "RadialDensityProfile": RDP_COLUMNS,
    "EdgeDensityProfile": EDP_COLUMNS,
}


# What each export key must hold: (shape description, check).
_EXPORT_SHAPES = {
    "Moments": "a list of 4 numbers [mu20, mu02, mu30, mu03]",
    "Histogram": f"a list of {HIST_BINS} non-negative numbers with a positive sum",
    "RadialDensityProfile": "a list of [intensity, distance_nm] pairs",
    "EdgeDensityProfile": "a list of [intensity, distance_nm] pairs",
}


def _read_export_value(features: dict, key: str, particle_id, feature_set: str) -> np.ndarray:
    if key not in features:
        raise DatasetError(
            f"Particle {particle_id} has no precomputed {key} in the export, which feature "
            f"set {feature_set!r} needs. Use --source computed to compute the features "
            "from the images."
        )
    raw = features[key]
    expected = _EXPORT_SHAPES.get(key, "a number")
    try:
        if isinstance(raw, (str, bytes, bool)) or raw is None:
            raise TypeError
        array = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is not None:
        if key == "Moments":
            ok = array.shape == (4,)
        elif key == "Histogram":
            ok = array.shape == (HIST_BINS,) and bool(np.all(array >= 0)) and array.sum() > 0
        elif key.endswith("DensityProfile"):
            ok = array.ndim == 2 and array.shape[0] >= 1 and array.shape[1] == 2
        else:
            ok = array.ndim == 0
            array = array.reshape(1)
        ok = ok and bool(np.all(np.isfinite(array)))
    if array is None or not ok:
        shown = repr(raw)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise DatasetError(
            f"Particle {particle_id}: the export's {key} is {shown}; expected {expected}. "
            "Fix the export, or use --source computed."
        )
    return array


# A whole dataset -------------------------------------------------------------

CHUNK = 64
"""Particles per unit of work: the progress bar's step and one joblib task."""


def extract_features(
    dataset, feature_set="vironova", *, source="computed", reporter=None, jobs=1, units="nm"
):
    """One row of features per particle, in dataset order.

    Parameters
    ----------
    dataset : Dataset
    feature_set : {"vironova", "all"}
        ``vironova``: the lab's SVM inputs (thesis section 4.1); ``all``:
        every feature. See ``FEATURE_SETS``.
    source : {"computed", "export"}
        ``computed`` measures the features on each particle's image and
        mask; ``export`` uses the values the lab export carries.
    reporter : progress reporter, optional
        Receives a ``features`` stage advancing per particle.
    jobs : int
        Parallel workers (joblib processes) for ``computed``; -1 uses
        every core.
    units : {"nm", "px"}
        ``nm`` needs every particle's pixel size; ``px`` computes every
        length in pixels, with the edge profile at ``EDP_GRID_PX`` and the
        SignalToNoise band at ``SNR_BAND_PX`` (``computed`` only).

    Returns
    -------
    pandas.DataFrame
        Float columns ``feature_columns(feature_set, units)``, indexed by
        particle id.

    Raises
    ------
    ConfigError
        On an unknown feature set or source, or a bad ``jobs``.
    DatasetError
        If a particle has no usable pixel size (``computed``), an empty or
        misshapen mask, or lacks a precomputed feature (``export``).
    """
    import pandas as pd

    columns = feature_columns(feature_set, units)
    if source not in SOURCES:
        raise ConfigError(
            f"Unknown feature source {source!r}; expected one of {', '.join(SOURCES)}."
        )
    if units == "px" and source == "export":
        raise ConfigError(
            "--units px computes the features from the images; the export's own features "
            "are in nm. Use --source computed with --units px."
        )
    if jobs == 0 or jobs < -1:
        raise ConfigError(
            f"--jobs must be a positive number of workers or -1 (every core); got {jobs}."
        )
    reporter = reporter or NullReporter()
    particles = dataset.particles
    if source == "computed" and units == "nm":
        _check_pixel_sizes(particles)
    reporter.stage("features", total=len(particles))
    X = np.empty((len(particles), len(columns)))
    starts = range(0, len(particles), CHUNK)
    if source == "export":
        blocks = (_export_chunk(particles[s : s + CHUNK], feature_set) for s in starts)
    else:
        # In px every length is measured at 1 "nm" per pixel: the nm windows
        # become EDP_GRID_PX and SNR_BAND_PX, the nm columns px columns.
        work = [
            [
                (p.id, p.image, p.mask, p.pixel_size_nm if units == "nm" else 1.0)
                for p in particles[s : s + CHUNK]
            ]
            for s in starts
        ]
        if jobs == 1 or len(work) <= 1:
            blocks = (_computed_chunk(w, feature_set, units) for w in work)
        else:
            from joblib import Parallel, delayed

            blocks = Parallel(n_jobs=jobs, return_as="generator")(
                delayed(_computed_chunk)(w, feature_set, units) for w in work
            )
    for start, block in zip(starts, blocks):
        X[start : start + len(block)] = block
        reporter.advance(len(block))
    table = pd.DataFrame(X, columns=list(columns), index=pd.Index(dataset.ids, name="id"))
    table.attrs.update(feature_set=feature_set, source=source, units=units)
    return table


def pixel_size_problems(dataset, settings=None) -> list[str]:
    """Problems a run with the SVM ``settings`` (default: the default run's)
    would meet for lack of pixel sizes: what ``dataset check`` reports up
    front, instead of ``svm`` or ``benchmark`` failing later.

    Parameters
    ----------
    dataset : Dataset
    settings : settings.SVMSettings, optional

    Returns
    -------
    list of str
        One line with the count, the first particle and the fixes; empty
        when the features need no pixel size (``units="px"``, or the
        ``vironova`` set read from the export) or every particle has one.
    """
    settings = settings or SVMSettings()
    if settings.units == "px":
        return []
    if settings.source == "export":
        needs = [c for c in FEATURE_SETS[settings.feature_set] if c in _PX_FROM_NM]
        if not needs:
            return []
    else:
        needs = [
            c
            for c in FEATURE_SETS[settings.feature_set]
            if c.endswith(("_nm", "_nm2")) or c in _EDGE_COLUMNS
        ]
    bad = [
        p for p in dataset.particles if not (math.isfinite(p.pixel_size_nm) and p.pixel_size_nm > 0)
    ]
    if not bad:
        return []
    shown = [c for c in needs if not c.startswith("edp_")]
    if any(c.startswith("edp_") for c in needs):
        shown.append("the edge profile's -52..+10 nm window")
    return [
        f"{len(bad)} of {len(dataset)} particles have no pixel size (first: particle "
        f"{bad[0].id}); the {settings.feature_set} features in nm that a default run "
        f"computes need it ({', '.join(shown)}). Pass --pixel-size NM (nm/px) to every "
        "command, record PixelSize in particles.json (pixel_size_nm in a manifest), or run "
        "with --units px."
    ]


def _check_pixel_sizes(particles) -> None:
    bad = [p for p in particles if not (math.isfinite(p.pixel_size_nm) and p.pixel_size_nm > 0)]
    if bad:
        first = bad[0]
        what = (
            "has no pixel size"
            if math.isnan(first.pixel_size_nm)
            else f"has pixel size {first.pixel_size_nm} nm/px"
        )
        raise DatasetError(
            f"Particle {first.id} {what} ({len(bad)} of {len(particles)} particles); "
            "the features in nm need a positive pixel size. Pass --pixel-size NM, record "
            "PixelSize in particles.json (pixel_size_nm in a manifest), or use --units px."
        )


def _computed_chunk(work, feature_set: str, units: str = "nm") -> np.ndarray:
    """Features of (id, image, mask, pixel size) tuples; runs in a worker."""
    columns = [_PX_SOURCE.get(c, c) for c in feature_columns(feature_set, units)]
    wanted = set(columns)
    take = np.array([_COLUMN_INDEX[c] for c in columns])
    block = np.empty((len(work), len(columns)))
    for row, (pid, image, mask, pixel_size) in enumerate(work):
        try:
            vector = _compute_vector(
                np.asarray(image), np.asarray(mask, dtype=bool), float(pixel_size), wanted
            )
        except ValueError as exc:
            raise DatasetError(
                f"Particle {pid}: cannot compute features: {exc}. Fix its image or mask."
            ) from None
        block[row] = vector[take]
    return block


def _export_chunk(particles, feature_set: str) -> np.ndarray:
    columns = FEATURE_SETS[feature_set]
    block = np.empty((len(particles), len(columns)))
    for row, p in enumerate(particles):
        mapped = map_export_features(p.features, p.pixel_size_nm, feature_set, particle_id=p.id)
        block[row] = [mapped[c] for c in columns]
    return block


# The feature table on disk ---------------------------------------------------

TABLE_SUFFIXES = (".parquet", ".csv")


def check_table_path(path):
    """Return ``path`` as a Path if it names a .parquet or .csv file.

    Raises
    ------
    ConfigError
        On any other extension.
    """
    from pathlib import Path

    path = Path(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        got = f"'{path.suffix}'" if path.suffix else "no extension"
        raise ConfigError(
            f"--out {path}: expected a .parquet or .csv file name, got {got}. "
            f"Use e.g. --out {path.with_suffix('.parquet').name}."
        )
    return path


def write_feature_table(
    dataset,
    folds,
    path,
    *,
    feature_set="vironova",
    source="computed",
    reporter=None,
    jobs=1,
    units="nm",
):
    """Extract features and write one row per particle: id, label, fold and
    the feature columns, as Parquet or CSV by ``path``'s extension.

    The table is written to a temporary file beside ``path`` and renamed
    into place, so ``path`` is never half-written.

    Parameters
    ----------
    dataset : Dataset
    folds : Folds
        Fold of every particle (``folds.load_or_make_folds``).
    path : path
        Ends in ``.parquet`` or ``.csv``.
    feature_set, source, reporter, jobs, units
        As for ``extract_features``.

    Returns
    -------
    pandas.DataFrame
        The table written.

    Raises
    ------
    ConfigError
        On a bad extension, or if ``path`` cannot be written.
    DatasetError
        As for ``extract_features``.
    """
    path = check_table_path(path)
    X = extract_features(
        dataset, feature_set, source=source, reporter=reporter, jobs=jobs, units=units
    )
    table = X.reset_index()
    table["id"] = table["id"].astype(str)
    table.insert(1, "label", [p.label for p in dataset.particles])
    table.insert(2, "fold", np.asarray(folds.fold_of, dtype=np.int64))
    write = table.to_parquet if path.suffix.lower() == ".parquet" else table.to_csv
    try:
        atomic_write(path, lambda tmp: write(tmp, index=False))
    except OSError as exc:
        raise ConfigError(
            f"Cannot write {path} ({exc.strerror or exc}). Choose another --out."
        ) from None
    return table
