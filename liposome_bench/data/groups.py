"""Particle groups for ``--group-by group``: from a pattern on file names
(``set_groups``) or from an ``id,group`` CSV (``set_groups_from_file``)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from liposome_bench.errors import ConfigError, DatasetError

#: Group keys from Roboflow's file names ("m01_jpg.rf.3f2a....jpg": the
#: source image "m01", shared by its augmented copies).
ROBOFLOW_GROUP_PATTERN = r"^(.*)_(?:jpg|png)\.rf\."
#: Group keys from CVAT frame names of a video or series ("s12_frame_000031.png": "s12").
CVAT_GROUP_PATTERN = r"^(.*)_frame_\d+"


def compile_group_pattern(pattern):
    """``pattern`` compiled; it must have a capture group (the group key).

    Raises
    ------
    ConfigError
        On a pattern that is not a regular expression or has no group.
    """
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(
            f"--group-pattern {pattern!r} is not a regular expression ({exc}). "
            "Fix it, e.g. '^(.*)_(?:jpg|png)\\.rf\\.' for Roboflow."
        ) from None
    if regex.groups < 1:
        raise ConfigError(
            f"--group-pattern {pattern!r} has no capture group; the first group "
            "is the group key. Put ( ) around the part naming the source."
        )
    return regex


def group_key(pattern, file_name: str) -> str | None:
    """The first capture group of ``pattern`` in ``file_name``'s base name
    (``re.search``), or None when it does not match or captures nothing."""
    regex = pattern if isinstance(pattern, re.Pattern) else compile_group_pattern(pattern)
    found = regex.search(Path(str(file_name)).name)
    return found.group(1) if found and found.group(1) else None


def set_groups(particles, pattern) -> None:
    """Set each particle's ``meta["group"]`` to ``group_key(pattern, NAME)``
    of its micrograph's file name (``meta["micrograph"]``, else its image's
    ``source``).

    Raises
    ------
    ConfigError
        On a bad pattern (see ``compile_group_pattern``).
    DatasetError
        When the pattern does not match some particle's name.
    """
    regex = compile_group_pattern(pattern)
    missed = []
    for p in particles:
        name = p.meta.get("micrograph") or p.source
        key = group_key(regex, name)
        if key is None:
            missed.append(Path(str(name)).name)
        else:
            p.meta["group"] = key
    if missed:
        names = sorted(set(missed))
        raise DatasetError(
            f"--group-pattern {pattern!r} does not match micrograph {names[0]!r}"
            + (f" (and {len(names) - 1} more)" if len(names) > 1 else "")
            + ". Fix the pattern so its first group captures every file's source."
        )


def set_groups_from_file(particles, path) -> None:
    """Set each particle's ``meta["group"]`` from a CSV of ``id,group`` (what
    ``dataset check --write-grouping`` writes), for ``--group-by group``.

    Raises
    ------
    DatasetError
        On a file that is not such a CSV, or one that lacks a particle.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"--group-file {path}: cannot be read ({exc}).") from None
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["id", "group"]:
        raise DatasetError(
            f"--group-file {path}: expected a CSV with the header 'id,group'; got "
            f"{','.join(rows[0]) if rows else 'an empty file'!r}. "
            "Write one with: liposome-bench dataset check DATA --write-grouping FILE."
        )
    group_of = {r[0].strip(): r[1].strip() for r in rows[1:] if len(r) >= 2 and r[1].strip()}
    missing = [p.id for p in particles if p.id not in group_of]
    if missing:
        raise DatasetError(
            f"--group-file {path} has no group for particle {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + ". Write it again from this dataset with dataset check --write-grouping."
        )
    for p in particles:
        p.meta["group"] = group_of[p.id]


def check_group_sources(group_pattern, group_file) -> None:
    """Refuse ``--group-pattern`` and ``--group-file`` together (``ConfigError``)."""
    if group_pattern is not None and group_file is not None:
        raise ConfigError(
            "--group-pattern and --group-file both set each particle's group; give one."
        )
