"""The ``features`` command: tables on disk, and its one-line errors."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from liposome_bench.cli import cli
from liposome_bench.dataset import Dataset, write_export
from liposome_bench.features import FEATURE_SETS, compute_particle_features, compute_profiles


def run(*args):
    return CliRunner().invoke(cli, ["features", *map(str, args)])


def read_table(path):
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype={"id": str, "label": str})
    return pd.read_parquet(path)


@pytest.mark.parametrize("name,feature_set", [("f.csv", "vironova"), ("f.parquet", "all")])
def test_writes_a_table_pandas_reads(tmp_path, tiny_export_copy, tiny_dataset, name, feature_set):
    out = tmp_path / "tables" / name
    result = run(
        "--data",
        tiny_export_copy,
        "--problem",
        "lamellarity",
        "--out",
        out,
        "--feature-set",
        feature_set,
        "--folds",
        3,
        "--fold-seed",
        4,
    )
    assert result.exit_code == 0, result.output
    columns = FEATURE_SETS[feature_set]
    assert (
        f"Wrote 45 particles x {len(columns)} features ({feature_set}, computed) to {out}."
        in result.output
    )
    table = read_table(out)
    assert list(table.columns) == ["id", "label", "fold", *columns]
    assert table["id"].tolist() == tiny_dataset.ids
    assert table["label"].tolist() == [p.label for p in tiny_dataset.particles]
    stored = json.loads((tiny_export_copy / "folds" / "k3-seed4.json").read_text())
    assert table["fold"].tolist() == [stored["folds"][i] for i in tiny_dataset.ids]
    assert all(table[c].dtype == np.float64 for c in columns)
    assert np.isfinite(table[list(columns)].to_numpy()).all()
    assert [p.name for p in out.parent.iterdir()] == [name]  # no temporary file left


@pytest.mark.parametrize("name,got", [("features.txt", "'.txt'"), ("features", "no extension")])
def test_refuses_other_extensions(tmp_path, tiny_export, name, got):
    out = tmp_path / name
    result = run("--data", tiny_export, "--problem", "lamellarity", "--out", out)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"Error: --out {out}: expected a .parquet or .csv file name, got {got}. "
        f"Use e.g. --out {out.with_suffix('.parquet').name}."
    )
    assert not out.exists()


def test_export_source_without_precomputed_features(tmp_path, tiny_export, tiny_dataset):
    out = tmp_path / "f.csv"
    result = run(
        "--data", tiny_export, "--problem", "lamellarity", "--out", out, "--source", "export"
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"Error: Particle {tiny_dataset.ids[0]} has no precomputed Area in the export, which "
        "feature set 'vironova' needs. Use --source computed to compute the features from "
        "the images."
    )
    assert not out.exists()


def with_export_features(dataset):
    """The dataset with the lab export's precomputed features attached."""
    particles = []
    for p in dataset.particles:
        f = compute_particle_features(p.image, p.mask, p.pixel_size_nm)
        profiles = compute_profiles(p.image, p.mask, p.pixel_size_nm)
        feats = {
            "Area": f["area_nm2"],
            "Circularity": f["circularity"],
            "Moments": [f[c] for c in ("mu20", "mu02", "mu30", "mu03")],
            "Histogram": [f[f"hist_{i:02d}"] for i in range(32)],
            "EdgeDensityProfile": profiles["EdgeDensityProfile"].tolist(),
        }
        particles.append(dataclasses.replace(p, features=feats))
    return Dataset(dataset.problem, particles)


def test_export_source_reads_the_precomputed_features(tmp_path, tiny_dataset, tiny_export):
    export = write_export(with_export_features(tiny_dataset), tmp_path / "export")
    from_export, computed = tmp_path / "export.csv", tmp_path / "computed.csv"
    result = run(
        "--data",
        export,
        "--problem",
        "lamellarity",
        "--out",
        from_export,
        "--source",
        "export",
        "--folds",
        3,
    )
    assert result.exit_code == 0, result.output
    result = run("--data", tiny_export, "--problem", "lamellarity", "--out", computed, "--folds", 3)
    assert result.exit_code == 0, result.output
    a, b = read_table(from_export), read_table(computed)
    assert list(a.columns) == list(b.columns)
    columns = list(FEATURE_SETS["vironova"])
    assert np.allclose(a[columns].to_numpy(), b[columns].to_numpy(), rtol=1e-6)


def test_missing_pixel_size_is_an_error_that_pixel_size_fixes(tmp_path, tiny_dataset):
    unknown = Dataset(
        tiny_dataset.problem,
        [dataclasses.replace(p, pixel_size_nm=float("nan")) for p in tiny_dataset.particles],
    )
    export = write_export(unknown, tmp_path / "export")
    out = tmp_path / "f.parquet"
    result = run("--data", export, "--problem", "lamellarity", "--out", out, "--folds", 3)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"Error: Particle {tiny_dataset.ids[0]} has no pixel size (45 of 45 particles); the "
        "features in nm need a positive pixel size. Pass --pixel-size NM, record PixelSize "
        "in particles.json (pixel_size_nm in a manifest), or use --units px."
    )
    assert not out.exists()
    result = run(
        "--data",
        export,
        "--problem",
        "lamellarity",
        "--out",
        out,
        "--folds",
        3,
        "--pixel-size",
        1.6,
    )
    assert result.exit_code == 0, result.output
    assert len(read_table(out)) == 45


def test_units_px_needs_no_pixel_size(tmp_path, tiny_dataset):
    unknown = Dataset(
        tiny_dataset.problem,
        [dataclasses.replace(p, pixel_size_nm=float("nan")) for p in tiny_dataset.particles],
    )
    export = write_export(unknown, tmp_path / "export")
    out = tmp_path / "f.csv"
    result = run("--data", export, "--out", out, "--folds", 3, "--units", "px")
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Wrote 45 particles x 70 features (vironova, computed, in px) to {out}."
    )
    table = read_table(out)
    assert "area_px" in table.columns and "area_nm2" not in table.columns
