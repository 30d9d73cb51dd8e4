"""Gatan DM3/DM4 micrographs in ``dataset import`` (issue 23): pixels and the
pixel size from the file's calibration, read with ncempy; the files are
written by fixtures/make_dm4.py."""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from liposome_bench.cli import cli
from liposome_bench.dataset import load_dataset
from liposome_bench.errors import DatasetError
from liposome_bench.importers import import_coco, read_micrograph

pytest.importorskip("ncempy")

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MICS = FIXTURES / "micrographs"
_spec = importlib.util.spec_from_file_location("make_dm4", FIXTURES / "make_dm4.py")
make_dm4 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_dm4)


@pytest.mark.parametrize(
    "name, dtype, scale, unit, expected",
    [
        ("a.dm4", np.uint8, 2.5, "nm", 2.5),
        ("b.dm4", np.uint16, 0.0025, "µm", 2.5),
        ("c.dm3", np.int16, 12.0, "Å", 1.2),
        ("d.dm3", np.uint8, 3.0, "1/nm", float("nan")),
    ],
)
def test_read_micrograph_reads_dm_pixels_and_pixel_size(
    tmp_path, name, dtype, scale, unit, expected
):
    image = np.random.default_rng(1).integers(0, 200, (40, 56)).astype(dtype)
    path = make_dm4.write_dm(tmp_path / name, image, scale, unit)
    pixels, px, source = read_micrograph(path)
    assert pixels.shape == (40, 56)
    if dtype in (np.uint8, np.uint16):
        assert np.array_equal(pixels, image)
    if np.isnan(expected):
        assert np.isnan(px) and source == ""
    else:
        assert px == pytest.approx(expected) and source == "DM metadata"


def dm_copy_of_micrographs(tmp_path):
    """fixtures/micrographs with m01 as a DM4 (2.5 nm/px) and m02 as a DM3
    (0.0025 µm/px): same pixels, coco.json pointing at them."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("m01.tif", "m02.mrc"):
        pixels, _, _ = read_micrograph(MICS / "images" / name)
        suffix, scale, unit = (".dm4", 2.5, "nm") if name == "m01.tif" else (".dm3", 0.0025, "µm")
        make_dm4.write_dm(images / Path(name).with_suffix(suffix).name, pixels, scale, unit)
    shutil.copy(MICS / "images" / "m03.png", images / "m03.png")
    coco = json.loads((MICS / "coco.json").read_text())
    for im in coco["images"]:
        im["file_name"] = {"m01.tif": "m01.dm4", "m02.mrc": "m02.dm3"}.get(
            im["file_name"], im["file_name"]
        )
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    return tmp_path / "coco.json", images


def test_coco_import_of_dm_micrographs_takes_their_pixel_size(tmp_path):
    coco, images = dm_copy_of_micrographs(tmp_path)
    result = import_coco(coco, images, tmp_path / "ds", pixel_size_nm=1.0)
    assert result.per_class == {"unilamellar": 8, "multilamellar": 5, "uncertain": 2}
    assert [(m.micrograph, m.particles, m.pixel_size_from) for m in result.micrographs] == [
        ("m01", 5, "DM metadata"),
        ("m02", 5, "DM metadata"),
        ("m03", 5, "--pixel-size"),
    ]
    dataset = load_dataset(tmp_path / "ds")
    px = {p.meta["micrograph"]: p.pixel_size_nm for p in dataset.particles}
    assert px == {"m01": 2.5, "m02": 2.5, "m03": 1.0}
    # The crops are the DM file's pixels: the same as from the TIFF original.
    tiff = import_coco(MICS / "coco.json", MICS / "images", tmp_path / "tif")
    by_id = {p.id: p for p in load_dataset(tmp_path / "tif").particles}
    for p in dataset.particles:
        if p.meta["micrograph"] == "m01":
            assert np.array_equal(p.image, by_id[p.id].image)
    assert tiff.per_class == result.per_class


@pytest.mark.parametrize(
    "content", [b"", b"\x00\x00\x00\x04garbage", b"\x00\x00\x00\x07" + b"\x00" * 40]
)
def test_a_corrupt_dm_file_is_one_line_naming_it(tmp_path, content):
    (tmp_path / "bad.dm4").write_bytes(content)
    with pytest.raises(DatasetError, match=r"^bad\.dm4 cannot be read as a DM3/DM4 file"):
        read_micrograph(tmp_path / "bad.dm4")


def test_a_truncated_dm_file_fails_the_import_with_one_line(tmp_path):
    coco, images = dm_copy_of_micrographs(tmp_path)
    whole = (images / "m01.dm4").read_bytes()
    (images / "m01.dm4").write_bytes(whole[: len(whole) // 2])
    result = CliRunner().invoke(
        cli,
        [
            "dataset",
            "import",
            "coco",
            str(coco),
            "--images",
            str(images),
            "--out",
            str(tmp_path / "ds"),
        ],
    )
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "m01.dm4" in errors[0], result.output
    assert not (tmp_path / "ds").exists()
