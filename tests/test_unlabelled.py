"""Readers with labels="optional" (predict) read unlabelled particles;
with the default labels="required" (training) they still refuse them."""

import csv
import json
import shutil

import numpy as np
import pytest

from liposome_bench.dataset import load_dataset
from liposome_bench.errors import DatasetError


def test_export_without_class(tiny_export_copy):
    path = tiny_export_copy / "particles.json"
    objects = json.loads(path.read_text())
    for obj in objects[:4]:
        del obj["Class"]
    objects[4]["Class"] = None  # a null Class is unlabelled too
    path.write_text(json.dumps(objects))
    with pytest.raises(DatasetError, match='no "Class" code'):
        load_dataset(tiny_export_copy)
    dataset = load_dataset(tiny_export_copy, labels="optional")
    assert len(dataset) == len(objects)
    assert [p.label for p in dataset.particles[:5]] == [None] * 5
    assert all(p.label is not None for p in dataset.particles[5:])
    assert not dataset.labelled


def test_manifest_without_label_column(tmp_path):
    src = shutil.copytree("fixtures/manifest", tmp_path / "m")
    rows = list(csv.DictReader(open(src / "manifest.csv")))
    with open(src / "blind.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["image", "mask", "id", "pixel_size_nm"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in ("image", "mask", "id", "pixel_size_nm")})
    with pytest.raises(DatasetError, match="no 'label' column"):
        load_dataset(src / "blind.csv")
    dataset = load_dataset(src / "blind.csv", labels="optional")
    assert [p.id for p in dataset.particles] == [r["id"] for r in rows]
    assert all(p.label is None for p in dataset.particles)


def test_plain_folder_of_images(tmp_path):
    folder = tmp_path / "new"
    folder.mkdir()
    for f in sorted((shutil.os.listdir("fixtures/folders/full")))[:3]:
        shutil.copy(f"fixtures/folders/full/{f}", folder / f)
    with pytest.raises(DatasetError, match="neither particles.json nor class folders"):
        load_dataset(folder)
    dataset = load_dataset(folder, labels="optional", pixel_size_nm=1.0)
    assert len(dataset) == 3 and all(p.label is None for p in dataset.particles)
    assert dataset.ids == ["full-0", "full-1", "full-2"]
    assert all(p.mask.any() for p in dataset.particles)


def test_mrc_stack_without_its_csv(tmp_path):
    mrcfile = pytest.importorskip("mrcfile")
    stack = np.random.default_rng(0).normal(size=(2, 40, 40)).astype(np.float32)
    yy, xx = np.mgrid[:40, :40]
    stack[:, (yy - 20) ** 2 + (xx - 20) ** 2 < 100] += 5
    with mrcfile.new(tmp_path / "s.mrcs") as mrc:
        mrc.set_data(stack)
    with pytest.raises(DatasetError, match="needs its labels in s.csv"):
        load_dataset(tmp_path / "s.mrcs")
    dataset = load_dataset(tmp_path / "s.mrcs", labels="optional")
    assert dataset.ids == ["1", "2"] and all(p.label is None for p in dataset.particles)


def test_unknown_labels_policy_is_refused(tiny_export):
    with pytest.raises(ValueError, match="labels must be one of required, optional"):
        load_dataset(tiny_export, labels="maybe")
