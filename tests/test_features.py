"""Handcrafted features: analytic values on known shapes, the export mapping,
the dataset-level extraction and its errors."""

import math

import numpy as np
import pandas as pd
import pytest

from liposome_bench import features as F
from liposome_bench.dataset import LAMELLARITY, Dataset, Particle
from liposome_bench.errors import ConfigError, DatasetError
from liposome_bench.features import (
    EDP_GRID_NM,
    FEATURE_SETS,
    compute_particle_features,
    compute_profiles,
    extract_features,
    map_export_features,
    resample_profile,
)


def disc(r, offset=(0.0, 0.0), margin=20):
    """Mask of a disc of radius r px (pixels whose centre lies inside), the
    centre ``offset`` px from the middle pixel's centre, plus the distance of
    every pixel centre from the true centre."""
    n = int(2 * r) + 2 * margin + 1
    yy, xx = np.mgrid[:n, :n].astype(float)
    dist = np.hypot(yy - n // 2 - offset[0], xx - n // 2 - offset[1])
    return dist <= r, dist


def ellipse(a, b, angle, offset=(0.0, 0.0), margin=20):
    n = int(2 * a) + 2 * margin + 1
    yy, xx = np.mgrid[:n, :n].astype(float)
    y, x = yy - n // 2 - offset[0], xx - n // 2 - offset[1]
    u = x * math.cos(angle) + y * math.sin(angle)
    v = -x * math.sin(angle) + y * math.cos(angle)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def blank(mask, value=128, dtype=np.uint8):
    return np.full(mask.shape, value, dtype=dtype)


# Known shapes ----------------------------------------------------------------
# A digital disc is the set of pixels whose centre lies within r of the
# centre. Its measures differ from the continuous disc's by digitisation
# only: the tolerances below are those of pixel-centre sampling at r >= 20
# (measured over random sub-pixel centres: area and perimeter within 0.7 %,
# second moments within 2 %; a disc of integer radius centred on a pixel,
# the first case, has one-pixel spikes at its four axis points and a 1.6 %
# longer outline), not of any approximation in the code.

DISCS = [(20, (0.0, 0.0)), (30, (0.31, -0.17)), (45, (-0.42, 0.23))]


@pytest.mark.parametrize("r,offset", DISCS)
def test_disc_matches_its_analytic_measures(r, offset):
    mask, _ = disc(r, offset)
    f = compute_particle_features(blank(mask), mask, 1.0)
    assert f["area_px"] == pytest.approx(math.pi * r**2, rel=0.01)
    assert f["perimeter_px"] == pytest.approx(2 * math.pi * r, rel=0.02)
    assert f["circularity"] == pytest.approx(1.0, abs=0.035)
    # Pixel centres lie inside the disc, so no two are more than 2r apart;
    # sampling at 1 px misses at most 1 px of it.
    assert 2 * r - 1 <= f["diameter_px"] <= 2 * r
    # The deepest pixel is within sqrt(2)/2 of the centre and the nearest
    # background pixel centre within about 1 px beyond the circle.
    assert 2 * r - math.sqrt(2) <= f["max_width_nm"] <= 2 * r + 1
    assert f["mu20"] == pytest.approx(math.pi * r**4 / 4, rel=0.02)
    assert f["mu02"] == pytest.approx(math.pi * r**4 / 4, rel=0.02)
    assert abs(f["mu30"]) <= 0.005 * r**5
    assert abs(f["mu03"]) <= 0.005 * r**5


def test_centred_disc_has_zero_third_moments():
    mask, _ = disc(25)
    f = compute_particle_features(blank(mask), mask, 1.0)
    assert abs(f["mu30"]) < 1e-6 * 25**5
    assert abs(f["mu03"]) < 1e-6 * 25**5
    assert f["mu20"] == pytest.approx(f["mu02"])


def test_pixel_size_converts_lengths_and_area():
    mask, _ = disc(20, (0.2, 0.1))
    f1 = compute_particle_features(blank(mask), mask, 1.0)
    f2 = compute_particle_features(blank(mask), mask, 2.5)
    assert f2["area_px"] == f1["area_px"]
    assert f2["area_nm2"] == pytest.approx(f1["area_px"] * 2.5**2)
    assert f2["perimeter_nm"] == pytest.approx(f1["perimeter_px"] * 2.5)
    assert f2["length_nm"] == pytest.approx(f2["diameter_px"] * 2.5)
    assert f2["max_width_nm"] == pytest.approx(f1["max_width_nm"] * 2.5)


@pytest.mark.parametrize("a,b,angle", [(40, 15, 0.0), (35, 20, 0.7), (30, 12, 2.1)])
def test_ellipse_diameter_is_its_major_axis(a, b, angle):
    mask = ellipse(a, b, angle, offset=(0.13, -0.29))
    f = compute_particle_features(blank(mask), mask, 1.0)
    # Pixel centres inside the ellipse: never more than 2a apart, and the
    # pointed ends lose at most about 1.5 px.
    assert 2 * a - 1.5 <= f["diameter_px"] <= 2 * a
    assert f["circularity"] < 0.95


def test_moments_and_perimeter_equal_scikit_image():
    from skimage.measure import moments_central, perimeter_crofton

    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = np.zeros((60, 70), bool)
        mask[10:50, 12:60] = rng.random((40, 48)) < 0.7
        f = compute_particle_features(blank(mask), mask, 1.0)
        m = moments_central(mask.astype(float), order=3)  # m[p, q]: row^p col^q
        assert f["mu20"] == pytest.approx(m[0, 2])
        assert f["mu02"] == pytest.approx(m[2, 0])
        assert f["mu30"] == pytest.approx(m[0, 3], abs=1e-6 * abs(m[0, 2]) ** 1.5)
        assert f["mu03"] == pytest.approx(m[3, 0], abs=1e-6 * abs(m[2, 0]) ** 1.5)
        assert f["perimeter_px"] == pytest.approx(perimeter_crofton(mask, directions=4))


@pytest.mark.parametrize("seed", range(6))
def test_diameter_equals_brute_force_over_pixel_centres(seed):
    # Sparse random pixels in a random box: many hull vertices, odd angles.
    rng = np.random.default_rng(seed)
    h, w = rng.integers(5, 60, size=2)
    mask = np.zeros((64, 64), bool)
    mask[2 : 2 + h, 2 : 2 + w] = rng.random((h, w)) < 0.05
    mask[2 + h // 2, 2 + w // 2] = True
    points = np.argwhere(mask).astype(float)
    brute = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1).max())
    f = compute_particle_features(blank(mask), mask, 1.0)
    # At most 1 - cos(0.5 deg) = 3.8e-5 short of the true maximum.
    assert brute * (1 - 4e-5) <= f["diameter_px"] <= brute


@pytest.mark.parametrize(
    "rows,cols,width",
    [
        (slice(20, 21), slice(20, 21), 2.0),  # one pixel
        (slice(20, 21), slice(5, 30), 2.0),  # a line
        (slice(0, 40), slice(0, 10), 10.0),  # cut by the image border
        (slice(None), slice(None), 40.0),  # the whole image
    ],
)
def test_degenerate_masks_give_finite_features(rows, cols, width):
    image = np.random.default_rng(0).integers(0, 255, (40, 40)).astype(np.uint8)
    mask = np.zeros((40, 40), bool)
    mask[rows, cols] = True
    f = compute_particle_features(image, mask, 1.0)
    assert np.isfinite(list(f.values())).all()
    # Where the mask meets the image border, the border counts as background.
    assert f["max_width_nm"] == width


# Intensity features ----------------------------------------------------------


@pytest.mark.parametrize(
    "dtype,value,expected_bin",
    [
        (np.uint8, 200, 200 // 8),
        (np.uint16, 40000, 40000 // 2048),
    ],
)
def test_histogram_uses_the_dtype_range_and_sums_to_one(dtype, value, expected_bin):
    mask, _ = disc(15)
    image = blank(mask, 10, dtype)
    image[mask] = value
    f = compute_particle_features(image, mask, 1.0)
    hist = np.array([f[c] for c in F.HIST_COLUMNS])
    assert hist.sum() == pytest.approx(1.0)
    assert hist[expected_bin] == pytest.approx(1.0)


def test_histogram_of_float_image_spans_its_own_range():
    mask, _ = disc(15)
    image = np.where(mask, 3.0, -5.0).astype(np.float32)
    image[0, 0] = 11.0  # range [-5, 11]: 3.0 sits at the middle
    f = compute_particle_features(image, mask, 1.0)
    hist = np.array([f[c] for c in F.HIST_COLUMNS])
    assert hist.sum() == pytest.approx(1.0)
    assert hist[16] == pytest.approx(1.0)


def ring_image(r_ring, r_mask, pixel_size, noise=0.0, seed=0):
    """A bright 2-px ring of radius r_ring px on a dark field, with a mask of
    radius r_mask px."""
    mask, dist = disc(r_mask, margin=25)
    image = np.full(mask.shape, 50.0)
    image[np.abs(dist - r_ring) < 1.0] = 200.0
    if noise:
        image += np.random.default_rng(seed).normal(0, noise, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def test_radial_profile_peaks_at_the_ring_radius_in_nm():
    image, mask = ring_image(r_ring=18, r_mask=25, pixel_size=1.5)
    profile = compute_profiles(image, mask, 1.5)["RadialDensityProfile"]
    assert profile[0, 1] == 0.0  # first pair: the centre
    assert profile[np.argmax(profile[:, 0]), 1] == pytest.approx(18 * 1.5)
    f = compute_particle_features(image, mask, 1.5)
    rdp = np.array([f[c] for c in F.RDP_COLUMNS])
    grid = F.radial_grid(profile)
    assert abs(grid[np.argmax(rdp)] - 18 * 1.5) <= grid[1] - grid[0]


def test_edge_profile_finds_a_membrane_inside_the_boundary():
    # A dark 3-px membrane just inside the mask's edge (as in cryo-TEM).
    pixel_size = 1.0
    mask, dist = disc(30, margin=25)
    image = np.full(mask.shape, 150, np.uint8)
    image[(dist > 27) & (dist <= 30)] = 40
    edge = compute_profiles(image, mask, pixel_size)["EdgeDensityProfile"]
    darkest = edge[np.argmin(edge[:, 0]), 1]
    assert -3.0 <= darkest <= 0.0
    f = compute_particle_features(image, mask, pixel_size)
    edp = np.array([f[c] for c in F.EDP_COLUMNS])
    assert EDP_GRID_NM[np.argmin(edp)] in (-2.0, 0.0)
    assert edp[EDP_GRID_NM > 2].min() == pytest.approx(150.0)


def test_signal_to_noise_rises_with_membrane_contrast():
    mask, dist = disc(30, margin=25)
    rng = np.random.default_rng(0)
    base = 150 + rng.normal(0, 8, mask.shape)
    faint, strong = base.copy(), base.copy()
    membrane = (dist > 27) & (dist <= 30)
    faint[membrane] -= 5
    strong[membrane] -= 60
    snr = [
        compute_particle_features(im.clip(0, 255).astype(np.uint8), mask, 1.0)["snr"]
        for im in (base, faint, strong)
    ]
    assert snr[0] < snr[1] < snr[2]
    flat = compute_particle_features(blank(mask), mask, 1.0)["snr"]
    assert flat == 0.0


def test_resample_profile_averages_and_interpolates():
    profile = [[10, 0.0], [20, 0.4], [30, 2.0], [50, 6.0]]
    out = resample_profile(profile, np.array([0.0, 2.0, 4.0, 6.0, 8.0]))
    # 0: mean of the points within 1 of it; 4: no point, interpolated; 8: held.
    assert out.tolist() == pytest.approx([15.0, 30.0, 40.0, 50.0, 50.0])


# Feature sets and the export -------------------------------------------------


def test_feature_sets_columns():
    v = FEATURE_SETS["vironova"]
    assert v[:6] == ("area_nm2", "circularity", "mu20", "mu02", "mu30", "mu03")
    assert sum(c.startswith("edp_") for c in v) == F.PROFILE_POINTS
    assert sum(c.startswith("hist_") for c in v) == 32
    assert not any(c.startswith("rdp_") for c in v)
    assert set(v) <= set(FEATURE_SETS["all"])
    assert len(set(FEATURE_SETS["all"])) == len(FEATURE_SETS["all"])
    assert FEATURE_SETS["all"][-1] == "edp_31"


def export_features(image, mask, pixel_size):
    """What a lab export would carry for this particle, from our own
    measurements (Area in nm², lengths in nm)."""
    f = compute_particle_features(image, mask, pixel_size)
    profiles = compute_profiles(image, mask, pixel_size)
    return {
        "Area": f["area_nm2"],
        "Circularity": f["circularity"],
        "Perimeter": f["perimeter_nm"],
        "Diameter": f["diameter_px"],
        "Length": f["length_nm"],
        "MaximumWidth": f["max_width_nm"],
        "SignalToNoise": f["snr"],
        "Moments": [f[c] for c in F.MOMENT_COLUMNS],
        "Histogram": [f[c] * 1000 for c in F.HIST_COLUMNS],  # counts, not fractions
        "RadialDensityProfile": profiles["RadialDensityProfile"].tolist(),
        "EdgeDensityProfile": profiles["EdgeDensityProfile"].tolist(),
    }


@pytest.mark.parametrize("feature_set", list(FEATURE_SETS))
def test_export_mapping_reproduces_computed_columns(feature_set):
    image, mask = ring_image(18, 25, 1.2, noise=10)
    computed = compute_particle_features(image, mask, 1.2, feature_set)
    mapped = map_export_features(export_features(image, mask, 1.2), 1.2, feature_set)
    assert list(mapped) == list(computed)
    assert np.allclose(list(mapped.values()), list(computed.values()), rtol=1e-9)


def small_dataset(n=6, pixel_size=1.0, features=None):
    rng = np.random.default_rng(5)
    particles = []
    for i in range(n):
        r = 12 + 2 * i
        mask, dist = disc(r, tuple(rng.uniform(-0.5, 0.5, 2)), margin=15)
        image = (120 + 30 * (np.abs(dist - r + 2) < 1.5) + rng.normal(0, 5, mask.shape)).astype(
            np.uint8
        )
        label = LAMELLARITY.classes[i % 3]
        particles.append(
            Particle(
                f"p{i}",
                label,
                image,
                mask,
                pixel_size,
                features=features(image, mask) if features else None,
            )
        )
    return Dataset(LAMELLARITY, particles)


@pytest.mark.parametrize("feature_set", list(FEATURE_SETS))
def test_extract_features_table(feature_set):
    ds = small_dataset()
    X = extract_features(ds, feature_set)
    assert list(X.columns) == list(FEATURE_SETS[feature_set])
    assert X.index.tolist() == ds.ids
    assert all(dtype == np.float64 for dtype in X.dtypes)
    assert np.isfinite(X.to_numpy()).all()
    one = compute_particle_features(ds.particles[3].image, ds.particles[3].mask, 1.0, feature_set)
    assert X.loc["p3"].tolist() == pytest.approx(list(one.values()))


def test_extract_features_from_export_equals_computed():
    ds = small_dataset(features=lambda im, m: export_features(im, m, 1.0))
    computed = extract_features(ds, "all")
    exported = extract_features(ds, "all", source="export")
    pd.testing.assert_frame_equal(computed, exported, rtol=1e-9)


def test_parallel_extraction_equals_serial(monkeypatch):
    monkeypatch.setattr(F, "CHUNK", 2)
    ds = small_dataset(n=7)
    pd.testing.assert_frame_equal(extract_features(ds, jobs=2), extract_features(ds, jobs=1))


def test_reporter_sees_every_particle():
    events = []

    class Recorder:
        def stage(self, name, total=None):
            events.append(("stage", name, total))

        def advance(self, n=1):
            events.append(("advance", n))

    extract_features(small_dataset(n=5), reporter=Recorder())
    assert events[0] == ("stage", "features", 5)
    assert sum(e[1] for e in events if e[0] == "advance") == 5


def test_16_bit_images_give_finite_features():
    ds = small_dataset()
    for p in ds.particles:
        p.image = p.image.astype(np.uint16) * 256
    X = extract_features(ds, "all")
    assert np.isfinite(X.to_numpy()).all()


# Errors ------------------------------------------------------------------------


def test_missing_pixel_size_is_an_error_with_a_fix():
    ds = small_dataset(pixel_size=float("nan"))
    with pytest.raises(DatasetError) as exc:
        extract_features(ds)
    assert str(exc.value) == (
        "Particle p0 has no pixel size (6 of 6 particles); the features in nm need a "
        "positive pixel size. Pass --pixel-size NM, record PixelSize in particles.json "
        "(pixel_size_nm in a manifest), or use --units px."
    )


def test_empty_mask_names_the_particle():
    ds = small_dataset()
    ds.particles[2].mask = np.zeros_like(ds.particles[2].mask)
    with pytest.raises(DatasetError) as exc:
        extract_features(ds)
    assert str(exc.value) == (
        "Particle p2: cannot compute features: the mask is empty. Fix its image or mask."
    )


def test_export_without_the_key_suggests_computed():
    def partial(image, mask):
        feats = export_features(image, mask, 1.0)
        del feats["EdgeDensityProfile"]
        return feats

    ds = small_dataset(features=partial)
    with pytest.raises(DatasetError) as exc:
        extract_features(ds, source="export")
    assert str(exc.value) == (
        "Particle p0 has no precomputed EdgeDensityProfile in the export, which feature set "
        "'vironova' needs. Use --source computed to compute the features from the images."
    )


def test_export_without_any_features():
    with pytest.raises(DatasetError, match=r"^Particle p0 has no precomputed Area in the export"):
        extract_features(small_dataset(), source="export")


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("Histogram", [1] * 16, "a list of 32 non-negative numbers with a positive sum"),
        ("Histogram", [0] * 32, "a list of 32 non-negative numbers with a positive sum"),
        ("Moments", [1, 2, 3], "a list of 4 numbers [mu20, mu02, mu30, mu03]"),
        ("Area", "big", "a number"),
        ("Circularity", None, "a number"),
        ("EdgeDensityProfile", [1, 2, 3], "a list of [intensity, distance_nm] pairs"),
        ("EdgeDensityProfile", [[1, float("nan")]], "a list of [intensity, distance_nm] pairs"),
    ],
)
def test_malformed_export_values(key, value, expected):
    image, mask = ring_image(18, 25, 1.0)
    feats = export_features(image, mask, 1.0)
    feats[key] = value
    with pytest.raises(DatasetError) as exc:
        map_export_features(feats, 1.0, "vironova", particle_id="17")
    message = str(exc.value)
    assert message.startswith(f"Particle 17: the export's {key} is ")
    assert message.endswith(f"; expected {expected}. Fix the export, or use --source computed.")


def test_export_px_columns_need_the_pixel_size():
    image, mask = ring_image(18, 25, 1.0)
    with pytest.raises(DatasetError) as exc:
        map_export_features(export_features(image, mask, 1.0), float("nan"), "all", particle_id="9")
    assert str(exc.value) == (
        "Particle 9 has no pixel size (nm/px), which area_px (from the export's Area in nm) "
        "needs. Pass --pixel-size NM, or use --feature-set vironova."
    )
    # The vironova set is all in the export's own units: no pixel size needed.
    assert map_export_features(export_features(image, mask, 1.0), float("nan"), "vironova")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"feature_set": "shape"}, "Unknown feature set 'shape'; expected one of vironova, all."),
        ({"source": "lab"}, "Unknown feature source 'lab'; expected one of computed, export."),
        ({"jobs": 0}, "--jobs must be a positive number of workers or -1 (every core); got 0."),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ConfigError) as exc:
        extract_features(small_dataset(n=3), **kwargs)
    assert str(exc.value) == message


def test_mismatched_mask_shape():
    ds = small_dataset(n=3)
    ds.particles[1].mask = ds.particles[1].mask[:-1]
    with pytest.raises(DatasetError, match=r"^Particle p1: cannot compute features: the image is "):
        extract_features(ds)


# Units: px ----------------------------------------------------------------------


def test_px_columns_rename_the_nm_columns():
    from liposome_bench.features import feature_columns

    vironova = feature_columns("vironova", "px")
    assert vironova[:2] == ("area_px", "circularity") and len(vironova) == 70
    everything = feature_columns("all", "px")
    assert not [c for c in everything if "nm" in c]
    assert everything[:6] == (
        "area_px",
        "perimeter_px",
        "circularity",
        "diameter_px",
        "max_width_px",
        "mu20",
    )
    assert len(everything) == 109 - 3  # area_nm2, perimeter_nm, length_nm merged
    assert feature_columns("all") == FEATURE_SETS["all"]


@pytest.mark.parametrize("feature_set", list(FEATURE_SETS))
def test_px_features_need_no_pixel_size_and_are_the_nm_features_at_1_nm_per_px(feature_set):
    from liposome_bench.features import feature_columns

    unknown = small_dataset(pixel_size=float("nan"))
    X = extract_features(unknown, feature_set, units="px")
    assert list(X.columns) == list(feature_columns(feature_set, "px"))
    assert np.isfinite(X.to_numpy()).all()
    assert X.attrs["units"] == "px"
    at_one = extract_features(small_dataset(pixel_size=1.0), "all")
    for column in X.columns:
        source = {"max_width_px": "max_width_nm"}.get(column, column)
        assert X[column].tolist() == pytest.approx(at_one[source].tolist()), column
    # ... whatever the particles' pixel size says.
    at_two = extract_features(small_dataset(pixel_size=2.0), feature_set, units="px")
    assert np.array_equal(at_two.to_numpy(), X.to_numpy())


def test_px_edge_profile_window_is_in_pixels():
    from liposome_bench.features import EDP_GRID_PX

    # At 4 nm/px the nm window (-52..+10 nm) spans 15.5 px, the px window
    # 62 px: the two profiles differ.
    ds = small_dataset(n=1, pixel_size=4.0)
    px = extract_features(ds, "vironova", units="px")
    nm = extract_features(ds, "vironova")
    edp = [f"edp_{i:02d}" for i in range(32)]
    assert EDP_GRID_PX[26] == 0.0 and EDP_GRID_PX[1] - EDP_GRID_PX[0] == 2.0
    assert not np.allclose(px[edp].to_numpy(), nm[edp].to_numpy())


def test_px_with_exported_features_is_refused():
    ds = small_dataset()
    with pytest.raises(ConfigError, match="--units px computes the features from the images"):
        extract_features(ds, "vironova", source="export", units="px")
    with pytest.raises(ConfigError, match="Unknown units 'mm'"):
        extract_features(ds, "vironova", units="mm")
