"""Near-identical particle images (``duplicates``, issue 23): planted rotated,
flipped and re-noised copies in other micrographs are found, counted across
the grouping and joined by the suggested grouping; clean data raises none."""

import dataclasses

import imagehash
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from liposome_bench.cli import cli
from liposome_bench.dataset import Dataset, load_dataset, write_export
from liposome_bench.duplicates import (
    ORIENTATIONS,
    check_duplicates,
    find_near_duplicates,
    masked_crop,
    orient,
    pairs_across_folds,
    perceptual_hashes,
    suggest_grouping,
)
from liposome_bench.synth import generate_dataset

#: (original index, orientation index, noise sd as a share of the image's range)
PLANTED = [(0, 1, 0.0), (5, 4, 0.02), (9, 6, 0.01), (14, 3, 0.02)]


@pytest.fixture(scope="module")
def clean():
    """60 synthetic particles, 6 per micrograph."""
    dataset = generate_dataset("lamellarity", n=60, seed=4)
    for i, p in enumerate(dataset.particles):
        p.meta["micrograph"] = f"M{i // 6:02d}"
    return dataset


def plant_copies(dataset, planted=PLANTED, seed=0):
    """``dataset`` plus a turned, noised copy of each planted particle, each
    in a micrograph of its own ("C<n>")."""
    rng = np.random.default_rng(seed)
    particles = list(dataset.particles)
    for n, (i, o, noise) in enumerate(planted):
        p = dataset.particles[i]
        image = orient(p.image.astype(np.float32), o)
        image = image + rng.normal(0, noise * float(np.ptp(p.image)), image.shape)
        image = np.clip(image, 0, 255).astype(np.uint8)
        particles.append(
            dataclasses.replace(
                p,
                id=f"copy{n}",
                image=np.ascontiguousarray(image),
                mask=np.ascontiguousarray(orient(p.mask, o)),
                meta={"micrograph": f"C{n}"},
            )
        )
    return Dataset(dataset.problem, particles, synthetic=True)


def test_the_batched_hash_is_imagehash_phash(clean):
    crops = np.stack([masked_crop(p) for p in clean.particles[:6]])
    hashes = perceptual_hashes(crops)
    grey = np.clip((crops + 4.0) * (255.0 / 8.0), 0, 255).astype(np.uint8)
    for i in range(len(crops)):
        for o in range(len(ORIENTATIONS)):
            expected = imagehash.phash(Image.fromarray(np.ascontiguousarray(orient(grey[i], o))))
            assert int(hashes[i, o]) == int(str(expected), 16)


def test_clean_synthetic_data_has_no_near_duplicates(clean):
    assert find_near_duplicates(clean) == []
    report = check_duplicates(clean)
    assert report.group_by == "micrograph" and report.cross_group == 0 and not report.suggested


def test_planted_copies_are_found_across_micrographs(clean):
    dataset = plant_copies(clean)
    pairs = find_near_duplicates(dataset)
    n = len(clean)
    assert {(p.a, p.b) for p in pairs} == {(i, n + k) for k, (i, _, _) in enumerate(PLANTED)}
    assert all(p.correlation >= 0.85 for p in pairs)
    report = check_duplicates(dataset)
    assert report.cross_group == len(PLANTED)
    # Each copy's micrograph joins its original's: 4 fewer groups.
    assert report.n_suggested_groups == report.n_groups - len(PLANTED)
    for k, (i, _, _) in enumerate(PLANTED):
        assert report.suggested[f"copy{k}"] == report.suggested[clean.ids[i]]
    # Unlinked micrographs keep their names.
    assert report.suggested[clean.ids[30]] == "M05"


def test_a_copy_in_its_own_micrograph_does_not_cross_groups(clean):
    dataset = plant_copies(clean, [(0, 2, 0.0)])
    dataset.particles[-1].meta["micrograph"] = clean.particles[0].meta["micrograph"]
    report = check_duplicates(dataset)
    assert len(report.pairs) == 1 and report.cross_group == 0 and not report.suggested


def test_suggest_grouping_joins_chains():
    pairs = [
        type("P", (), {"a": 0, "b": 2})(),
        type("P", (), {"a": 2, "b": 4})(),
    ]
    groups = ["g1", "g1", "g3", "g9", "g5"]
    assert list(suggest_grouping(groups, pairs)) == ["g1", "g1", "g1", "g9", "g1"]
    assert pairs_across_folds(pairs, [0, 0, 1, 1, 1]) == 1


def test_dataset_check_reports_and_writes_the_grouping(clean, tmp_path):
    root = write_export(plant_copies(clean), tmp_path / "export")
    out = tmp_path / "groups.csv"
    result = CliRunner().invoke(cli, ["dataset", "check", str(root), "--write-grouping", str(out)])
    assert result.exit_code == 0, result.output
    assert f"Warning: {len(PLANTED)} near-duplicate pair(s)" in result.output
    assert f"; {len(PLANTED)} cross micrograph groups" in result.output
    assert "Suggested grouping: 10 groups instead of 14" in result.output
    assert f"use it with --group-file {out} --group-by group." in result.output
    # The written grouping is read back with --group-file and keeps each pair together.
    dataset = load_dataset(root, group_file=out)
    group = {p.id: p.meta["group"] for p in dataset.particles}
    for k, (i, _, _) in enumerate(PLANTED):
        assert group[f"copy{k}"] == group[clean.ids[i]]
    again = CliRunner().invoke(
        cli, ["dataset", "check", str(root), "--group-file", str(out), "--group-by", "group"]
    )
    assert again.exit_code == 0, again.output
    assert "; 0 cross group groups" in again.output


def test_dataset_check_on_clean_data_reports_none(clean, tmp_path):
    root = write_export(clean, tmp_path / "export")
    result = CliRunner().invoke(cli, ["dataset", "check", str(root)])
    assert result.exit_code == 0, result.output
    assert "Near-duplicates: none found." in result.output


@pytest.mark.parametrize(
    "content, message",
    [
        ("a,b\n", "expected a CSV with the header 'id,group'; got 'a,b'"),
        ("id,group\nnobody,g1\n", "has no group for particle"),
    ],
)
def test_a_bad_group_file_is_one_error_line(clean, tmp_path, content, message):
    root = write_export(clean, tmp_path / "export")
    bad = tmp_path / "groups.csv"
    bad.write_text(content)
    result = CliRunner().invoke(cli, ["dataset", "info", str(root), "--group-file", str(bad)])
    assert result.exit_code == 2
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and error[0].startswith("Error: --group-file") and message in error[0]


def test_benchmark_warns_when_test_folds_share_near_duplicates(clean, tmp_path):
    from liposome_bench.comparison import run_benchmark
    from liposome_bench.folds import Folds, make_folds
    from liposome_bench.progress import NullReporter

    dataset = plant_copies(clean)
    n = len(clean)
    messages = []

    class Reporter(NullReporter):
        def message(self, text):
            messages.append(text)

    # Folds that put the first two copies beside their originals, the others apart.
    fold_of = make_folds(dataset.y, dataset.problem.classes, 3, 0)
    for k, (i, _, _) in enumerate(PLANTED):
        fold_of[n + k] = fold_of[i] if k < 2 else (fold_of[i] + 1) % 3
    folds = Folds(k=3, seed=0, fingerprint=dataset.fingerprint(), fold_of=fold_of)
    summary = run_benchmark(
        None,
        dataset,
        cnn_models=[],
        folds=folds,
        out=tmp_path / "bench",
        svm_options={"C": 8.0, "gamma": 0.0078125},
        reporter=Reporter(),
        n_resamples=20,
    )
    facts = summary["folds"]["near_duplicates"]
    assert facts["pairs"] == len(PLANTED) and facts["across_folds"] == 2
    warned = [m for m in messages if "near-duplicate" in m]
    assert len(warned) == 1 and warned[0].startswith("Warning: 2 of 4 near-duplicate")
    skipped = run_benchmark(
        None,
        dataset,
        cnn_models=[],
        folds=folds,
        out=tmp_path / "bench2",
        svm_options={"C": 8.0, "gamma": 0.0078125},
        n_resamples=20,
        near_duplicates=False,
    )
    assert skipped["folds"]["near_duplicates"] is None


def test_group_file_and_group_pattern_together_are_refused(clean, tmp_path):
    root = write_export(clean, tmp_path / "export")
    groups = tmp_path / "groups.csv"
    groups.write_text("id,group\n" + "".join(f"{i},g\n" for i in clean.ids))
    result = CliRunner().invoke(
        cli,
        ["dataset", "info", str(root), "--group-file", str(groups), "--group-pattern", "(.*)"],
    )
    assert result.exit_code == 2
    assert "Error: --group-pattern and --group-file both set each particle's group" in result.output
