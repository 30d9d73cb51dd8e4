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
from typing import ClassVar

from liposome_bench.errors import ConfigError

MODEL_NAMES = ("lipnet-1", "lipnet-2", "lipnet-4", "lipnet-4c", "lipnet-6", "lipnet-fcn")
INPUT_MODES = ("surrounding", "cropped", "masked")
INPUT_SCALES = ("resize", "keep")
#: Augmentations in the order they are applied (section 5.5).
AUGMENTATIONS = ("flip", "rotation", "shear", "shift", "zoom")
BALANCE_METHODS = ("oversample", "undersample", "smote", "class-weight", "none")
OPTIMIZERS = ("adam", "sgd")
FEATURE_SETS = ("vironova", "all")
FEATURE_SOURCES = ("computed", "export")
GRID_NAMES = ("coarse", "full")
#: What CNN early stopping watches on the validation part: macro F1 (the
#: score the SVM's grid search maximises) or the class-balanced loss; "none"
#: trains every epoch and keeps the last one's weights.
NO_EARLY_STOPPING = "none"
EARLY_STOPPING_METRICS = ("macro_f1", "loss", NO_EARLY_STOPPING)
#: Units of the SVM's features: nm (needs the pixel size) or px (docs/features.md).
FEATURE_UNITS = ("nm", "px")

#: A fixed budget: every fold trains DEFAULT_EPOCHS epochs with the learning
#: rate on a cosine decay to 0 and keeps its last epoch's (averaged) weights.
#: Early stopping on a validation part holding a handful of rare particles
#: followed noise and cut folds short at 9-13 epochs; a fixed budget also
#: makes the time known before training (docs/cnn.md "A fixed budget").
#: DEFAULT_PATIENCE applies with early stopping on (macro_f1 or loss).
DEFAULT_EPOCHS = 30
DEFAULT_PATIENCE = 5
DEFAULT_EARLY_STOPPING = NO_EARLY_STOPPING
DEFAULT_LR_SCHEDULE = "cosine"
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
        raise ConfigError(f"Unknown {label} {value!r}; expected one of {', '.join(choices)}.")


def setting(
    default,
    help: str,
    *,
    kind: str,
    choices=None,
    low=None,
    high=None,
    low_open: bool = False,
    high_open: bool = False,
    flag: str | None = None,
    label: str | None = None,
    cli: bool = True,
):
    """A settings field with everything the entry points derive from it.

    The metadata is the one declaration of a setting: ``__post_init__``
    validates against it, ``cli.settings_options`` makes the click option
    from it (flag, type, range, default and help), and ``LipNetClassifier``'s
    parameters are checked against the fields by a test.

    Parameters
    ----------
    default
        The default value (None: unset, resolved at run time).
    help : str
        The ``--help`` text.
    kind : {"int", "float", "choice", "bool", "augment", "dropout"}
    choices : tuple of str, optional
        For ``kind="choice"``.
    low, high : float, optional
        Range of a number; ``low_open`` / ``high_open`` exclude the ends.
    flag : str, optional
        The command-line flag (default ``--`` + the name with dashes).
    label : str, optional
        What a choice is called in errors ("input mode"; default the name).
    cli : bool
        Whether commands offer it as an option (dropout's tuple is
        config-only).
    """
    metadata = {
        "help": help,
        "kind": kind,
        "choices": choices,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "flag": flag,
        "cli": cli,
        "label": label,
    }
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata=metadata)
    return field(default=default, metadata=metadata)


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of settings field ``f`` (``--input-mode``)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _check_number(value, meta, label, integer: bool):
    """``value`` as an int or float within the field's range, or a ConfigError."""
    low, high = meta["low"], meta["high"]
    if integer:
        expected = f"an integer of at least {low:g}" if low is not None else "an integer"
    elif low == 0 and meta["low_open"] and high is None:
        expected = "a positive number"
    elif high is None:
        expected = f"a number of at least {low:g}" if low is not None else "a number"
    else:
        expected = (
            f"a number in {'(' if meta['low_open'] else '['}{low:g}, {high:g}"
            f"{')' if meta['high_open'] else ']'}"
        )
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (not integer or int(value) == value)
    )
    if ok:
        if low is not None and (value <= low if meta["low_open"] else value < low):
            ok = False
        if high is not None and (value >= high if meta["high_open"] else value > high):
            ok = False
    if not ok:
        raise ConfigError(f"{label} must be {expected}; got {value!r}.")
    return int(value) if integer else value


def check_field(f: dataclasses.Field, value):
    """``value`` checked (and normalised) against settings field ``f``'s
    declaration: type (no bool for a number), finiteness, range, choices.

    Raises
    ------
    ConfigError
        Naming the setting and its flag, what was expected and what came.
    """
    meta = f.metadata
    label = f"{f.name} ({flag_of(f)})" if meta.get("cli", True) else f.name
    kind = meta["kind"]
    if value is None and f.default is None:
        return None
    if kind == "choice":
        if not isinstance(value, str) or value not in meta["choices"]:
            raise ConfigError(
                f"Unknown {meta['label'] or f.name.replace('_', ' ')} {value!r}; "
                "expected one of "
                f"{', '.join(meta['choices'])}."
            )
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(
                f"{f.name} must be true, false"
                + (" or unset (automatic)" if f.default is None else "")
                + f"; got {value!r}."
            )
        return value
    if kind in ("int", "float"):
        return _check_number(value, meta, label, kind == "int")
    if kind == "augment":
        if not (
            isinstance(value, str)
            or (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value))
        ):
            raise ConfigError(
                f"{label} must be 'all', 'none' or a comma-separated list of "
                f"{', '.join(AUGMENTATIONS)}; got {value!r}."
            )
        return parse_augment(value)
    if kind == "dropout":
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values:
            raise ConfigError(
                f"{label} must be a rate in [0, 1) or a list of rates; got {value!r}."
            )
        rates = [
            _check_number(
                v,
                {**meta, "low": 0.0, "high": 1.0, "low_open": False, "high_open": True},
                label,
                False,
            )
            for v in values
        ]
        return tuple(rates) if isinstance(value, (list, tuple)) else rates[0]
    raise AssertionError(f"unknown settings kind {kind!r}")  # a programming error


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
    """Shared by the settings dataclasses: validation from the fields'
    declarations, dict round trip, replace and make."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, check_field(f, getattr(self, f.name)))
        self._check_together()

    def _check_together(self):
        """Rules between settings (none by default)."""

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
                f"{prefix}unknown setting {unknown[0]!r}; valid settings are {', '.join(names)}."
            )
        try:
            return cls(**normalised)
        except ConfigError as exc:
            raise ConfigError(f"{prefix}{exc}") from None

    @classmethod
    def make(cls, settings=None, **options):
        """``settings`` (default: the defaults; a mapping is read with
        ``from_mapping``) with ``options`` replacing single fields; an
        unknown option is a ConfigError naming the valid ones.

        >>> CNNSettings.make(model="lipnet-2", epochs=3).epochs
        3
        """
        if settings is None:
            settings = cls()
        elif not isinstance(settings, cls):
            settings = cls.from_mapping(settings)
        if not options:
            return settings
        return cls.from_mapping({**settings.to_dict(), **options})

    def replace(self, **changes):
        """A copy with ``changes`` (validated again); ``None`` values are
        ignored, so CLI options left unset keep these settings."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class SVMSettings(_Settings):
    """Settings of the LIBSVM baseline (``svm``; docs/svm.md). Each field's
    declaration (help, range, flag) is in its ``setting(...)``.

    Examples
    --------
    >>> SVMSettings(grid="full").to_dict()["grid"]
    'full'
    """

    #: Its table in a settings file (``benchmark --config``) and a sweep file.
    TABLE: ClassVar[str] = "svm"

    feature_set: str = setting(
        "vironova",
        "Features: the lab's set (area, circularity, moments, edge density "
        "profile, histogram; thesis section 4.1) or every feature.",
        kind="choice",
        choices=FEATURE_SETS,
        label="feature set",
    )
    source: str = setting(
        "computed",
        "Compute features from the images, or use those stored in the lab export.",
        kind="choice",
        choices=FEATURE_SOURCES,
        label="feature source",
    )
    grid: str = setting(
        "coarse",
        "C/gamma grid: coarse (16 points, 3 inner folds on a 2,000-particle "
        "subsample keeping at least 250 of each class) or full (LIBSVM grid.py's 110 "
        "points, 5 inner folds; slow). Extended past an edge holding the best point "
        "(docs/svm.md).",
        kind="choice",
        choices=GRID_NAMES,
    )
    C: float | None = setting(
        None,
        "Fix the SVM's C instead of searching it.",
        kind="float",
        low=0,
        low_open=True,
        flag="--C",
    )
    gamma: float | None = setting(
        None,
        "Fix the RBF kernel's gamma instead of searching it.",
        kind="float",
        low=0,
        low_open=True,
    )
    units: str = setting(
        "nm",
        "Features in nm (needs the pixel size) or every length in pixels, with "
        "pixel-based windows: edge profile -52..+10 px, SNR band 8 px (docs/features.md).",
        kind="choice",
        choices=FEATURE_UNITS,
        label="units (--units)",
    )

    def _check_together(self):
        if self.units == "px" and self.source == "export":
            raise ConfigError(
                "--units px computes the features from the images; the export's own "
                "features are in nm. Use --source computed with --units px."
            )


@dataclass(frozen=True)
class CNNSettings(_Settings):
    """Settings of one LipNet's training (``cnn``; docs/cnn.md). Each field's
    declaration (help, range, flag) is in its ``setting(...)``; the
    learning rate, when unset, is :attr:`resolved_learning_rate`, and
    ``mixed_precision`` unset is resolved by ``cnn.resolve_dtype_policy``.

    Examples
    --------
    >>> s = CNNSettings(model="lipnet-2", augment="flip,rotation")
    >>> s.augment
    ('flip', 'rotation')
    >>> s.replace(epochs=20, patience=None).epochs
    20
    """

    #: Its table in a settings file (``[cnn]``, ``[cnn.<model>]``) and a sweep file.
    TABLE: ClassVar[str] = "cnn"

    model: str = setting(
        "lipnet-4",
        "LipNet architecture (thesis section 7; docs/models.md).",
        kind="choice",
        choices=MODEL_NAMES,
    )
    input_mode: str = setting(
        "masked",
        "Whole image with its surround, the particle's bounding box, or the "
        "box with everything outside the mask set to background (section 8.5).",
        kind="choice",
        choices=INPUT_MODES,
    )
    input_size: int | None = setting(
        None,
        "Image side in pixels. Default: the model's (28; 32 for lipnet-6; a 48 px "
        "canvas for lipnet-fcn).",
        kind="int",
        low=4,
    )
    input_scale: str | None = setting(
        None,
        "resize: every window fills the input (the thesis; size is lost). keep: one "
        "factor for all particles (nm per canvas pixel, or px without a pixel size) "
        "on a background canvas, so relative size is kept (docs/cnn.md). Default: "
        "keep for lipnet-fcn, resize otherwise.",
        kind="choice",
        choices=INPUT_SCALES,
    )
    augment: tuple = setting(
        AUGMENTATIONS,
        "Random augmentation while training: all, none, or a "
        "comma-separated list of rotation, shear, shift, zoom, flip (section 5.5).",
        kind="augment",
    )
    balance: str = setting(
        "oversample",
        "Class balancing of the training folds (section 4.8); test folds are never resampled.",
        kind="choice",
        choices=BALANCE_METHODS,
        label="balancing method",
    )
    epochs: int = setting(
        DEFAULT_EPOCHS,
        "Epochs per fold (the most, with early stopping). An epoch is one class-balanced draw as "
        "large as the fit part (oversample, smote) or one pass over it (docs/cnn.md).",
        kind="int",
        low=1,
    )
    patience: int = setting(
        DEFAULT_PATIENCE,
        "With early stopping (--early-stopping macro_f1 or loss): stop after this many "
        "epochs without a better validation score (validation split carved from the "
        "training folds).",
        kind="int",
        low=1,
    )
    early_stopping: str = setting(
        DEFAULT_EARLY_STOPPING,
        "none: a fixed budget, every epoch trained and the last one's weights kept "
        "(the validation part is only scored). macro_f1 (what the SVM's grid search "
        "maximises; ties broken by a lower loss) or loss (class-balanced): stop on that "
        "validation score after --patience epochs without improvement, keep the best epoch.",
        kind="choice",
        choices=EARLY_STOPPING_METRICS,
        label="early-stopping metric",
    )
    batch_size: int = setting(
        DEFAULT_BATCH_SIZE,
        "Images per training step (the thesis used 32, section 8.1; "
        "128 trains about twice as fast on a CPU, docs/performance.md).",
        kind="int",
        low=1,
    )
    optimizer: str = setting(
        "adam",
        "Adam, or SGD with Nesterov momentum (section 4.5).",
        kind="choice",
        choices=OPTIMIZERS,
    )
    learning_rate: float | None = setting(
        None,
        "Learning rate after the warm-up. Default: 1e-3 for adam, 1e-2 for sgd at "
        "batch size 32, times sqrt(batch size / 32).",
        kind="float",
        low=0,
        low_open=True,
    )
    warmup_epochs: float = setting(
        DEFAULT_WARMUP_EPOCHS,
        "Epochs over which the learning rate rises linearly from a tenth of its value (0: none).",
        kind="float",
        low=0,
    )
    lr_schedule: str = setting(
        DEFAULT_LR_SCHEDULE,
        "After the warm-up: a cosine decay to 0 at --epochs, or a constant learning rate.",
        kind="choice",
        choices=LR_SCHEDULES,
        label="learning-rate schedule",
    )
    weight_averaging: float = setting(
        DEFAULT_WEIGHT_AVERAGING,
        "Score, keep and save each epoch with an exponential "
        "moving average of the weights (this momentum per step; 0: the raw weights).",
        kind="float",
        low=0,
        high=1,
        high_open=True,
    )
    l2: float = setting(
        0.0, "L2 weight decay on the dense/classifier layers (section 5.1).", kind="float", low=0
    )
    dense_units: int | None = setting(
        None,
        "Units of the dense layer(s). Default: the model's (docs/models.md).",
        kind="int",
        low=1,
    )
    dropout: float | tuple | None = setting(
        None, "Dropout rate(s) of the model's dropout layers, in [0, 1).", kind="dropout", cli=False
    )
    validation_fraction: float = setting(
        DEFAULT_VALIDATION_FRACTION,
        "Share of the training folds held out (stratified, "
        "grouped with the folds) for early stopping.",
        kind="float",
        low=0,
        high=1,
        high_open=True,
    )
    samples_per_epoch: int | None = setting(
        None, "Samples drawn per epoch. Default: the fit part's size.", kind="int", low=1
    )
    mixed_precision: bool | None = setting(
        None,
        "Compute in float16 on a GPU (bfloat16 on a CPU); weights stay float32. "
        "Default: bfloat16 with TensorFlow on a CPU with native bfloat16 (AVX512-BF16 or "
        "AMX), else float32.",
        kind="bool",
    )

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


def is_fixed_budget(settings) -> bool:
    """Whether ``settings`` train a fixed budget: early stopping off, every
    epoch trained and the last one's weights kept. ``settings``: a
    CNNSettings, or a recorded dict of one (a summary's ``settings.models``
    entry, a run.json record); a record without the key is from before
    early stopping could be turned off, so it stopped early.

    >>> is_fixed_budget(CNNSettings(early_stopping="none")), is_fixed_budget({"early_stopping": "loss"}), is_fixed_budget({})
    (True, False, False)
    """
    value = (
        settings.get("early_stopping") if isinstance(settings, dict) else settings.early_stopping
    )
    return value == NO_EARLY_STOPPING


def check_patience_applies(given, settings: CNNSettings, where: str) -> None:
    """Refuse a patience the user set (``given``: the option names or table
    keys set) where early stopping is off (``early_stopping="none"``, a
    fixed budget), instead of ignoring it silently.

    >>> check_patience_applies({"patience"}, CNNSettings(early_stopping="none"), "--patience")
    Traceback (most recent call last):
    ...
    liposome_bench.errors.ConfigError: --patience is set, but early stopping is off (a fixed budget of 30 epochs, the last kept). Add early stopping (macro_f1 or loss) for the patience to apply, or drop it.
    """
    if "patience" in given and is_fixed_budget(settings):
        raise ConfigError(
            f"{where} is set, but early stopping is off (a fixed budget of {settings.epochs} "
            f"epochs, the last kept). Add early stopping ({' or '.join(EARLY_STOPPING_METRICS[:-1])}"
            ") for the patience to apply, or drop it."
        )


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
        raise ConfigError(
            f"{path} nests arrays or tables too deeply to read; a settings "
            "file holds flat [svm], [cnn] and [cnn.<model>] tables."
        ) from None
    svm_key, cnn_key = SVMSettings.TABLE, CNNSettings.TABLE
    unknown = [k for k in data if k not in (svm_key, cnn_key)]
    if unknown:
        raise ConfigError(
            f"{path}: unknown table [{unknown[0]}]; a settings file holds [svm], [cnn] "
            "and [cnn.<model>] tables."
        )
    try:
        svm = SVMSettings.from_mapping(data.get(svm_key, {}), where=f"[{svm_key}]")
        cnn_table = data.get(cnn_key, {})
        if not isinstance(cnn_table, dict):
            raise ConfigError(f"[{cnn_key}] must be a table of settings.")
        per_model = {k: v for k, v in cnn_table.items() if isinstance(v, dict)}
        defaults = {k: v for k, v in cnn_table.items() if not isinstance(v, dict)}
        for name in per_model:
            _choice(name, MODEL_NAMES, "model in a [cnn.<model>] table")
        CNNSettings.from_mapping({**defaults, "model": MODEL_NAMES[0]}, where="[cnn]")
        if "model" in defaults:
            raise ConfigError(
                "[cnn] cannot set model; name the model in a [cnn.<model>] "
                "table, or choose models with --cnn."
            )
        config = BenchmarkConfig(svm=svm, cnn_defaults=defaults, cnn=per_model)
        for name in MODEL_NAMES:  # validate every table now, before any work
            check_patience_applies(
                {**defaults, **per_model.get(name, {})},
                config.cnn_settings(name),
                f"patience in [cnn.{name}]"
                if "patience" in per_model.get(name, {})
                else "patience in [cnn]",
            )
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config
