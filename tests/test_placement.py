"""Predictions back on the micrographs (issue 22): `predict --coco-results`
and `predict --overlays` on a dataset imported from the COCO fixture."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from liposome_bench.cli import cli

MICS = Path(__file__).resolve().parent.parent / "fixtures" / "micrographs"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The fixture's 15 particles imported, and an SVM bundle trained on them
    (fixed C and gamma: 2 uncertain particles are too few for a grid search)."""
    root = tmp_path_factory.mktemp("placement")
    result = run(
        "dataset",
        "import",
        "coco",
        MICS / "coco.json",
        "--images",
        MICS / "images",
        "--out",
        root / "ds",
        "--pixel-size",
        "2.5",
    )
    assert result.exit_code == 0, result.output
    (root / "svm.toml").write_text("[svm]\nC = 8.0\ngamma = 0.0078125\n")
    result = run(
        "train",
        "--model",
        "svm",
        "--data",
        root / "ds",
        "--folds",
        "2",
        "--config",
        root / "svm.toml",
        "--out",
        root / "m",
    )
    assert result.exit_code == 0, result.output
    return root


def predict(root, *extra, data=None):
    return run(
        "predict",
        root / "m",
        "--data",
        data or root / "ds",
        "--out",
        root / "p.csv",
        *extra,
    )


def test_coco_results_load_with_pycocotools_and_keep_the_source_ids(imported, tmp_path):
    from pycocotools.coco import COCO

    out = tmp_path / "results.json"
    result = predict(imported, "--min-confidence", "0.8", "--coco-results", out)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(imported / "p.csv", dtype={"id": str})
    kept = table[~table["abstained"]]
    assert 0 < len(kept) < len(table)  # both kinds, so leaving abstentions out is tested
    assert f"COCO results written to {out} ({len(kept)} particles; " in result.stdout
    results = json.loads(out.read_text())
    assert sorted(r["particle_id"] for r in results) == sorted(kept["id"])

    gt = COCO(str(MICS / "coco.json"))
    dt = gt.loadRes(str(out))
    assert len(dt.getAnnIds()) == len(kept)
    names = {c["id"]: c["name"] for c in gt.dataset["categories"]}
    predicted = dict(zip(kept["id"], kept["predicted"]))
    confidence = dict(zip(kept["id"], kept["confidence"]))
    for ann in dt.dataset["annotations"]:
        source = gt.anns[ann["annotation_id"]]
        assert ann["image_id"] == source["image_id"]
        assert names[ann["category_id"]] == predicted[ann["particle_id"]]
        assert ann["score"] == pytest.approx(confidence[ann["particle_id"]], abs=1e-5)
        # The mask is the annotated particle's own, over its whole micrograph.
        mine, theirs = dt.annToMask(ann).astype(bool), gt.annToMask(source).astype(bool)
        assert (mine & theirs).sum() / (mine | theirs).sum() > 0.99
    # The instances file docs/deploy.md makes for annotation tools loads back.
    instances = tmp_path / "predicted.json"
    instances.write_text(json.dumps(dt.dataset))
    assert len(COCO(str(instances)).anns) == len(kept)


def test_overlays_draw_one_png_per_micrograph(imported, tmp_path):
    out = tmp_path / "overlays"
    result = predict(imported, "--min-confidence", "0.8", "--overlays", out)
    assert result.exit_code == 0, result.output
    assert "3 overlay(s) drawn in" in result.stdout
    pngs = sorted(p.name for p in out.iterdir())
    assert pngs == ["m01.png", "m02.png", "m03.png"]
    for name in pngs:
        pixels = np.asarray(Image.open(out / name).convert("RGB"), dtype=np.int16)
        assert pixels.shape[0] > 200 and pixels.std() > 10  # not blank
        # Coloured outlines (a grey micrograph has r == g == b everywhere else).
        spread = pixels.max(axis=2) - pixels.min(axis=2)
        assert (spread > 60).sum() > 50


def test_overlays_need_the_micrographs(imported, tmp_path):
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    result = predict(imported, "--overlays", tmp_path / "o", "--micrographs", empty)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"Error: --overlays: micrograph m01.tif is not in {empty}. Pass the folder holding "
        "the micrographs with --micrographs DIR."
    )
    assert not (tmp_path / "o").exists()
    moved = tmp_path / "moved"
    shutil.copytree(MICS / "images", moved)
    result = predict(imported, "--overlays", tmp_path / "o", "--micrographs", moved)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "o").iterdir())) == 3


def test_a_dataset_imported_before_the_source_was_kept_is_refused(imported, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(imported / "ds", old)
    meta = json.loads((old / "dataset.json").read_text())
    del meta["source"]
    (old / "dataset.json").write_text(json.dumps(meta))
    (imported / "p.csv").unlink(missing_ok=True)
    result = predict(imported, "--coco-results", tmp_path / "r.json", data=old)
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: --coco-results: {old} records no micrographs")
    assert line.endswith(
        "Import it again with `liposome-bench dataset import coco` (or `labels`, `star`)."
    )
    assert not (tmp_path / "r.json").exists()
    assert not (imported / "p.csv").exists()  # nothing half-written


def test_coco_results_need_a_coco_import(imported, tmp_path):
    result = run(
        "predict",
        imported / "m",
        "--data",
        Path(__file__).resolve().parent.parent / "fixtures" / "export",
        "--coco-results",
        tmp_path / "r.json",
        "--out",
        tmp_path / "p.csv",
    )
    assert result.exit_code == 2
    assert "Error: --coco-results" in result.output
    assert not (tmp_path / "p.csv").exists()


def test_micrographs_without_overlays_is_one_line(imported, tmp_path):
    result = predict(imported, "--micrographs", MICS / "images")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "Error: --micrographs is the folder for --overlays; pass --overlays DIR too."
    )
