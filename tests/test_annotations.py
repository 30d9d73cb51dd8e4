"""Annotation files and micrographs are checked whole before an import does
any work (liposome_bench.annotations, issue 26): every problem one line with
its id, nothing written, no traceback."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from liposome_bench.annotations import check_coco, check_micrograph_pixels, written_id
from liposome_bench.cli import cli
from liposome_bench.errors import DatasetError
from liposome_bench.importers import ImportProblems, import_coco

MICS = Path(__file__).resolve().parent.parent / "fixtures" / "micrographs"


def _coco():
    return json.loads((MICS / "coco.json").read_text())


def _write(tmp_path, coco, text=None):
    path = tmp_path / "ann.json"
    path.write_text(text if text is not None else json.dumps(coco))
    return path


def _with(change):
    coco = _coco()
    change(coco)
    return coco


def _ann(key, value, index=0):
    def change(coco):
        coco["annotations"][index][key] = value

    return change


def _two(first, second):
    def change(coco):
        coco["annotations"][0]["id"] = first
        coco["annotations"][1]["id"] = second

    return change


def _image(key, value, index=0):
    def change(coco):
        coco["images"][index][key] = value

    return change


def _category(key, value, index=1):
    def change(coco):
        coco["categories"][index][key] = value

    return change


PROBLEMS = [
    (_ann("id", [1, 2]), "ann.json, annotation #1: id [1, 2] is not an integer or a string."),
    (
        _ann("image_id", {"a": 1}),
        ("annotation 101: image_id {'a': 1} is not an integer or a string."),
    ),
    (_ann("category_id", True), "annotation 101: category_id True is not an integer"),
    (
        _ann("segmentation", {"size": ["270", None], "counts": "abc"}),
        "annotation 101: its RLE size ['270', None] is not [height, width] in whole pixels.",
    ),
    (
        _ann("segmentation", {"size": [float("nan"), 360], "counts": "abc"}),
        "annotation 101: its RLE size [nan, 360] is not",
    ),
    (
        _ann("segmentation", {"size": [1e309, 360], "counts": [1, 2]}),
        "annotation 101: its RLE size [inf, 360] is not",
    ),
    (_ann("segmentation", [[1, 2, "3", 4, 5, 6]]), "annotation 101: polygon 1 is [1, 2, '3', "),
    (
        _ann("bbox", [1, 2, float("inf"), 4]),
        ("annotation 101: bbox [1, 2, inf, 4] is not 4 finite numbers"),
    ),
    (_two(7, "007"), "annotation '007': id '007' is written as particle '7', as is annotation 7"),
    (
        _two(101, "101"),
        ("annotation '101': id '101' is written as particle '101', as is annotation 101"),
    ),
    (
        _two("a/b", "a_b"),
        ("annotation 'a_b': id 'a_b' is written as particle 'a_b', as is annotation 'a/b'"),
    ),
    (_two(5, 5), "annotation 5: id 5 is used twice."),
    (_image("width", "360"), "ann.json: image 1: width '360' is not a positive whole number"),
    (_image("height", 27.5), "ann.json: image 1: height 27.5 is not a positive whole number"),
    (_image("id", 2), "ann.json: image 2: id 2 is used twice."),
    (
        _image("file_name", "m02.tif"),
        ("ann.json: image 2: file 'm02.mrc' has the stem 'm02' of image 1's file"),
    ),
    (
        _category("id", 1),
        ("ann.json: category 1: id 1 is used twice ('unilamellar' and 'multilamellar')."),
    ),
    (
        _category("name", "unilamellar"),
        (
            "ann.json: category 2: name 'unilamellar' is also "
            "category 1's; the two would be one class."
        ),
    ),
    (_category("id", [1]), "ann.json: category 2: id [1] is not an integer or a string."),
]


@pytest.mark.parametrize("change, line", PROBLEMS)
def test_a_malformed_coco_file_is_one_line_naming_the_id(tmp_path, change, line):
    path = _write(tmp_path, _with(change))
    with pytest.raises(ImportProblems) as info:
        import_coco(path, MICS / "images", tmp_path / "ds")
    assert line in info.value.problems[0]
    assert all("\n" not in p for p in info.value.problems)
    assert not (tmp_path / "ds").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ann.json"]


def test_the_well_formed_fixture_has_no_problem():
    assert check_coco(_coco(), "coco.json") == []


def test_every_problem_of_the_file_is_collected():
    def change(coco):
        coco["annotations"][0]["id"] = [1]
        coco["annotations"][3]["bbox"] = "x"
        coco["images"][1]["width"] = "wide"
        coco["categories"][2]["name"] = ""

    problems = check_coco(_with(change), "ann.json")
    assert len(problems) == 4
    assert sum("annotation" in p for p in problems) == 2


def test_deep_nesting_is_one_line(tmp_path):
    path = _write(tmp_path, None, text='{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(DatasetError, match="nested too deeply") as info:
        import_coco(path, MICS / "images", tmp_path / "ds")
    assert "\n" not in str(info.value)


def test_written_id_is_what_the_export_reader_reads_back():
    from liposome_bench.data.writer import _json_id

    for raw in (7, "007", "a/b", " x ", "101"):
        written = written_id(raw)
        assert str(_json_id(written)) == written


@pytest.mark.parametrize(
    "pixels, message",
    [
        (np.array([[0.0, np.nan], [1.0, 2.0]], np.float32), "1 pixel\\(s\\) are NaN or infinite"),
        (np.array([[0.0, np.inf], [-np.inf, 2.0]], np.float64), "2 pixel\\(s\\) are NaN"),
        (np.full((4, 4), 3.5, np.float32), "every pixel is 3.5"),
        (np.zeros((4, 4), np.float64), "every pixel is 0.0"),
    ],
)
def test_non_finite_or_constant_micrographs_are_refused(pixels, message):
    with pytest.raises(DatasetError, match=message):
        check_micrograph_pixels(pixels, "m.tif")


def test_integer_micrographs_are_kept_as_they_are():
    check_micrograph_pixels(np.zeros((4, 4), np.uint16), "m.tif")  # no stretch, no problem


def test_a_float_tiff_with_one_nan_is_refused_before_anything_is_written(tmp_path):
    tifffile = pytest.importorskip("tifffile")

    images = shutil.copytree(MICS / "images", tmp_path / "images")
    pixels = tifffile.imread(images / "m01.tif").astype(np.float32)
    pixels[5, 5] = np.nan
    tifffile.imwrite(images / "m01.tif", pixels)
    result = CliRunner().invoke(
        cli,
        [
            "dataset",
            "import",
            "coco",
            str(MICS / "coco.json"),
            "--images",
            str(images),
            "--out",
            str(tmp_path / "ds"),
        ],
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert lines == [
        (
            "Error: m01.tif: 1 pixel(s) are NaN or infinite; the grey scale cannot be "
            "stretched and every crop would be black. Fix or replace the micrograph "
            "(e.g. set those pixels to the image's mean)."
        )
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


def test_cli_lists_every_problem_and_writes_nothing(tmp_path):
    path = _write(tmp_path, _with(_two(7, "007")))
    result = CliRunner().invoke(
        cli,
        [
            "dataset",
            "import",
            "coco",
            str(path),
            "--images",
            str(MICS / "images"),
            "--out",
            str(tmp_path / "ds"),
        ],
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == (
        "Error: 1 problem(s) found; nothing was written."
    )
    assert not (tmp_path / "ds").exists()
