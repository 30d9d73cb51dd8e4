"""Where a command's particles come from: the user's ``--data``, or the
built-in synthetic dataset of ``--problem``.

Its own module so that ``dataset`` (the types and readers) does not import
``synth`` (which builds on ``dataset``): the import graph has no cycle.
"""

from __future__ import annotations

from liposome_bench.dataset import Dataset, load_dataset
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
