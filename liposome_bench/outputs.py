"""Output paths: checked before any work, and OS errors while writing turned
into one line naming the path and the fix.

Every command that writes (``features``, ``svm``, ``cnn``, ``benchmark``,
``report --out`` / ``--write-baseline``, ``generate`` / ``--montage``) calls
``check_output_dir`` or ``check_output_file`` on its output before reading
any data, and does its writing inside ``writing(path)``. What they catch:

- the output (or a folder above it) exists as a file where a folder is needed,
  or is a folder where a file is needed;
- the folder cannot be written (permission denied, read-only file system);
- the disk fills up (or a quota is reached) while writing.

Each becomes an ``OutputError`` (exit code 2 on the command line) saying
which path, what is wrong with it, and what to do.

``check_apart`` refuses an output that is one of the command's inputs, lies
inside an input folder, or holds one, symlinks followed, so no command writes
onto what it reads; every command that writes calls it before any work.
``check_in_results`` is its form for ``report`` and ``show``, whose outputs
may lie inside the results folder they read (``RESULTS/report.md``) but never
replace one of its files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from liposome_bench.errors import OutputError

_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NO_PERMISSION = {errno.EACCES, errno.EPERM}


def _blocking_file(path: Path) -> Path | None:
    """The nearest of ``path``'s parent folders that exists as a non-folder,
    if any (what makes ``path`` impossible to create)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
        if parent.is_symlink():  # a dangling link cannot hold anything either
            return parent
    return None


def _existing_folder(path: Path) -> Path:
    """The deepest existing folder at or above ``path``."""
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            return candidate
    return Path(".")


def _probe(folder: Path) -> None:
    """Create and remove a file in ``folder``: the only reliable test that it
    can be written (``os.access`` is wrong for root and for read-only mounts)."""
    with tempfile.TemporaryFile(dir=folder, prefix=".liposome-bench-probe-"):
        pass


def output_error(exc: OSError, path, option: str = "--out") -> OutputError:
    """One line for an OS error raised while writing ``path`` (given as
    ``option``): what went wrong, and the fix."""
    path = Path(path)
    code = exc.errno
    where = f"{option} {path}"
    blocker = _blocking_file(path)
    if blocker is not None or code == errno.ENOTDIR:
        blocker = blocker or path
        return OutputError(
            f"{where}: {blocker} is a file, not a folder, so nothing can be written "
            f"under it. Choose another {option}, or move {blocker} away."
        )
    if code == errno.EEXIST and path.exists() and not path.is_dir():
        return OutputError(
            f"{where} is a file; a folder is expected here. Choose another {option}, "
            f"or move {path} away."
        )
    if code == errno.EISDIR:
        return OutputError(
            f"{where} is a folder; a file name is expected here. Choose another {option}, "
            f"e.g. {path / 'out'}."
        )
    folder = _existing_folder(path if path.is_dir() else path.parent)
    if code in _NO_PERMISSION:
        return OutputError(
            f"{where}: permission denied writing in {folder}. Choose a folder you can "
            f"write to, or fix its permissions."
        )
    if code == errno.EROFS:
        return OutputError(
            f"{where}: {folder} is on a read-only file system. Choose a folder on a writable disk."
        )
    if code in _NO_SPACE:
        return OutputError(
            f"{where}: no space left on the disk of {folder} (or its quota is used up); "
            f"nothing half-written was kept. Free some space, or choose another {option} "
            "on another disk."
        )
    return OutputError(
        f"{where}: cannot be written ({exc.strerror or exc}). Choose another {option}."
    )


def check_output_dir(path, option: str = "--out") -> Path:
    """Check that the folder ``path`` can be created (or exists) and written,
    before any work; nothing is created.

    Returns
    -------
    Path

    Raises
    ------
    OutputError
        If ``path`` or a folder above it is a file, or the nearest existing
        folder cannot be written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(
            f"{option} {path} is a file; a folder is expected here. Choose another "
            f"{option}, or move {path} away."
        )
    blocker = _blocking_file(path)
    if blocker is not None:
        raise output_error(OSError(errno.ENOTDIR, "Not a directory"), path, option)
    try:
        _probe(_existing_folder(path))
    except OSError as exc:
        raise output_error(exc, path, option) from None
    return path


def check_output_file(path, option: str = "--out") -> Path:
    """Check that the file ``path`` can be written, before any work: it is not
    a folder, no folder above it is a file, and its nearest existing folder
    can be written. Nothing is created.

    Raises
    ------
    OutputError
    """
    path = Path(path)
    if path.is_dir():
        raise output_error(OSError(errno.EISDIR, "Is a directory"), path, option)
    blocker = _blocking_file(path)
    if blocker is not None:
        raise output_error(OSError(errno.ENOTDIR, "Not a directory"), path, option)
    try:
        _probe(_existing_folder(path.parent))
    except OSError as exc:
        raise output_error(exc, path, option) from None
    return path


@contextlib.contextmanager
def writing(path, option: str = "--out"):
    """Turn an ``OSError`` raised inside the block into an ``OutputError``
    about ``path`` when it concerns ``path`` (its file name lies under it, or
    the error names no file: a failed write, a full disk)."""
    path = Path(path)
    try:
        yield path
    except OSError as exc:
        if exc.filename is not None and not _under(exc.filename, path):
            raise
        raise output_error(exc, path, option) from None


def _under(name, path: Path) -> bool:
    try:
        name = Path(os.path.abspath(os.fsdecode(name)))
    except (TypeError, ValueError):
        return False
    base = Path(os.path.abspath(path))
    # ... or the temporary file or folder an atomic write makes beside it
    # (".<name>.<random>.tmp", see dataset.atomic_write and write_export).
    temporary = name.parent == base.parent and name.name.startswith(f".{base.name}.")
    return name == base or base in name.parents or temporary


def describe_os_error(exc: OSError) -> str:
    """One line for an OS error no command expected (the CLI's last resort):
    the file it names, what the system said, and where to look."""
    name = exc.filename if exc.filename is not None else "a file"
    code = errno.errorcode.get(exc.errno, "") if exc.errno is not None else ""
    what = exc.strerror or str(exc) or type(exc).__name__
    return (
        f"{os.fsdecode(name) if isinstance(name, bytes) else name}: {what}"
        f"{f' ({code})' if code else ''}. Check that path (its permissions, free space, "
        "and that it is the file or folder you meant); run with -v for details."
    )


def _resolved(path) -> Path:
    """``path`` made absolute with every symlink followed (also those of
    folders above a path that does not exist yet)."""
    return Path(os.path.abspath(os.fsdecode(path))).resolve(strict=False)


def check_apart(out, inputs: dict, option: str = "--out") -> Path:
    """Refuse an output that would write onto, into or over one of the
    command's inputs, before any work; symlinks are followed.

    Parameters
    ----------
    out : path
        The file or folder the command writes.
    inputs : dict
        {what the input is (e.g. "the model bundle", "--data"): path}; None
        paths are skipped.
    option : str
        The output's option name, for the message.

    Returns
    -------
    Path
        ``out`` resolved.

    Raises
    ------
    OutputError
        If ``out`` is an input, lies inside an input folder, or is a folder
        holding an input (replacing it would delete the input).
    """
    target = _resolved(out)
    for what, path in inputs.items():
        if path is None:
            continue
        source = _resolved(path)
        via = (
            ""
            if (Path(os.path.abspath(out)) == target and Path(os.path.abspath(path)) == source)
            else (f" (following symlinks, {target} and {source})")
        )
        if target == source:
            relation = "is"
        elif source in target.parents:
            relation = "lies inside"
        elif target in source.parents:
            relation = "is a folder holding"
        else:
            continue
        raise OutputError(
            f"{option} {out} {relation} {what} {path}{via}, an input of this command; "
            f"writing there could overwrite it. Choose an {option} outside the inputs."
        )
    return target


def check_in_results(out, results, option: str = "--out", *, own=()) -> Path:
    """Refuse an output that is the results folder it is made from, holds
    it, or would replace one of the run's files in it; symlinks are followed.

    A new file or folder inside the results folder is allowed (``report``'s
    default is ``RESULTS/report.md``), and so is one whose name ends with
    one of ``own``: what the command itself wrote there before.

    Parameters
    ----------
    out : path
    results : path
        The results folder the command reads.
    option : str
        The output's option name, for the message.
    own : tuple of str
        Name endings of the command's own outputs (e.g. ``(".md",)``).

    Returns
    -------
    Path
        ``out`` resolved.

    Raises
    ------
    OutputError
    """
    target, source = _resolved(out), _resolved(results)
    if target == source or target in source.parents:
        check_apart(out, {"the results folder": results}, option)
    if source in target.parents and os.path.lexists(target) and not target.name.endswith(own):
        via = "" if Path(os.path.abspath(out)) == target else f" (following symlinks, {target})"
        raise OutputError(
            f"{option} {out} is {target.relative_to(source)} of the results folder {results}"
            f"{via}, an input of this command; writing there would replace it. Choose an "
            f"{option} that does not exist yet."
        )
    return target
