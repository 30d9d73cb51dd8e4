"""The model registry: one ``ModelSpec`` per model family (issue 21).

Every entry point that handles "a model" (``benchmark``, ``train``,
``predict``, the CLI's choice lists) looks the model's family up here instead
of branching on its name. A family is declared once: its names, its settings
class, how its settings come from a ``BenchmarkConfig``, its cross-validation
runner, the inputs it shares across repeats, what its fold scores are, and the
hooks that train and apply its final model (``BundleHooks``).

Two families are built in: the LIBSVM baseline (``svm``) and LipNet
(``settings.MODEL_NAMES``). A new family is one module defining a spec and
one ``register(spec)`` call; docs/architecture.md shows one, and
tests/test_registry.py registers a nearest-centroid classifier on the
features and runs ``benchmark``, ``report``, ``train`` and ``predict`` on it.

Layering: this module sits above the model modules (``svm``, ``cnn``) and
below the orchestration (``comparison``, ``deploy``, ...). The final-training
and prediction code of the two built-in families lives in ``deploy`` (it
shares the bundle's card helpers), so their specs leave ``bundle`` None and
``deploy`` supplies its own hooks for them; a new family brings its hooks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from liposome_bench.errors import ConfigError
from liposome_bench.settings import MODEL_NAMES, CNNSettings, SVMSettings

#: What a fold's ``scores`` are (``results.FoldResult.score_kind``):
#: one-vs-one decision values (calibrated by cross-fitting,
#: ``abstention.out_of_fold``) or class probabilities.
SCORE_KINDS = ("decision", "probability")


@dataclass(frozen=True)
class BundleHooks:
    """How ``train`` writes a family's final model and ``predict`` applies it.

    Attributes
    ----------
    files : dict
        The card's ``files`` entry: key -> file name in the bundle folder.
    train : callable
        ``train(dataset, model, settings, fold_results, oof, staging, classes,
        *, jobs, reporter, group_by, k) -> dict`` writes the model files into
        ``staging`` and returns ``{"card": {...}, "hyperparameters": {...}}``
        (the card part holds ``input``, ``probabilities``, ``files`` and
        optionally ``pixel_size``; ``differences`` is optional).
    predict : callable
        ``predict(bundle, dataset, *, jobs, reporter) -> (y_pred, probabilities)``.
    check_card : callable, optional
        ``check_card(card, need, classes)``: the family's own card entries,
        each through ``need(dotted_key, ok, expected)`` (``deploy.card_problems``).
    check_files : callable, optional
        ``check_files(bundle)``: its model files against the card, read as
        text (raises ``errors.BundleError``).
    optional_files : tuple of str
        Keys of ``files`` that bundles trained before they existed lack.
    """

    files: dict
    train: Callable
    predict: Callable
    check_card: Callable | None = None
    check_files: Callable | None = None
    optional_files: tuple = ()


@dataclass(frozen=True)
class ModelSpec:
    """One model family.

    Attributes
    ----------
    family : str
        Its name, recorded as a bundle's ``family`` (``svm``, ``cnn``).
    names : tuple of str
        The model names of the family (``--model``, ``--cnn``, results).
    settings_class : type
        Its settings dataclass (``settings.SVMSettings``, ``CNNSettings``).
    settings_of : callable
        ``settings_of(config, name, options) -> settings``: a
        ``settings.BenchmarkConfig``'s settings of model ``name`` with
        ``options`` (only fields of ``settings_class``) over them.
    run_cv : callable
        ``run_cv(dataset, folds, results, settings, *, name, seed, jobs,
        reporter, inputs, save_models, only_folds) -> list of
        results.FoldResult``: cross-validation into a ``results.ResultsDir``
        (resuming saved folds). ``only_folds`` (a list of fold indices, None:
        every fold) runs those folds only, each with the seed a full run
        gives it: the engine runs one fold per task, and ``[]`` only checks
        the settings against the folder and records them in ``run.json``.
    score_kind : str
        What its fold scores are, one of :data:`SCORE_KINDS`.
    description : str
        A few words for the CLI's help ("the LIBSVM baseline").
    prepare_inputs : callable, optional
        ``prepare_inputs(dataset, settings, *, jobs, reporter)``: its input
        (feature table, prepared images), made once and passed to ``run_cv``
        as ``inputs`` for every repeat; None: ``run_cv`` gets None.
    input_size : callable, optional
        ``input_size(name) -> int``: the side of an image model's square input.
    baseline : bool
        The reference every other model is compared with (one family).
    uses_gpu : bool
        Whether it trains on a GPU (``benchmark`` then runs the baseline
        beside it on the CPU).
    runs_on_dask : bool
        Whether ``engine`` can run its folds as Dask tasks.
    export_formats : tuple of str
        The ``export --format`` values its bundles support.
    bundle : BundleHooks, optional
        Its final-training and prediction hooks; None for the built-in
        families, whose hooks live in ``deploy``.
    """

    family: str
    names: tuple
    settings_class: type
    settings_of: Callable
    run_cv: Callable
    score_kind: str
    description: str
    prepare_inputs: Callable | None = None
    input_size: Callable | None = None
    baseline: bool = False
    uses_gpu: bool = False
    runs_on_dask: bool = False
    export_formats: tuple = ()
    bundle: BundleHooks | None = None

    def settings_for(self, config, name: str, options: dict | None = None):
        """``settings_of`` with only the ``options`` this family has (others,
        such as a CNN's ``epochs`` given to every model, ignored)."""
        fields = {f.name for f in dataclasses.fields(self.settings_class)}
        options = {k: v for k, v in (options or {}).items() if k in fields and v is not None}
        return self.settings_of(config, name, options)

    def model_of(self, settings) -> str:
        """The model name ``settings`` run as: a family of several models
        records which in its settings (a LipNet's ``model``), a family of one
        is its one name."""
        return getattr(settings, "model", None) or self.names[0]


_SPECS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a family; its family name and model names must be new.

    Raises
    ------
    ConfigError
        If the family or one of its model names is registered already, the
        score kind is unknown, or a second family claims to be the baseline.
    """
    if spec.score_kind not in SCORE_KINDS:
        raise ConfigError(
            f"Model family {spec.family!r}: score_kind {spec.score_kind!r} is not one of "
            f"{', '.join(SCORE_KINDS)}."
        )
    if spec.family in _SPECS:
        raise ConfigError(f"Model family {spec.family!r} is registered already.")
    taken = [n for n in spec.names if n in model_names()]
    if taken or not spec.names:
        raise ConfigError(
            f"Model family {spec.family!r}: "
            + (f"model {taken[0]!r} belongs to another family." if taken else "it has no names.")
        )
    if spec.baseline and any(s.baseline for s in _SPECS.values()):
        raise ConfigError(f"Model family {spec.family!r}: there is a baseline family already.")
    _SPECS[spec.family] = spec
    return spec


def unregister(family: str) -> None:
    """Remove a family added with :func:`register` (tests use it)."""
    _SPECS.pop(family, None)


def families() -> list[ModelSpec]:
    """Every registered family, the baseline first."""
    return sorted(_SPECS.values(), key=lambda s: not s.baseline)


def model_names(*, baseline: bool | None = None) -> tuple[str, ...]:
    """Every model name, in registration order; ``baseline=False``: only the
    models compared with the baseline, ``True``: only the baseline's."""
    return tuple(
        n for s in families() if baseline is None or s.baseline == baseline for n in s.names
    )


def export_formats() -> tuple[str, ...]:
    """Every ``export --format`` a registered family supports, each once,
    in registration order."""
    return tuple(dict.fromkeys(f for s in families() for f in s.export_formats))


def get(name: str) -> ModelSpec:
    """The family of model ``name`` (or the family named ``name``).

    Raises
    ------
    ConfigError
        If no registered family has that model.
    """
    for spec in _SPECS.values():
        if name in spec.names or name == spec.family:
            return spec
    raise ConfigError(f"Unknown model {name!r}; expected one of {', '.join(model_names())}.")


def baseline() -> ModelSpec:
    """The baseline family (the SVM)."""
    return next(s for s in families() if s.baseline)


def family_of_card(card: dict) -> ModelSpec | None:
    """The family a bundle card names (its ``family``), or None."""
    family = card.get("family")
    return _SPECS.get(family) if isinstance(family, str) else None


# The built-in families -------------------------------------------------------


def _svm_inputs(dataset, settings, *, jobs=1, reporter=None):
    from liposome_bench.features import extract_features

    return extract_features(
        dataset,
        settings.feature_set,
        source=settings.source,
        reporter=reporter,
        jobs=jobs,
        units=settings.units,
    )


def _svm_cv(
    dataset,
    folds,
    results,
    settings,
    *,
    name,
    seed,
    jobs,
    reporter,
    inputs,
    save_models=True,
    only_folds=None,
):
    from liposome_bench.svm import run_svm

    # The LIBSVM fold models are small text files: always saved.
    return run_svm(
        dataset,
        folds,
        results,
        settings,
        jobs=jobs,
        seed=seed,
        reporter=reporter,
        name=name,
        features=inputs,
        only_folds=only_folds,
    )


def _lipnet_inputs(dataset, settings, *, jobs=1, reporter=None):
    from liposome_bench.cnn import prepare_cnn_images

    return prepare_cnn_images(dataset, settings, reporter=reporter)


def _lipnet_cv(
    dataset,
    folds,
    results,
    settings,
    *,
    name,
    seed,
    jobs,
    reporter,
    inputs,
    save_models=True,
    only_folds=None,
):
    from liposome_bench.cnn import run_cnn

    return run_cnn(
        dataset,
        folds,
        results,
        settings,
        seed=seed,
        save_models=save_models,
        reporter=reporter,
        images=inputs,
        only_folds=only_folds,
    )


def _lipnet_input_size(name: str) -> int:
    from liposome_bench.models import INPUT_SIZES

    return INPUT_SIZES[name]


SVM = register(
    ModelSpec(
        family="svm",
        names=("svm",),
        settings_class=SVMSettings,
        settings_of=lambda config, name, options: config.svm.replace(**options),
        run_cv=_svm_cv,
        score_kind="decision",
        description="the LIBSVM baseline on the particle features",
        prepare_inputs=_svm_inputs,
        baseline=True,
        runs_on_dask=True,
        export_formats=("onnx",),
    )
)

LIPNET = register(
    ModelSpec(
        family="cnn",
        names=MODEL_NAMES,
        settings_class=CNNSettings,
        settings_of=lambda config, name, options: config.cnn_settings(name, **options),
        run_cv=_lipnet_cv,
        score_kind="probability",
        description="a LipNet CNN on the particle images",
        prepare_inputs=_lipnet_inputs,
        input_size=_lipnet_input_size,
        uses_gpu=True,
        runs_on_dask=True,
        export_formats=("onnx", "bioimageio"),
    )
)
