"""Settings: one validated shape for the SVM and every CNN, and the TOML config."""

import dataclasses

import pytest
from click.testing import CliRunner

from liposome_bench import settings as s
from liposome_bench.cli import cli
from liposome_bench.errors import ConfigError


def test_cnn_settings_validate_and_round_trip():
    cnn = s.CNNSettings(model="lipnet-2", augment="zoom,flip", epochs=12.0)
    assert cnn.augment == ("flip", "zoom") and cnn.epochs == 12 and isinstance(cnn.epochs, int)
    again = s.CNNSettings.from_mapping(cnn.to_dict())
    assert again == cnn
    assert cnn.replace(epochs=None, patience=5).patience == 5  # None keeps the value
    with pytest.raises(
        ConfigError,
        match=r"^Unknown input mode 'whole'; expected one of "
        r"surrounding, cropped, masked\.$",
    ):
        s.CNNSettings(input_mode="whole")
    with pytest.raises(ConfigError, match=r"^unknown setting 'epoch'; valid settings are model, "):
        s.CNNSettings.from_mapping({"epoch": 3})


def test_svm_settings_and_grid_names_match_the_svm_module():
    from liposome_bench.features import FEATURE_SETS
    from liposome_bench.svm import GRIDS

    assert set(s.GRID_NAMES) == set(GRIDS)
    assert set(s.FEATURE_SETS) == set(FEATURE_SETS)
    with pytest.raises(ConfigError, match=r"C \(--C\) must be a positive number; got 0"):
        s.SVMSettings(C=0)


def test_every_cli_option_of_svm_and_cnn_is_a_setting():
    """benchmark --config covers every option of `svm` and `cnn` (issue 8)."""
    run_options = {
        "problem",
        "data",
        "reader_options",
        "cache_dir",
        "k",
        "fold_seed",
        "group_by",
        "no_group",
        "group_file",
        "seed",
        "jobs",
        "out",
        "wait",
        "images_dir",
        "masks_dir",
        "pixel_size_nm",
        "group_pattern",
    }
    for command, cls in (("svm", s.SVMSettings), ("cnn", s.CNNSettings)):
        names = {p.name for p in cli.commands[command].params} - run_options
        fields = {f.name for f in dataclasses.fields(cls)}
        assert names <= fields, (command, names - fields)


def test_load_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[svm]\ngrid = "full"\nC = 4.0\n\n[cnn]\nepochs = 30\n\n'
        '[cnn.lipnet-4]\ninput-mode = "cropped"\nearly-stopping = "loss"\npatience = 6\n'
    )
    config = s.load_config(path)
    assert config.svm.grid == "full" and config.svm.C == 4.0
    four = config.cnn_settings("lipnet-4")
    assert (four.epochs, four.input_mode, four.patience) == (30, "cropped", 6)
    two = config.cnn_settings("lipnet-2", epochs=3)
    assert (two.model, two.epochs, two.input_mode) == ("lipnet-2", 3, "masked")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[svm\n", "is not valid TOML"),
        ("[svn]\n", "unknown table [svn]"),
        ("[cnn.lipnet-9]\nepochs = 3\n", "Unknown model in a [cnn.<model>] table 'lipnet-9'"),
        ("[cnn.lipnet-4]\nepochs = 0\n", "[cnn.lipnet-4]: epochs (--epochs) must be an integer"),
        ("[svm]\nkernel = 'linear'\n", "[svm]: unknown setting 'kernel'"),
        ("[cnn]\nmodel = 'lipnet-2'\n", "[cnn] cannot set model"),
        # early stopping is off by default (a fixed budget): a patience alone is refused
        ("[cnn]\npatience = 6\n", "patience in [cnn] is set, but early stopping is off"),
        (
            "[cnn]\nearly_stopping = 'loss'\n[cnn.lipnet-2]\nearly_stopping = 'none'\npatience = 6\n",
            "patience in [cnn.lipnet-2] is set, but early stopping is off",
        ),
    ],
)
def test_bad_config_files_name_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        s.load_config(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_benchmark_refuses_a_bad_config_before_any_work(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[cnn.lipnet-4]\nbalance = 'smote-ish'\n")
    result = CliRunner().invoke(
        cli,
        [
            "benchmark",
            "--problem",
            "lamellarity",
            "--config",
            str(path),
            "--out",
            str(tmp_path / "r"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {path}: [cnn.lipnet-4]: Unknown balancing method 'smote-ish'; expected one "
        "of oversample, undersample, smote, class-weight, none."
    )
    assert not (tmp_path / "cache").exists()


def test_svm_units_are_validated_and_recorded():
    assert s.SVMSettings().units == "nm"
    assert s.SVMSettings(units="px").to_dict()["units"] == "px"
    with pytest.raises(
        ConfigError, match="Unknown units \\(--units\\) 'mm'; expected one of nm, px."
    ):
        s.SVMSettings(units="mm")
    with pytest.raises(ConfigError, match="--units px computes the features from the images"):
        s.SVMSettings(units="px", source="export")


def test_learning_rate_scales_with_the_square_root_of_the_batch_size():
    assert s.CNNSettings(batch_size=32).resolved_learning_rate == 1e-3
    assert s.CNNSettings(batch_size=128).resolved_learning_rate == 2e-3
    assert s.CNNSettings(batch_size=8, optimizer="sgd").resolved_learning_rate == 5e-3
    assert s.CNNSettings(batch_size=128, learning_rate=1e-4).resolved_learning_rate == 1e-4


@pytest.mark.parametrize(
    "field, value, message",
    [
        (
            "lr_schedule",
            "step",
            "Unknown learning-rate schedule 'step'; expected one of constant, cosine.",
        ),
        (
            "warmup_epochs",
            -1,
            "warmup_epochs (--warmup-epochs) must be a number of at least 0; got -1.",
        ),
        (
            "mixed_precision",
            "yes",
            "mixed_precision must be true, false or unset (automatic); got 'yes'.",
        ),
    ],
)
def test_training_schedule_settings_are_validated(field, value, message):
    with pytest.raises(ConfigError) as err:
        s.CNNSettings(**{field: value})
    assert str(err.value) == message
    assert s.CNNSettings().mixed_precision is None  # automatic by default


def test_a_bad_value_in_the_cnn_table_names_that_table(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[cnn]\nepochs = 0\n")
    with pytest.raises(ConfigError, match=r"\[cnn\]: epochs \(--epochs\) must be an integer"):
        s.load_config(path)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("epochs = nan", "[cnn]: epochs (--epochs) must be an integer of at least 1; got nan."),
        ("epochs = inf", "[cnn]: epochs (--epochs) must be an integer of at least 1; got inf."),
        (
            "patience = nan",
            "[cnn]: patience (--patience) must be an integer of at least 1; got nan.",
        ),
        ("epochs = true", "[cnn]: epochs (--epochs) must be an integer of at least 1; got True."),
        ("dropout = 'high'", "[cnn]: dropout must be a number in [0, 1); got 'high'."),
        ("dropout = 1.5", "[cnn]: dropout must be a number in [0, 1); got 1.5."),
        ("dropout = -0.5", "[cnn]: dropout must be a number in [0, 1); got -0.5."),
        ("augment = 3", "[cnn]: augment (--augment) must be 'all', 'none' or a comma-separated"),
        (
            "validation_fraction = true",
            "[cnn]: validation_fraction (--validation-fraction) "
            "must be a number in [0, 1); got True.",
        ),
        (
            "learning_rate = -inf",
            "[cnn]: learning_rate (--learning-rate) must be a positive number; got -inf.",
        ),
    ],
)
def test_settings_files_are_finite_and_typed(tmp_path, table, message):
    """Issue 26: every setting from TOML is checked through its declaration
    (finite, in range, the right type, no bool for a number), naming the table."""
    path = tmp_path / "s.toml"
    path.write_text(f"[cnn]\n{table}\n")
    with pytest.raises(ConfigError) as err:
        s.load_config(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_every_setting_is_declared_with_help_and_kind():
    import dataclasses

    for cls in (s.CNNSettings, s.SVMSettings):
        for f in dataclasses.fields(cls):
            assert f.metadata["help"] and f.metadata["kind"], f.name
            assert s.check_field(
                f, f.default() if callable(f.default) else getattr(cls(), f.name)
            ) == getattr(cls(), f.name)


def test_cli_and_estimator_offer_every_declared_setting():
    """One declaration: the `cnn` / `svm` options and LipNetClassifier's
    parameters are the settings fields, with the declared defaults."""
    import dataclasses
    import inspect

    from liposome_bench.cli import cli
    from liposome_bench.lipnet import LipNetClassifier

    for command, cls in (("cnn", s.CNNSettings), ("svm", s.SVMSettings)):
        params = {p.name: p for p in cli.commands[command].params}
        for f in dataclasses.fields(cls):
            if not f.metadata["cli"]:
                continue
            assert f.name in params, (command, f.name)
            assert s.flag_of(f) in params[f.name].opts
            assert params[f.name].help.startswith(f.metadata["help"])
    signature = inspect.signature(LipNetClassifier.__init__).parameters
    defaults = s.CNNSettings()
    for f in dataclasses.fields(s.CNNSettings):
        assert signature[f.name].default == getattr(defaults, f.name), f.name
    assert set(signature) - {"self"} == {f.name for f in dataclasses.fields(s.CNNSettings)} | {
        "random_state"
    }


def _other_value(field):
    """A valid value of a CNN setting other than its default."""
    default = getattr(s.CNNSettings(), field.name)
    kind = field.metadata["kind"]
    if kind == "choice":
        return next(c for c in field.metadata["choices"] if c != default)
    if kind == "int":
        return (default or 8) + 1
    if kind == "float":
        return 0.5 if not default or default >= 1 else default / 2
    if kind == "bool":
        return True if default is None else not default
    if kind == "augment":
        return ("flip",)
    if kind == "dropout":
        return 0.25
    raise AssertionError(f"no test value for {field.name} of kind {kind}")


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def test_every_cnn_setting_reaches_cli_config_api_and_deploy(tmp_path, tiny_dataset):
    """Issue 21: a CNN setting is declared once in settings.py, and every
    entry point sees it. For each field, a non-default value goes in through
    the `cnn` command's options, a `benchmark --config` table and
    LipNetClassifier, and comes back out of the run.json record that
    deployment trains the final network from (cnn.settings_from_record)."""
    import dataclasses

    from liposome_bench import cnn
    from liposome_bench.cli import cli
    from liposome_bench.folds import load_or_make_folds
    from liposome_bench.lipnet import LipNetClassifier
    from liposome_bench.results import ResultsDir

    command = cli.commands["cnn"]
    folds = load_or_make_folds(tiny_dataset, k=3, seed=0)
    fields = [f for f in dataclasses.fields(s.CNNSettings) if f.name != "model"]
    for i, f in enumerate(fields):
        value = _other_value(f)
        assert value != getattr(s.CNNSettings(), f.name), f.name
        # CLI: the `cnn` command parses the option into this setting.
        if f.metadata["cli"]:
            flag = s.flag_of(f)
            if f.metadata["kind"] == "bool":
                args = [flag if value else flag.replace("--", "--no-", 1)]
            else:
                text = ",".join(value) if isinstance(value, tuple) else str(value)
                args = [flag, text]
            ctx = command.make_context("cnn", args)
            given = {k: v for k, v in ctx.params.items() if k == f.name and v is not None}
            assert getattr(s.CNNSettings.make(**given), f.name) == value, (f.name, args)
        # Config: a [cnn] table of a benchmark --config file.
        path = tmp_path / f"{f.name}.toml"
        # (a patience applies only with early stopping on, which is off by default)
        also = 'early_stopping = "loss"\n' if f.name == "patience" else ""
        path.write_text(f"[cnn]\n{also}{f.name} = {_toml(value)}\n")
        config = s.load_config(path)
        assert getattr(config.cnn_settings("lipnet-1"), f.name) == value, f.name
        # API: the scikit-learn estimator.
        assert getattr(LipNetClassifier(**{f.name: value}).settings(), f.name) == value
        # Deploy: what run_cnn records is what the final training reads back.
        settings = s.CNNSettings(model="lipnet-1", **{f.name: value})
        results = ResultsDir(tmp_path / f"run-{i}")
        cnn.run_cnn(tiny_dataset, folds, results, settings, only_folds=[])
        record = results.read_run()["models"]["lipnet-1"]
        back = cnn.settings_from_record(record, "lipnet-1")
        assert getattr(back, f.name) == value, f.name
        # The rest as recorded (input size and learning rate are stored resolved).
        resolved = {"input_size": back.input_size, "learning_rate": back.learning_rate}
        assert back == settings.replace(**resolved), f.name
