"""Where a command's particles come from: the user's ``--data``, or the
built-in synthetic dataset of ``--problem``.

Its own module so that ``dataset`` (the types and readers) does not import
``synth`` (which builds on ``dataset``): the import graph has no cycle.
"""

from __future__ import annotations

from pathlib import Path

from liposome_bench.dataset import IMAGES_DIR, MASKS_DIR, Dataset, load_dataset
from liposome_bench.errors import DatasetError


def resolve_dataset(
    data, problem: str | None, *, cache_dir=None, reporter=None, **reader_options
) -> Dataset:
    """The dataset a command works on: ``data`` if given, else the built-in
    synthetic dataset of ``problem`` (generated once into the cache, with
    progress shown through ``reporter``)."""
    if data is None:
        from liposome_bench.synth import default_dataset_path

        if problem is None:
            raise DatasetError("Without --data, --problem is needed to pick the built-in dataset.")
        data = default_dataset_path(problem, cache_dir, reporter=reporter)
    return load_dataset(data, problem, reporter=reporter, **reader_options)


def dataset_inputs(
    data,
    problem: str | None = None,
    *,
    cache_dir=None,
    images_dir=IMAGES_DIR,
    masks_dir=MASKS_DIR,
    group_file=None,
    **_reader_options,
) -> dict:
    """The paths :func:`resolve_dataset` reads, named as the command line
    gives them, for ``outputs.check_apart``: ``--data`` (or the built-in
    dataset's cache folder), its ``--images-dir`` / ``--masks-dir``
    where they are folders, and ``--group-file``. Nothing is read or
    generated.

    Returns
    -------
    dict
        {what: path}; empty without ``data`` and ``problem``.
    """
    if isinstance(data, Dataset):
        return {} if data.root is None else {"the dataset": data.root}
    groups = {} if group_file is None else {"--group-file": group_file}
    if data is None:
        if problem is None:
            return groups
        from liposome_bench.synth import builtin_dataset_path

        return {"the built-in dataset": builtin_dataset_path(problem, cache_dir), **groups}
    data = Path(data)
    folder = data if data.is_dir() else data.parent
    inputs = {"--data": data, **groups}
    for option, name in (("--images-dir", images_dir), ("--masks-dir", masks_dir)):
        if name and (folder / name).is_dir():
            inputs[f"its {option}"] = folder / name
    return inputs
