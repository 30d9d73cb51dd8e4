"""`liposome-bench generate`."""

import pytest
from click.testing import CliRunner

from liposome_bench.cli import cli
from liposome_bench.dataset import load_export


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_generate_3000_encapsulation_particles_follows_table_2(tmp_path):
    """The issue's done criterion: the written export's class counts follow
    Table 2 (97.34 % full, 2.01 % uncertain, 0.65 % empty)."""
    out = tmp_path / "d"
    result = run(
        "generate", "--problem", "encapsulation", "--n", "3000", "--seed", "1", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    dataset = load_export(out)
    assert dataset.class_counts() == {"full": 2920, "empty": 19, "uncertain": 61}
    assert dataset.synthetic is True
    lines = result.stdout.splitlines()
    for cls, count, share, thesis in [
        ("full", 2920, "97.33%", "97.34%"),
        ("empty", 19, "0.63%", "0.65%"),
        ("uncertain", 61, "2.03%", "2.01%"),
    ]:
        assert any(
            cls in line and f" {count} " in line and share in line and thesis in line
            for line in lines
        ), (cls, result.stdout)


def test_generate_writes_the_options_into_the_particles(tmp_path):
    out = tmp_path / "d"
    result = run(
        "generate",
        "--problem",
        "lamellarity",
        "--n",
        "12",
        "--seed",
        "3",
        "--pixel-size",
        "2.0",
        "--dose",
        "30",
        "--difficulty",
        "0.2",
        "--label-noise",
        "0.1",
        "--out",
        str(out),
        "--montage",
        str(tmp_path / "m.png"),
    )
    assert result.exit_code == 0, result.output
    dataset = load_export(out)
    assert len(dataset) == 12
    assert {p.pixel_size_nm for p in dataset.particles} == {2.0}
    assert "seed 3, difficulty 0.2, label noise 0.1, dose 30 e/A^2" in dataset.description
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"Montage: {tmp_path / 'm.png'}" in result.stdout


def test_same_seed_writes_the_same_images(tmp_path):
    for name in ("a", "b"):
        result = run(
            "generate",
            "--problem",
            "lamellarity",
            "--n",
            "6",
            "--seed",
            "9",
            "--out",
            str(tmp_path / name),
        )
        assert result.exit_code == 0, result.output
    a, b = load_export(tmp_path / "a"), load_export(tmp_path / "b")
    assert a.fingerprint() == b.fingerprint()


def test_non_empty_out_is_a_one_line_error_and_nothing_is_written(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = run(
        "generate",
        "--problem",
        "lamellarity",
        "--n",
        "5",
        "--out",
        str(out),
        "--montage",
        str(tmp_path / "m.png"),
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: {out} already exists and is not empty. Choose another --out or delete it."
    )
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "m.png").exists()


def test_missing_out_is_a_usage_error(tmp_path):
    result = run("generate", "--problem", "lamellarity", "--n", "5")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == "Error: Missing option '--out'."


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--difficulty", "2"],
            "Invalid value for '--difficulty': 2.0 is not in the range 0<=x<=1.",
        ),
        (["--n", "0"], "Invalid value for '--n': 0 is not in the range x>=1."),
        (
            ["--pixel-size", "0.1"],
            "Invalid value for '--pixel-size': 0.1 is not in the range 0.5<=x<=5.",
        ),
        (["--dose", "0"], "Invalid value for '--dose': 0.0 is not in the range x>0."),
        (
            ["--problem", "size"],
            "Invalid value for '--problem': 'size' is not one of 'lamellarity', 'encapsulation'.",
        ),
    ],
)
def test_bad_options_are_refused(tmp_path, args, message):
    base = ["generate", "--problem", "lamellarity", "--out", str(tmp_path / "d")]
    result = run(*base, *args)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == f"Error: {message}"
    assert not (tmp_path / "d").exists()


def test_seed_below_zero_is_a_one_line_error(tmp_path):
    result = run(
        "generate",
        "--problem",
        "lamellarity",
        "--n",
        "5",
        "--seed",
        "-1",
        "--out",
        str(tmp_path / "d"),
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: seed must be a whole number >= 0; got -1."
    )
    assert not (tmp_path / "d").exists()


def test_help_ends_with_an_example_on_one_line():
    result = run("generate", "--help")
    assert result.exit_code == 0
    example = "Example: liposome-bench generate --problem encapsulation --n 3000 --seed 1 --out d"
    assert example in [line.strip() for line in result.output.splitlines()]
