"""`liposome-bench dataset info` and `dataset check`."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from liposome_bench.cli import cli
from test_dataset import BROKEN, BROKEN_CASES, EXPORT_COUNTS, FIXTURES, SEVERAL_PROBLEMS


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_info_prints_counts_shares_sizes_and_folds():
    result = run("dataset", "info", str(FIXTURES / "export"))
    assert result.exit_code == 0, result.output
    out = result.stdout
    for cls, count in EXPORT_COUNTS.items():
        share = f"{100 * count / 21:.2f}%"
        assert any(
            cls in line and f" {count} " in line and share in line for line in out.splitlines()
        ), (cls, out)
    assert "Problem lamellarity, 21 particles" in out
    assert "Image size (px): min / median / max" in out
    assert "Masks: 21 from files, 0 derived from the image" in out
    assert "Folds: none stored yet" in out


def test_info_json_matches_the_dataset():
    result = run("dataset", "info", str(FIXTURES / "bmp-concatenated"), "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["problem"] == "encapsulation"
    assert {r["class"]: r["count"] for r in info["class_counts"]} == {
        "full": 2,
        "empty": 1,
        "uncertain": 1,
    }
    assert info["pixel_size_nm"]["median"] == 0.84


def test_info_reader_options_reach_the_reader(tmp_path):
    root = shutil.copytree(FIXTURES / "export", tmp_path / "d")
    (root / "images").rename(root / "pics")
    result = run(
        "dataset", "info", str(root), "--images-dir", "pics", "--pixel-size", "0.3", "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pixel_size_nm"]["min"] == 0.3


def test_info_without_path_needs_a_problem():
    result = run("dataset", "info")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: Give a dataset PATH, or --problem to describe the built-in synthetic dataset."
    )


def test_info_without_path_describes_the_built_in_dataset(tmp_path):
    synth = pytest.importorskip("liposome_bench.synth")
    # Put a small export where the cache keeps the built-in dataset, so
    # nothing has to be generated here.
    cached = synth.default_cache_dir(tmp_path) / (
        f"lamellarity-synthetic-v{synth.GENERATOR_VERSION}-seed0"
    )
    shutil.copytree(FIXTURES / "export", cached)
    result = run(
        "dataset", "info", "--problem", "lamellarity", "--cache-dir", str(tmp_path), "--json"
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["root"] == str(cached)
    assert info["n_particles"] == 21


def test_info_on_a_broken_dataset_prints_one_error_line():
    result = run("dataset", "info", str(BROKEN / "unknown-class"))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: particles.json, object 2 (Id 540002): Class 6 is not a lamellarity code (3, 4, 5)."
    )
    assert "Traceback" not in result.output


@pytest.mark.parametrize("name, inner, line", BROKEN_CASES, ids=[c[0] for c in BROKEN_CASES])
def test_check_lists_the_problem_and_exits_2(name, inner, line):
    path = str(BROKEN / name / inner if inner else BROKEN / name)
    result = run("dataset", "check", path)
    assert result.exit_code == 2
    assert result.stdout.splitlines() == [line]
    assert result.stderr.strip().splitlines()[-1] == f"Error: 1 problem(s) found in {path}."


def test_check_lists_every_problem():
    path = str(BROKEN / "several-problems")
    result = run("dataset", "check", path)
    assert result.exit_code == 2
    assert result.stdout.splitlines() == SEVERAL_PROBLEMS
    assert result.stderr.strip().splitlines()[-1] == f"Error: 3 problem(s) found in {path}."


@pytest.mark.parametrize(
    "path, options, first",
    [
        ("export", ["--folds", "5"], "OK: 21 particles (lamellarity), no problems found."),
        # These two lack pixel sizes, which the default (nm) features need.
        (
            "manifest/manifest.csv",
            ["--units", "px", "--folds", "3"],
            "OK: 6 particles (custom), no problems found.",
        ),
        (
            "folders",
            ["--pixel-size", "0.8", "--folds", "3"],
            "OK: 7 particles (encapsulation), no problems found.",
        ),
        (
            "mrc/particles.mrcs",
            ["--folds", "3"],
            "OK: 6 particles (lamellarity), no problems found.",
        ),
    ],
)
def test_check_says_ok_with_the_particle_count(path, options, first):
    result = run("dataset", "check", str(FIXTURES / path), *options)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == first


@pytest.mark.parametrize(
    "path, first_id, bad, n", [("folders", "empty-0", 7, 7), ("manifest/manifest.csv", "m5", 1, 6)]
)
def test_check_fails_up_front_when_the_default_features_need_a_pixel_size(path, first_id, bad, n):
    path = str(FIXTURES / path)
    result = run("dataset", "check", path, "--folds", "3")
    assert result.exit_code == 2
    assert result.stdout.splitlines() == [
        f"{bad} of {n} particles have no pixel size (first: particle {first_id}); the vironova "
        "features in nm that a default run computes need it (area_nm2, the edge profile's "
        "-52..+10 nm window). Pass --pixel-size NM (nm/px) to every command, record PixelSize "
        "in particles.json (pixel_size_nm in a manifest), or run with --units px."
    ]
    assert result.stderr.strip().splitlines()[-1] == f"Error: 1 problem(s) found in {path}."


def test_check_refuses_class_counts_too_small_for_the_folds():
    # 2 full, 1 empty, 1 uncertain: no 5-fold (or 2-fold) cross-validation.
    path = str(FIXTURES / "bmp-concatenated")
    result = run("dataset", "check", path)
    assert result.exit_code == 2
    assert result.stdout.splitlines() == [
        "bmp-concatenated: 5 folds need at least 5 particles per class; 'full' has 2. "
        "Use --folds 2, or add particles of that class.",
        "bmp-concatenated: 5 folds need at least 5 particles per class; 'empty' has 1. "
        "Add particles of that class, or remove it.",
        "bmp-concatenated: 5 folds need at least 5 particles per class; 'uncertain' has 1. "
        "Add particles of that class, or remove it.",
    ]
    assert result.stderr.strip().splitlines()[-1] == f"Error: 3 problem(s) found in {path}."


def test_check_refuses_a_single_class(tmp_path):
    root = tmp_path / "one"
    shutil.copytree(FIXTURES / "folders" / "full", root / "full")
    result = run("dataset", "check", str(root), "--folds", "2")
    assert result.exit_code == 2
    assert result.stdout.splitlines() == [
        "one: every particle is of one class ('full' (4)); a classifier needs particles of "
        "at least 2 classes. Add particles of the other classes."
    ]


def test_check_shows_warnings_but_passes(tmp_path):
    from PIL import Image

    root = shutil.copytree(FIXTURES / "export", tmp_path / "d")
    image = root / "images" / json.loads((root / "particles.json").read_text())[1]["Image"]
    gray = np.array(Image.open(image)).astype(np.float64)
    rgb = np.stack([gray, gray * 0.8, gray * 0.5], axis=-1).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(image)
    result = run("dataset", "check", str(root))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "OK: 21 particles (lamellarity), no problems found.",
        f"Warning: 1 colour image(s) converted to grayscale (first: images/{image.name}).",
        "Near-duplicates: none found.",
    ]


def test_check_with_a_problem_of_other_classes():
    path = str(FIXTURES / "manifest" / "manifest.csv")
    result = run("dataset", "check", path, "--problem", "encapsulation")
    assert result.exit_code == 2
    lines = result.stdout.splitlines()
    assert len(lines) == 6
    assert lines[1] == (
        "manifest.csv, line 3: label 'tubular' is not an encapsulation class "
        "(full, empty, uncertain)."
    )


def test_check_of_a_missing_path_is_a_usage_error(tmp_path):
    result = run("dataset", "check", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_help_ends_with_an_example():
    for command in ("info", "check"):
        result = run("dataset", command, "--help")
        assert result.exit_code == 0
        assert "Example: liposome-bench dataset " in result.stdout
