"""Dataset readers, validation, mask derivation and description.

The on-disk fixtures are in fixtures/ (regenerate with
``python fixtures/make_fixtures.py``); each broken variant must give exactly
its one-line error.
"""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from liposome_bench.dataset import (
    ENCAPSULATION,
    LAMELLARITY,
    MAX_IMAGE_SIDE,
    Dataset,
    Particle,
    check_dataset,
    custom_problem,
    derive_mask,
    describe_dataset,
    inspect_dataset,
    load_dataset,
    load_export,
    load_folders,
    load_manifest,
    load_mrc,
    parse_export_json,
    write_export,
)
from liposome_bench.errors import DatasetError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BROKEN = FIXTURES / "broken"
EXPORT_COUNTS = {"unilamellar": 10, "multilamellar": 6, "uncertain": 5}

# (fixture under fixtures/broken, path inside it to read, the one problem line)
BROKEN_CASES = [
    (
        "missing-image",
        "",
        "particles.json, object 2 (Id 540002): image images/540002.png does not exist. "
        'Add the file or correct its "Image" name.',
    ),
    (
        "truncated-image",
        "",
        "images/540002.png is truncated or corrupt: its header says 64x64 px but its "
        "pixels cannot be decoded. Re-export the image.",
    ),
    (
        "unreadable-image",
        "",
        "images/540002.png cannot be read as a BMP, JPEG, PNG or TIFF image. "
        "Replace it with a valid image file.",
    ),
    ("mask-shape", "", "masks/540002.png is 64x62 but its image is 64x64."),
    (
        "empty-mask",
        "",
        "masks/540002.png is empty (no particle pixels). Redraw the mask, or delete "
        "it to have it derived.",
    ),
    (
        "unknown-class",
        "",
        "particles.json, object 2 (Id 540002): Class 6 is not a lamellarity code (3, 4, 5).",
    ),
    (
        "duplicate-id",
        "",
        "particles.json, object 3 (Id 540002): Id 540002 is already used by object 2. "
        "Give every particle its own Id.",
    ),
    (
        "path-escape",
        "",
        "particles.json, object 2 (Id 540002): image path '../../etc/passwd' leads "
        "outside the images/ folder. Use a path inside it.",
    ),
    (
        "huge-image",
        "",
        f"images/540002.png is 6000x6000 px, over the {MAX_IMAGE_SIDE} px a side allowed "
        "for one particle image (decompression-bomb guard). Crop it to the particle and "
        "its surround.",
    ),
    (
        "not-json",
        "",
        "particles.json: not valid JSON at line 10, column 12 (Unterminated string "
        "starting at). Expected a list of particle objects or objects one after "
        "another; fix or re-export the file.",
    ),
    (
        "manifest-path-escape",
        "manifest.csv",
        "manifest.csv, line 3: image path '../../etc/passwd' leads outside the folder "
        "of manifest.csv. Use a path relative to manifest.csv, inside its folder.",
    ),
    (
        "mrc-no-labels",
        "particles.mrcs",
        "particles.mrcs needs its labels in particles.csv beside it: a CSV with a label "
        "column (and optionally id), one row per slice in slice order. Write it; see "
        "docs/data-formats.md.",
    ),
]

SEVERAL_PROBLEMS = [
    "particles.json, object 1 (Id 540001): Class 6 is not a lamellarity code (3, 4, 5).",
    "particles.json, object 2 (Id 540002): image images/540002.png does not exist. "
    'Add the file or correct its "Image" name.',
    "masks/540003.png is empty (no particle pixels). Redraw the mask, or delete it "
    "to have it derived.",
]


def make_ring(
    size=96,
    radius=28,
    *,
    background=0.6,
    contrast=-0.35,
    filled=0.0,
    noise=0.06,
    centre=None,
    seed=0,
):
    """A rim-darkened ring on noisy background, and the true particle disc."""
    rng = np.random.default_rng(seed)
    cy, cx = centre if centre is not None else ((size - 1) / 2, (size - 1) / 2)
    yy, xx = np.mgrid[:size, :size]
    d = np.hypot(yy - cy, xx - cx)
    img = background + contrast * np.exp(-(((d - radius) / 1.8) ** 2))
    img += filled * (d < radius - 2)
    img += rng.normal(0.0, noise, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), d <= radius + 1.5


def small_dataset(counts=None, problem=LAMELLARITY, size=40):
    counts = counts or {"unilamellar": 4, "multilamellar": 3, "uncertain": 2}
    particles = []
    for label, n in counts.items():
        for _ in range(n):
            image, mask = make_ring(size, size / 2 - 8, seed=len(particles))
            particles.append(Particle(str(700 + len(particles)), label, image, mask, 0.5))
    return Dataset(problem, particles)


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


# Broken inputs ------------------------------------------------------------------------


@pytest.mark.parametrize("name, inner, line", BROKEN_CASES, ids=[c[0] for c in BROKEN_CASES])
def test_broken_fixture_gives_its_one_line_error(name, inner, line):
    path = BROKEN / name / inner if inner else BROKEN / name
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert str(exc.value) == line
    assert check_dataset(path) == [line]


def test_several_problems_first_line_names_the_rest_and_check_lists_all():
    path = BROKEN / "several-problems"
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert str(exc.value) == (
        f"{SEVERAL_PROBLEMS[0]} (and 2 more; run `liposome-bench dataset check {path}`)"
    )
    assert check_dataset(path) == SEVERAL_PROBLEMS


def test_check_hint_repeats_the_non_default_options(tmp_path):
    root = shutil.copytree(BROKEN / "several-problems", tmp_path / "d")
    (root / "images").rename(root / "pics")
    with pytest.raises(
        DatasetError,
        match=r"\(and 2 more; run `liposome-bench dataset check "
        rf"{root} --problem lamellarity --images-dir pics --pixel-size 0.5`\)$",
    ):
        load_dataset(root, "lamellarity", images_dir="pics", pixel_size_nm=0.5)


def test_colour_image_is_converted_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="liposome_bench.dataset"):
        dataset = load_dataset(BROKEN / "colour-image")
    warning = "1 colour image(s) converted to grayscale (first: images/540002.png)."
    assert dataset.warnings == [warning]
    assert warning in caplog.messages
    rgb = np.array(Image.open(BROKEN / "colour-image" / "images" / "540002.png")).astype(float)
    luma = np.round((299 * rgb[..., 0] + 587 * rgb[..., 1] + 114 * rgb[..., 2]) / 1000)
    image = dataset.particles[1].image
    assert image.ndim == 2 and image.dtype == np.uint8
    np.testing.assert_array_equal(image, luma.astype(np.uint8))
    assert check_dataset(BROKEN / "colour-image") == []


def test_pillow_decompression_bomb_limit_is_a_one_line_problem(monkeypatch, tmp_path):
    from PIL import Image as PILImage

    root = shutil.copytree(FIXTURES / "broken" / "colour-image", tmp_path / "d")
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)
    problems = check_dataset(root)
    assert problems[0] == (
        "images/540001.png has more pixels than Pillow's decompression-bomb limit (1000 px), "
        "far over one particle image (decompression-bomb guard). Crop it to the particle "
        "and its surround."
    )


def test_unknown_class_code_with_given_problem_names_that_problem():
    with pytest.raises(DatasetError) as exc:
        load_dataset(FIXTURES / "export", "encapsulation")
    first = json.loads((FIXTURES / "export" / "particles.json").read_text())[0]
    assert str(exc.value) == (
        f"particles.json, object 1 (Id {first['Id']}): Class {first['Class']} is not an "
        "encapsulation code (7, 8, 10). (and 20 more; run `liposome-bench dataset check "
        f"{FIXTURES / 'export'} --problem encapsulation`)"
    )


def test_codes_of_no_problem_are_refused(tmp_path):
    root = write_export(small_dataset(), tmp_path / "d")
    (root / "dataset.json").unlink()
    objects = json.loads((root / "particles.json").read_text())
    for obj in objects:
        obj["Class"] = 1
    (root / "particles.json").write_text(json.dumps(objects))
    with pytest.raises(DatasetError) as exc:
        load_dataset(root)
    assert str(exc.value) == (
        "particles.json: Class codes 1 belong to neither lamellarity (3, 4, 5) nor "
        "encapsulation (7, 8, 10). Correct the codes."
    )


@pytest.mark.parametrize(
    "change, line",
    [
        (
            lambda o: o.pop("Id"),
            'particles.json, object 2: no "Id". Give every particle its own Id.',
        ),
        (
            lambda o: o.update(Id=[1]),
            "particles.json, object 2: Id [1] is not an integer or a string. Give every particle its own Id.",
        ),
        (
            lambda o: o.pop("Class"),
            'particles.json, object 2 (Id 701): no "Class" code. Add it (3, 4, 5 for lamellarity; '
            "7, 8, 10 for encapsulation).",
        ),
        (
            lambda o: o.update(Class="three"),
            "particles.json, object 2 (Id 701): Class 'three' is not an integer code (3, 4, 5 for "
            "lamellarity; 7, 8, 10 for encapsulation).",
        ),
        (
            lambda o: o.pop("Image"),
            'particles.json, object 2 (Id 701): no "Image" (or "Bmp") file name. Add the name of '
            "its image file.",
        ),
        (
            lambda o: o.update(Image=" "),
            'particles.json, object 2 (Id 701): no "Image" (or "Bmp") file name. Add the name of '
            "its image file.",
        ),
        (
            lambda o: o.update(Image="/etc/passwd"),
            "particles.json, object 2 (Id 701): image path '/etc/passwd' leads outside the images/ "
            "folder. Use a path inside it.",
        ),
        (
            lambda o: o.update(Image="..\\..\\secret.png"),
            "particles.json, object 2 (Id 701): image path '..\\\\..\\\\secret.png' leads outside the "
            "images/ folder. Use a path inside it.",
        ),
        (
            lambda o: o.update(PixelSize=-1),
            "particles.json, object 2 (Id 701): PixelSize -1 is not a positive number of nm per "
            "pixel. Correct it or leave it out.",
        ),
    ],
)
def test_bad_export_fields_give_one_line_each(tmp_path, change, line):
    root = write_export(small_dataset(), tmp_path / "d")
    objects = json.loads((root / "particles.json").read_text())
    change(objects[1])
    (root / "particles.json").write_text(json.dumps(objects))
    assert check_dataset(root) == [line]


def test_a_non_object_entry_is_a_problem_not_skipped(tmp_path):
    root = write_export(small_dataset(), tmp_path / "d")
    objects = json.loads((root / "particles.json").read_text())
    objects.insert(0, [1, 2])
    (root / "particles.json").write_text(json.dumps(objects))
    assert check_dataset(root) == [
        "particles.json, object 1: expected a JSON object with Id, Image and Class; "
        "got list. Fix or remove it."
    ]


def test_missing_images_folder_says_which_option_to_pass(tmp_path):
    root = shutil.copytree(FIXTURES / "export", tmp_path / "d")
    (root / "images").rename(root / "imgs")
    with pytest.raises(DatasetError) as exc:
        load_dataset(root)
    assert str(exc.value) == (
        "particles.json names its images in the folder images/ beside it, which does not "
        "exist. Pass --images-dir (e.g. '.' for images beside particles.json)."
    )
    assert len(load_dataset(root, images_dir="imgs")) == sum(EXPORT_COUNTS.values())


def test_multipage_tiff_is_refused(tmp_path):
    import tifffile

    root = write_export(small_dataset(), tmp_path / "d")
    tifffile.imwrite(root / "images" / "701.tif", np.zeros((2, 40, 40), np.uint8))
    objects = json.loads((root / "particles.json").read_text())
    objects[1]["Image"] = "701.tif"
    (root / "particles.json").write_text(json.dumps(objects))
    assert check_dataset(root) == [
        "images/701.tif holds 2 images; expected one particle image per file. Split it, "
        "or pass the stack as an .mrcs file."
    ]


def test_two_masks_for_one_image_are_a_problem(tmp_path):
    root = write_export(small_dataset(), tmp_path / "d")
    shutil.copy(root / "masks" / "701.png", root / "masks" / "701.bmp")
    assert check_dataset(root) == [
        "masks/701.bmp and masks/701.png are both masks of images/701.png. Keep one of them."
    ]


@pytest.mark.parametrize(
    "make, line_end",
    [
        (lambda d: d / "nothing.txt", "is not a dataset file. Expected"),
        (lambda d: d / "missing", "does not exist. Expected"),
        (lambda d: d, "holds neither particles.json nor class folders. Expected"),
    ],
)
def test_what_is_not_a_dataset_is_named(tmp_path, make, line_end):
    (tmp_path / "nothing.txt").write_text("hi")
    path = make(tmp_path)
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert str(exc.value).startswith(f"{path} {line_end} a lab export folder")
    assert str(exc.value).endswith("or a folder of class folders.")


# Readers --------------------------------------------------------------------------------


def test_export_fixture_reads_with_masks_and_pixel_size():
    dataset = load_export(FIXTURES / "export")
    assert dataset.problem == LAMELLARITY
    assert dataset.class_counts() == EXPORT_COUNTS
    assert not any(p.mask_derived for p in dataset.particles)
    assert all(p.mask.shape == p.image.shape and p.mask.any() for p in dataset.particles)
    assert all(p.pixel_size_nm > 0 for p in dataset.particles)
    assert dataset.warnings == []


def test_hand_written_concatenated_bmp_export_reads_correctly():
    dataset = load_dataset(FIXTURES / "bmp-concatenated")
    assert dataset.problem == ENCAPSULATION
    assert dataset.ids == ["1001", "1002", "1003", "1004"]
    assert [p.label for p in dataset.particles] == ["full", "full", "empty", "uncertain"]
    assert [p.image.shape for p in dataset.particles] == [(60, 60), (64, 64), (68, 68), (72, 72)]
    assert all(p.image.dtype == np.uint8 for p in dataset.particles)
    assert all(p.pixel_size_nm == 0.84 for p in dataset.particles)
    assert not any(p.mask_derived for p in dataset.particles)
    first = dataset.particles[0].features
    assert first["Area"] == 1021.5 and len(first["Histogram"]) == 32
    assert first["Moments"] == [812.2, 790.4, 3.1, -2.7]
    assert dataset.particles[1].features is None
    assert dataset.particles[2].features["RadialDensityProfile"][1] == [99.5, 0.84]
    # 24-bit BMP with equal channels is gray: no colour warning
    assert dataset.warnings == []
    assert "Bmp keys" in dataset.description
    bmp = np.array(Image.open(FIXTURES / "bmp-concatenated" / "images" / "1002.bmp"))
    np.testing.assert_array_equal(dataset.particles[1].image, bmp[..., 0])


def test_concatenated_and_list_forms_parse_the_same():
    text = (FIXTURES / "bmp-concatenated" / "particles.json").read_text()
    objects = parse_export_json(text, "particles.json")
    assert [o["Id"] for o in objects] == [1001, 1002, 1003, 1004]
    assert parse_export_json(json.dumps(objects), "particles.json") == objects


def test_write_export_round_trip_keeps_everything(tmp_path):
    dataset = load_dataset(FIXTURES / "export")
    again = load_dataset(write_export(dataset, tmp_path / "copy"))
    assert again.fingerprint() == dataset.fingerprint()
    assert again.ids == dataset.ids
    assert again.synthetic == dataset.synthetic
    assert [p.pixel_size_nm for p in again.particles] == [
        p.pixel_size_nm for p in dataset.particles
    ]


def test_custom_problem_export_keeps_its_class_order(tmp_path):
    problem = custom_problem(["tubular", "spherical"])
    dataset = small_dataset({"tubular": 2, "spherical": 3}, problem)
    again = load_dataset(write_export(dataset, tmp_path / "d"))
    assert again.problem.classes == ("tubular", "spherical")
    assert [p.label for p in again.particles] == [p.label for p in dataset.particles]
    assert again.fingerprint() == dataset.fingerprint()


def test_export_without_masks_folder_derives_masks_and_says_so(tmp_path):
    root = write_export(small_dataset(), tmp_path / "d")
    truth = [p.mask for p in small_dataset().particles]
    shutil.rmtree(root / "masks")
    dataset = load_dataset(root)
    assert all(p.mask_derived for p in dataset.particles)
    assert min(iou(p.mask, t) for p, t in zip(dataset.particles, truth)) > 0.8
    assert dataset.warnings[0].startswith(
        "No masks/ folder beside particles.json; every mask was derived"
    )


def test_missing_mask_file_is_derived_with_a_warning(tmp_path):
    root = write_export(small_dataset(), tmp_path / "d")
    (root / "masks" / "702.png").unlink()
    dataset = load_dataset(root)
    assert [p.mask_derived for p in dataset.particles].count(True) == 1
    assert dataset.particles[2].mask_derived
    assert dataset.warnings == [
        "1 particle(s) have no mask file; their masks were derived from the image "
        "(first: images/702.png)."
    ]


def test_pixel_size_option_overrides(tmp_path):
    dataset = load_dataset(FIXTURES / "export", pixel_size_nm=0.25)
    assert {p.pixel_size_nm for p in dataset.particles} == {0.25}


def test_manifest_reads_custom_labels_formats_and_masks():
    dataset = load_manifest(FIXTURES / "manifest" / "manifest.csv")
    assert dataset.problem.name == "custom"
    assert dataset.problem.classes == ("spherical", "tubular")
    assert dataset.ids == [f"m{i}" for i in range(6)]
    assert [p.image.dtype for p in dataset.particles] == [
        np.uint16,
        np.uint8,
        np.uint16,
        np.uint16,
        np.uint8,
        np.uint16,
    ]
    assert [p.mask_derived for p in dataset.particles] == [False] * 3 + [True] * 3
    assert [p.pixel_size_nm for p in dataset.particles][:5] == [0.5] * 5
    assert np.isnan(dataset.particles[5].pixel_size_nm)
    assert dataset.root == FIXTURES / "manifest"
    assert (
        load_dataset(FIXTURES / "manifest" / "manifest.csv").fingerprint() == dataset.fingerprint()
    )


def test_manifest_labels_of_another_problem_are_problems():
    path = FIXTURES / "manifest" / "manifest.csv"
    problems = check_dataset(path, "lamellarity")
    assert len(problems) == 6
    assert problems[0] == (
        "manifest.csv, line 2: label 'spherical' is not a lamellarity class "
        "(unilamellar, multilamellar, uncertain)."
    )


def test_manifest_needs_image_and_label_columns(tmp_path):
    (tmp_path / "m.csv").write_text("file,class\na.png,x\n")
    with pytest.raises(DatasetError) as exc:
        load_dataset(tmp_path / "m.csv")
    assert str(exc.value) == (
        "m.csv has no 'image' or 'label' column (columns: file, class). Expected columns "
        "image, label and optionally mask, id, pixel_size_nm."
    )


def test_manifest_duplicate_default_ids_and_bad_cells(tmp_path):
    shutil.copytree(FIXTURES / "manifest" / "images", tmp_path / "images")
    (tmp_path / "sub").mkdir()
    shutil.copy(tmp_path / "images" / "p2.png", tmp_path / "sub" / "p2.png")
    (tmp_path / "m.csv").write_text(
        "image,label,pixel_size_nm\n"
        "images/p2.png,a,0.5\n"
        "sub/p2.png,b,zero\n"
        "images/p4.jpg,,\n"
        "images/nope.png,a,\n"
    )
    assert check_dataset(tmp_path / "m.csv") == [
        "m.csv, line 3: pixel_size_nm 'zero' is not a positive number. Correct it or leave "
        "the cell empty.",
        "m.csv, line 3: id p2 is already used by line 2. Give every particle its own id (id column).",
        "m.csv, line 4: no label. Give the particle's class in the label column.",
        "m.csv, line 5: image images/nope.png does not exist. Add the file or correct the "
        "image column.",
    ]


def test_class_folders_read_with_derived_masks():
    dataset = load_folders(FIXTURES / "folders")
    assert dataset.problem == ENCAPSULATION
    assert dataset.class_counts() == {"full": 4, "empty": 3, "uncertain": 0}
    assert all(p.mask_derived and p.mask.any() for p in dataset.particles)
    assert dataset.ids[:2] == ["empty-0", "empty-1"]
    assert load_dataset(FIXTURES / "folders").fingerprint() == dataset.fingerprint()


def test_class_folders_with_masks_folder_and_stray_files(tmp_path):
    root = shutil.copytree(FIXTURES / "folders", tmp_path / "d")
    (root / "masks" / "full").mkdir(parents=True)
    mask = np.zeros((52, 52), np.uint8)
    mask[10:40, 10:40] = 255
    Image.fromarray(mask).save(root / "masks" / "full" / "full-0.png")
    (root / "folds").mkdir()  # stored folds are not a class
    dataset = load_dataset(root)
    assert sorted(dataset.class_counts().items()) == [("empty", 3), ("full", 4), ("uncertain", 0)]
    assert [p.id for p in dataset.particles if not p.mask_derived] == ["full-0"]
    (root / "full" / "notes.txt").write_text("x")
    shutil.copy(root / "full" / "full-1.png", root / "loose.png")
    assert check_dataset(root) == [
        "loose.png is not inside a class folder. Move it into the folder of its class.",
        "full/notes.txt is not a BMP, JPEG, PNG or TIFF image. Move it out of the class folder.",
    ]


def test_custom_class_folders_are_sorted_classes(tmp_path):
    for cls in ("rods", "discs"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            image, _ = make_ring(48, 14, seed=i)
            Image.fromarray(image).save(tmp_path / cls / f"{cls}{i}.png")
    dataset = load_dataset(tmp_path)
    assert dataset.problem.classes == ("discs", "rods")
    assert dataset.class_counts() == {"discs": 2, "rods": 2}


def test_mrc_stack_reads_labels_ids_and_pixel_size():
    import mrcfile

    path = FIXTURES / "mrc" / "particles.mrcs"
    dataset = load_mrc(path)
    assert dataset.problem == LAMELLARITY
    assert dataset.ids == [f"s{i}" for i in range(1, 7)]
    assert [p.label for p in dataset.particles] == ["unilamellar", "multilamellar"] * 3
    assert [p.pixel_size_nm for p in dataset.particles] == pytest.approx([0.6] * 6)
    assert all(
        p.image.dtype == np.float32 and p.mask_derived and p.mask.any() for p in dataset.particles
    )
    with mrcfile.open(path) as mrc:
        np.testing.assert_array_equal(dataset.particles[3].image, mrc.data[3])
    assert load_dataset(path).fingerprint() == dataset.fingerprint()


def test_mrc_label_rows_must_match_slices(tmp_path):
    shutil.copy(FIXTURES / "mrc" / "particles.mrcs", tmp_path)
    (tmp_path / "particles.csv").write_text("label\nunilamellar\n")
    with pytest.raises(DatasetError) as exc:
        load_dataset(tmp_path / "particles.mrcs")
    assert str(exc.value) == (
        "particles.csv has 1 row but particles.mrcs holds 6 slices. Give one row per "
        "slice, in slice order."
    )


def test_truncated_mrc_is_one_line(tmp_path):
    data = (FIXTURES / "mrc" / "particles.mrcs").read_bytes()
    (tmp_path / "particles.mrcs").write_bytes(data[:-500])
    shutil.copy(FIXTURES / "mrc" / "particles.csv", tmp_path)
    assert check_dataset(tmp_path / "particles.mrcs") == [
        "particles.mrcs is truncated or corrupt: its header says 6 slices of 48x48 px but "
        "they cannot be read. Re-export the stack."
    ]


def test_mrc_export_round_trip_keeps_float_images_readable(tmp_path):
    dataset = load_dataset(FIXTURES / "mrc" / "particles.mrcs")
    for p in dataset.particles:  # densities outside [0, 1], as real stacks have
        p.image = p.image * 40.0 - 12.0
    again = load_dataset(write_export(dataset, tmp_path / "d"))
    assert again.ids == dataset.ids
    assert all(p.image.dtype == np.uint16 for p in again.particles)
    # min-max stretch to 16 bit keeps the order of intensities
    a, b = dataset.particles[0].image.ravel(), again.particles[0].image.ravel().astype(float)
    assert np.corrcoef(a, b)[0, 1] > 0.999


def test_sixteen_bit_tiff_keeps_its_depth(tmp_path):
    import tifffile

    image16 = np.arange(48 * 48, dtype=np.uint16).reshape(48, 48) * 20
    dataset = small_dataset({"unilamellar": 1}, size=48)
    root = write_export(dataset, tmp_path / "d")
    tifffile.imwrite(root / "images" / "700.tif", image16)
    (root / "images" / "700.png").unlink()
    objects = json.loads((root / "particles.json").read_text())
    objects[0]["Image"] = "700.tif"
    (root / "particles.json").write_text(json.dumps(objects))
    (particle,) = load_dataset(root).particles
    assert particle.image.dtype == np.uint16
    np.testing.assert_array_equal(particle.image, image16)
    assert not particle.mask_derived  # masks/700.png matches the stem of 700.tif


def test_reading_reports_progress():
    class Recorder:
        def __init__(self):
            self.events = []

        def stage(self, name, total=None):
            self.events.append(("stage", name, total))

        def advance(self, n=1):
            self.events.append(("advance", n))

    recorder = Recorder()
    load_dataset(FIXTURES / "bmp-concatenated", reporter=recorder)
    assert recorder.events[0] == ("stage", "reading particles.json", 4)
    assert recorder.events.count(("advance", 1)) == 4


def test_inspect_dataset_returns_the_dataset_or_the_problems():
    dataset, problems = inspect_dataset(FIXTURES / "export")
    assert problems == [] and len(dataset) == 21
    dataset, problems = inspect_dataset(BROKEN / "several-problems")
    assert dataset is None and problems == SEVERAL_PROBLEMS


# Mask derivation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # empty vesicle: dark membrane ring on light ice
        {"filled": -0.25},  # dense interior
        {"background": 0.3, "contrast": 0.4},  # bright particle on a dark background
        {"noise": 0.12, "seed": 3},
    ],
)
def test_derive_mask_finds_the_central_particle(kwargs):
    image, truth = make_ring(**kwargs)
    mask = derive_mask(image)
    assert mask.dtype == bool and mask.shape == image.shape
    assert iou(mask, truth) > 0.85


def test_derive_mask_keeps_the_particle_nearest_the_centre():
    image, truth = make_ring(128, 22, seed=1)
    other, _ = make_ring(128, 12, centre=(18, 18), seed=2)
    image = np.minimum(image, np.where(other < 120, other, 255).astype(np.uint8))
    mask = derive_mask(image)
    assert iou(mask, truth) > 0.85
    assert not mask[18, 18]


def test_derive_mask_of_a_flat_image_is_empty_and_reported(tmp_path):
    assert not derive_mask(np.full((40, 40), 7, np.uint8)).any()
    dataset = small_dataset({"unilamellar": 1})
    dataset.particles[0].image[:] = 100
    root = write_export(dataset, tmp_path / "d")
    shutil.rmtree(root / "masks")
    assert check_dataset(root) == [
        "images/700.png: no particle stands out from the background, so no mask can be "
        "derived. Add a mask for it."
    ]


# Description ---------------------------------------------------------------------------


def test_describe_dataset_counts_sizes_and_folds(tmp_path):
    from liposome_bench.folds import describe_stored_folds, load_or_make_folds

    root = shutil.copytree(FIXTURES / "export", tmp_path / "d")
    dataset = load_dataset(root)
    info = describe_dataset(dataset)
    assert info["n_particles"] == 21 and info["problem"] == "lamellarity"
    counts = {row["class"]: row["count"] for row in info["class_counts"]}
    assert counts == EXPORT_COUNTS
    assert sum(row["percent"] for row in info["class_counts"]) == pytest.approx(100.0)
    assert info["class_counts"][0]["percent"] == pytest.approx(100 * 10 / 21)
    widths = [p.image.shape[1] for p in dataset.particles if p.label == "multilamellar"]
    assert info["image_size"]["per_class"]["multilamellar"]["width"] == {
        "min": min(widths),
        "median": float(np.median(widths)),
        "max": max(widths),
    }
    heights = [p.image.shape[0] for p in dataset.particles]
    assert info["image_size"]["all"]["height"]["max"] == max(heights)
    assert info["masks_derived"] == 0
    assert info["fingerprint"] == dataset.fingerprint()
    assert describe_stored_folds(dataset) == []
    load_or_make_folds(dataset, k=3, seed=1)
    assert describe_stored_folds(dataset) == [
        {"file": "folds/k3-seed1.json", "k": 3, "seed": 1, "matches": True}
    ]
    json.dumps(describe_dataset(dataset))  # serialisable for --json


def test_describe_dataset_empty_class_has_no_sizes():
    info = describe_dataset(load_dataset(FIXTURES / "folders"))
    assert info["image_size"]["per_class"]["uncertain"] is None
    assert info["pixel_size_nm"] == {"min": None, "median": None, "max": None, "unknown": 7}
    assert info["masks_derived"] == 7


def test_a_folder_holding_a_manifest_is_not_read_as_class_folders():
    # Its images/ folder would otherwise become a class called "images".
    from liposome_bench.dataset import load_dataset
    from liposome_bench.errors import DatasetError

    folder = FIXTURES / "broken" / "manifest-path-escape"
    with pytest.raises(DatasetError) as err:
        load_dataset(folder)
    assert str(err.value) == (
        f"{folder} holds manifest.csv but no particles.json. "
        f"Pass the manifest or stack file itself, e.g. {folder / 'manifest.csv'}."
    )


def test_extra_keys_and_columns_become_particle_metadata(tmp_path):
    """A manifest's extra columns and a lab export's extra keys are kept as
    lower-case string metadata (what --group-by groups by), and written back."""
    from liposome_bench.dataset import load_manifest, write_export

    src = load_dataset(FIXTURES / "manifest" / "manifest.csv")
    rows = (FIXTURES / "manifest" / "manifest.csv").read_text().splitlines()
    extra = [rows[0] + ",Micrograph,notes"] + [
        f"{r},mic-{i % 2},  " for i, r in enumerate(rows[1:])
    ]
    (tmp_path / "m").mkdir()
    for f in (FIXTURES / "manifest").rglob("*"):
        if f.is_file():
            target = tmp_path / "m" / f.relative_to(FIXTURES / "manifest")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.read_bytes())
    (tmp_path / "m" / "manifest.csv").write_text("\n".join(extra) + "\n")
    ds = load_manifest(tmp_path / "m" / "manifest.csv")
    assert [p.meta for p in ds.particles[:2]] == [{"micrograph": "mic-0"}, {"micrograph": "mic-1"}]
    assert len(ds) == len(src)
    back = load_dataset(write_export(ds, tmp_path / "export"))
    assert [p.meta for p in back.particles] == [p.meta for p in ds.particles]


def test_the_reader_table_picks_a_format_by_file_ending_and_by_folder(tmp_path):
    """Issue 21: load_dataset dispatches through data.readers.READERS, one
    entry per format module, instead of a chain of branches."""
    from liposome_bench.data.readers import READERS, reader_for

    endings = [ending for fmt in READERS for ending in fmt.suffixes]
    assert sorted(endings) == [".csv", ".json", ".mrc", ".mrcs"]  # each read by one format
    by_name = {fmt.name: fmt for fmt in READERS}
    for name, ending in [("lab export", ".JSON"), ("manifest", ".csv"), ("MRC stack", ".mrcs")]:
        path = tmp_path / f"data{ending}"
        path.write_text("")
        assert reader_for(path, "masks") is by_name[name]
    assert reader_for(FIXTURES / "export", "masks") is by_name["lab export"]
    assert reader_for(FIXTURES / "folders", "masks") is by_name["class folders"]
    assert reader_for(FIXTURES / "manifest" / "manifest.csv", "masks") is by_name["manifest"]


def test_dataset_only_reexports_the_data_layer():
    """``liposome_bench.dataset`` defines nothing of its own: every public
    name is in ``__all__`` and comes from a ``liposome_bench.data`` module."""
    import liposome_bench.dataset as facade

    public = {name for name in vars(facade) if not name.startswith("_")}
    assert public == set(facade.__all__)
    homes = {
        name: getattr(facade, name).__module__
        for name in facade.__all__
        if callable(getattr(facade, name))
    }
    assert {
        name for name, home in homes.items() if not home.startswith("liposome_bench.data.")
    } == set()
    assert homes["load_dataset"] == "liposome_bench.data.readers"
    assert homes["Dataset"] == "liposome_bench.data.types"
