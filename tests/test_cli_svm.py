"""The `svm` command, driven as a user would through click's CliRunner."""

import json
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from liposome_bench.cli import cli


@pytest.fixture
def run():
    def invoke(*args):
        return CliRunner().invoke(cli, ["svm", *map(str, args)])

    return invoke


def test_svm_prints_tables_and_writes_results(run, tiny_export_copy, tmp_path):
    out = tmp_path / "res"
    result = run("--problem", "lamellarity", "--data", tiny_export_copy, "--folds", 3, "--out", out)
    assert result.exit_code == 0, result.output
    text = result.stdout
    for part in (
        "per-class metrics",
        "F1 (thesis)",
        "unilamellar",
        "multilamellar",
        "uncertain",
        "normalised confusion matrix",
        "true \\ predicted",
        "SVM: folds",
        f"Results in {out / 'svm'}",
    ):
        assert part in text, part
    for fold in range(3):
        meta = json.loads((out / "svm" / f"fold-{fold}.json").read_text())
        assert meta["params"]["C"] > 0 and meta["params"]["grid_score"] is not None
        assert (out / "svm" / "models" / f"fold-{fold}.model").is_file()
        assert (out / "svm" / "models" / f"fold-{fold}.range").is_file()
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["models"]["svm"]["grid"] == "coarse"


def test_svm_resumes_finished_folds(run, tiny_export_copy, tmp_path):
    out = tmp_path / "res"
    args = (
        "--problem",
        "lamellarity",
        "--data",
        tiny_export_copy,
        "--folds",
        3,
        "--C",
        2,
        "--gamma",
        0.05,
        "--out",
        out,
    )
    first = run(*args)
    assert first.exit_code == 0, first.output
    before = (out / "svm" / "fold-0.csv").read_text()
    (out / "svm" / "fold-2.json").unlink()
    again = run(*args)
    assert again.exit_code == 0, again.output
    assert "2 of 3 folds already in" in again.output
    assert (out / "svm" / "fold-0.csv").read_text() == before
    assert (out / "svm" / "fold-2.json").is_file()


@pytest.mark.skipif(
    shutil.which("svm-predict") is None,
    reason="LIBSVM's svm-predict is not installed (Debian/Ubuntu: apt-get install libsvm-tools)",
)
def test_saved_model_works_with_svm_predict_on_the_features_table(run, tiny_export_copy, tmp_path):
    """The user's route: `features` table + model JSON scaling -> svm-predict."""
    import pandas as pd
    from sklearn.datasets import dump_svmlight_file

    out = tmp_path / "res"
    assert (
        run(
            "--problem",
            "lamellarity",
            "--data",
            tiny_export_copy,
            "--folds",
            3,
            "--C",
            4,
            "--gamma",
            0.01,
            "--out",
            out,
        ).exit_code
        == 0
    )
    meta = json.loads((out / "svm" / "models" / "fold-1.json").read_text())
    features = CliRunner().invoke(
        cli,
        [
            "features",
            "--problem",
            "lamellarity",
            "--data",
            str(tiny_export_copy),
            "--out",
            str(tmp_path / "f.csv"),
        ],
    )
    assert features.exit_code == 0, features.output
    table = pd.read_csv(tmp_path / "f.csv", dtype={"id": str})
    predictions = pd.read_csv(out / "svm" / "fold-1.csv", dtype={"id": str})
    test = table.set_index("id").loc[predictions["id"]]
    X = test[meta["feature_names"]].to_numpy(float)
    lo, hi = np.array(meta["scaling"]["min"]), np.array(meta["scaling"]["max"])
    scaled = np.where(hi > lo, -1 + 2 * (X - lo) / np.where(hi > lo, hi - lo, 1), 0.0)
    dump_svmlight_file(scaled, np.zeros(len(X)), str(tmp_path / "test.scaled"), zero_based=False)
    subprocess.run(
        [
            "svm-predict",
            str(tmp_path / "test.scaled"),
            str(out / "svm" / "models" / "fold-1.model"),
            str(tmp_path / "pred"),
        ],
        check=True,
        capture_output=True,
    )
    labels = np.loadtxt(tmp_path / "pred", dtype=int)
    assert [meta["labels"][str(i)] for i in labels] == predictions["predicted"].tolist()


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ("--jobs", 0),
            "Error: --jobs must be a positive number of workers or -1 (every core); got 0.",
        ),
        (
            ("--folds", 10),
            "Error: 10 folds need at least 10 particles per class; 'uncertain' has 9. "
            "Use --folds 9.",
        ),
    ],
)
def test_bad_options_give_one_line_errors(run, tiny_export_copy, tmp_path, args, message):
    result = run(
        "--problem", "lamellarity", "--data", tiny_export_copy, "--out", tmp_path / "res", *args
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == message
    assert not (tmp_path / "res" / "svm").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (("--C", 0), "Invalid value for '--C': 0.0 is not in the range x>0."),
        (("--grid", "huge"), "Invalid value for '--grid': 'huge' is not one of 'coarse', 'full'."),
    ],
)
def test_click_checks_option_values(run, tiny_export_copy, args, message):
    result = run("--problem", "lamellarity", "--data", tiny_export_copy, *args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == f"Error: {message}"


def test_other_settings_in_the_same_folder_are_refused(run, tiny_export_copy, tmp_path):
    out = tmp_path / "res"
    base = ("--problem", "lamellarity", "--data", tiny_export_copy, "--folds", 3, "--out", out)
    assert run(*base, "--C", 2, "--gamma", 0.05).exit_code == 0
    result = run(*base, "--C", 4, "--gamma", 0.05)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {out} holds svm results made with other settings (C differ). "
        f"Use another --out or delete {out / 'svm'}."
    )


def test_svm_default_features_are_all_on_a_custom_problem(
    run, tiny_dataset, tiny_export_copy, tmp_path
):
    """Issue 23, item 6: the vironova set was made for lamellarity and
    encapsulation; a custom problem gets every feature unless told."""
    import copy

    from liposome_bench.dataset import Dataset, custom_problem, write_export

    names = {"unilamellar": "small", "multilamellar": "layered", "uncertain": "other"}
    particles = copy.deepcopy(tiny_dataset.particles)
    for p in particles:
        p.label = names[p.label]
    custom = write_export(
        Dataset(custom_problem(["small", "layered", "other"]), particles), tmp_path / "custom"
    )
    args = ("--folds", 3, "--C", 1, "--gamma", 0.1)
    assert run("--data", custom, *args, "--out", tmp_path / "c").exit_code == 0
    assert (
        run(
            "--data", custom, *args, "--feature-set", "vironova", "--out", tmp_path / "cv"
        ).exit_code
        == 0
    )
    assert (
        run(
            "--problem", "lamellarity", "--data", tiny_export_copy, *args, "--out", tmp_path / "l"
        ).exit_code
        == 0
    )
    used = {
        name: json.loads((tmp_path / name / "svm" / "fold-0.json").read_text())["params"][
            "feature_set"
        ]
        for name in ("c", "cv", "l")
    }
    assert used == {"c": "all", "cv": "vironova", "l": "vironova"}
