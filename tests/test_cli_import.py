"""`liposome-bench dataset import coco` and `dataset import labels`."""

import json
from pathlib import Path

from click.testing import CliRunner

from liposome_bench.cli import cli

MICS = Path(__file__).resolve().parent.parent / "fixtures" / "micrographs"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_import_coco_prints_the_summary_and_the_next_step(tmp_path):
    result = run(
        "dataset",
        "import",
        "coco",
        MICS / "coco.json",
        "--images",
        MICS / "images",
        "--out",
        tmp_path / "ds",
        "--pixel-size",
        "2.5",
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"Wrote 15 particles (lamellarity) from 3 micrographs to {tmp_path / 'ds'}" in out
    assert any("multilamellar" in line and " 5 " in line for line in out.splitlines())
    assert any(
        line.startswith("│ m03") and "2.5 (--pixel-size)" in line for line in out.splitlines()
    ), out
    assert "Kept 1 particle(s) cut by the micrograph's edge" in out
    assert f"Next: liposome-bench dataset check {tmp_path / 'ds'}" in out
    objects = json.loads((tmp_path / "ds" / "particles.json").read_text())
    assert {o["Micrograph"] for o in objects} == {"m01", "m02", "m03"}


def test_import_coco_lists_every_problem_and_writes_nothing(tmp_path):
    coco = json.loads((MICS / "coco.json").read_text())
    coco["annotations"][0]["category_id"] = 9
    coco["annotations"][2]["segmentation"] = [[1, 1, 2, 2]]
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    result = run(
        "dataset",
        "import",
        "coco",
        tmp_path / "ann.json",
        "--images",
        MICS / "images",
        "--out",
        tmp_path / "ds",
    )
    assert result.exit_code == 2
    assert result.stdout.splitlines() == [
        "ann.json, annotation 101: category_id 9 is not in categories (ids: 1, 2, 3). "
        "Correct the annotation or add the category.",
        "ann.json, annotation 103: polygon 1 has 2 point(s); a polygon needs at least 3. "
        "Redraw it, or delete the annotation.",
    ]
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: 2 problem(s) found; nothing was written."
    )
    assert not (tmp_path / "ds").exists()


def test_import_coco_box_masks_choice_and_drop_edge(tmp_path):
    result = run(
        "dataset",
        "import",
        "coco",
        MICS / "coco-boxes.json",
        "--images",
        MICS / "images",
        "--out",
        tmp_path / "ds",
        "--box-masks",
        "ellipse",
        "--drop-edge",
    )
    assert result.exit_code == 0, result.output
    assert "Dropped 1 particle(s) cut by the micrograph's edge (--drop-edge)." in result.stdout
    result = run(
        "dataset",
        "import",
        "coco",
        MICS / "coco-boxes.json",
        "--images",
        MICS / "images",
        "--out",
        tmp_path / "d2",
        "--box-masks",
        "circle",
    )
    assert result.exit_code == 2
    assert "'circle' is not one of 'box', 'ellipse'" in result.output


def test_import_labels(tmp_path):
    result = run(
        "dataset",
        "import",
        "labels",
        "--images",
        MICS / "images",
        "--labels",
        MICS / "labels",
        "--classes",
        MICS / "classes.csv",
        "--out",
        tmp_path / "ds",
        "--surround",
        "20",
    )
    assert result.exit_code == 0, result.output
    assert "Wrote 15 particles (lamellarity) from 3 micrographs" in result.stdout
    objects = json.loads((tmp_path / "ds" / "particles.json").read_text())
    first = next(o for o in objects if o["Id"] == "m01-3")
    x, y, w, h = first["BBox"]
    assert first["Crop"] == [x - 20, y - 20, w + 40, h + 40]
    # 2 uncertain particles among the 15: checked for 2-fold cross-validation.
    result = run("dataset", "check", tmp_path / "ds", "--pixel-size", "2.5", "--folds", "2")
    assert result.exit_code == 0, result.output


def _edge_coco(tmp_path):
    """A 64x64 micrograph with a 4x4 particle touching each edge and each
    corner, five inside, and a 40x12 micrograph (under the readers'
    16 px a side) with one particle: issue 23, item 1."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = tmp_path / "imgs"
    images.mkdir()
    anns, aid = [], 100
    # 4 corners, 4 edges, and 5 inside (5 folds need 5 particles a class).
    spots = [(x, y) for x in (0, 30, 60) for y in (0, 30, 60)] + [
        (15, 15),
        (45, 15),
        (15, 45),
        (45, 45),
    ]
    for name, (w, h), where in (("big.png", (64, 64), spots), ("thin.png", (40, 12), [(18, 4)])):
        pixels = rng.integers(90, 110, (h, w)).astype(np.uint8)
        for x, y in where:
            pixels[y : y + 4, x : x + 4] = 200
        Image.fromarray(pixels).save(images / name)
        for x, y in where:
            aid += 1
            anns.append(
                {
                    "id": aid,
                    "image_id": 1 if name == "big.png" else 2,
                    "category_id": 1 + aid % 2,
                    "bbox": [x, y, 4, 4],
                    "area": 16,
                    "iscrowd": 0,
                    "segmentation": [[x, y, x + 4, y, x + 4, y + 4, x, y + 4]],
                }
            )
    coco = {
        "images": [
            {"id": 1, "file_name": "big.png", "width": 64, "height": 64},
            {"id": 2, "file_name": "thin.png", "width": 40, "height": 12},
        ],
        "annotations": anns,
        "categories": [{"id": 1, "name": "unilamellar"}, {"id": 2, "name": "multilamellar"}],
    }
    path = tmp_path / "edges.json"
    path.write_text(json.dumps(coco))
    return path, images


def test_import_never_writes_a_particle_the_readers_refuse(tmp_path):
    coco, images = _edge_coco(tmp_path)
    result = run(
        "dataset",
        "import",
        "coco",
        coco,
        "--images",
        images,
        "--out",
        tmp_path / "ds",
        "--surround",
        "10",
        "--pixel-size",
        "1",
    )
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    # Corners give 4+10 = 14 px, edges 4+2*10 = 24 x 14: 8 crops widened.
    assert "Widened 8 crop(s) to the 16 px a side the readers need" in out
    assert "Dropped 1 particle(s) on micrographs under 16 px a side" in out
    assert "Wrote 13 particles" in out
    objects = json.loads((tmp_path / "ds" / "particles.json").read_text())
    crops = [o["Crop"] for o in objects]
    assert all(w >= 16 and h >= 16 for _, _, w, h in crops), crops
    assert all(0 <= x and x + w <= 64 and 0 <= y and y + h <= 64 for x, y, w, h in crops)
    for o in objects:  # the particle's box stays inside its widened crop
        bx, by, bw, bh = o["BBox"]
        cx, cy, cw, ch = o["Crop"]
        assert cx <= bx and bx + bw <= cx + cw and cy <= by and by + bh <= cy + ch
    check = run("dataset", "check", tmp_path / "ds")
    assert check.exit_code == 0, check.output


def test_import_coco_several_files_each_with_its_own_images_folder(tmp_path):
    """Issue 23, item 2: a Roboflow-like export (train/ and valid/, each with
    its COCO file and its images), annotation ids reused across the two."""
    import shutil

    coco = json.loads((MICS / "coco.json").read_text())
    first_image = coco["images"][0]["id"]
    for split, keep in (
        ("train", lambda i: i != first_image),
        ("valid", lambda i: i == first_image),
    ):
        folder = tmp_path / split
        folder.mkdir()
        images = [im for im in coco["images"] if keep(im["id"])]
        anns = [
            dict(a, id=k + 1)
            for k, a in enumerate(a for a in coco["annotations"] if keep(a["image_id"]))
        ]
        for im in images:
            shutil.copy(MICS / "images" / im["file_name"], folder / im["file_name"])
        (folder / "_annotations.coco.json").write_text(
            json.dumps(dict(coco, images=images, annotations=anns))
        )
    result = run(
        "dataset",
        "import",
        "coco",
        tmp_path / "train" / "_annotations.coco.json",
        tmp_path / "valid" / "_annotations.coco.json",
        "--out",
        tmp_path / "ds",
        "--pixel-size",
        "2.5",
    )
    assert result.exit_code == 0, result.output
    assert "Wrote 15 particles (lamellarity) from 3 micrographs" in result.stdout
    objects = json.loads((tmp_path / "ds" / "particles.json").read_text())
    ids = [o["Id"] for o in objects]
    assert len(set(ids)) == len(ids) == 15
    assert {o["Split"] for o in objects} == {"train", "valid"}
    assert {o["Split"] for o in objects if o["Micrograph"].endswith("m01")} == {"valid"}
    assert all(o["Micrograph"].startswith(o["Split"] + "/") for o in objects)
    assert {o["Annotations"] for o in objects} == {"_annotations.coco.json"}
    check = run("dataset", "check", tmp_path / "ds", "--folds", "2")  # 2 'uncertain'
    assert check.exit_code == 0, check.output
    # One --images per file is checked against the number of files.
    bad = run(
        "dataset",
        "import",
        "coco",
        tmp_path / "train" / "_annotations.coco.json",
        tmp_path / "valid" / "_annotations.coco.json",
        "--images",
        tmp_path / "train",
        "--images",
        tmp_path / "train",
        "--images",
        tmp_path / "valid",
        "--out",
        tmp_path / "d2",
    )
    assert bad.exit_code == 2
    assert "2 COCO files but 3 --images folders" in bad.output


def test_group_pattern_gives_one_group_per_roboflow_source_and_folds_keep_it(tmp_path):
    """Issue 23, item 3: Roboflow names its augmented copies of a source
    image SOURCE_jpg.rf.HASH; --group-pattern makes SOURCE the group."""
    import shutil

    from liposome_bench.dataset import load_dataset
    from liposome_bench.folds import load_or_make_folds
    from liposome_bench.importers import ROBOFLOW_GROUP_PATTERN

    coco = json.loads((MICS / "coco.json").read_text())
    images, anns, folder = [], [], tmp_path / "mics"
    folder.mkdir()
    for copy in ("a1b2", "c3d4"):
        for im in coco["images"]:
            stem, ext = im["file_name"].rsplit(".", 1)
            name = f"{stem}_jpg.rf.{copy}.{ext}"
            shutil.copy(MICS / "images" / im["file_name"], folder / name)
            new = dict(im, id=len(images) + 1, file_name=name)
            images.append(new)
            anns += [
                dict(a, id=len(anns) + 1 + k, image_id=new["id"])
                for k, a in enumerate(a for a in coco["annotations"] if a["image_id"] == im["id"])
            ]
    (tmp_path / "rf.json").write_text(json.dumps(dict(coco, images=images, annotations=anns)))
    result = run(
        "dataset",
        "import",
        "coco",
        tmp_path / "rf.json",
        "--images",
        folder,
        "--out",
        tmp_path / "ds",
        "--pixel-size",
        "2.5",
        "--group-pattern",
        ROBOFLOW_GROUP_PATTERN,
    )
    assert result.exit_code == 0, result.output
    dataset = load_dataset(tmp_path / "ds")
    assert len(dataset) == 30
    groups = {p.meta["group"] for p in dataset.particles}
    assert groups == {"m01", "m02", "m03"}
    folds = load_or_make_folds(dataset, k=2, seed=0, group_by="group")
    for key in groups:
        assert (
            len({f for f, p in zip(folds.fold_of, dataset.particles) if p.meta["group"] == key})
            == 1
        )
    assert len(set(folds.fold_of)) == 2
    # benchmark --group-by group (the SVM alone here) never splits a source.
    import pandas as pd

    from liposome_bench import comparison

    comparison.run_benchmark(
        None,
        tmp_path / "ds",
        cnn_models=[],
        k=2,
        group_by="group",
        out=tmp_path / "bench",
        svm_options={"C": 1.0, "gamma": 0.01},
        n_resamples=20,
        estimate=False,
        near_duplicates=False,
    )
    table = pd.read_csv(tmp_path / "bench" / "predictions.csv", dtype={"id": str})
    group_of = {p.id: p.meta["group"] for p in dataset.particles}
    assert (table.groupby(table["id"].map(group_of))["fold"].nunique() == 1).all()
    info = run("dataset", "info", tmp_path / "ds")
    assert info.exit_code == 0, info.output
    assert "Groups by group: 3 in all" in " ".join(info.stdout.split())
    # The readers take the same pattern: an import without it, read with it.
    plain = run(
        "dataset",
        "import",
        "coco",
        tmp_path / "rf.json",
        "--images",
        folder,
        "--out",
        tmp_path / "plain",
        "--pixel-size",
        "2.5",
    )
    assert plain.exit_code == 0, plain.output
    assert "group" not in load_dataset(tmp_path / "plain").particles[0].meta
    read = load_dataset(tmp_path / "plain", group_pattern=ROBOFLOW_GROUP_PATTERN)
    assert [p.meta["group"] for p in read.particles] == [p.meta["group"] for p in dataset.particles]
    info = run("dataset", "info", tmp_path / "plain", "--group-pattern", ROBOFLOW_GROUP_PATTERN)
    assert info.exit_code == 0, info.output
    assert "Groups by group: 3 in all" in " ".join(info.stdout.split())
    check = run(
        "dataset", "check", tmp_path / "plain", "--folds", "2", "--group-pattern", r"^(nope)"
    )
    assert check.exit_code == 2 and "does not match micrograph" in check.output
    # A pattern without a group, or one that misses a file, is refused.
    bad = run(
        "dataset",
        "import",
        "coco",
        tmp_path / "rf.json",
        "--images",
        folder,
        "--out",
        tmp_path / "d2",
        "--group-pattern",
        r"\.rf\.",
    )
    assert bad.exit_code == 2 and "has no capture group" in bad.output
    bad = run(
        "dataset",
        "import",
        "coco",
        tmp_path / "rf.json",
        "--images",
        folder,
        "--out",
        tmp_path / "d3",
        "--group-pattern",
        r"^(x\d+)_",
    )
    assert bad.exit_code == 2 and "does not match micrograph" in bad.output
    assert not (tmp_path / "d3").exists()


def test_no_pixel_size_warning_where_it_does_not_apply(tmp_path):
    """Issue 23, item 8: with --units px no pixel size is needed, so
    nothing is said about it; in nm it is one problem line, not also a
    warning."""
    coco = json.loads((MICS / "coco.json").read_text())
    png = [im for im in coco["images"] if im["file_name"].endswith(".png")]
    coco = dict(
        coco,
        images=png,
        annotations=[a for a in coco["annotations"] if a["image_id"] == png[0]["id"]],
    )
    (tmp_path / "png.json").write_text(json.dumps(coco))
    result = run(
        "dataset",
        "import",
        "coco",
        tmp_path / "png.json",
        "--images",
        MICS / "images",
        "--out",
        tmp_path / "ds",
    )
    assert result.exit_code == 0, result.output
    px = run("dataset", "check", tmp_path / "ds", "--folds", "2", "--units", "px")
    assert px.exit_code == 0, px.output
    assert "pixel size" not in px.output
    nm = run("dataset", "check", tmp_path / "ds", "--folds", "2")
    assert nm.exit_code == 2
    assert nm.output.count("no pixel size") == 1, nm.output


def test_import_star_pixel_size_and_class_counts(tmp_path):
    """Issue 23, item 5: a RELION particles STAR file (written here with
    starfile) at the fixture's particles' box centres."""
    import pandas as pd
    import pytest

    starfile = pytest.importorskip("starfile")
    coco = json.loads((MICS / "coco.json").read_text())
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    rows = [
        {
            "rlnMicrographName": f"mics/{files[a['image_id']]}",
            "rlnCoordinateX": a["bbox"][0] + a["bbox"][2] / 2,
            "rlnCoordinateY": a["bbox"][1] + a["bbox"][3] / 2,
            "rlnClassNumber": a["category_id"],
            "rlnOpticsGroup": 1,
        }
        for a in coco["annotations"]
        if not a.get("iscrowd")
    ]
    optics = pd.DataFrame(
        {
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnOpticsGroup": [1],
            "rlnMicrographPixelSize": [30.0],
        }
    )  # Angstrom: 3 nm/px
    starfile.write({"optics": optics, "particles": pd.DataFrame(rows)}, tmp_path / "p.star")
    names = {c["id"]: c["name"] for c in coco["categories"]}
    result = run(
        "dataset",
        "import",
        "star",
        tmp_path / "p.star",
        "--images",
        MICS / "images",
        "--diameter",
        30,
        "--out",
        tmp_path / "ds",
        "--classes",
        ",".join(f"{k}={v}" for k, v in names.items()),
    )
    assert result.exit_code == 0, result.output
    from liposome_bench.dataset import load_dataset

    dataset = load_dataset(tmp_path / "ds")
    expected = {}
    for r in rows:
        expected[names[r["rlnClassNumber"]]] = expected.get(names[r["rlnClassNumber"]], 0) + 1
    assert {c: n for c, n in dataset.class_counts().items() if n} == expected
    px = {p.meta["micrograph"]: p.pixel_size_nm for p in dataset.particles}
    assert px["m03"] == pytest.approx(3.0)  # PNG: the optics table's 30 A
    assert px["m01"] == pytest.approx(2.5) and px["m02"] == pytest.approx(2.5)  # own metadata
    out = " ".join(result.stdout.split())
    assert "3 (STAR optics)" in out


def _import_coco(out):
    return run(
        *("dataset", "import", "coco", MICS / "coco.json", "--images", MICS / "images"),
        *("--out", out, "--pixel-size", "2.5"),
    )


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert sum(line.startswith("Error:") for line in lines) == 1, result.output
    return lines[-1]


def test_an_export_that_does_not_read_back_leaves_nothing(tmp_path, monkeypatch):
    """Issue 26: the importer reads its export back with load_dataset before
    the rename. A writer that cuts a row off every image (so masks no longer
    fit) fails in one line, and neither --out nor its staging folder stays."""
    from liposome_bench.data import writer

    real = writer.to_pil_array
    monkeypatch.setattr(writer, "to_pil_array", lambda image: real(image)[:-1])
    out = tmp_path / "ds"
    line = _one_error_line(_import_coco(out))
    assert line.startswith(f"Error: The export written to {out} does not read back"), line
    assert ".tmp" not in line  # the problem is named under --out, not the staging folder
    assert list(tmp_path.iterdir()) == []


def test_an_export_the_reader_refuses_leaves_nothing(tmp_path, monkeypatch):
    from liposome_bench.data import writer
    from liposome_bench.errors import DatasetError

    def refuse(path, problem=None, **options):
        raise DatasetError(f"{path}/particles.json: object 1 has no Id.")

    # check_read_back reads the export back with the load_dataset it imports.
    monkeypatch.setattr(writer, "load_dataset", refuse)
    out = tmp_path / "ds"
    line = _one_error_line(_import_coco(out))
    assert line == (
        f"Error: The export written to {out} does not read back as what was imported "
        f"({out}/particles.json: object 1 has no Id.); nothing was written. Please report "
        "this with the command you ran."
    )
    assert list(tmp_path.iterdir()) == []


def test_an_export_that_reads_back_changed_is_refused(tmp_path, monkeypatch):
    """A reader that drops a particle or changes a label is caught too."""
    from liposome_bench.data import writer

    real = writer.load_dataset

    def drop_one(path, problem=None, **options):
        back = real(path, problem, **options)
        back.particles = back.particles[1:]
        return back

    monkeypatch.setattr(writer, "load_dataset", drop_one)
    line = _one_error_line(_import_coco(tmp_path / "ds"))
    assert "(14 particles instead of 15); nothing was written." in line
    assert list(tmp_path.iterdir()) == []
