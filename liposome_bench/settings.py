"""Model settings: one validated shape for the SVM and for each CNN, shared by
every entry point (``svm``, ``cnn``, ``benchmark --config``, ``train``,
``sweep`` and the Python API).

:class:`SVMSettings` and :class:`CNNSettings` are frozen dataclasses,
validated once when made; ``to_dict`` gives the JSON recorded in results and
``from_mapping`` reads one back (or a TOML table), refusing unknown keys with
the list of valid ones. :func:`load_config` reads a TOML file::

    [svm]
    grid = "full"

    [cnn]                 # applies to every CNN
    epochs = 40

    [cnn.lipnet-4]        # one model; overrides [cnn]
    input_mode = "cropped"

The choice lists (models, input modes, balancing, ...) live here, so the CLI
and the library share them. Importing this module is cheap.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from liposome_bench.errors import ConfigError

MODEL_NAMES = ("lipnet-1", "lipnet-2", "lipnet-4", "lipnet-4c", "lipnet-6", "lipnet-fcn")
INPUT_MODES = ("surrounding", "cropped", "masked")
#: Augmentations in the order they are applied (section 5.5).
AUGMENTATIONS = ("flip", "rotation", "shear", "shift", "zoom")
BALANCE_METHODS = ("oversample", "undersample", "smote", "class-weight", "none")
OPTIMIZERS = ("adam", "sgd")
FEATURE_SETS = ("vironova", "all")
FEATURE_SOURCES = ("computed", "export")
GRID_NAMES = ("coarse", "full")
#: What CNN early stopping watches on the validation part: macro F1 (the
#: score the SVM's grid search maximises) or the class-balanced loss.
EARLY_STOPPING_METRICS = ("macro_f1", "loss")
#: Units of the SVM's features: nm (needs the pixel size) or px (docs/features.md).
FEATURE_UNITS = ("nm", "px")

#: Early stopping decides how long a CNN trains: at most DEFAULT_EPOCHS,
#: stopping after DEFAULT_PATIENCE epochs without a better validation macro
#: F1. The maximum is set high enough that a normal run stops early, and so
#: that the default lamellarity benchmark fits in 10 minutes on a 2-core CPU
#: (measured: docs/cnn.md "Default epochs and the time budget").
DEFAULT_EPOCHS = 30
DEFAULT_PATIENCE = 5
DEFAULT_EARLY_STOPPING = "macro_f1"
#: 128 images per step (the thesis used 32, section 8.1): with bfloat16 on a
#: CPU that has it natively, 1.65-1.75 times the images per CPU second of
#: plain ``fit`` at 32, with the learning rate scaled to match
#: (docs/performance.md has the measurements).
DEFAULT_BATCH_SIZE = 128
#: The batch size the optimizers' learning rates below are for (the thesis's).
REFERENCE_BATCH_SIZE = 32
#: Epochs of linear learning-rate warm-up, from a tenth of the rate: larger
#: batches take larger steps, which the first epoch's random weights do not
#: tolerate.
DEFAULT_WARMUP_EPOCHS = 1.0
#: Momentum of the exponential moving average of the CNN's weights that each
#: epoch is scored and kept with (0: the raw weights). 0.99 averages over
#: about the last 100 optimizer steps, a little more than one epoch of the
#: built-in lamellarity set at batch 128; docs/performance.md says what it
#: did to the validation scores and the convergence check.
DEFAULT_WEIGHT_AVERAGING = 0.99
DEFAULT_VALIDATION_FRACTION = 0.1
DEFAULT_LEARNING_RATES = {"adam": 1e-3, "sgd": 1e-2}
LR_SCHEDULES = ("constant", "cosine")


def scaled_learning_rate(optimizer: str, batch_size: int) -> float:
    """The default learning rate of ``optimizer`` at ``batch_size``: the rate
    for batch size 32 (:data:`DEFAULT_LEARNING_RATES`) times
    sqrt(batch_size / 32).

    >>> scaled_learning_rate("adam", 32), scaled_learning_rate("adam", 128)
    (0.001, 0.002)
    """
    factor = math.sqrt(batch_size / REFERENCE_BATCH_SIZE)
    return float(round(DEFAULT_LEARNING_RATES[optimizer] * factor, 12))


def parse_augment(spec) -> tuple[str, ...]:
    """The augmentations named by ``spec``, in the order they are applied.

    Parameters
    ----------
    spec : str or sequence of str
        ``"all"``, ``"none"``, or names from ``AUGMENTATIONS`` separated by
        commas (``"rotation,shift"``), or a sequence of such names.

    Returns
    -------
    tuple of str, a subset of ``AUGMENTATIONS`` in its order.

    Raises
    ------
    ConfigError
        If a name is unknown.
    """
    if spec is None:
        return ()
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [str(n).strip().lower() for n in parts if str(n).strip()]
    if not names or names == ["none"]:
        return ()
    if names == ["all"]:
        return AUGMENTATIONS
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ConfigError(
            f"Unknown augmentation {unknown[0]!r} in --augment {spec!r}; expected 'all', "
            f"'none' or a comma-separated list of {', '.join(AUGMENTATIONS)}."
        )
    return tuple(a for a in AUGMENTATIONS if a in names)


def _choice(value, choices, label):
    if value not in choices:
        raise ConfigError(
            f"Unknown {label} {value!r}; expected one of {', '.join(choices)}."
        )


def _integer(value, option, low, *, optional=False):
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        int(value) != value or value < low
    ):
        raise ConfigError(f"{option} must be an integer of at least {low}; got {value!r}.")


def _positive(value, option, *, optional=True, zero=False):
    if value is None and optional:
        return
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and (value >= 0 if zero else value > 0))
    if not ok:
        kind = "a number of at least 0" if zero else "a positive number"
        raise ConfigError(f"{option} must be {kind}; got {value!r}.")


#: Seeds go to NumPy, scikit-learn and Keras, which take 0 to 2**32 - 1.
MAX_SEED = 2**32 - 1


def check_seed(value, option: str = "--seed") -> int:
    """Return ``value`` if it is a seed every library accepts (an integer from
    0 to ``MAX_SEED``).

    Raises
    ------
    ConfigError
        Otherwise, naming ``option``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ConfigError(
            f"{option} must be a whole number from 0 to {MAX_SEED} (2**32 - 1); got {value!r}."
        )
    return value


class _Settings:
    """Shared by the settings dataclasses: dict round trip and replace."""

    def to_dict(self) -> dict:
        """Plain JSON-safe values (tuples become lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_mapping(cls, mapping, where: str | None = None):
        """Make settings from a dict (a TOML table, a ``to_dict`` result),
        refusing keys that are not settings."""
        prefix = f"{where}: " if where else ""
        if not isinstance(mapping, dict):
            raise ConfigError(f"{prefix}expected a table of settings; got {mapping!r}.")
        names = [f.name for f in dataclasses.fields(cls)]
        normalised = {str(k).replace("-", "_"): v for k, v in mapping.items()}
        unknown = [k for k in normalised if k not in names]
        if unknown:
            raise ConfigError(
                f"{prefix}unknown setting {unknown[0]!r}; valid settings are "
                f"{', '.join(names)}."
            )
        try:
            return cls(**normalised)
        except ConfigError as exc:
            raise ConfigError(f"{prefix}{exc}") from None

    def replace(self, **changes):
        """A copy with ``changes`` (validated again); ``None`` values are
        ignored, so CLI options left unset keep these settings."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class SVMSettings(_Settings):
    """Settings of the LIBSVM baseline (``svm``; docs/svm.md).

    Parameters
    ----------
    feature_set : {"vironova", "all"}
        The lab's features (section 8.4) or every feature.
    source : {"computed", "export"}
        Compute features from the images, or use the lab export's.
    grid : {"coarse", "full"}
        The C/gamma grid searched on the training folds.
    C, gamma : float, optional
        Fix C and/or gamma instead of searching them.
    units : {"nm", "px"}
        Features in nm (needs every particle's pixel size) or every length
        in pixels, with pixel-based windows (docs/features.md).

    Examples
    --------
    >>> SVMSettings(grid="full").to_dict()["grid"]
    'full'
    """

    feature_set: str = "vironova"
    source: str = "computed"
    grid: str = "coarse"
    C: float | None = None
    gamma: float | None = None
    units: str = "nm"

    def __post_init__(self):
        _choice(self.feature_set, FEATURE_SETS, "feature set")
        _choice(self.source, FEATURE_SOURCES, "feature source")
        _choice(self.grid, GRID_NAMES, "grid")
        _choice(self.units, FEATURE_UNITS, "units (--units)")
        if self.units == "px" and self.source == "export":
            raise ConfigError(
                "--units px computes the features from the images; the export's own "
                "features are in nm. Use --source computed with --units px."
            )
        _positive(self.C, "C (--C)")
        _positive(self.gamma, "gamma (--gamma)")


@dataclass(frozen=True)
class CNNSettings(_Settings):
    """Settings of one LipNet's training (``cnn``; docs/cnn.md).

    Parameters
    ----------
    model : str
        A name from :data:`MODEL_NAMES`.
    input_mode : {"surrounding", "cropped", "masked"}
        Section 8.5's image modes.
    input_size : int, optional
        Image side in pixels; default the model's own.
    augment : str or sequence of str
        See :func:`parse_augment`; stored as a tuple.
    balance : str
        Class balancing of the fit part (section 4.8).
    epochs, patience, batch_size : int
        Maximum epochs, early-stopping patience, images per step.
    early_stopping : {"macro_f1", "loss"}
        What patience counts on: the validation macro F1 (the SVM's grid
        score; ties broken by a lower loss) or the class-balanced
        validation loss.
    optimizer : {"adam", "sgd"}
    learning_rate : float, optional
        Default :data:`DEFAULT_LEARNING_RATES` of the optimizer at batch size
        32, times sqrt(batch_size / 32) (see ``resolved_learning_rate``).
    warmup_epochs : float
        Epochs of linear warm-up from a tenth of the learning rate (0: none).
    lr_schedule : {"constant", "cosine"}
        After the warm-up: the rate stays constant, or follows a cosine
        decay to 0 at ``epochs``.
    weight_averaging : float
        Momentum in [0, 1) of an exponential moving average of the weights,
        updated after every optimizer step; every epoch is scored, kept and
        returned with the averaged weights (training continues from the raw
        ones). 0 turns it off.
    l2, dense_units, dropout
        Passed to ``models.build_lipnet`` (None keeps its default).
    validation_fraction : float
        Share of the training folds held out for early stopping.
    samples_per_epoch : int, optional
        Samples drawn per epoch instead of the fit part's size.
    mixed_precision : bool or None
        True: float16 compute on a GPU, bfloat16 on a CPU; False: float32.
        None (default): bfloat16 with the TensorFlow backend on a CPU that
        multiplies bfloat16 natively (AVX512-BF16 or AMX,
        ``machine.native_bfloat16``), float32 otherwise (GPUs included).

    Examples
    --------
    >>> s = CNNSettings(model="lipnet-2", augment="flip,rotation")
    >>> s.augment
    ('flip', 'rotation')
    >>> s.replace(epochs=20, patience=None).epochs
    20
    """

    model: str = "lipnet-4"
    input_mode: str = "masked"
    input_size: int | None = None
    augment: tuple = field(default=AUGMENTATIONS)
    balance: str = "oversample"
    epochs: int = DEFAULT_EPOCHS
    patience: int = DEFAULT_PATIENCE
    early_stopping: str = DEFAULT_EARLY_STOPPING
    batch_size: int = DEFAULT_BATCH_SIZE
    optimizer: str = "adam"
    learning_rate: float | None = None
    warmup_epochs: float = DEFAULT_WARMUP_EPOCHS
    lr_schedule: str = "constant"
    weight_averaging: float = DEFAULT_WEIGHT_AVERAGING
    l2: float = 0.0
    dense_units: int | None = None
    dropout: float | tuple | None = None
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    samples_per_epoch: int | None = None
    mixed_precision: bool | None = None

    def __post_init__(self):
        _choice(self.model, MODEL_NAMES, "model")
        _choice(self.input_mode, INPUT_MODES, "input mode")
        _choice(self.balance, BALANCE_METHODS, "balancing method")
        _choice(self.optimizer, OPTIMIZERS, "optimizer")
        _choice(self.lr_schedule, LR_SCHEDULES, "learning-rate schedule")
        _choice(self.early_stopping, EARLY_STOPPING_METRICS, "early-stopping metric")
        object.__setattr__(self, "augment", parse_augment(self.augment))
        _integer(self.input_size, "input_size (--input-size)", 4, optional=True)
        _integer(self.epochs, "epochs (--epochs)", 1)
        _integer(self.patience, "patience (--patience)", 1)
        _integer(self.batch_size, "batch_size (--batch-size)", 1)
        _integer(self.dense_units, "dense_units", 1, optional=True)
        _integer(self.samples_per_epoch, "samples_per_epoch", 1, optional=True)
        _positive(self.learning_rate, "learning_rate (--learning-rate)")
        _positive(self.l2, "l2 (--l2)", optional=False, zero=True)
        _positive(self.warmup_epochs, "warmup_epochs (--warmup-epochs)", optional=False,
                  zero=True)
        if not (isinstance(self.validation_fraction, (int, float))
                and 0.0 <= self.validation_fraction < 1.0):
            raise ConfigError(
                f"The validation fraction must be in [0, 1); got {self.validation_fraction!r}."
            )
        if not (isinstance(self.weight_averaging, (int, float))
                and not isinstance(self.weight_averaging, bool)
                and 0.0 <= self.weight_averaging < 1.0):
            raise ConfigError(
                f"weight_averaging (--weight-averaging) must be a momentum in [0, 1), "
                f"0 for none; got {self.weight_averaging!r}."
            )
        if isinstance(self.dropout, list):
            object.__setattr__(self, "dropout", tuple(self.dropout))
        if self.mixed_precision is not None and not isinstance(self.mixed_precision, bool):
            raise ConfigError(
                f"mixed_precision must be true, false or unset (automatic); got "
                f"{self.mixed_precision!r}."
            )
        for name in ("input_size", "epochs", "patience", "batch_size", "dense_units",
                     "samples_per_epoch"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, int(value))

    @property
    def resolved_learning_rate(self) -> float:
        """The learning rate used: the setting, or the optimizer's default for
        batch size 32 scaled by sqrt(batch_size / 32) (the square-root rule
        that keeps the gradient noise per sample about constant; measured
        against linear scaling in docs/performance.md).

        >>> CNNSettings(batch_size=128).resolved_learning_rate
        0.002
        """
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return scaled_learning_rate(self.optimizer, self.batch_size)


@dataclass(frozen=True)
class BenchmarkConfig:
    """What ``benchmark --config FILE.toml`` sets: the SVM's settings and,
    per CNN model, that CNN's settings (see :func:`load_config`)."""

    svm: SVMSettings = field(default_factory=SVMSettings)
    cnn_defaults: dict = field(default_factory=dict)
    cnn: dict = field(default_factory=dict)

    def cnn_settings(self, model: str, **overrides) -> CNNSettings:
        """The settings of CNN ``model``: its table over ``[cnn]``'s keys over
        the defaults, then ``overrides`` (None values ignored)."""
        table = {**self.cnn_defaults, **self.cnn.get(model, {}), "model": model}
        settings = CNNSettings.from_mapping(table, where=f"[cnn.{model}]")
        return settings.replace(**overrides)


def load_config(path) -> BenchmarkConfig:
    """Read a TOML settings file with ``[svm]``, ``[cnn]`` and ``[cnn.<model>]``
    tables.

    Raises
    ------
    ConfigError
        If the file is missing or not TOML, or a table holds an unknown
        setting or an invalid value; the message names the file and the key.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; pass a TOML settings file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read ({exc}); pass a TOML settings file.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}).") from None
    except RecursionError:
        raise ConfigError(f"{path} nests arrays or tables too deeply to read; a settings "
                          "file holds flat [svm], [cnn] and [cnn.<model>] tables.") from None
    unknown = [k for k in data if k not in ("svm", "cnn")]
    if unknown:
        raise ConfigError(
            f"{path}: unknown table [{unknown[0]}]; a settings file holds [svm], [cnn] "
            "and [cnn.<model>] tables."
        )
    try:
        svm = SVMSettings.from_mapping(data.get("svm", {}), where="[svm]")
        cnn_table = data.get("cnn", {})
        if not isinstance(cnn_table, dict):
            raise ConfigError("[cnn] must be a table of settings.")
        per_model = {k: v for k, v in cnn_table.items() if isinstance(v, dict)}
        defaults = {k: v for k, v in cnn_table.items() if not isinstance(v, dict)}
        for name in per_model:
            _choice(name, MODEL_NAMES, "model in a [cnn.<model>] table")
        CNNSettings.from_mapping({**defaults, "model": MODEL_NAMES[0]}, where="[cnn]")
        if "model" in defaults:
            raise ConfigError("[cnn] cannot set model; name the model in a [cnn.<model>] "
                              "table, or choose models with --cnn.")
        config = BenchmarkConfig(svm=svm, cnn_defaults=defaults, cnn=per_model)
        for name in MODEL_NAMES:  # validate every table now, before any work
            config.cnn_settings(name)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config
