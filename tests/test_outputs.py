"""Output paths (liposome_bench.outputs): every command that writes checks
its output before any work and turns OS errors into one line naming the
path and the fix. Permission errors are simulated (a test running as root
can write into a read-only folder)."""

import errno
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
