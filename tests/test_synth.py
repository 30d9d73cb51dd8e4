"""The synthetic cryo-TEM generator: counts, determinism, particle layout,
physics (rim-darkened shells, larger multilamellar vesicles, dense drug
crystals, shot noise), the built-in default and the montage."""

import os

import numpy as np
import pytest
from scipy import ndimage

from liposome_bench import synth
from liposome_bench.dataset import load_export, write_export
from liposome_bench.errors import ConfigError, DatasetError
from liposome_bench.synth import (
    SURROUND_PX,
    THESIS_COUNTS,
    allocate_counts,
    default_dataset_path,
    generate_dataset,
    write_montage,
)

LAMELLARITY_COUNTS = {"unilamellar": 20, "multilamellar": 20, "uncertain": 8}
ENCAPSULATION_COUNTS = {"full": 20, "empty": 20, "uncertain": 8}


@pytest.fixture(scope="module")
def lamellarity():
    return generate_dataset("lamellarity", seed=4, counts=LAMELLARITY_COUNTS)


@pytest.fixture(scope="module")
def encapsulation():
    return generate_dataset("encapsulation", seed=4, counts=ENCAPSULATION_COUNTS)


def normalised(particle):
    """Image divided by its surround's median (1 = ice), and the mask."""
    image = particle.image.astype(float)
    outside = ~ndimage.binary_dilation(particle.mask, iterations=6)
    return image / np.median(image[outside]), particle.mask


# Counts ------------------------------------------------------------------------


def test_default_sizes_are_the_thesis_tables():
    assert allocate_counts("lamellarity") == THESIS_COUNTS["lamellarity"]
    assert allocate_counts("encapsulation") == THESIS_COUNTS["encapsulation"]
    assert sum(allocate_counts("lamellarity").values()) == 14169
    assert sum(allocate_counts("encapsulation").values()) == 24918


def test_3000_encapsulation_particles_follow_table_2():
    # Shares 2920.2 / 19.4 / 60.4: the one left over goes to the largest
    # remainder (uncertain).
    assert allocate_counts("encapsulation", 3000) == {"full": 2920, "empty": 19, "uncertain": 61}


@pytest.mark.parametrize("problem", ["lamellarity", "encapsulation"])
@pytest.mark.parametrize("n", [1, 2, 7, 100, 999, 3000, 14169, 50000])
def test_counts_sum_to_n_and_stay_within_one_of_the_exact_share(problem, n):
    counts = allocate_counts(problem, n)
    thesis = THESIS_COUNTS[problem]
    assert sum(counts.values()) == n
    for cls, count in counts.items():
        assert abs(count - n * thesis[cls] / sum(thesis.values())) < 1


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_bad_n_is_a_config_error(n):
    with pytest.raises(ConfigError, match="--n must be a positive number of particles"):
        allocate_counts("lamellarity", n)


def test_generated_labels_follow_the_asked_counts():
    dataset = generate_dataset("encapsulation", n=120, seed=2)
    assert dataset.class_counts() == allocate_counts("encapsulation", 120)


def test_counts_override_gives_exact_counts(lamellarity):
    assert lamellarity.class_counts() == LAMELLARITY_COUNTS


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"counts": {"bilamellar": 3}},
            "counts has class 'bilamellar', which is not a lamellarity class",
        ),
        (
            {"counts": {"unilamellar": -1}},
            "counts['unilamellar'] must be a whole number >= 0; got -1.",
        ),
        ({"counts": {"unilamellar": 0}}, "counts asks for no particles at all"),
        ({"n": 5, "counts": {"unilamellar": 3}}, "n=5 but counts add up to 3"),
        ({"n": 5, "seed": -1}, "seed must be a whole number >= 0; got -1."),
        ({"n": 5, "difficulty": 1.5}, "difficulty must be between 0 and 1; got 1.5."),
        ({"n": 5, "label_noise": 0.95}, "label noise must be between 0 and 0.9; got 0.95."),
        ({"n": 5, "dose": 0}, "dose must be a positive number of e-/A^2; got 0."),
        ({"n": 5, "pixel_size_nm": 0.1}, "pixel size must be between 0.5 and 5 nm/px; got 0.1."),
        ({"n": 5, "batch_size": 0}, "batch size must be a whole number >= 1; got 0."),
    ],
)
def test_bad_options_are_one_line_config_errors(kwargs, message):
    with pytest.raises(ConfigError) as info:
        generate_dataset("lamellarity", **kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_problem_is_a_dataset_error():
    with pytest.raises(DatasetError, match="Unknown problem 'lamelarity'"):
        generate_dataset("lamelarity", n=3)


# Determinism ---------------------------------------------------------------------


def test_same_seed_gives_the_same_dataset(lamellarity):
    again = generate_dataset("lamellarity", seed=4, counts=LAMELLARITY_COUNTS)
    assert again.fingerprint() == lamellarity.fingerprint()
    assert [p.label for p in again.particles] == [p.label for p in lamellarity.particles]


def test_different_seeds_give_different_datasets(lamellarity):
    other = generate_dataset("lamellarity", seed=5, counts=LAMELLARITY_COUNTS)
    assert other.fingerprint() != lamellarity.fingerprint()
    assert [p.label for p in other.particles] != [p.label for p in lamellarity.particles]


def test_batch_size_changes_nothing_but_speed(lamellarity):
    """Each particle has its own random stream: rendering one particle at a
    time gives the very same images as the batched default."""
    single = generate_dataset("lamellarity", seed=4, counts=LAMELLARITY_COUNTS, batch_size=1)
    odd = generate_dataset("lamellarity", seed=4, counts=LAMELLARITY_COUNTS, batch_size=5)
    assert single.fingerprint() == odd.fingerprint() == lamellarity.fingerprint()


# Particle layout -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["lamellarity", "encapsulation"])
def test_particles_have_the_lab_export_layout(name, request):
    dataset = request.getfixturevalue(name)
    assert dataset.synthetic is True
    assert dataset.root is None
    ids = dataset.ids
    assert all(i.isdigit() and not i.startswith("0") for i in ids)
    assert len(set(ids)) == len(ids)
    for p in dataset.particles:
        assert p.image.dtype == np.uint8
        assert p.mask.dtype == bool
        assert p.image.shape == p.mask.shape
        assert p.pixel_size_nm == synth.DEFAULT_PIXEL_SIZE_NM
        assert p.label in dataset.problem.classes


@pytest.mark.parametrize("name", ["lamellarity", "encapsulation"])
def test_masks_are_centred_with_a_50_px_surround(name, request):
    for p in request.getfixturevalue(name).particles:
        rows, cols = np.flatnonzero(p.mask.any(axis=1)), np.flatnonzero(p.mask.any(axis=0))
        assert len(rows) > 0
        h, w = p.mask.shape
        margins = [rows[0], cols[0], h - 1 - rows[-1], w - 1 - cols[-1]]
        # 50 px on every side, except where the micrograph's edge cuts the
        # particle: there the mask touches the image border.
        assert sorted(margins)[1:] == [SURROUND_PX] * 3
        assert min(margins) in (0, SURROUND_PX)
        # One particle: the mask is a single connected region.
        assert ndimage.label(p.mask)[1] == 1


def test_some_particles_are_cut_by_the_micrograph_edge():
    dataset = generate_dataset("lamellarity", n=300, seed=2)
    cut = [
        p
        for p in dataset.particles
        if p.mask[0].any() or p.mask[-1].any() or p.mask[:, 0].any() or p.mask[:, -1].any()
    ]
    assert 0 < len(cut) < 0.1 * len(dataset)


def test_particles_carry_a_micrograph_shared_by_several():
    dataset = generate_dataset("lamellarity", n=200, seed=3)
    micrographs = [p.meta["micrograph"] for p in dataset.particles]
    sizes = np.unique(micrographs, return_counts=True)[1]
    assert 4 <= len(sizes) <= 200 // synth.MICROGRAPH_PARTICLES[0] + 1
    assert sizes.max() >= synth.MICROGRAPH_PARTICLES[0]


def test_particles_of_one_micrograph_share_their_exposure():
    dataset = generate_dataset("lamellarity", n=400, seed=3)
    ice = np.array([np.median(p.image[:20, :20]) for p in dataset.particles])
    group = np.array([p.meta["micrograph"] for p in dataset.particles])
    within = np.mean([ice[group == g].std() for g in np.unique(group)])
    assert within < 0.5 * ice.std()


def test_ambiguity_draws_borderline_particles_and_scales_with_difficulty():
    counts = {"unilamellar": 2000, "multilamellar": 500, "uncertain": 500}
    shares = []
    for difficulty in (0.0, 0.5, 1.0):
        _, labels, appearance, borderline = synth.plan_appearance(
            "lamellarity", counts, 0, difficulty=difficulty
        )
        assert (appearance[borderline] != labels[borderline]).all()
        assert (appearance[~borderline] == labels[~borderline]).all()
        shares.append(borderline[labels == 2].mean())
    table = synth.AMBIGUITY["lamellarity"]
    expected = table[("uncertain", "unilamellar")] + table[("uncertain", "multilamellar")]
    assert shares[0] == 0
    assert shares[1] == pytest.approx(expected, abs=0.04)
    assert shares[2] > shares[1]


def test_particles_are_30_to_120_px_across(lamellarity, encapsulation):
    widths = [
        int(p.mask.any(axis=0).sum())
        for ds in (lamellarity, encapsulation)
        for p in ds.particles
        if p.label != "uncertain"
    ]  # an overlapping pair can be wider
    assert min(widths) >= 20
    assert max(widths) <= 160  # a mask merged with a touching neighbour is wider


def test_pixel_size_is_recorded_and_scales_the_particles():
    coarse = generate_dataset("lamellarity", n=20, seed=1, pixel_size_nm=3.2)
    fine = generate_dataset("lamellarity", n=20, seed=1)
    assert {p.pixel_size_nm for p in coarse.particles} == {3.2}
    area = [np.mean([p.mask.sum() for p in ds.particles]) for ds in (coarse, fine)]
    # Same vesicles in nm at twice the pixel size: a quarter of the area.
    assert area[0] == pytest.approx(area[1] / 4, rel=0.15)


# Physics -------------------------------------------------------------------------


def test_projected_shell_is_thickest_at_the_rim():
    """Path length through a spherical shell (R = 40 nm, t = 5 nm) along the
    beam: 2t at the centre, 2 sqrt(R^2 - (R-t)^2) grazing the inner surface,
    nothing outside."""
    x = np.array([0.0, 35.0, 41.0], dtype=np.float32)
    X, Y = x[None, None, :], np.zeros((1, 1, 1), dtype=np.float32)
    p = {
        k: np.array([v])
        for k, v in dict(
            cx=0.0,
            cy=0.0,
            a=40.0,
            b=40.0,
            c=40.0,
            th=0.0,
            t=5.0,
            dens=1.0,
            cut_psi=0.0,
            cut_o=np.nan,
        ).items()
    }
    path, inside = synth._shell_path(X, Y, p)
    assert path[0, 0] == pytest.approx([10.0, 2 * np.sqrt(40**2 - 35**2), 0.0], abs=1e-3)
    assert inside[0, 0].tolist() == [True, True, False]


def test_unilamellar_rim_is_darker_than_centre_and_ice(lamellarity):
    rim, centre = [], []
    for p in lamellarity.particles:
        if p.label != "unilamellar":
            continue
        image, mask = normalised(p)
        depth = ndimage.distance_transform_edt(mask)
        rim.append(image[(depth >= 1) & (depth <= 4)].mean())
        centre.append(image[depth >= 0.6 * depth.max()].mean())
    assert np.mean(rim) < np.mean(centre) - 0.03
    assert np.mean(rim) < 1.0 - 0.03


def test_multilamellar_vesicles_are_larger(lamellarity):
    area = {
        c: np.mean([p.mask.sum() for p in lamellarity.particles if p.label == c])
        for c in ("unilamellar", "multilamellar")
    }
    # Larger on average, but the size distributions overlap (Figures 3-4).
    assert area["multilamellar"] > 1.2 * area["unilamellar"]


def test_multilamellar_interiors_hold_more_membrane(lamellarity):
    """Inner bilayers darken the interior of a multilamellar vesicle."""

    def interior(p):
        image, mask = normalised(p)
        depth = ndimage.distance_transform_edt(mask)
        return ndimage.gaussian_filter(image, 1.5)[depth >= 6].mean()

    mean = {
        c: np.median([interior(p) for p in lamellarity.particles if p.label == c])
        for c in ("unilamellar", "multilamellar")
    }
    assert mean["multilamellar"] < mean["unilamellar"] - 0.02


def test_full_liposomes_have_dense_interiors(encapsulation):
    def interior(p):
        image, mask = normalised(p)
        depth = ndimage.distance_transform_edt(mask)
        # Smoothed, so shot noise does not make its own dark pixels.
        return ndimage.gaussian_filter(image, 2)[depth >= 6].min()

    low = {
        c: np.median([interior(p) for p in encapsulation.particles if p.label == c])
        for c in ("full", "empty")
    }
    assert low["full"] < low["empty"] - 0.03


def test_lower_dose_gives_noisier_ice():
    def grain(dataset):
        # Pixel-to-pixel differences in the surround: shot noise dominates.
        return np.mean(
            [np.diff(p.image[:40, :40].astype(float), axis=1).std() for p in dataset.particles]
        )

    noisy = generate_dataset("encapsulation", n=12, seed=3, dose=2.0)
    clean = generate_dataset("encapsulation", n=12, seed=3, dose=80.0)
    assert grain(noisy) > 1.5 * grain(clean)


def test_label_noise_keeps_counts_but_changes_what_labels_show():
    counts = {"unilamellar": 60, "multilamellar": 0, "uncertain": 0}
    clean = generate_dataset("lamellarity", seed=6, counts=counts)
    noisy = generate_dataset("lamellarity", seed=6, counts=counts, label_noise=0.9)
    assert noisy.class_counts() == clean.class_counts()
    # ~90 % of the 'unilamellar' particles now show larger multilamellar or
    # uncertain vesicles.
    area = [np.mean([p.mask.sum() for p in ds.particles]) for ds in (clean, noisy)]
    assert area[1] > 1.3 * area[0]


def test_harder_means_less_contrast():
    def rim_contrast(dataset):
        values = []
        for p in dataset.particles:
            image, mask = normalised(p)
            depth = ndimage.distance_transform_edt(mask)
            values.append(1.0 - image[(depth >= 1) & (depth <= 4)].mean())
        return np.mean(values)

    counts = {"unilamellar": 30}
    easy = generate_dataset("lamellarity", seed=2, counts=counts, difficulty=0.0)
    hard = generate_dataset("lamellarity", seed=2, counts=counts, difficulty=1.0)
    assert rim_contrast(easy) > rim_contrast(hard)


# Export round trip -------------------------------------------------------------


def test_written_export_reads_back_identically(lamellarity, tmp_path):
    out = write_export(lamellarity, tmp_path / "export")
    back = load_export(out)
    assert back.ids == lamellarity.ids
    assert [p.label for p in back.particles] == [p.label for p in lamellarity.particles]
    for a, b in zip(back.particles, lamellarity.particles):
        assert np.array_equal(a.image, b.image)
        assert np.array_equal(a.mask, b.mask)
        assert a.pixel_size_nm == pytest.approx(b.pixel_size_nm)
        assert a.meta["micrograph"] == b.meta["micrograph"]
    assert back.fingerprint() == lamellarity.fingerprint()
    assert '"Micrograph": "M0001"' in (out / "particles.json").read_text()


def test_generate_export_refuses_a_non_empty_folder_before_generating(tmp_path, monkeypatch):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    monkeypatch.setattr(synth, "generate_dataset", lambda *a, **k: pytest.fail("generated"))
    with pytest.raises(DatasetError, match="already exists and is not empty"):
        synth.generate_export("lamellarity", out, n=5)
    assert [f.name for f in out.iterdir()] == ["keep.txt"]


# Built-in default --------------------------------------------------------------


@pytest.fixture
def tiny_thesis(monkeypatch):
    """Make the 'thesis-sized' default data set tiny, and count generations."""
    monkeypatch.setitem(
        THESIS_COUNTS, "lamellarity", {"unilamellar": 6, "multilamellar": 3, "uncertain": 2}
    )
    calls = []
    real = synth.generate_dataset

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(synth, "generate_dataset", counting)
    return calls


def test_default_dataset_is_generated_once_and_reused(tmp_path, tiny_thesis, caplog):
    with caplog.at_level("WARNING", logger="liposome_bench.synth"):
        path = default_dataset_path("lamellarity", tmp_path)
    assert path == tmp_path / f"lamellarity-synthetic-v{synth.GENERATOR_VERSION}-seed0"
    assert "Generating the built-in synthetic lamellarity data set (11 particles)" in caplog.text
    assert load_export(path).class_counts() == THESIS_COUNTS["lamellarity"]
    assert default_dataset_path("lamellarity", tmp_path) == path
    assert len(tiny_thesis) == 1


def test_default_cache_follows_the_environment(tmp_path, tiny_thesis, monkeypatch):
    monkeypatch.setenv("LIPOSOME_BENCH_CACHE", str(tmp_path / "env"))
    path = default_dataset_path("lamellarity")
    assert path.parent == tmp_path / "env"
    assert (path / "particles.json").is_file()


def test_default_dataset_uses_a_concurrent_generators_folder(tmp_path, tiny_thesis, monkeypatch):
    def other_process_finished_first(dataset, out_dir):
        real_write(dataset, out_dir)  # the other process's folder appears...
        raise OSError(39, "Directory not empty")  # ...and our rename fails

    real_write = synth.write_export
    monkeypatch.setattr(synth, "write_export", other_process_finished_first)
    path = default_dataset_path("lamellarity", tmp_path)
    assert (path / "particles.json").is_file()


def test_broken_cache_folder_is_a_one_line_error(tmp_path, tiny_thesis):
    broken = tmp_path / f"lamellarity-synthetic-v{synth.GENERATOR_VERSION}-seed0"
    broken.mkdir()
    (broken / "images").mkdir()
    with pytest.raises(DatasetError) as info:
        default_dataset_path("lamellarity", tmp_path)
    assert str(info.value) == (
        f"The cache folder {broken} exists but holds no particles.json; "
        "delete it so the built-in data set is generated again."
    )
    assert tiny_thesis == []


# Montage ---------------------------------------------------------------------------


def test_montage_is_a_png_with_a_row_per_class(lamellarity, tmp_path):
    from PIL import Image

    small = write_montage(lamellarity, tmp_path / "a.png", per_class=2)
    large = write_montage(lamellarity, tmp_path / "sub" / "b.png", per_class=6)
    with Image.open(small) as a, Image.open(large) as b:
        assert a.format == b.format == "PNG"
        assert b.size[0] > a.size[0]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_montage_needs_at_least_one_example(lamellarity, tmp_path):
    with pytest.raises(ConfigError, match="per_class must be at least 1; got 0."):
        write_montage(lamellarity, tmp_path / "m.png", per_class=0)
    assert not (tmp_path / "m.png").exists()


def test_montage_shows_16_bit_images_too(lamellarity, tmp_path):
    from PIL import Image

    from liposome_bench.dataset import Dataset, Particle

    wide = Dataset(
        lamellarity.problem,
        [
            Particle(p.id, p.label, p.image.astype(np.uint16) * 257, p.mask)
            for p in lamellarity.particles
        ],
    )
    path = write_montage(wide, tmp_path / "m.png", per_class=3)
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"))
    # Not a blank page: the particles' grey levels show.
    assert pixels.std() > 10
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_fft_threads_follow_the_processs_cores_and_do_not_change_the_data(monkeypatch):
    counts = {"unilamellar": 4, "multilamellar": 2, "uncertain": 1}
    monkeypatch.setattr(synth, "usable_cores", lambda: 1)
    assert synth._workers() == 1
    one = synth.generate_dataset("lamellarity", seed=3, counts=counts)
    monkeypatch.setattr(synth, "usable_cores", lambda: 16)
    assert synth._workers() == 2
    two = synth.generate_dataset("lamellarity", seed=3, counts=counts)
    for a, b in zip(one.particles, two.particles):
        np.testing.assert_array_equal(np.asarray(a.image), np.asarray(b.image))
