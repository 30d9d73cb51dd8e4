"""`liposome-bench dataset import coco` and `dataset import labels`."""

import json
from pathlib import Path

from click.testing import CliRunner

from liposome_bench.cli import cli

MICS = Path(__file__).resolve().parent.parent / "fixtures" / "micrographs"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_import_coco_prints_the_summary_and_the_next_step(tmp_path):
    result = run("dataset", "import", "coco", MICS / "coco.json", "--images", MICS / "images",
                 "--out", tmp_path / "ds", "--pixel-size", "2.5")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"Wrote 15 particles (lamellarity) from 3 micrographs to {tmp_path / 'ds'}" in out
    assert any("multilamellar" in line and " 5 " in line for line in out.splitlines())
    assert any(line.startswith("│ m03") and "2.5 (--pixel-size)" in line
               for line in out.splitlines()), out
    assert "Kept 1 particle(s) cut by the micrograph's edge" in out
    assert f"Next: liposome-bench dataset check {tmp_path / 'ds'}" in out
    objects = json.loads((tmp_path / "ds" / "particles.json").read_text())
    assert {o["Micrograph"] for o in objects} == {"m01", "m02", "m03"}


def test_import_coco_lists_every_problem_and_writes_nothing(tmp_path):
    coco = json.loads((MICS / "coco.json").read_text())
    coco["annotations"][0]["category_id"] = 9
    coco["annotations"][2]["segmentation"] = [[1, 1, 2, 2]]
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    result = run("dataset", "import", "coco", tmp_path / "ann.json", "--images",
                 MICS / "images", "--out", tmp_path / "ds")
    assert result.exit_code == 2
    assert result.stdout.splitlines() == [
        "ann.json, annotation 101: category_id 9 is not in categories (ids: 1, 2, 3). "
        "Correct the annotation or add the category.",
        "ann.json, annotation 103: polygon 1 has 2 point(s); a polygon needs at least 3. "
        "Redraw it, or delete the annotation.",
    ]
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: 2 problem(s) found; nothing was written.")
    assert not (tmp_path / "ds").exists()


def test_import_coco_box_masks_choice_and_drop_edge(tmp_path):
    result = run("dataset", "import", "coco", MICS / "coco-boxes.json", "--images",
                 MICS / "images", "--out", tmp_path / "ds", "--box-masks", "ellipse",
                 "--drop-edge")
    assert result.exit_code == 0, result.output
    assert "Dropped 1 particle(s) cut by the micrograph's edge (--drop-edge)." in result.stdout
    result = run("dataset", "import", "coco", MICS / "coco-boxes.json", "--images",
                 MICS / "images", "--out", tmp_path / "d2", "--box-masks", "circle")
    assert result.exit_code == 2
    assert "'circle' is not one of 'box', 'ellipse'" in result.output


def test_import_labels(tmp_path):
    result = run("dataset", "import", "labels", "--images", MICS / "images", "--labels",
                 MICS / "labels", "--classes", MICS / "classes.csv", "--out", tmp_path / "ds",
                 "--surround", "20")
    assert result.exit_code == 0, result.output
    assert "Wrote 15 particles (lamellarity) from 3 micrographs" in result.stdout
    objects = json.loads((tmp_path / "ds" / "particles.json").read_text())
    first = next(o for o in objects if o["Id"] == "m01-3")
    x, y, w, h = first["BBox"]
    assert first["Crop"] == [x - 20, y - 20, w + 40, h + 40]
    # 2 uncertain particles among the 15: checked for 2-fold cross-validation.
    result = run("dataset", "check", tmp_path / "ds", "--pixel-size", "2.5", "--folds", "2")
    assert result.exit_code == 0, result.output
