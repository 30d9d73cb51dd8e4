"""The ``cnn`` command: one epoch on the tiny export, its tables and files,
and its one-line errors."""

import json

import pytest
from click.testing import CliRunner

from liposome_bench.cli import cli


def run(*args):
    return CliRunner().invoke(cli, ["cnn", *map(str, args)])


def test_trains_and_prints_the_tables(tmp_path, tiny_export_copy, tiny_dataset):
    out = tmp_path / "results"
    result = run(
        "--problem",
        "lamellarity",
        "--data",
        tiny_export_copy,
        "--epochs",
        1,
        "--input-size",
        16,
        "--folds",
        3,
        "--augment",
        "rotation,shift",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    # First line: the device, by CPU model and instruction sets (or GPU), and backend.
    assert result.output.startswith("Training on ")
    assert "failed call to cuInit" not in result.output
    assert "lipnet-4: per-class metrics (one-vs-rest)" in result.output
    assert "normalised confusion matrix" in result.output
    assert "lipnet-4: folds" in result.output
    # the default fixed budget: every epoch trained, the last kept (issue 25)
    assert "lipnet-4 fold 0 (of 0-2): 1 epoch, the last kept" in result.output
    for name in tiny_dataset.problem.classes:
        assert name in result.output
    run_json = json.loads((out / "run.json").read_text())
    settings = run_json["models"]["lipnet-4"]
    assert settings["augment"] == ["rotation", "shift"]
    assert settings["input_mode"] == "masked" and settings["balance"] == "oversample"
    assert run_json["folds"] == {"k": 3, "seed": 0}
    for f in range(3):
        assert (out / "lipnet-4" / f"fold-{f}.csv").is_file()
        assert (out / "lipnet-4" / "models" / f"fold-{f}.keras").is_file()
    assert (tiny_export_copy / "folds" / "k3-seed0.json").is_file()

    # The same command again resumes: nothing left to train, same tables.
    again = run(
        "--problem",
        "lamellarity",
        "--data",
        tiny_export_copy,
        "--epochs",
        1,
        "--input-size",
        16,
        "--folds",
        3,
        "--augment",
        "rotation,shift",
        "--out",
        out,
    )
    assert again.exit_code == 0, again.output
    assert "3 of 3 folds already saved" in again.output


@pytest.mark.parametrize(
    "args, error",
    [
        (
            ["--augment", "rotate"],
            "Error: Unknown augmentation 'rotate' in --augment 'rotate'; expected 'all', "
            "'none' or a comma-separated list of flip, rotation, shear, shift, zoom.",
        ),
        (
            ["--folds", 10],
            "Error: 10 folds need at least 10 particles per class; 'uncertain' has 9. "
            "Use --folds 9.",
        ),
        (
            ["--patience", 4],
            "Error: --patience is set, but early stopping is off (a fixed budget of 30 "
            "epochs, the last kept). Add early stopping (macro_f1 or loss) for the patience "
            "to apply, or drop it.",
        ),
    ],
)
def test_bad_input_is_one_line(tmp_path, tiny_export_copy, args, error):
    result = run(
        "--problem", "lamellarity", "--data", tiny_export_copy, "--out", tmp_path / "r", *args
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == error
    assert not (tmp_path / "r").exists()


def test_other_settings_into_the_same_folder_are_refused(tmp_path, tiny_export_copy):
    out = tmp_path / "r"
    out.mkdir()
    (out / "run.json").write_text(
        json.dumps(
            {
                "schema_version": 1,
                "dataset": {"fingerprint": "0"},
                "folds": None,
                "models": {},
            }
        )
    )
    result = run("--problem", "lamellarity", "--data", tiny_export_copy, "--out", out, "--folds", 3)
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: {out} holds results for another dataset (fingerprint 0,")
    assert line.endswith("Use another --out or delete that folder.")


def test_help_ends_with_an_example():
    result = CliRunner().invoke(cli, ["cnn", "--help"])
    assert result.exit_code == 0
    assert "Example: liposome-bench cnn --problem lamellarity --model lipnet-4" in result.output
    for option in (
        "--input-mode",
        "--augment",
        "--balance",
        "--epochs",
        "--patience",
        "--batch-size",
        "--optimizer",
        "--mixed-precision",
        "--seed",
        "--folds",
        "--fold-seed",
        "--out",
        "--data",
    ):
        assert option in result.output


def test_defaults_match_the_library():
    from liposome_bench import cnn
    from liposome_bench.models import MODEL_NAMES

    params = {p.name: p for p in cli.commands["cnn"].params}
    assert params["epochs"].default == cnn.DEFAULT_EPOCHS
    assert params["patience"].default == cnn.DEFAULT_PATIENCE
    assert params["batch_size"].default == cnn.DEFAULT_BATCH_SIZE
    assert tuple(params["model"].type.choices) == MODEL_NAMES
    assert tuple(params["balance"].type.choices) == cnn.BALANCE_METHODS
    assert tuple(params["input_mode"].type.choices) == cnn.INPUT_MODES
