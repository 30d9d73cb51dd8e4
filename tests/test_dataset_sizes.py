"""`dataset info`'s particle sizes and surround (issue 13)."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from liposome_bench.cli import cli
from liposome_bench.dataset import (
    Dataset,
    describe_dataset,
    particle_sizes,
    surround_warning,
    surrounds,
)
from liposome_bench.importers import import_coco

MICS = Path(__file__).resolve().parent.parent / "fixtures" / "micrographs"


def test_particle_sizes_are_equivalent_diameters_in_nm_or_px(tiny_dataset):
    sizes = particle_sizes(tiny_dataset)
    assert sizes["unit"] == "nm"
    p = tiny_dataset.particles[0]
    d = 2 * np.sqrt(p.mask.sum() / np.pi) * p.pixel_size_nm
    assert sizes["all"]["min"] <= d <= sizes["all"]["max"]
    uni = [
        2 * np.sqrt(q.mask.sum() / np.pi) * q.pixel_size_nm
        for q in tiny_dataset.particles
        if q.label == "unilamellar"
    ]
    assert sizes["per_class"]["unilamellar"]["median"] == pytest.approx(np.median(uni))
    # Multilamellar liposomes are the larger ones in the generator.
    assert (
        sizes["per_class"]["multilamellar"]["median"] > sizes["per_class"]["unilamellar"]["median"]
    )
    unknown = Dataset(
        tiny_dataset.problem,
        [dataclasses.replace(q, pixel_size_nm=float("nan")) for q in tiny_dataset.particles],
    )
    in_px = particle_sizes(unknown)
    assert in_px["unit"] == "px"
    assert in_px["all"]["median"] == pytest.approx(sizes["all"]["median"] / p.pixel_size_nm)


def test_surround_of_the_generator_is_the_thesis_50_px(tiny_dataset):
    stats = surrounds(tiny_dataset)
    assert stats["all"] == {"min": 50.0, "median": 50.0, "max": 50.0}
    assert stats["below"] == 0


def test_short_surround_is_warned_about_when_the_input_mode_uses_it(tmp_path):
    import_coco(MICS / "coco.json", MICS / "images", tmp_path / "ds", surround=4)
    from liposome_bench.dataset import load_dataset

    info = describe_dataset(load_dataset(tmp_path / "ds"))
    assert info["surround_px"]["all"]["median"] == 4
    assert info["surround_px"]["all"]["min"] == 0  # the particle cut by the edge
    assert surround_warning(info, "masked") is None
    assert surround_warning(info, "cropped") is None
    assert surround_warning(info, "surrounding") == (
        "the median surround is 4 px, far below the thesis's 50 px, and input mode "
        "'surrounding' feeds it to the CNN: its results are not comparable with the thesis's "
        "section 8.5. Re-import with --surround 50, or use --input-mode cropped or masked."
    )
    result = CliRunner().invoke(
        cli, ["dataset", "info", str(tmp_path / "ds"), "--input-mode", "surrounding"]
    )
    assert result.exit_code == 0, result.output
    assert "Warning: the median surround is 4 px" in result.stdout
    assert "Particle size (equivalent diameter, px)" in result.stdout
    result = CliRunner().invoke(cli, ["dataset", "info", str(tmp_path / "ds")])
    assert "median surround" not in result.stdout
