"""The notebook-facing functions: folds of a dataset, and a whole benchmark
returned as an object instead of a results folder.

    >>> from liposome_bench import generate_dataset, benchmark     # doctest: +SKIP
    >>> ds = generate_dataset("lamellarity", n=600, seed=1)          # doctest: +SKIP
    >>> r = benchmark(ds, models=["svm", "lipnet-1"], k=3)            # doctest: +SKIP
    >>> r.table()                                                     # doctest: +SKIP

Everything here calls the same library functions as the command line
(``comparison.run_benchmark``), so the numbers are the CLI's on the same data,
folds and seeds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from liposome_bench import registry
from liposome_bench.errors import ConfigError


def make_folds(dataset, k: int = 5, seed: int = 0):
    """The dataset's stratified ``k`` folds (stored beside it on disk, when
    it has a folder, and reused by every command).

    Parameters
    ----------
    dataset : dataset.Dataset
    k : int
        Number of folds.
    seed : int
        Seed of the fold assignment.

    Returns
    -------
    folds.Folds
        Usable as ``cv=`` in scikit-learn (it has ``split`` and
        ``get_n_splits``).
    """
    from liposome_bench.folds import load_or_make_folds

    return load_or_make_folds(dataset, k=k, seed=seed)


class BenchmarkResult:
    """What :func:`benchmark` returns: the run's summary and predictions.

    Attributes
    ----------
    summary : dict
        As written to ``summary.json`` (docs/results-layout.md).
    predictions : pandas.DataFrame
        Every particle's out-of-fold prediction by every model.
    out : Path or None
        The results folder, when one was asked for.
    """

    def __init__(self, summary: dict, predictions, out=None):
        self.summary = summary
        self.predictions = predictions
        self.out = Path(out) if out is not None else None

    @property
    def models(self) -> list[str]:
        return list(self.summary["models"])

    def table(self):
        """Per-class metrics of every model: rows (model, class), columns
        TPR, TNR, PPV, NPV, F1, F1 (thesis): means over folds, as the
        CLI's table prints them."""
        import pandas as pd

        rows = {}
        for model, entry in self.summary["models"].items():
            for cls, metrics in entry["per_class"].items():
                rows[(model, cls)] = {name: m["mean"] for name, m in metrics.items()}
        frame = pd.DataFrame.from_dict(rows, orient="index")
        frame.index.names = ["model", "class"]
        return frame

    def overall(self):
        """Overall metrics (accuracy, balanced accuracy, macro F1, MCC) per
        model: means over folds."""
        import pandas as pd

        return pd.DataFrame(
            {
                model: {name: m["mean"] for name, m in entry["overall"].items()}
                for model, entry in self.summary["models"].items()
            }
        ).T

    def verdict(self):
        """The headline verdict, as the CLI prints it: per comparison of a
        CNN with the SVM, one row per class F1 and one for macro F1, with the
        mean difference (CNN minus SVM), its corrected interval, the
        corrected resampled t-test's p, the Holm-adjusted p and the verdict
        (docs/benchmark.md)."""
        import pandas as pd

        rows = []
        for comparison in (self.summary.get("verdict") or {}).get("comparisons", []):
            entries = [*comparison["per_class"].items(), ("macro F1", comparison["macro_f1"])]
            for name, entry in entries:
                ci = entry.get("ci") or [None, None]
                rows.append(
                    {
                        "model_a": comparison["model_a"],
                        "model_b": comparison["model_b"],
                        "class": name,
                        "difference": entry.get("difference"),
                        "ci_low": ci[0],
                        "ci_high": ci[1],
                        "p": entry.get("p"),
                        "p_holm": entry.get("p_holm"),
                        "verdict": entry.get("verdict"),
                        "n_scores": comparison.get("n_scores"),
                    }
                )
        return pd.DataFrame(rows)

    def to_frame(self):
        """The out-of-fold predictions (``predictions.csv``) as a DataFrame."""
        return self.predictions.copy()

    def __repr__(self) -> str:
        f1 = self.overall().get("macro_f1")
        scores = ", ".join(f"{m} {v:.3f}" for m, v in f1.items()) if f1 is not None else ""
        return (
            f"<BenchmarkResult: {self.summary['dataset'].get('n_particles', '?')} "
            f"particles, {self.summary['folds']['k']} folds; macro F1: {scores}>"
        )


def benchmark(
    dataset,
    models=None,
    *,
    k: int = 5,
    folds=None,
    seed: int = 0,
    fold_seed: int = 0,
    repeats: int = 1,
    config=None,
    out=None,
    jobs: int = 1,
    reporter=None,
) -> BenchmarkResult:
    """Run the SVM and CNN(s) on identical folds of ``dataset``, as
    ``liposome-bench benchmark`` does.

    Parameters
    ----------
    dataset : dataset.Dataset
        In memory (``generate_dataset``, ``load_dataset``).
    models : sequence of str, optional
        ``"svm"`` (the baseline every other model is compared with; required)
        and registered model names (``registry.model_names()``: CNNs, ...);
        default the SVM and the thesis's CNN for the problem.
    k : int
        Number of folds, when ``folds`` is not given.
    folds : folds.Folds, optional
        Folds to use (``make_folds``); they must belong to ``dataset``.
    seed, fold_seed, repeats, config, jobs, reporter
        As for ``comparison.run_benchmark`` (``config``: a
        ``settings.BenchmarkConfig`` or a TOML path).
    out : path, optional
        Keep the results folder there (summary.json, predictions.csv, fold
        files, models). Without it the run uses a temporary folder that is
        deleted before returning.

    Returns
    -------
    BenchmarkResult
    """
    import pandas as pd

    from liposome_bench.comparison import DEFAULT_CNN, run_benchmark

    base = registry.baseline().names[0]
    if models is None:
        models = [base, *DEFAULT_CNN.get(dataset.problem.name, ("lipnet-4",))]
    models = list(models)
    if base not in models:
        raise ConfigError(
            f"models must include {base!r}, the baseline each other model is compared with; "
            f"got {models}."
        )
    cnn_models = [m for m in models if m != base]

    def run(folder):
        summary = run_benchmark(
            None,
            dataset,
            cnn_models=cnn_models,
            out=folder,
            k=k,
            folds=folds,
            seed=seed,
            fold_seed=fold_seed,
            repeats=repeats,
            config=config,
            jobs=jobs,
            reporter=reporter,
        )
        predictions = pd.read_csv(folder / "predictions.csv", dtype={"id": str})
        return BenchmarkResult(summary, predictions, out)

    if out is not None:
        return run(Path(out))
    with tempfile.TemporaryDirectory(prefix="liposome-bench-") as scratch:
        return run(Path(scratch) / "results")
