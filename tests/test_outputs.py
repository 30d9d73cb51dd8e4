"""Output paths (liposome_bench.outputs): every command that writes checks
its output before any work and turns OS errors into one line naming the
path and the fix. Permission errors are simulated (a test running as root
can write into a read-only folder)."""

import errno
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from liposome_bench import outputs
from liposome_bench.cli import cli
from liposome_bench.errors import OutputError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
EXPORT = FIXTURES / "export"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error: "), result.stderr
    assert sum(line.startswith("Error:") for line in lines) == 1
    return lines[-1]


@pytest.fixture
def results_folder(tmp_path):
    from test_report import make_results

    return make_results(tmp_path / "results")


# (command arguments before the output, the option, whether it needs a folder)
def _commands(tmp_path, results_folder):
    return [
        (["svm", "--data", EXPORT, "--C", "1", "--gamma", "1"], "--out", "folder"),
        (["cnn", "--data", EXPORT], "--out", "folder"),
        (["benchmark", "--data", EXPORT], "--out", "folder"),
        (["generate", "--problem", "lamellarity", "--n", "6"], "--out", "folder"),
        (
            ["generate", "--problem", "lamellarity", "--n", "6", "--out", tmp_path / "g"],
            "--montage",
            "file",
        ),
        (["features", "--data", EXPORT], "--out", "file"),
        (["report", results_folder], "--out", "file"),
        (["report", results_folder], "--write-baseline", "file"),
    ]


COMMAND_IDS = [
    "svm",
    "cnn",
    "benchmark",
    "generate",
    "generate-montage",
    "features",
    "report-out",
    "report-write-baseline",
]


@pytest.mark.parametrize("index", range(8), ids=COMMAND_IDS)
def test_output_under_a_file_is_one_line(tmp_path, results_folder, index):
    args, option, _ = _commands(tmp_path, results_folder)[index]
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    name = (
        "out.csv" if args[0] == "features" else "out.png" if option == "--montage" else "out.json"
    )
    target = blocker / name
    assert error_line(run(*args, option, target)) == (
        f"Error: {option} {target}: {blocker} is a file, not a folder, so nothing can be "
        f"written under it. Choose another {option}, or move {blocker} away."
    )
    assert not (tmp_path / "g").exists()  # generate stopped before writing the export


@pytest.mark.parametrize("index", [0, 1, 2, 3], ids=COMMAND_IDS[:4])
def test_output_folder_that_is_a_file_is_one_line(tmp_path, results_folder, index):
    args, option, _ = _commands(tmp_path, results_folder)[index]
    target = tmp_path / "a-file"
    target.write_text("x")
    assert error_line(run(*args, option, target)) == (
        f"Error: {option} {target} is a file; a folder is expected here. Choose another "
        f"{option}, or move {target} away."
    )
    assert target.read_text() == "x"


@pytest.mark.parametrize("index", range(8), ids=COMMAND_IDS)
def test_permission_denied_is_one_line(tmp_path, results_folder, monkeypatch, index):
    args, option, kind = _commands(tmp_path, results_folder)[index]
    folder = tmp_path / "locked"
    folder.mkdir()

    def denied(path):
        if Path(path) == folder:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(outputs, "_probe", denied)
    name = (
        "out.csv"
        if args[0] == "features"
        else "out.png"
        if option == "--montage"
        else "out.json"
        if kind == "file"
        else "out"
    )
    target = folder / name
    assert error_line(run(*args, option, target)) == (
        f"Error: {option} {target}: permission denied writing in {folder}. Choose a folder "
        "you can write to, or fix its permissions."
    )


def test_read_only_file_system_and_full_disk(tmp_path):
    target = tmp_path / "r"
    assert str(outputs.output_error(OSError(errno.EROFS, "Read-only file system"), target)) == (
        f"--out {target}: {tmp_path} is on a read-only file system. Choose a folder on "
        "a writable disk."
    )
    assert str(
        outputs.output_error(OSError(errno.ENOSPC, "No space left on device"), target, "--montage")
    ) == (
        f"--montage {target}: no space left on the disk of {tmp_path} (or its quota is used "
        "up); nothing half-written was kept. Free some space, or choose another --montage "
        "on another disk."
    )


def test_disk_full_while_writing_the_report_is_one_line(tmp_path, results_folder, monkeypatch):
    from liposome_bench import report

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "atomic_write_text", full)
    out = tmp_path / "r.md"
    assert error_line(run("report", results_folder, "--out", out)) == (
        f"Error: --out {out}: no space left on the disk of {tmp_path} (or its quota is used "
        "up); nothing half-written was kept. Free some space, or choose another --out on "
        "another disk."
    )
    assert not out.exists()


def test_writing_leaves_errors_about_other_paths_alone(tmp_path):
    with pytest.raises(FileNotFoundError):
        with outputs.writing(tmp_path / "out"):
            raise FileNotFoundError(errno.ENOENT, "No such file", "/somewhere/else")
    with pytest.raises(OutputError):
        with outputs.writing(tmp_path / "out"):
            raise OSError(errno.ENOSPC, "No space left on device")


def test_an_unexpected_os_error_is_still_one_line(monkeypatch, tmp_path):
    from liposome_bench import sources

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", "/dev/sdz1")

    monkeypatch.setattr(sources, "load_dataset", broken)
    assert error_line(run("dataset", "info", EXPORT)) == (
        "Error: /dev/sdz1: Input/output error (EIO). Check that path (its permissions, free "
        "space, and that it is the file or folder you meant); run with -v for details."
    )


def test_checks_create_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    assert outputs.check_output_dir(target) == target
    assert outputs.check_output_file(target / "x.json") == target / "x.json"
    assert list(tmp_path.iterdir()) == []


def test_writing_claims_the_temporary_file_beside_the_output(tmp_path):
    out = tmp_path / "report.md"
    with pytest.raises(OutputError, match=r"permission denied writing in"):
        with outputs.writing(out):
            raise PermissionError(
                errno.EACCES, "Permission denied", str(tmp_path / ".report.md.1234.tmp")
            )
    with pytest.raises(PermissionError):  # a file read beside it is not the output
        with outputs.writing(out):
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "run.json"))


# Outputs never overwrite inputs (issue 26) -----------------------------------------------


def _inputs(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.json").write_text("{}")
    data = tmp_path / "data.csv"
    data.write_text("id\n")
    return bundle, data


@pytest.mark.parametrize(
    "out, relation",
    [
        ("bundle", "is the model bundle"),
        ("bundle/model.json", "lies inside the model bundle"),
        ("data.csv", "is the data"),
        (".", "is a folder holding the model bundle"),
    ],
)
def test_check_apart_refuses_an_output_on_an_input(tmp_path, out, relation):
    bundle, data = _inputs(tmp_path)
    with pytest.raises(OutputError, match=relation) as info:
        outputs.check_apart(tmp_path / out, {"the model bundle": bundle, "the data": data})
    assert "\n" not in str(info.value)
    assert (bundle / "model.json").read_text() == "{}"


def test_check_apart_follows_symlinks(tmp_path):
    bundle, _data = _inputs(tmp_path)
    (tmp_path / "link-to-card").symlink_to(bundle / "model.json")
    (tmp_path / "link-dir").symlink_to(bundle)
    for out in (tmp_path / "link-to-card", tmp_path / "link-dir" / "p.csv"):
        with pytest.raises(OutputError, match="following symlinks"):
            outputs.check_apart(out, {"the model bundle": bundle, "the data": None})


def test_check_apart_accepts_a_sibling(tmp_path):
    bundle, data = _inputs(tmp_path)
    # A name that starts like an input is not inside it.
    assert (
        outputs.check_apart(tmp_path / "bundle-cv", {"b": bundle, "d": data})
        == (tmp_path / "bundle-cv").resolve()
    )


# Outputs never overwrite inputs, in every command (issue 26) -----------------------------

MICS = FIXTURES / "micrographs"


@pytest.fixture
def inputs(tmp_path, results_folder):
    """Copies of every kind of input the commands read, all under tmp_path."""
    from test_sweep import TINY_SWEEP

    from liposome_bench.report import write_baseline

    config = tmp_path / "configs" / "benchmark.toml"
    config.parent.mkdir()
    config.write_text("[svm]\n")
    sweep = tmp_path / "sweeps" / "grid.toml"
    sweep.parent.mkdir()
    sweep.write_text(TINY_SWEEP)
    groups = tmp_path / "groups.csv"
    groups.write_text("id,group\n1,a\n")
    mics = shutil.copytree(MICS, tmp_path / "mics")
    star = mics / "particles.star"
    star.write_text("data_particles\n")
    return {
        "data": shutil.copytree(EXPORT, tmp_path / "data"),
        "groups": groups,
        "results": results_folder,
        "baseline": write_baseline(results_folder, tmp_path / "baseline.json"),
        "config": config,
        "configs": config.parent,
        "sweep": sweep,
        "sweeps": sweep.parent,
        "mics": mics,
        "star": star,
    }


# id: (the input the output overlaps, how the command line is made from the inputs `i` and
# `base` (that input, or a symlink to it), what the message says)
OVERLAPS = {
    "svm": ("data", lambda i, b: ["svm", "--data", i["data"], "--out", b], "is --data"),
    "cnn": ("data", lambda i, b: ["cnn", "--data", i["data"], "--out", b / "r"], "lies inside"),
    "benchmark": (
        "data",
        lambda i, b: ["benchmark", "--data", i["data"], "--out", b],
        "is --data",
    ),
    "benchmark-config": (
        "configs",
        lambda i, b: ["benchmark", "--data", i["data"], "--config", i["config"], "--out", b],
        "is a folder holding --config",
    ),
    "features": (
        "data",
        lambda i, b: ["features", "--data", i["data"], "--out", b / "features.csv"],
        "lies inside --data",
    ),
    "dataset-check-write-grouping": (
        "data",
        lambda i, b: ["dataset", "check", i["data"], "--write-grouping", b / "groups.csv"],
        "lies inside --data",
    ),
    "features-group-file": (
        "groups",
        lambda i, b: [
            *("features", "--data", i["data"], "--group-file", i["groups"]),
            *("--out", b),
        ],
        "is --group-file",
    ),
    "sweep": (
        "sweeps",
        lambda i, b: ["sweep", i["sweep"], "--data", i["data"], "--out", b],
        "is a folder holding the sweep file",
    ),
    "curve": (
        "data",
        lambda i, b: ["curve", "--data", i["data"], "--out", b / "curve"],
        "lies inside --data",
    ),
    "report-run-file": (
        "results",
        lambda i, b: ["report", i["results"], "--out", b / "run.json"],
        "is run.json of the results folder",
    ),
    "report-out-baseline": (
        "baseline",
        lambda i, b: ["report", i["results"], "--baseline", i["baseline"], "--out", b],
        "is --baseline",
    ),
    "report-write-baseline": (
        "baseline",
        lambda i, b: ["report", i["results"], "--baseline", i["baseline"], "--write-baseline", b],
        "is --baseline",
    ),
    "show": (
        "data",
        lambda i, b: ["show", "1", "--results", i["results"], "--data", i["data"], "--out", b],
        "lies inside --data",
    ),
    "import-coco": (
        "mics",
        lambda i, b: [
            *("dataset", "import", "coco", i["mics"] / "coco.json"),
            *("--images", i["mics"] / "images", "--out", b / "images" / "ds"),
        ],
        "lies inside --images",
    ),
    "import-labels": (
        "mics",
        lambda i, b: [
            *("dataset", "import", "labels", "--images", i["mics"] / "images"),
            *("--labels", i["mics"] / "labels", "--classes", i["mics"] / "classes.csv"),
            *("--out", b / "labels" / "ds"),
        ],
        "lies inside --labels",
    ),
    "import-star": (
        "star",
        lambda i, b: [
            *("dataset", "import", "star", i["star"], "--images", i["mics"] / "images"),
            *("--diameter", "20", "--out", b),
        ],
        "is the STAR file",
    ),
    "train": (
        "data",
        lambda i, b: ["train", "--model", "svm", "--data", i["data"], "--out", b / "m"],
        "lies inside the dataset",
    ),
}


def _files(root: Path) -> dict:
    """Every file and folder under ``root`` (symlinks as links), with its bytes."""
    return {
        str(p.relative_to(root)): (
            f"-> {os.readlink(p)}" if p.is_symlink() else p.read_bytes() if p.is_file() else "/"
        )
        for p in root.rglob("*")
    }


@pytest.mark.parametrize("through", ["path", "symlink"])
@pytest.mark.parametrize("case", OVERLAPS)
def test_no_command_writes_onto_its_inputs(tmp_path, inputs, case, through):
    name, make_args, relation = OVERLAPS[case]
    base = inputs[name]
    if through == "symlink":
        link = tmp_path / f"link{base.suffix}"
        link.symlink_to(base, target_is_directory=base.is_dir())
        base = link
    before = _files(tmp_path)
    line = error_line(run(*make_args(inputs, base)))
    assert relation in line
    assert "an input of this command" in line
    assert ("following symlinks" in line) == (through == "symlink"), line
    assert _files(tmp_path) == before  # nothing written, not even a staging folder


def test_outputs_beside_the_inputs_still_work(tmp_path, inputs):
    """The designed defaults stay allowed: report's RESULTS/report.md (again:
    it replaces its own report), and outputs beside the inputs."""
    results = inputs["results"]
    for _ in range(2):
        result = run("report", results, "--gallery-size", "0")
        assert result.exit_code == 0, result.output
    assert (results / "report.md").is_file() and (results / "report-figures").is_dir()
    result = run("report", results, "--gallery-size", "0", "--write-baseline", results / "b.json")
    assert result.exit_code == 0, result.output
    result = run("features", "--data", inputs["data"], "--out", tmp_path / "f.csv")
    assert result.exit_code == 0, result.output
    result = run(
        *("dataset", "import", "coco", inputs["mics"] / "coco.json"),
        *("--images", inputs["mics"] / "images", "--out", tmp_path / "ds"),
    )
    assert result.exit_code == 0, result.output


def test_check_in_results_allows_new_files_and_the_commands_own(tmp_path, results_folder):
    own = results_folder / "old.md"
    own.write_text("# old report")
    assert outputs.check_in_results(own, results_folder, own=(".md",)) == own.resolve()
    assert outputs.check_in_results(results_folder / "new.json", results_folder)
    with pytest.raises(OutputError, match="is svm/fold-0.csv of the results folder"):
        outputs.check_in_results(results_folder / "svm" / "fold-0.csv", results_folder)
    with pytest.raises(OutputError, match="is a folder holding the results folder"):
        outputs.check_in_results(tmp_path, results_folder)
