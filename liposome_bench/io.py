"""Writing files whole or not at all: every file liposome-bench writes goes
through :func:`atomic_write` (a temporary name beside the target, renamed
onto it), so an interrupted command never leaves a half-written file.

A small module of its own, so that modules which only write files do not
import the dataset readers.
"""

from __future__ import annotations

import json
import os
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
