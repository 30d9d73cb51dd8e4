"""One orchestration: what every entry point does before a model runs (issue 21).

"Resolve the dataset, check it, make or load its folds, check the results
folder, hold its lock, run" was written out in ``svm``, ``cnn``,
``benchmark``, ``train`` and the sweep. :func:`prepare_run` is that sequence
once:

1. the results folder (``out``) is checked before anything is read: it can be
   written, and it is apart from everything the run reads
   (``outputs.check_output_dir``, ``outputs.check_apart``);
2. the dataset is resolved (``sources.resolve_dataset``: a folder, a file, the
   built-in set) or taken as given (a ``dataset.Dataset`` in memory);
3. it is checked before any work (``dataset.check_trainable``; ``ResultsDir.prepare``
   repeats that cheap check for the library's runners called directly);
4. without ``out``, the folder is named from the dataset (``default_out``) and
   checked then;
5. with ``k``, its stored folds are loaded or made (``folds.load_or_make_folds``).

It returns a :class:`PreparedRun`; its :meth:`PreparedRun.session` holds the
folder's run lock (``results.run_lock``) while the models write into it.
``cli``'s ``svm`` and ``cnn``, ``comparison.run_benchmark`` (and so
``api.benchmark``), ``deploy.train_model``, and the ``sweep`` and ``curve``
commands share it. The dataset's fingerprint, which every later step checks
against, is hashed once (``Dataset.fingerprint`` caches it).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from liposome_bench.dataset import Dataset, check_trainable
from liposome_bench.folds import Folds, load_or_make_folds
from liposome_bench.outputs import check_apart, check_output_dir, writing
from liposome_bench.results import ResultsDir, run_lock
from liposome_bench.sources import dataset_inputs, resolve_dataset


@dataclass
class PreparedRun:
    """A run ready to start: its dataset (checked), folds and results folder.

    Attributes
    ----------
    dataset : dataset.Dataset
    folds : folds.Folds or None
        The stored folds (None when :func:`prepare_run` got no ``k``: the
        caller makes its own, e.g. one set per repeat).
    results : results.ResultsDir or None
        The results folder (None for a run that writes none, e.g. a dry run).
    inputs : dict
        What the run reads ({what: path}, for ``outputs.check_apart``).
    option : str
        The option that names the results folder in messages (``--out``).
    builtin : bool
        Whether the dataset is the built-in one (no ``data`` given).
    """

    dataset: Dataset
    folds: Folds | None = None
    results: ResultsDir | None = None
    inputs: dict = field(default_factory=dict)
    option: str = "--out"
    builtin: bool = False

    @property
    def out(self) -> Path | None:
        """The results folder's path."""
        return None if self.results is None else self.results.path

    @contextlib.contextmanager
    def session(self, *, wait: bool = False, reporter=None, command: str | None = None):
        """Hold the results folder's run lock (``results.run_lock``) for the
        whole run, with write errors under it reported as about ``option``
        (``outputs.writing``)."""
        with (
            writing(self.out, self.option),
            run_lock(self.out, wait=wait, reporter=reporter, command=command),
        ):
            yield self


def check_out(out, inputs: dict, option: str = "--out") -> Path:
    """``out`` checked as a results folder before any work: writable, and
    apart from ``inputs`` (``outputs.check_output_dir``, ``check_apart``).

    Raises
    ------
    OutputError
    """
    out = check_output_dir(out, option)
    check_apart(out, inputs, option)
    return out


def prepare_run(
    data=None,
    problem: str | None = None,
    *,
    out=None,
    default_out: Callable | None = None,
    option: str = "--out",
    cache_dir=None,
    reader_options: dict | None = None,
    inputs: dict | None = None,
    check_folder: Callable | None = None,
    k: int | None = None,
    fold_seed: int = 0,
    group_by: str | None = None,
    reporter=None,
    fold_reporter=None,
) -> PreparedRun:
    """Resolve and check the dataset once, load or make its folds, and check
    the results folder (see the module docstring).

    Parameters
    ----------
    data : path or dataset.Dataset, optional
        A dataset folder or file, a dataset in memory, or None for the
        built-in dataset of ``problem``.
    problem : str, optional
        As for ``sources.resolve_dataset``.
    out : path, optional
        The results folder, checked before the dataset is read.
    default_out : callable, optional
        ``default_out(dataset) -> path``: the folder when ``out`` is None
        (checked once the dataset is known). Neither: no results folder.
    option : str
        The option naming the folder in messages (``--out``, ``--cv-out``).
    cache_dir, reader_options
        As for ``sources.resolve_dataset``.
    inputs : dict, optional
        More paths the run reads ({what: path}, e.g. a settings file); the
        results folder must be apart from them and from the dataset.
    check_folder : callable, optional
        ``check_folder(out)``: the caller's own check of the results folder
        (e.g. ``benchmark``'s layout of repeats), before the dataset is read.
    k, fold_seed, group_by
        With ``k``: the stored ``k``-fold assignment (``folds.load_or_make_folds``).
    reporter : progress reporter, optional
        For reading the dataset; ``fold_reporter`` (default ``reporter``)
        for the folds.

    Returns
    -------
    PreparedRun

    Raises
    ------
    LiposomeBenchError
        A results folder that cannot be written or overlaps an input, an
        unreadable dataset, one no classifier can be trained on, or folds
        that cannot be made.
    """
    reader_options = reader_options or {}
    in_memory = isinstance(data, Dataset)
    inputs = {
        **(
            {}
            if in_memory
            else dataset_inputs(data, problem, cache_dir=cache_dir, **reader_options)
        ),
        **(inputs or {}),
    }
    if out is not None:
        out = check_out(out, inputs, option)
        if check_folder is not None:
            check_folder(out)
    if in_memory:
        dataset = data
    else:
        dataset = resolve_dataset(
            data, problem, cache_dir=cache_dir, reporter=reporter, **reader_options
        )
    check_trainable(dataset)
    if out is None and default_out is not None:
        out = check_out(default_out(dataset), inputs, option)
        if check_folder is not None:
            check_folder(out)
    folds = None
    if k is not None:
        folds = load_or_make_folds(
            dataset,
            k=k,
            seed=fold_seed,
            group_by=group_by,
            reporter=reporter if fold_reporter is None else fold_reporter,
        )
    return PreparedRun(
        dataset=dataset,
        folds=folds,
        results=None if out is None else ResultsDir(out),
        inputs=inputs,
        option=option,
        builtin=data is None,
    )
