"""liposome-bench: does a CNN beat the feature-based LIBSVM baseline on your particles?

Importing this package is cheap: nothing here imports TensorFlow or Keras.
"""

__version__ = "0.1.0"

from liposome_bench.errors import LiposomeBenchError  # noqa: E402

__all__ = ["__version__", "LiposomeBenchError"]
