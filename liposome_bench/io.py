"""Writing files whole or not at all: every file liposome-bench writes goes
through :func:`atomic_write` (a temporary name beside the target, renamed
onto it), so an interrupted command never leaves a half-written file.

A small module of its own, so that modules which only write files do not
import the dataset readers.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from pathlib import Path


def atomic_write(path, write, *, suffix: str = ".tmp") -> Path:
    """Write ``path`` whole or not at all: ``write(tmp)`` writes a new file at
    a unique name beside it, which is then renamed onto ``path``; on any
    failure the temporary file is removed and ``path`` is left as it was.

    ``write`` creates the file itself, so it gets the user's usual (umask)
    permissions. ``suffix`` ends the temporary name, for writers that choose
    the format by extension (``.keras``, ``.png``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see ``atomic_write``)."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import (for mkdtemp's folders): os.umask can only be read by
# setting it, which would race with threads writing files.
UMASK = _read_umask()


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


# Staging folders ----------------------------------------------------------------------
#
# A folder output (a lab export, a model bundle) is written into a hidden
# staging folder beside it, ``.NAME.tmp-HOST-PID-RANDOM``, and renamed into
# place. A run killed outright (SIGKILL, power loss) cannot remove it; the
# next run for the same output does (:func:`clean_stale_staging`).


def staging_prefix(out) -> str:
    """The name start of a staging folder for ``out`` made by this process:
    it names the host and process, so a later run can tell it is stale."""
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"
    return f".{Path(out).name}.tmp-{host}-{os.getpid()}-"


def make_staging(out) -> Path:
    """A new, empty staging folder beside ``out`` (see :func:`staging_prefix`)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f"{staging_prefix(out)}{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    return staging


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_stale_staging(out) -> list[Path]:
    """Remove the staging folders that interrupted runs left beside ``out``.

    A folder ``.NAME.tmp-HOST-PID-...`` is removed when HOST is this machine
    and process PID is gone; one of another machine, or of a live process
    (a run writing the same output now), is kept. Folders of the older
    forms ``.NAME.tmpXXXXXXXX``, ``.NAME.tmp-XXXXXXXX`` and
    ``.NAME.old-XXXXXXXX`` (liposome-bench 0.2.0) name no process and are
    removed.

    Returns
    -------
    list of Path
        The folders removed.
    """
    out = Path(out)
    if not out.parent.is_dir():
        return []
    host = staging_prefix(out).split(".tmp-", 1)[1].rsplit("-", 2)[0]
    removed = []
    for entry in out.parent.iterdir():
        name = entry.name
        if not entry.is_dir() or entry.is_symlink():
            continue
        if not name.startswith((f".{out.name}.tmp", f".{out.name}.old-")):
            continue
        rest = name[len(f".{out.name}.") :]
        parts = rest.split("-")
        if rest.startswith("tmp-") and len(parts) >= 4 and parts[-2].isdigit():
            owner_host, pid = "-".join(parts[1:-2]), int(parts[-2])
            if owner_host != host or _alive(pid):
                continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed
