"""liposome-bench: does a CNN beat the feature-based LIBSVM baseline on your particles?

The public API, for notebooks and scripts (docs/api.md)::

    from liposome_bench import generate_dataset, benchmark
    ds = generate_dataset("lamellarity", n=600, seed=1)
    r = benchmark(ds, models=["svm", "lipnet-1"], k=3)
    r.table()

Importing this package is cheap: every name below is imported on first use,
and nothing here imports TensorFlow or Keras.
"""

__version__ = "0.2.0"

from liposome_bench.errors import LiposomeBenchError  # noqa: E402

#: Public name -> the module that defines it (imported on first use).
_PUBLIC = {
    "load_dataset": "liposome_bench.dataset",
    "Dataset": "liposome_bench.dataset",
    "Particle": "liposome_bench.dataset",
    "generate_dataset": "liposome_bench.synth",
    "make_folds": "liposome_bench.api",
    "Folds": "liposome_bench.folds",
    "benchmark": "liposome_bench.api",
    "BenchmarkResult": "liposome_bench.api",
    "LibSVMClassifier": "liposome_bench.svm",
    "LipNetClassifier": "liposome_bench.lipnet",
    "SVMSettings": "liposome_bench.settings",
    "CNNSettings": "liposome_bench.settings",
    "load_config": "liposome_bench.settings",
    "extract_features": "liposome_bench.features",
}

__all__ = ["__version__", "LiposomeBenchError", *_PUBLIC]


def __getattr__(name):
    if name in _PUBLIC:
        import importlib

        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'liposome_bench' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
