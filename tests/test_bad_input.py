"""The bad inputs found by fuzzing every reader and command (issue 11): each
gives exactly one ``Error:`` line and exit code 2 (or, where the input is
fine, loads correctly). Fixtures are in fixtures/broken/ (made by
fixtures/make_fixtures.py)."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from liposome_bench.cli import cli
from liposome_bench.dataset import load_dataset
from liposome_bench.errors import DatasetError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BROKEN = FIXTURES / "broken"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_line(result) -> str:
    """The one Error: line of a failed command (asserting there is one, that
    it is the last line, and that there is no traceback)."""
    assert result.exit_code == 2, result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    return errors[0]


# (fixture under fixtures/broken, path inside it, the line; {path} is the path passed)
FIXTURE_CASES = [
    (
        "deep-json",
        "",
        "particles.json: its JSON nests lists or objects too deeply to read (thousands of "
        "levels). Expected a list of particle objects or objects one after another; fix or "
        "re-export the file.",
    ),
    (
        "particles-json-folder",
        "",
        "{path}/particles.json is a folder, not the export's JSON file. Replace it with the "
        "particles JSON file, or rename it if the folder is not a lab export.",
    ),
    (
        "nan-image",
        "",
        "images/540002.tif has 12 of 4096 pixels NaN or infinite; expected finite intensities. "
        "Re-export the image with those pixels filled in.",
    ),
    (
        "inf-image",
        "",
        "images/540002.tif has 12 of 4096 pixels NaN or infinite; expected finite intensities. "
        "Re-export the image with those pixels filled in.",
    ),
    (
        "tiny-image",
        "",
        "images/540002.png is 1x500 px, under the 16 px a side a particle image needs (the "
        "particle and its surround). Replace it with the particle's full image.",
    ),
    (
        "image-is-folder",
        "",
        "particles.json, object 2 (Id 540002): image images/540002.png is a folder, not an "
        'image file. Put the image file there or correct its "Image" name.',
    ),
    (
        "images-in-subfolder",
        "",
        "particles.json: 3 of 3 images are not in images/ (first: images/540001.png), but all "
        "of them are in images/particles/. Pass --images-dir images/particles.",
    ),
    (
        "manifest-unterminated-quote",
        "manifest.csv",
        '{path}, line 3: a quote (") opened in this record is never closed, so the rest of '
        "the file would be one cell. Close the quote or remove it.",
    ),
    (
        "manifest-duplicate-column",
        "manifest.csv",
        "{path}: the column 'id' appears 2 times in the header (columns 3, 5). Keep one of "
        "them, or rename the others.",
    ),
]


@pytest.mark.parametrize("name, inner, line", FIXTURE_CASES, ids=[c[0] for c in FIXTURE_CASES])
def test_broken_fixture_is_one_error_line_in_every_command(name, inner, line):
    path = BROKEN / name / inner if inner else BROKEN / name
    expected = line.format(path=path)
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert str(exc.value) == expected
    assert error_line(run("dataset", "info", path)) == f"Error: {expected}"
    check = run("dataset", "check", path)
    assert check.stdout.splitlines() == [expected]
    assert error_line(check) == f"Error: 1 problem(s) found in {path}."


def test_images_dir_suggested_is_the_fix(tmp_path):
    root = shutil.copytree(BROKEN / "images-in-subfolder", tmp_path / "d")
    assert len(load_dataset(root, images_dir="images/particles")) == 3


def test_one_class_fails_dataset_check_and_svm(tmp_path):
    path = BROKEN / "one-class"
    line = (
        "one-class: every particle is of one class ('full' (6)); a classifier needs "
        "particles of at least 2 classes. Add particles of the other classes."
    )
    check = run("dataset", "check", path, "--folds", "2")
    assert check.stdout.splitlines() == [line]
    assert error_line(check) == f"Error: 1 problem(s) found in {path}."
    copy = shutil.copytree(path, tmp_path / "one-class")
    result = run("svm", "--data", copy, "--out", tmp_path / "r", "--C", "1", "--gamma", "1")
    assert error_line(result) == f"Error: {line}"
    assert not (tmp_path / "r").exists() and not (copy / "folds").exists()


def test_a_manifest_with_an_unterminated_quote_loses_no_row(tmp_path):
    """Without the check, 60 rows read as 2 particles (one label swallowed the rest)."""
    text = (BROKEN / "manifest-unterminated-quote" / "manifest.csv").read_text()
    assert text.count("\n") == 61 and text.splitlines()[2].startswith('"')


# Symbolic links in class folders -------------------------------------------------------


@pytest.fixture
def class_folders(tmp_path):
    return shutil.copytree(FIXTURES / "folders", tmp_path / "d")  # full 4, empty 3


def test_a_symlinked_subfolder_is_followed(class_folders, tmp_path):
    extra = tmp_path / "elsewhere"
    extra.mkdir()
    for f in sorted((class_folders / "full").glob("*.png")):
        shutil.copy(f, extra / f"more-{f.name}")
    (class_folders / "full" / "linked").symlink_to(extra, target_is_directory=True)
    dataset = load_dataset(class_folders)
    assert dataset.class_counts() == {"full": 8, "empty": 3, "uncertain": 0}
    assert "full/linked/more-full-0.png" in [p.source for p in dataset.particles]


def test_a_symlink_loop_in_a_class_folder_is_one_line(class_folders):
    (class_folders / "empty" / "loop").symlink_to("..", target_is_directory=True)
    result = run("dataset", "info", class_folders)
    assert error_line(result).startswith(
        "Error: empty/loop/empty/ leads back to empty/, which is read already (a symbolic "
        "link loop or a second link to it). Remove the link."
    )


@pytest.mark.parametrize(
    "make, what",
    [
        (lambda p: p.symlink_to("/dev/zero"), "a device (a link to /dev/zero)"),
        (lambda p: p.symlink_to(p.name), "a symbolic link loop (links pointing at each other)"),
        (
            lambda p: p.symlink_to("nowhere.png"),
            "a symbolic link to nowhere.png, which does not exist",
        ),
    ],
)
def test_an_image_that_is_not_a_file_says_what_it_is(class_folders, make, what):
    if not os.path.exists("/dev/zero") and "device" in what:
        pytest.skip("no /dev/zero")
    make(class_folders / "empty" / "odd.png")
    result = run("dataset", "check", class_folders, "--folds", "2")
    assert result.stdout.splitlines() == [
        f"empty/odd.png is {what}, not an image file. Replace it with the image file, or remove it."
    ]
    assert error_line(result) == f"Error: 1 problem(s) found in {class_folders}."


def test_a_manifest_image_path_that_is_a_folder_says_so(tmp_path):
    root = shutil.copytree(FIXTURES / "manifest", tmp_path / "m")
    (root / "images" / "p1.jpg").unlink()
    (root / "images" / "p1.jpg").mkdir()
    result = run("dataset", "info", root / "manifest.csv")
    assert error_line(result) == (
        "Error: manifest.csv, line 3: image images/p1.jpg is a folder, not an image file. "
        "Put the image file there or correct the image column."
    )


# Options ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_pixel_size_must_be_finite(value):
    result = run("dataset", "info", FIXTURES / "export", "--pixel-size", value)
    assert error_line(result) == (
        f"Error: Invalid value for '--pixel-size': {value} is not a finite number of nm per "
        "pixel; pass e.g. --pixel-size 0.84."
    )
    with pytest.raises(DatasetError, match=r"^--pixel-size nan is not a positive number"):
        load_dataset(FIXTURES / "export", pixel_size_nm=float("nan"))


@pytest.mark.parametrize(
    "command", [["svm", "--C", "1", "--gamma", "1"], ["cnn"], ["benchmark"], ["features"]]
)
@pytest.mark.parametrize(
    "option, value",
    [("--seed", "-1"), ("--seed", str(2**32)), ("--fold-seed", "-1"), ("--fold-seed", str(2**32))],
)
def test_seeds_out_of_range_are_one_line(tmp_path, command, option, value):
    if command == ["features"] and option == "--seed":
        pytest.skip("features has no --seed")
    out = tmp_path / ("f.csv" if command == ["features"] else "r")
    result = run(*command, "--data", FIXTURES / "export", option, value, "--out", out)
    assert error_line(result) == (
        f"Error: {option} must be a whole number from 0 to 4294967295 (2**32 - 1); got {value}."
    )
    assert not out.exists()


def test_folds_file_missing_a_particle_names_it(tmp_path):
    root = shutil.copytree(FIXTURES / "export", tmp_path / "d")
    assert run("features", "--data", root, "--out", tmp_path / "f.csv").exit_code == 0
    path = root / "folds" / "k5-seed0.json"
    stored = json.loads(path.read_text())
    first = next(iter(stored["folds"]))
    del stored["folds"][first]
    path.write_text(json.dumps(stored))
    result = run("features", "--data", root, "--out", tmp_path / "g.csv")
    assert error_line(result) == (
        f"Error: {path} was edited: it lacks 1 particle(s) of this dataset (first: {first}), "
        "although its fingerprint is this dataset's. Delete it to make new folds for this "
        "dataset."
    )


def test_deep_json_in_a_settings_file_is_one_line(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[svm]\ngrid = " + "[" * 5000 + "]" * 5000 + "\n")
    result = run(
        "benchmark", "--data", FIXTURES / "export", "--config", config, "--out", tmp_path / "r"
    )
    assert error_line(result).startswith(f"Error: {config} ")


# Results folders, reports and the gate ---------------------------------------------------


@pytest.fixture
def results_folder(tmp_path):
    from test_report import make_results

    return make_results(tmp_path / "results")


@pytest.fixture
def benchmark_folder(results_folder):
    """A results folder with a summary.json written by the benchmark's writer."""
    from liposome_bench import report
    from liposome_bench.comparison import _write_outputs
    from test_report import _dataset

    summary = report.load_summary(results_folder)
    _write_outputs(Path(results_folder), summary, _dataset(), ["lipnet-4"])
    return results_folder


def _edit_run_json(folder, change):
    path = Path(folder) / "run.json"
    run_json = json.loads(path.read_text())
    path.write_text(json.dumps(change(run_json)))
    return path


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda r: [], "expected a JSON object, got list"),
        (
            lambda r: {**r, "dataset": {k: v for k, v in r["dataset"].items() if k != "classes"}},
            'its "dataset" has no list of class names ("classes")',
        ),
        (lambda r: {**r, "folds": {"k": "five"}}, '"folds" is not {"k": <folds>, "seed": <seed>}'),
    ],
)
def test_a_damaged_run_json_is_one_line(results_folder, change, problem):
    path = _edit_run_json(results_folder, change)
    assert error_line(run("report", results_folder)) == (
        f"Error: {path} is not a run.json written by liposome-bench: {problem}. Delete the "
        "folder (or that file) and run again, or use another --out."
    )


def test_deeply_nested_results_files_are_one_line(results_folder, tmp_path):
    deep = "[" * 100000 + "]" * 100000
    (Path(results_folder) / "run.json").write_text(deep)
    assert error_line(run("report", results_folder)).startswith(
        f"Error: {results_folder}/run.json is not valid JSON (maximum recursion depth"
    )
    baseline = tmp_path / "b.json"
    baseline.write_text(deep)
    assert error_line(run("report", results_folder, "--baseline", baseline)).startswith(
        f"Error: Baseline {baseline} is not valid JSON (RecursionError"
    )


def test_a_fold_csv_with_another_folds_rows_appended_is_refused(results_folder):
    svm = Path(results_folder) / "svm"
    rows = (svm / "fold-1.csv").read_text().splitlines(keepends=True)[1:]
    with open(svm / "fold-0.csv", "a") as handle:
        handle.writelines(rows)
    assert error_line(run("report", results_folder)) == (
        f"Error: {svm}/fold-0.csv holds rows of fold(s) 1 besides fold 0 (another fold's file "
        f"appended?). Delete {svm}/fold-0.json to run that fold again."
    )


def test_a_particle_in_two_folds_is_refused(results_folder):
    svm = Path(results_folder) / "svm"
    row = (svm / "fold-1.csv").read_text().splitlines()[1].split(",")
    row[2] = "0"  # claim it for fold 0 as well
    with open(svm / "fold-0.csv", "a") as handle:
        handle.write(",".join(row) + "\n")
    assert error_line(run("report", results_folder)) == (
        f"Error: {svm}: particle {row[0]} is in the test rows of fold-0.csv and fold-1.csv; "
        f"each particle belongs to one fold. Delete {svm}/fold-1.json to run that fold again."
    )


def test_a_baseline_value_that_is_a_string_is_one_line(results_folder, tmp_path):
    baseline = tmp_path / "b.json"
    assert run("report", results_folder, "--write-baseline", baseline).exit_code == 0
    data = json.loads(baseline.read_text())
    data["models"]["svm"]["overall"]["macro_f1"] = "0.9"
    baseline.write_text(json.dumps(data))
    assert error_line(run("report", results_folder, "--baseline", baseline)) == (
        f"Error: {baseline}: svm/overall/macro_f1 is '0.9'; expected a number (or null where "
        "the metric was undefined). Rewrite it with --write-baseline."
    )


def test_summary_records_fold_file_hashes_and_the_gate_refuses_a_changed_fold(
    benchmark_folder, tmp_path
):
    folder = Path(benchmark_folder)
    summary = json.loads((folder / "summary.json").read_text())
    assert sorted(summary["fold_files"]) == sorted(
        f"{m}/fold-{f}.{ext}"
        for m in ("svm", "lipnet-4")
        for f in range(3)
        for ext in ("csv", "json")
    )
    baseline = tmp_path / "b.json"
    assert run("report", folder, "--write-baseline", baseline).exit_code == 0
    assert run("report", folder, "--baseline", baseline).exit_code == 0
    # A fold file edited after the summary was written: the summary is stale.
    csv = folder / "lipnet-4" / "fold-2.csv"
    csv.write_text(csv.read_text().replace("multilamellar", "unilamellar", 1))
    assert error_line(run("report", folder, "--baseline", baseline)) == (
        f"Error: {folder}/summary.json no longer matches the fold files it summarises: "
        "1 changed (first: lipnet-4/fold-2.csv) since it was written. Re-run the same "
        "benchmark command with this --out to summarise them again, or restore the files."
    )
    (folder / "svm" / "fold-0.json").unlink()
    assert "2 missing" not in error_line(run("report", folder))
    assert "1 missing (first: svm/fold-0.json)" in error_line(run("report", folder))


def test_the_gate_still_passes_an_unchanged_summary(benchmark_folder, tmp_path):
    baseline = tmp_path / "b.json"
    assert run("report", benchmark_folder, "--write-baseline", baseline).exit_code == 0
    result = run("report", benchmark_folder, "--baseline", baseline)
    assert result.exit_code == 0, result.output
    assert "No metric fell by more than its tolerance" in result.stdout


def test_summary_json_without_models_is_one_line(benchmark_folder):
    path = Path(benchmark_folder) / "summary.json"
    summary = json.loads(path.read_text())
    del summary["models"]
    path.write_text(json.dumps(summary))
    assert error_line(run("report", benchmark_folder)).startswith(
        f"Error: {path} is not a benchmark summary"
    )


def test_non_finite_pixels_are_counted_in_mrc_slices(tmp_path):
    import mrcfile

    shutil.copytree(FIXTURES / "mrc", tmp_path / "m")
    with mrcfile.open(tmp_path / "m" / "particles.mrcs", mode="r+") as mrc:
        data = np.array(mrc.data)
        data[1, :2, :3] = np.nan
        mrc.set_data(data)
    with pytest.raises(
        DatasetError,
        match=r"^particles.mrcs, slice 2 has 6 of 2304 pixels "
        r"NaN or infinite",
    ):
        load_dataset(tmp_path / "m" / "particles.mrcs")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_sigterm_inside_a_ctypes_callback_is_not_lost(monkeypatch):
    """Python drops an exception raised in a ctypes callback, which is where
    a SIGTERM lands during LIBSVM's svm_train (its print callback): the
    handler notes it and _train_libsvm raises it when svm_train returns."""
    import ctypes
    import os
    import signal

    import libsvm.svmutil

    from liposome_bench import cli as cli_module
    from liposome_bench import errors, svm

    callback_type = ctypes.CFUNCTYPE(None)

    def in_callback():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs here, inside the callback
            pass

    callback = callback_type(in_callback)
    calls = []

    def fake_train(prob, param):
        callback()  # the exception raised inside is "ignored" by ctypes
        calls.append("returned")
        return "model"

    monkeypatch.setattr(libsvm.svmutil, "svm_train", fake_train)
    X = np.array([[0.0, 1.0], [1.0, 0.0]])
    with cli_module._sigterm_as_interrupt():
        with pytest.raises(errors.Terminated):
            svm._train_libsvm(X, np.array([0, 1]), "-q")
    assert calls == ["returned"]
    errors.raise_if_interrupted()  # cleared: nothing pending afterwards
