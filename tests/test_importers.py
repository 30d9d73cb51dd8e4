"""`liposome_bench.importers`: COCO and instance label images to particle
datasets, checked against what fixtures/make_micrograph_fixtures.py drew."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from liposome_bench.dataset import load_dataset
from liposome_bench.errors import ConfigError, DatasetError
from liposome_bench.importers import (
    ImportProblems,
    import_coco,
    import_labels,
    parse_class_map,
    read_micrograph,
    rle_string_counts,
)

MICS = Path(__file__).resolve().parent.parent / "fixtures" / "micrographs"
TRUTH = json.loads((MICS / "truth.json").read_text())
SHAPE = (270, 360)


def truth_mask(entry):
    """The drawn mask of a truth.json entry over its whole micrograph."""
    counts = rle_string_counts(entry["mask_rle"])
    flat = np.repeat(np.arange(len(counts)) % 2 == 1, counts)
    return flat.reshape(SHAPE[1], SHAPE[0]).T


def objects(root):
    return {str(o["Id"]): o for o in json.loads((Path(root) / "particles.json").read_text())}


def micrograph_pixels(name):
    image, _, _ = read_micrograph(MICS / "images" / name)
    return image


def test_read_micrograph_pixel_size_from_tiff_and_mrc_metadata():
    assert read_micrograph(MICS / "images" / "m01.tif")[1:] == (2.5, "TIFF metadata")
    assert read_micrograph(MICS / "images" / "m02.mrc")[1:] == (2.5, "MRC header")
    image, px, source = read_micrograph(MICS / "images" / "m03.png")
    assert np.isnan(px) and source == "" and image.shape == SHAPE


def test_tiff_resolution_tags_in_cm_give_a_pixel_size_but_72_dpi_does_not(tmp_path):
    image = np.zeros((8, 8), np.uint8)
    tifffile.imwrite(
        tmp_path / "cm.tif", image, resolution=(1e7 / 1.2, 1e7 / 1.2), resolutionunit="CENTIMETER"
    )
    tifffile.imwrite(tmp_path / "dpi.tif", image, resolution=(72, 72), resolutionunit="INCH")
    assert read_micrograph(tmp_path / "cm.tif")[1] == pytest.approx(1.2)
    assert np.isnan(read_micrograph(tmp_path / "dpi.tif")[1])


def test_coco_round_trip_particles_masks_classes_and_boxes(tmp_path):
    result = import_coco(MICS / "coco.json", MICS / "images", tmp_path / "ds", pixel_size_nm=2.5)
    dataset = load_dataset(tmp_path / "ds")
    assert dataset.problem.name == "lamellarity"
    assert len(dataset) == len(TRUTH) == 15
    written = objects(tmp_path / "ds")
    by_id = {p.id: p for p in dataset.particles}
    kinds = set()
    for entry in TRUTH:
        p = by_id[str(entry["annotation"])]
        obj = written[p.id]
        kinds.add(entry["kind"])
        assert p.label == entry["class"]
        assert p.meta["micrograph"] == entry["micrograph"]
        assert obj["BBox"] == entry["bbox"]
        assert obj["EdgeCut"] == entry["edge_cut"]
        x, y, w, h = obj["Crop"]
        # Polygons, compressed and uncompressed RLE all give the drawn mask exactly.
        assert np.array_equal(p.mask, truth_mask(entry)[y : y + h, x : x + w]), entry
        assert np.array_equal(p.image, micrograph_pixels(entry["file"])[y : y + h, x : x + w])
        bx, by, bw, bh = entry["bbox"]
        # 50 px of surround, less only where the micrograph ends.
        assert x == max(bx - 50, 0) and y == max(by - 50, 0)
        assert x + w == min(bx + bw + 50, SHAPE[1]) and y + h == min(by + bh + 50, SHAPE[0])
        assert p.pixel_size_nm == 2.5
    assert kinds == {"polygon", "rle", "rle-list"}
    assert result.per_class == {"unilamellar": 8, "multilamellar": 5, "uncertain": 2}
    assert [(m.micrograph, m.particles, m.pixel_size_from) for m in result.micrographs] == [
        ("m01", 5, "TIFF metadata"),
        ("m02", 5, "MRC header"),
        ("m03", 5, "--pixel-size"),
    ]
    assert result.edge_cut == 1 and result.dropped == 0


def test_overlapping_instances_keep_their_own_masks(tmp_path):
    import_coco(MICS / "coco.json", MICS / "images", tmp_path / "ds")
    first, second = TRUTH[0], TRUTH[1]
    overlap = truth_mask(first) & truth_mask(second)
    assert overlap.any()  # the fixture draws them overlapping
    by_id = {p.id: p for p in load_dataset(tmp_path / "ds").particles}
    for entry in (first, second):
        obj = objects(tmp_path / "ds")[str(entry["annotation"])]
        x, y, w, h = obj["Crop"]
        assert by_id[str(entry["annotation"])].mask[overlap[y : y + h, x : x + w]].all()


def test_drop_edge_drops_and_counts_edge_cut_particles(tmp_path):
    result = import_coco(MICS / "coco.json", MICS / "images", tmp_path / "ds", drop_edge=True)
    cut = [str(e["annotation"]) for e in TRUTH if e["edge_cut"]]
    assert len(cut) == 1
    assert result.dropped == 1 and result.edge_cut == 0
    assert cut[0] not in load_dataset(tmp_path / "ds").ids


def test_no_pixel_size_is_a_warning_of_the_import(tmp_path):
    result = import_coco(MICS / "coco.json", MICS / "images", tmp_path / "ds")
    assert any("5 particle(s) have no pixel size" in w for w in result.warnings)
    assert result.micrographs[2].pixel_size_from == "unknown"


@pytest.mark.parametrize("shape", ["box", "ellipse"])
def test_box_only_annotations_become_the_box_or_its_inscribed_ellipse(tmp_path, shape):
    import_coco(MICS / "coco-boxes.json", MICS / "images", tmp_path / "ds", box_masks=shape)
    dataset = load_dataset(tmp_path / "ds")
    assert len(dataset) == 3
    for p in dataset.particles:
        x, y, w, h = objects(tmp_path / "ds")[p.id]["BBox"]
        entry = next(e for e in TRUTH if str(e["annotation"]) == p.id)
        assert [x, y, w, h] == entry["bbox"]
        cx, cy, *_ = objects(tmp_path / "ds")[p.id]["Crop"]
        box = p.mask[y - cy : y - cy + h, x - cx : x - cx + w]
        assert p.mask.sum() == box.sum()
        if shape == "box":
            assert box.all()
        else:
            # The inscribed ellipse: pi/4 of the box, and the drawn disc's shape.
            assert box.sum() == pytest.approx(np.pi / 4 * w * h, rel=0.06)
            drawn = truth_mask(entry)[y : y + h, x : x + w]
            assert (drawn & box).sum() / (drawn | box).sum() > 0.85


def test_box_only_annotations_need_box_masks(tmp_path):
    with pytest.raises(ImportProblems) as info:
        import_coco(MICS / "coco-boxes.json", MICS / "images", tmp_path / "ds")
    assert len(info.value.problems) == 3
    assert info.value.problems[0] == (
        "coco-boxes.json, annotation 101: it has a box but no segmentation; pass --box-masks "
        "box (the box is the mask) or --box-masks ellipse (the ellipse inscribed in the box)."
    )
    assert not (tmp_path / "ds").exists()


def test_classes_map_category_names_to_codes(tmp_path):
    coco = json.loads((MICS / "coco.json").read_text())
    for c in coco["categories"]:
        c["name"] = {"unilamellar": "uni", "multilamellar": "multi"}.get(c["name"], "unsure")
    path = tmp_path / "renamed.json"
    path.write_text(json.dumps(coco))
    import_coco(path, MICS / "images", tmp_path / "ds", classes="uni=3,multi=4,unsure=5")
    written = objects(tmp_path / "ds")
    assert {o["Class"] for o in written.values()} == {3, 4, 5}
    dataset = load_dataset(tmp_path / "ds")
    assert dataset.problem.name == "lamellarity"
    assert {p.id: p.label for p in dataset.particles} == {
        str(e["annotation"]): e["class"] for e in TRUTH
    }


def test_an_unused_category_does_not_make_the_problem_custom(tmp_path):
    coco = json.loads((MICS / "coco.json").read_text())
    coco["categories"].append({"id": 4, "name": "background"})
    path = tmp_path / "extra.json"
    path.write_text(json.dumps(coco))
    import_coco(path, MICS / "images", tmp_path / "ds")
    assert load_dataset(tmp_path / "ds").problem.name == "lamellarity"


def test_custom_categories_make_a_custom_problem(tmp_path):
    coco = json.loads((MICS / "coco.json").read_text())
    for c in coco["categories"]:
        c["name"] = {"unilamellar": "round", "multilamellar": "onion"}.get(c["name"], "odd")
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(coco))
    import_coco(path, MICS / "images", tmp_path / "ds")
    dataset = load_dataset(tmp_path / "ds")
    assert dataset.problem.name == "custom"
    assert dataset.problem.classes == ("round", "onion", "odd")  # category order


def test_parse_class_map():
    assert parse_class_map("uni=3, multi=4") == {"uni": 3, "multi": 4}
    assert parse_class_map("a=round") == {"a": "round"}
    with pytest.raises(ConfigError, match="is not name=code"):
        parse_class_map("uni3")
    with pytest.raises(ConfigError, match="twice"):
        parse_class_map("a=3,a=4")


def _broken(tmp_path, change):
    coco = json.loads((MICS / "coco.json").read_text())
    change(coco)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(coco))
    return path


def _set(index, key, value):
    def change(coco):
        coco["annotations"][index][key] = value

    return change


def _drop_image_file(coco):
    coco["images"][2]["file_name"] = "m09.png"


COCO_PROBLEMS = [
    (
        _set(0, "category_id", 9),
        "ann.json, annotation 101: category_id 9 is not in categories (ids: 1, 2, 3). "
        "Correct the annotation or add the category.",
    ),
    (
        _set(0, "segmentation", [[10, 10, 20, 10]]),
        "ann.json, annotation 101: polygon 1 has 2 point(s); a polygon needs at least 3. "
        "Redraw it, or delete the annotation.",
    ),
    (
        _set(0, "segmentation", [[10, 10, 20, 10, 30, 10]]),
        "ann.json, annotation 101: polygon 1 is empty (zero area). Redraw it, or delete the "
        "annotation.",
    ),
    (
        _drop_image_file,
        "ann.json: image 3 file m09.png does not exist in {images}. Add the micrograph, or pass "
        "the folder holding it as --images.",
    ),
    (
        _set(0, "segmentation", [[300, 200, 380, 200, 380, 260]]),
        "ann.json, annotation 101: polygon 1 reaches (380, 200), outside its image m01.tif "
        "(360x270 px). Correct the annotation or its image_id.",
    ),
    (
        _set(0, "image_id", 7),
        "ann.json, annotation 101: image_id 7 is not in images. Correct the annotation or add "
        "the image.",
    ),
    (
        _set(1, "segmentation", {"size": [100, 100], "counts": "abc"}),
        "ann.json, annotation 102: its RLE mask is 100x100 px (size [h, w] = [100, 100]) but its "
        "image m01.tif is 360x270 px. Correct the annotation or its image_id.",
    ),
]


@pytest.mark.parametrize("change, line", COCO_PROBLEMS)
def test_inconsistent_annotations_are_one_line_each_and_nothing_is_written(tmp_path, change, line):
    with pytest.raises(ImportProblems) as info:
        import_coco(_broken(tmp_path, change), MICS / "images", tmp_path / "ds")
    assert info.value.problems == [line.format(images=MICS / "images")]
    assert not (tmp_path / "ds").exists()


def test_every_problem_is_listed(tmp_path):
    def change(coco):
        coco["annotations"][0]["category_id"] = 9
        coco["annotations"][3]["image_id"] = 7

    with pytest.raises(ImportProblems) as info:
        import_coco(_broken(tmp_path, change), MICS / "images", tmp_path / "ds")
    assert len(info.value.problems) == 2
    assert str(info.value).endswith("(and 1 more)")


def test_rle_counts_that_do_not_fill_the_mask_are_refused(tmp_path):
    change = _set(1, "segmentation", {"size": [270, 360], "counts": [5, 10]})
    with pytest.raises(ImportProblems, match="RLE counts do not add up to its size 360x270"):
        import_coco(_broken(tmp_path, change), MICS / "images", tmp_path / "ds")


def test_not_coco_and_occupied_out(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[1, 2]")
    with pytest.raises(DatasetError, match="is not COCO annotations"):
        import_coco(path, MICS / "images", tmp_path / "ds")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(DatasetError, match="already exists and is not empty"):
        import_coco(MICS / "coco.json", MICS / "images", tmp_path / "full")


# Instance label images ---------------------------------------------------------------


def test_labels_round_trip_masks_and_classes(tmp_path):
    result = import_labels(MICS / "images", MICS / "labels", MICS / "classes.csv", tmp_path / "ds")
    dataset = load_dataset(tmp_path / "ds")
    written = objects(tmp_path / "ds")
    assert len(dataset) == 15
    label_files = {"m01": "m01.png", "m02": "m02_masks.tif", "m03": "m03.tif"}
    by_id = {p.id: p for p in dataset.particles}
    for entry in TRUTH:
        pid = f"{entry['micrograph']}-{entry['label_value']}"
        p = by_id[pid]
        assert p.label == entry["class"] and p.meta["micrograph"] == entry["micrograph"]
        path = MICS / "labels" / label_files[entry["micrograph"]]
        labels = tifffile.imread(path) if path.suffix == ".tif" else np.array(Image.open(path))
        x, y, w, h = written[pid]["Crop"]
        own = labels == entry["label_value"]
        assert np.array_equal(p.mask, own[y : y + h, x : x + w])
        # The drawn mask, less what a later particle covers (labels cannot overlap).
        assert np.array_equal(own, truth_mask(entry) & own)
        assert (truth_mask(entry) & ~own).sum() < 0.2 * own.sum()
        assert written[pid]["InstanceLabel"] == entry["label_value"]
    # Both 16 and 32-bit label images are in the fixture.
    assert tifffile.imread(MICS / "labels" / "m03.tif").dtype == np.uint16
    assert tifffile.imread(MICS / "labels" / "m02_masks.tif").dtype == np.uint32
    assert result.edge_cut == 1


def _labels_copy(tmp_path):
    root = tmp_path / "in"
    shutil.copytree(MICS / "images", root / "images")
    shutil.copytree(MICS / "labels", root / "labels")
    shutil.copy(MICS / "classes.csv", root / "classes.csv")
    return root


def test_label_without_a_row_and_row_without_its_label(tmp_path):
    root = _labels_copy(tmp_path)
    lines = (root / "classes.csv").read_text().splitlines()
    lines[1] = "m01,7,unilamellar"  # label 1 loses its row; 7 is not in the image
    (root / "classes.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ImportProblems) as info:
        import_labels(root / "images", root / "labels", root / "classes.csv", tmp_path / "ds")
    assert info.value.problems == [
        "label 1 in m01.png has no row in classes.csv. Add a row: m01,1,CLASS.",
        "classes.csv, line 2: label 7 does not occur in m01.png. Correct the label, or "
        "remove the row.",
    ]
    assert not (tmp_path / "ds").exists()


def test_missing_label_image_and_size_mismatch(tmp_path):
    root = _labels_copy(tmp_path)
    (root / "labels" / "m03.tif").unlink()
    with pytest.raises(ImportProblems, match=r"micrograph m03.png has no label image"):
        import_labels(root / "images", root / "labels", root / "classes.csv", tmp_path / "ds")
    tifffile.imwrite(root / "labels" / "m03.tif", np.ones((10, 10), np.uint16))
    with pytest.raises(
        ImportProblems,
        match=r"label image m03.tif is 10x10 px but its "
        r"micrograph m03.png is 360x270 px",
    ):
        import_labels(root / "images", root / "labels", root / "classes.csv", tmp_path / "ds")


def test_plot_micrograph_crops_writes_a_png(tmp_path):
    from liposome_bench.plotting import plot_micrograph_crops

    image = micrograph_pixels("m01.tif")
    mask = np.zeros((30, 40), bool)
    mask[5:20, 10:30] = True
    path = plot_micrograph_crops(
        image,
        [
            {"crop": [10, 20, 40, 30], "label": "unilamellar", "mask": mask},
            {"crop": [0, 100, 30, 30], "label": "multilamellar", "edge_cut": True},
        ],
        tmp_path / "m.png",
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_label_image_with_several_pages_is_refused(tmp_path):
    from liposome_bench.importers import read_label_image

    tifffile.imwrite(tmp_path / "two.tif", np.zeros((2, 8, 8), np.uint16))
    with pytest.raises(DatasetError, match="two.tif holds 2 images; expected one label image"):
        read_label_image(tmp_path / "two.tif")
