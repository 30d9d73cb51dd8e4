"""CNN training: input modes, augmentation, class balancing, and run_cnn end
to end on the tiny dataset (one epoch, 16x16 inputs)."""

import json

import numpy as np
import pytest

from liposome_bench import cnn
from liposome_bench.dataset import Dataset, Particle, get_problem
from liposome_bench.errors import ConfigError, DatasetError, ResultsError
from liposome_bench.folds import load_or_make_folds
from liposome_bench.progress import NullReporter
from liposome_bench.results import ResultsDir

QUICK = {"epochs": 1, "input_size": 16}


def train(
    x_fit,
    y_fit,
    x_val,
    y_val,
    *,
    n_classes=3,
    dtype_policy=None,
    seed=0,
    class_names=(),
    reporter=None,
    **fields,
):
    """cnn.train_fold with the CNNSettings made from ``fields`` (weights not
    averaged unless asked; ``patience=None``: never stop early)."""
    fields.setdefault("weight_averaging", 0.0)
    if "patience" in fields and fields["patience"] is None:
        fields["patience"] = 10**9
    return cnn.train_fold(
        x_fit,
        y_fit,
        x_val,
        y_val,
        cnn.CNNSettings(**fields),
        n_classes=n_classes,
        dtype_policy=dtype_policy,
        seed=seed,
        class_names=class_names,
        reporter=reporter,
    )


# Options ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("all", cnn.AUGMENTATIONS),
        ("none", ()),
        ("", ()),
        ("shift,rotation", ("rotation", "shift")),
        ("Zoom, flip", ("flip", "zoom")),
        (["shear"], ("shear",)),
    ],
)
def test_parse_augment(spec, expected):
    assert cnn.parse_augment(spec) == expected


def test_parse_augment_refuses_unknown_names():
    with pytest.raises(
        ConfigError,
        match=r"^Unknown augmentation 'blur' in --augment "
        r"'rotation,blur'; expected 'all', 'none' or a comma-separated "
        r"list of flip, rotation, shear, shift, zoom\.$",
    ):
        cnn.parse_augment("rotation,blur")


# Input images --------------------------------------------------------------------


def _square_particle(pid="p", size=20, box=(5, 15), value=200.0, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(100.0, 10.0, (size, size)).astype(np.float32)
    mask = np.zeros((size, size), bool)
    mask[box[0] : box[1], box[0] : box[1]] = True
    image[mask] += value
    return Particle(pid, "unilamellar", image, mask)


def _dataset(particles):
    return Dataset(get_problem("lamellarity"), particles)


def test_masked_mode_sets_background_and_normalises_the_particle():
    p = _square_particle()
    x = cnn.prepare_images(_dataset([p]), "masked", 10)  # the 10x10 box, no resize
    assert x.shape == (1, 10, 10, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(), 1.0, atol=1e-5)

    wide = _square_particle(box=(5, 11))
    x = cnn.prepare_images(_dataset([wide]), "masked", 6)
    assert np.all(x[0, :, :, 0] != 0)  # the box is the mask: nothing outside


def test_masked_mode_zeroes_pixels_outside_a_round_mask():
    size = 21
    yy, xx = np.mgrid[:size, :size]
    mask = (yy - 10) ** 2 + (xx - 10) ** 2 <= 36
    image = np.where(mask, 50.0, 10.0).astype(np.float32) + np.arange(size)[None, :]
    p = Particle("r", "unilamellar", image, mask)
    x = cnn.prepare_images(_dataset([p]), "masked", 13)[0, :, :, 0]
    inside = mask[4:17, 4:17]
    assert np.all(x[~inside] == 0.0)
    np.testing.assert_allclose(x[inside].mean(), 0.0, atol=1e-5)
    cropped = cnn.prepare_images(_dataset([p]), "cropped", 13)[0, :, :, 0]
    assert np.all(cropped[~inside] != 0.0)  # background kept
    np.testing.assert_allclose(cropped.mean(), 0.0, atol=1e-5)


def test_surrounding_keeps_the_whole_image():
    p = _square_particle(size=20)
    x = cnn.prepare_images(_dataset([p]), "surrounding", 20)[0, :, :, 0]
    expected = (p.image - p.image.mean()) / p.image.std()
    np.testing.assert_allclose(x, expected, atol=1e-4)


def test_resizes_to_the_requested_size(tiny_dataset):
    for mode in cnn.INPUT_MODES:
        x = cnn.prepare_images(tiny_dataset, mode, 12)
        assert x.shape == (len(tiny_dataset), 12, 12, 1)
        assert np.isfinite(x).all()


def test_keep_size_keeps_relative_particle_size():
    small = _square_particle("s", size=40, box=(15, 25))  # 10 px particle
    large = _square_particle("l", size=40, box=(5, 35))  # 30 px particle
    x = cnn.prepare_images(_dataset([small, large]), "masked", 24, keep_size=True)
    filled = (x[..., 0] != 0).sum(axis=(1, 2))
    # One scale for both: the large particle covers ~9 times the area.
    assert 6 < filled[1] / filled[0] < 12
    plain = cnn.prepare_images(_dataset([small, large]), "masked", 24)
    assert (plain[..., 0] != 0).sum(axis=(1, 2)).tolist() == [24 * 24, 24 * 24]


def _side_on_canvas(x):
    """The side of the particle's square on a keep-size canvas (rows not all 0)."""
    return int((x[..., 0] != 0).any(axis=1).sum())


def _sized(pid, side, pixel_size_nm=float("nan"), image=80):
    p = _square_particle(pid, size=image, box=(10, 10 + side))
    p.pixel_size_nm = pixel_size_nm
    return p


def test_keep_size_draws_twice_the_diameter_twice_as_large():
    particles = [_sized("a", 10), _sized("b", 20), _sized("c", 40)]
    x = cnn.prepare_images(_dataset(particles), "masked", 64, keep_size=True, scale=1.2)
    assert [_side_on_canvas(v) for v in x] == [12, 24, 48]
    fit = cnn.keep_size_scale(_dataset(particles), "masked", 64)
    # The 95th percentile fills the canvas, so the largest one is shrunk to fit.
    assert fit.unit == "px" and (fit.shrunk, fit.n) == (1, 3)


def test_keep_size_in_nm_rescales_each_pixel_size():
    """One nm is the same canvas pixels for every particle: 20 px at 1 nm/px and
    10 px at 2 nm/px are the same 20 nm particle; 40 px at 1 nm/px is twice it."""
    particles = [_sized("a", 20, 1.0), _sized("b", 10, 2.0), _sized("c", 40, 1.0)]
    fit = cnn.keep_size_scale(_dataset(particles), "masked", 32)
    assert fit.unit == "nm"
    x = cnn.prepare_images(_dataset(particles), "masked", 32, keep_size=True, scale=0.8, unit="nm")
    assert [_side_on_canvas(v) for v in x] == [16, 16, 32]
    in_px = cnn.prepare_images(
        _dataset(particles), "masked", 32, keep_size=True, scale=0.8, unit="px"
    )
    assert [_side_on_canvas(v) for v in in_px] == [16, 8, 32]


def test_keep_size_counts_and_shrinks_particles_larger_than_the_canvas():
    particles = [_sized(str(i), 10) for i in range(39)] + [_sized("big", 60)]
    fit = cnn.keep_size_scale(_dataset(particles), "masked", 20)
    assert fit.scale == pytest.approx(2.0) and (fit.shrunk, fit.n) == (1, 40)
    x = cnn.prepare_images(_dataset(particles), "masked", 20, keep_size=True)
    assert _side_on_canvas(x[0]) == 20 and _side_on_canvas(x[-1]) == 20


def test_nm_scale_needs_every_pixel_size():
    particles = [_sized("a", 20, 1.0), _sized("b", 10)]
    assert cnn.keep_size_scale(_dataset(particles), "masked", 32).unit == "px"
    with pytest.raises(DatasetError, match=r"^The input scale is in nm, but 1 of 2 particles"):
        cnn.prepare_images(_dataset(particles), "masked", 32, keep_size=True, scale=1.0, unit="nm")


def test_input_scale_resolves_per_model():
    from liposome_bench.settings import CNNSettings

    assert not cnn.keeps_size("lipnet-4") and cnn.keeps_size("lipnet-fcn")
    assert cnn.keeps_size("lipnet-4", "keep") and not cnn.keeps_size("lipnet-fcn", "resize")
    with pytest.raises(ConfigError, match="input scale"):
        CNNSettings(input_scale="fit")


def test_empty_mask_and_bad_options_are_one_line_errors():
    p = _square_particle()
    p.mask[:] = False
    with pytest.raises(DatasetError, match=r"^Particle p: its mask is empty"):
        cnn.prepare_images(_dataset([p]), "cropped", 8)
    with pytest.raises(ConfigError, match=r"^Unknown input mode 'crop'; expected one of"):
        cnn.prepare_images(_dataset([_square_particle()]), "crop", 8)


# Augmentation -----------------------------------------------------------------------


def test_augmentation_is_active_in_training_only():
    aug = cnn.build_augmentation("all", seed=3)
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 1)).astype("float32")
    np.testing.assert_array_equal(np.asarray(aug(x, training=False)), x)
    assert not np.allclose(np.asarray(aug(x, training=True)), x)
    assert aug.name == "augmentation" and aug.augment == cnn.AUGMENTATIONS
    assert cnn.build_augmentation("none") is None


def _spot(n, size, row, col):
    x = np.zeros((n, size, size, 1), dtype="float32")
    x[:, row - 1 : row + 2, col - 1 : col + 2, 0] = 1.0  # 3x3: survives nearest sampling
    return x


def _centroids(out):
    w = out[..., 0]
    rows, cols = np.mgrid[: w.shape[1], : w.shape[2]]
    total = w.sum(axis=(1, 2))
    return (w * rows).sum(axis=(1, 2)) / total, (w * cols).sum(axis=(1, 2)) / total


def test_shift_moves_by_at_most_a_tenth():
    aug = cnn.build_augmentation("shift", seed=4)
    out = np.asarray(aug(_spot(64, 21, 10, 10), training=True))
    r, c = _centroids(out)
    assert np.abs(r - 10).max() <= 2.1 + 1e-4 and np.abs(c - 10).max() <= 2.1 + 1e-4
    assert np.abs(r - 10).max() > 1.0 and np.abs(c - 10).max() > 1.0


def test_rotation_keeps_the_distance_from_the_centre_at_any_angle():
    aug = cnn.build_augmentation("rotation", seed=5)
    out = np.asarray(aug(_spot(64, 21, 10, 16), training=True))
    r, c = _centroids(out)
    np.testing.assert_allclose(np.hypot(r - 10, c - 10), 6.0, atol=0.6)
    angles = np.degrees(np.arctan2(r - 10, c - 10))
    assert angles.min() < -120 and angles.max() > 120


def test_zoom_magnifies_by_up_to_a_quarter():
    aug = cnn.build_augmentation("zoom", seed=6)
    rows, cols = np.mgrid[:31, :31]
    disc = ((rows - 15) ** 2 + (cols - 15) ** 2 <= 36).astype("float32")
    x = np.repeat(disc[None, :, :, None], 64, axis=0)
    area = np.asarray(aug(x, training=True))[..., 0].sum(axis=(1, 2)) / disc.sum()
    # Factor 0.8-1.0 on input coordinates: areas grow by 1 to 1/0.8^2.
    assert area.min() > 0.95 and area.max() < 1.0 / 0.64 + 0.05
    assert area.max() > 1.3


def test_flip_gives_one_of_the_four_flips():
    aug = cnn.build_augmentation("flip", seed=1)
    x = np.random.default_rng(1).normal(size=(64, 8, 8, 1)).astype("float32")
    out = np.asarray(aug(x, training=True))
    seen = set()
    for original, flipped in zip(x, out):
        matches = [
            k
            for k, f in enumerate(
                [original, original[::-1], original[:, ::-1], original[::-1, ::-1]]
            )
            if np.allclose(f, flipped, atol=1e-6)
        ]
        assert matches
        seen.add(matches[0])
    assert seen == {0, 1, 2, 3}  # p = 0.5 each way: all four occur in 64 draws


def test_rotation_fills_with_background():
    aug = cnn.build_augmentation("rotation", fill_mode="constant", seed=2)
    x = np.ones((32, 16, 16, 1), dtype="float32")
    out = np.asarray(aug(x, training=True))
    corners = out[:, [0, 0, -1, -1], [0, -1, 0, -1], 0]
    assert (corners < 0.5).any()  # rotated corners come from outside: filled with 0


# Balancing ------------------------------------------------------------------------------

Y = np.array([0] * 30 + [1] * 7 + [2] * 3)


def test_oversample_draws_balanced_epochs_that_cover_every_sample():
    sampler = cnn.EpochSampler(Y, "oversample", np.random.default_rng(0))
    idx = sampler.draw()
    assert len(idx) == len(Y)
    counts = np.bincount(Y[idx])
    assert counts.max() - counts.min() <= 1
    uses = np.bincount(idx, minlength=len(Y))
    assert set(uses[Y == 2]) == {4, 5}  # 13 or 14 draws of 3 samples
    assert uses[Y == 0].max() == 1  # the majority class is subsampled...
    seen = set(idx.tolist())
    for _ in range(2):
        seen |= set(sampler.draw().tolist())
    assert seen == set(range(len(Y)))  # ...and all of it is seen in 3 epochs


def test_undersample_drops_a_fifth_of_the_majority_each_epoch():
    sampler = cnn.EpochSampler(Y, "undersample", np.random.default_rng(0))
    a, b = sampler.draw(), sampler.draw()
    for idx in (a, b):
        assert np.bincount(Y[idx]).tolist() == [24, 7, 3]
        assert len(set(idx.tolist())) == len(idx)
    assert set(a.tolist()) != set(b.tolist())


@pytest.mark.parametrize("method", ["none", "class-weight"])
def test_other_methods_use_every_sample_once(method):
    idx = cnn.EpochSampler(Y, method, np.random.default_rng(0)).draw()
    assert sorted(idx.tolist()) == list(range(len(Y)))


@pytest.mark.parametrize("n, batch_size", [(5, 8), (20, 8)])  # 1 and 3 batches an epoch
def test_one_fit_trains_on_each_epochs_draw_in_order(n, batch_size):
    """train_fold's single fit call over _epoch_draws sees epoch 1's draw,
    then each later draw, batch by batch: Keras's look-ahead for batch shapes
    and the dataset hooks it calls before training must not shift them."""
    import keras

    from liposome_bench.cnn.train import _epoch_draws

    seen = []

    class Record(keras.layers.Layer):
        def call(self, x, training=None):
            if training:
                seen.extend(keras.ops.convert_to_numpy(x)[:, 0].astype(int).tolist())
            return x

    y = np.arange(n) % 2
    x = np.arange(n, dtype="float32")[:, None]
    drawn = []

    class Sampler:
        rng = np.random.default_rng(0)

        def draw(self):
            drawn.append(self.rng.permutation(n))
            return drawn[-1]

    first = Sampler().draw()
    net = keras.Sequential([keras.Input((1,)), Record(), keras.layers.Dense(2)])
    net.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    epochs = 5
    draws = _epoch_draws(x, np.eye(2, dtype="float32")[y], first, Sampler(), batch_size)
    assert draws.steps == -(-n // batch_size)
    net.fit(draws, epochs=epochs, steps_per_epoch=draws.steps, shuffle=False, verbose=0)
    assert seen == np.concatenate(drawn[:epochs]).tolist()


def test_class_weights_are_inverse_frequencies():
    w = cnn.class_weights(Y, 3)
    np.testing.assert_allclose([w[0] * 30, w[1] * 7, w[2] * 3], [40 / 3] * 3)


def test_smote_balances_with_new_images():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(Y), 4, 4, 1)).astype("float32")
    x_new, y_new = cnn.smote_pool(x, Y, seed=0)
    assert np.bincount(y_new).tolist() == [30, 30, 30]
    assert x_new.shape == (90, 4, 4, 1)
    with pytest.raises(ConfigError, match="SMOTE needs at least 2 training images per class"):
        cnn.smote_pool(x[:31], Y[:31], seed=0)


def test_validation_split_is_stratified_and_disjoint():
    fit, val = cnn.split_validation(Y, 0.1, np.random.default_rng(0))
    assert sorted(np.concatenate([fit, val]).tolist()) == list(range(len(Y)))
    assert np.bincount(Y[val]).tolist() == [3, 1, 1]


@pytest.mark.parametrize("balance", ["undersample", "smote", "class-weight", "none"])
def test_train_fold_with_each_balancing_method(balance, tiny_dataset):
    x = cnn.prepare_images(tiny_dataset, "masked", 12)
    y = tiny_dataset.y
    net, info = train(
        x[:36],
        y[:36],
        x[36:],
        y[36:],
        model="lipnet-1",
        n_classes=3,
        augment="none",
        balance=balance,
        epochs=1,
        seed=0,
    )
    assert info["epochs_run"] == 1 and info["best_epoch"] == 1
    assert set(info["history"]) == {"loss", "val_loss", "val_balanced_accuracy", "val_macro_f1"}
    assert net.predict(x[36:], verbose=0).shape == (9, 3)
    expected = {
        "undersample": len(y[:36]) - round(0.2 * np.bincount(y[:36]).max()),
        "smote": 36,
        "class-weight": 36,
        "none": 36,
    }[balance]
    assert sum(info["epoch_counts"]) == expected


def test_fcn_trains_on_a_canvas_and_predicts_any_size(tiny_dataset):
    x = cnn.prepare_images(tiny_dataset, "masked", 24, keep_size=True)
    y = tiny_dataset.y
    net, info = train(
        x[:36],
        y[:36],
        x[36:],
        y[36:],
        model="lipnet-fcn",
        n_classes=3,
        augment="rotation",
        epochs=1,
        seed=0,
    )
    assert net.predict(np.zeros((2, 40, 40, 1), "float32"), verbose=0).shape == (2, 3)


# run_cnn end to end ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """run_cnn on the tiny dataset: 3 folds, one epoch each, 16x16 inputs."""
    folds = load_or_make_folds(tiny_dataset, k=3, seed=0)
    results = ResultsDir(tmp_path_factory.mktemp("cnn") / "results")
    out = cnn.run_cnn(tiny_dataset, folds, results, seed=5, **QUICK)
    return folds, results, out


def test_run_cnn_predicts_each_test_fold_once_unresampled(tiny_dataset, trained):
    folds, results, out = trained
    ids = np.array(tiny_dataset.ids)
    y = tiny_dataset.y
    assert [r.fold for r in out] == [0, 1, 2]
    for r in out:
        test = folds.test_indices(r.fold)
        assert r.ids == ids[test].tolist()  # every test particle once, in order
        np.testing.assert_array_equal(r.y_true, y[test])
        assert r.params["test_counts"] == dict(
            zip(tiny_dataset.problem.classes, np.bincount(y[test], minlength=3).tolist())
        )
        assert r.params["n_fit"] + r.params["n_validation"] == len(folds.train_indices(r.fold))
        epoch = list(r.params["epoch_counts"].values())
        assert max(epoch) - min(epoch) <= 1 and sum(epoch) == r.params["n_fit"]
        assert r.scores.shape == (len(test), 3) and r.score_kind == "probability"
        np.testing.assert_allclose(r.scores.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(r.y_pred, r.scores.argmax(axis=1))
        assert r.params["epochs"] == 1 and len(r.history["loss"]) == 1
        assert r.device.startswith("cpu")


def test_run_cnn_writes_the_results_layout(tiny_dataset, trained):
    folds, results, out = trained
    run = json.loads((results.path / "run.json").read_text())
    assert run["models"]["lipnet-4"]["input_size"] == 16
    assert run["models"]["lipnet-4"]["augment"] == list(cnn.AUGMENTATIONS)
    for f in range(3):
        meta = json.loads(results.fold_json("lipnet-4", f).read_text())
        assert meta["score_names"] == list(tiny_dataset.problem.classes)
        assert set(meta["history"]) >= {"loss", "val_loss"}
        assert (results.path / "lipnet-4" / "models" / f"fold-{f}.keras").is_file()
    reloaded = results.load_model("lipnet-4")
    np.testing.assert_allclose(reloaded[1].scores, out[1].scores, atol=1e-6)


def test_saved_model_reproduces_the_saved_probabilities(tiny_dataset, trained):
    import keras

    folds, results, out = trained
    net = keras.models.load_model(results.path / "lipnet-4" / "models" / "fold-0.keras")
    x = cnn.prepare_images(tiny_dataset, "masked", 16)[folds.test_indices(0)]
    np.testing.assert_allclose(net.predict(x, verbose=0), out[0].scores, atol=1e-5)


def test_resume_retrains_only_missing_folds_to_identical_predictions(tiny_dataset, trained):
    folds, results, out = trained
    fold_json = results.fold_json("lipnet-4", 2)
    kept = results.fold_json("lipnet-4", 0).stat().st_mtime_ns
    fold_json.unlink()
    messages = []

    class Recorder(NullReporter):
        def message(self, text):
            messages.append(text)

    again = cnn.run_cnn(tiny_dataset, folds, results, seed=5, reporter=Recorder(), **QUICK)
    assert any("2 of 3 folds already saved" in m for m in messages)
    assert results.fold_json("lipnet-4", 0).stat().st_mtime_ns == kept
    # Same seed, same fold: the same predictions (seeded, deterministic on CPU).
    np.testing.assert_array_equal(again[2].y_pred, out[2].y_pred)
    np.testing.assert_allclose(again[2].scores, out[2].scores, rtol=0, atol=1e-6)


def test_other_settings_are_refused_for_the_same_folder(tiny_dataset, trained):
    folds, results, _ = trained
    with pytest.raises(
        ResultsError,
        match=r"holds lipnet-4 results made with other settings "
        r"\(epochs differ\)",
    ):
        cnn.run_cnn(tiny_dataset, folds, results, seed=5, epochs=2, input_size=16)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": "lipnet-9"}, "Unknown model 'lipnet-9'"),
        ({"balance": "smoke"}, "Unknown balancing method 'smoke'; expected one of oversample"),
        ({"optimizer": "rmsprop"}, "Unknown optimizer 'rmsprop'; expected one of adam, sgd."),
        ({"epochs": 0}, "epochs (--epochs) must be an integer of at least 1; got 0."),
        ({"augment": "tilt"}, "Unknown augmentation 'tilt'"),
        (
            {"validation_fraction": 1.0},
            "validation_fraction (--validation-fraction) must be a number in [0, 1); got 1.0.",
        ),
    ],
)
def test_bad_options_fail_before_training(tiny_dataset, tmp_path, kwargs, message):
    folds = load_or_make_folds(tiny_dataset, k=3, seed=0)
    with pytest.raises(ConfigError) as err:
        cnn.run_cnn(tiny_dataset, folds, ResultsDir(tmp_path), **kwargs)
    assert message in str(err.value)
    assert not (tmp_path / "run.json").exists()


def test_mixed_precision_keeps_float32_outputs(tiny_dataset):
    x_fit, y_fit, x_val, y_val = parts = fit_and_validation(tiny_dataset)
    net, info = train(
        *parts,
        model="lipnet-4",
        n_classes=3,
        epochs=1,
        dtype_policy="mixed_bfloat16",
        seed=0,
    )
    assert net.get_layer("block1_conv1").compute_dtype == "bfloat16"
    assert net.get_layer("block1_conv1").kernel.dtype == "float32"
    p = net.predict(x_val, verbose=0)
    assert p.dtype == np.float32 and np.isfinite(info["history"]["val_loss"][0])


# Training speed: schedule, precision, quiet start ------------------------------------


def test_learning_rate_warms_up_then_stays_or_decays():
    import keras

    constant = cnn.make_learning_rate(2e-3, 10, 5, warmup_epochs=0)
    assert constant == 2e-3
    warm = cnn.make_learning_rate(2e-3, 10, 5, warmup_epochs=1)
    rates = [float(keras.ops.convert_to_numpy(warm(step))) for step in (0, 5, 10, 30, 49)]
    assert rates[0] == pytest.approx(2e-4) and rates[1] == pytest.approx(1.1e-3)
    assert rates[2:] == pytest.approx([2e-3] * 3)
    cosine = cnn.make_learning_rate(2e-3, 10, 5, warmup_epochs=1, schedule="cosine")
    rates = [float(keras.ops.convert_to_numpy(cosine(step))) for step in (10, 30, 50)]
    assert rates == pytest.approx([2e-3, 1e-3, 0.0], abs=1e-9)


@pytest.mark.parametrize("dtype_policy", [None, "mixed_bfloat16"])
def test_default_training_path_is_deterministic(tiny_dataset, dtype_policy):
    """Batch 128, warm-up, augmentation and balancing, float32 or bfloat16:
    the same seed gives the same network on the CPU."""
    x = cnn.prepare_images(tiny_dataset, "masked", 12)
    y = tiny_dataset.y
    runs = [
        train(
            x[:36],
            y[:36],
            x[36:],
            y[36:],
            model="lipnet-4",
            n_classes=3,
            augment="all",
            epochs=1,
            dtype_policy=dtype_policy,
            seed=3,
        )
        for _ in range(2)
    ]
    p = [net.predict(x[36:], verbose=0) for net, _ in runs]
    np.testing.assert_array_equal(p[0], p[1])
    assert runs[0][1]["history"] == runs[1][1]["history"]


def test_automatic_precision_is_bfloat16_only_on_a_cpu_with_native_bfloat16(monkeypatch):
    from liposome_bench import machine

    monkeypatch.setattr(machine, "native_bfloat16", lambda info=None: True)
    assert cnn.resolve_dtype_policy(None, "cpu", "tensorflow") == "mixed_bfloat16"
    assert cnn.resolve_dtype_policy(None, "cpu", "jax") is None  # measured: not faster
    assert cnn.resolve_dtype_policy(None, "gpu", "tensorflow") is None
    assert cnn.resolve_dtype_policy(False, "cpu") is None
    monkeypatch.setattr(machine, "native_bfloat16", lambda info=None: False)
    assert cnn.resolve_dtype_policy(None, "cpu", "tensorflow") is None
    assert cnn.resolve_dtype_policy(True, "cpu") == "mixed_bfloat16"
    assert cnn.resolve_dtype_policy(True, "gpu") == "mixed_float16"


def test_backend_noise_filter_drops_only_the_known_lines():
    text = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to "
        "STDERR\n"
        "I0000 00:00:17.2 port.cc:153] oneDNN custom operations are on.\n"
        "E0000 00:00:17.3 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n"
        "E0000 00:00:17.4 something.cc:1] a real error\n"
    )
    kept = cnn.filter_backend_noise(text, no_gpu=True, quiet_info=True)
    assert kept == "E0000 00:00:17.4 something.cc:1] a real error\n"
    # On a machine with an NVIDIA device a failing cuInit is a real error.
    assert "failed call to cuInit" in cnn.filter_backend_noise(text, no_gpu=False, quiet_info=True)
    assert cnn.filter_backend_noise(text, no_gpu=False, quiet_info=False) == text


def test_device_line_names_the_cpu_or_gpu():
    from liposome_bench.machine import describe_cpu

    device, line = cnn.describe_device()
    if device == "cpu":
        assert describe_cpu() in line and "Keras backend" in line
    else:
        assert line.startswith("Training on GPU")


# Early stopping on validation macro F1 (issue 8) ---------------------------------


def test_monitor_ranks_epochs_by_macro_f1_then_loss():
    a = {"val_loss": 0.50, "val_macro_f1": 0.70}
    higher_f1_worse_loss = {"val_loss": 0.60, "val_macro_f1": 0.75}
    same_f1_better_loss = {"val_loss": 0.40, "val_macro_f1": 0.70}
    key = cnn.monitor_key
    assert key(higher_f1_worse_loss, 1) < key(a, 0)
    assert key(same_f1_better_loss, 1) < key(a, 0)
    # On the loss, the ranking follows the loss alone.
    assert key(a, 0, "loss") < key(higher_f1_worse_loss, 1, "loss")
    # Without validation, the later epoch ranks better (the last is kept).
    assert key({"loss": 1.0}, 3) < key({"loss": 0.5}, 2)
    # A fixed budget ("none") keeps the last epoch whatever its scores.
    assert key(a, 3, "none") < key(higher_f1_worse_loss, 2, "none")


def fit_and_validation(dataset, size=12):
    """The tiny set's masked images cut into a 36-particle fit part and a
    validation part: (x_fit, y_fit, x_val, y_val)."""
    x = cnn.prepare_images(dataset, "masked", size)
    return x[:36], dataset.y[:36], x[36:], dataset.y[36:]


def test_fixed_budget_trains_every_epoch_and_keeps_the_last(tiny_dataset):
    x_fit, y_fit, x_val, y_val = parts = fit_and_validation(tiny_dataset)
    net, info = train(
        *parts,
        model="lipnet-1",
        augment="none",
        batch_size=8,
        epochs=3,
        patience=1,  # would stop after the first epoch without improvement
        early_stopping="none",
        weight_averaging=0.5,
    )
    assert info["epochs_run"] == 3 and info["best_epoch"] == 3
    p = net.predict(x_val, verbose=0)
    assert cnn.validation_metrics(p, y_val, 3)["val_loss"] == pytest.approx(
        info["history"]["val_loss"][-1], rel=1e-5
    )


def test_default_budget_is_fixed_with_a_cosine_schedule():
    from liposome_bench.estimate import fewest_epochs
    from liposome_bench.settings import CNNSettings

    s = CNNSettings()
    assert (s.early_stopping, s.lr_schedule) == ("none", "cosine")
    assert fewest_epochs(s) == s.epochs  # the time is known before training
    # early stopping on request keeps its patience
    assert CNNSettings(early_stopping="macro_f1").patience == 5
    with pytest.raises(ConfigError, match="Unknown early-stopping metric 'auc'"):
        CNNSettings(early_stopping="auc")


@pytest.mark.parametrize(
    "best, run, stopping, expected",
    [
        (6, 6, "macro_f1", True),
        (3, 6, "macro_f1", False),
        (2, 4, "macro_f1", False),
        # a fixed budget keeps its last epoch by design: not flagged
        (6, 6, "none", False),
    ],
)
def test_fold_whose_best_epoch_is_the_last_is_flagged(
    monkeypatch, tmp_path, tiny_dataset, best, run, stopping, expected
):
    from liposome_bench.folds import load_or_make_folds
    from liposome_bench.results import ResultsDir

    class Net:
        def predict(self, x, **kwargs):
            return np.full((len(x), 3), 1 / 3)

    def fake_train(x_fit, y_fit, x_val, y_val, settings, **kwargs):
        return Net(), {
            "best_epoch": best,
            "epochs_run": run,
            "history": {},
            "epoch_counts": [1, 1, 1],
            "train_s": 0.0,
            "samples_per_s": None,
        }

    monkeypatch.setattr(cnn.runner, "train_fold", fake_train)  # what run_cnn calls
    folds = load_or_make_folds(tiny_dataset, k=3)
    out = cnn.run_cnn(
        tiny_dataset,
        folds,
        ResultsDir(tmp_path / "r"),
        model="lipnet-1",
        epochs=6,
        early_stopping=stopping,
        save_models=False,
    )
    assert all(r.params["under_trained"] is expected for r in out)
    assert all(r.params["stopped_early"] is (run < 6) for r in out)


def test_weight_averaging_scores_and_keeps_the_averaged_weights(tiny_dataset):
    """Each epoch is scored with the moving average of the weights, that is
    what is kept and returned, and training resumes from the raw weights."""
    x = cnn.prepare_images(tiny_dataset, "masked", 12)
    y = tiny_dataset.y
    args = (x[:36], y[:36], x[36:], y[36:])
    options = dict(
        model="lipnet-1",
        n_classes=3,
        augment="none",
        batch_size=8,
        patience=None,
        early_stopping="loss",
        seed=0,
    )
    raw1, _ = train(*args, epochs=1, **options)
    avg1, info1 = train(*args, epochs=1, weight_averaging=0.5, **options)
    avg2, info2 = train(*args, epochs=2, weight_averaging=0.5, **options)
    _, raw_info2 = train(*args, epochs=2, **options)
    # the returned network is the one the kept epoch was scored with
    for net, info in ((avg1, info1), (avg2, info2)):
        p = net.predict(x[36:], verbose=0)
        kept = info["best_epoch"] - 1
        assert cnn.validation_metrics(p, y[36:], 3)["val_loss"] == pytest.approx(
            info["history"]["val_loss"][kept], rel=1e-5
        )
    # averaged weights differ from the raw ones after the same steps
    assert not np.allclose(avg1.get_weights()[0], raw1.get_weights()[0])
    # epoch 2 starts from the raw weights: its training loss is the raw run's
    assert info2["history"]["loss"] == pytest.approx(raw_info2["history"]["loss"], rel=1e-5)


def test_prepared_images_of_other_settings_are_refused(tmp_path, tiny_dataset):
    """run_cnn(images=...) takes prepare_cnn_images of its own settings only."""
    from liposome_bench.settings import CNNSettings

    folds = load_or_make_folds(tiny_dataset, k=3, seed=0)
    settings = CNNSettings(model="lipnet-1", input_size=16, epochs=1)
    wrong = cnn.prepare_cnn_images(tiny_dataset, settings.replace(input_size=20))
    with pytest.raises(ConfigError, match=r"The prepared images are 45x20x20, not 45x16x16"):
        cnn.run_cnn(tiny_dataset, folds, ResultsDir(tmp_path), settings, images=wrong)
    assert not (tmp_path / "lipnet-1" / "fold-0.json").exists()


def test_predict_batches_gives_predicts_numbers_batch_by_batch():
    from liposome_bench.cnn.train import predict_batches
    from liposome_bench.models import build_lipnet

    net = build_lipnet("lipnet-1", (28, 28, 1), 3)
    x = np.random.default_rng(0).normal(size=(13, 28, 28, 1)).astype(np.float32)
    expected = net.predict(x, batch_size=5, verbose=0)
    got = predict_batches(net, x, batch_size=5)  # batches of 5, 5 and 3
    assert got.shape == (13, 3)
    np.testing.assert_array_equal(got, expected)
    assert predict_batches(net, x[:0]).shape == (0, 3)


@pytest.mark.parametrize("keep_size", [False, True])
def test_prepare_images_resizes_each_window_as_one_resize_of_it_would(
    tiny_dataset, monkeypatch, keep_size
):
    # Windows are resized in stacks of one size (3 at a time here): the
    # numbers must be those of one skimage resize per window.
    from skimage.transform import resize

    from liposome_bench.cnn import preprocess

    monkeypatch.setattr(preprocess, "RESIZE_STACK", 3)
    size = 20
    x = cnn.prepare_images(tiny_dataset, "masked", size, keep_size=keep_size)
    sides = np.full(len(tiny_dataset), size)
    if keep_size:
        fit = preprocess.keep_size_scale(tiny_dataset, "masked", size)
        lengths = preprocess.window_lengths(tiny_dataset, "masked", fit.unit) * fit.scale
        sides = np.clip(np.round(lengths), 1, size).astype(int)
    assert len(set(sides.tolist())) > 1 or not keep_size
    for i, p in enumerate(tiny_dataset.particles):
        window, side = preprocess.particle_window(p, "masked"), sides[i]
        if window.shape[0] != side:
            window = resize(
                window,
                (side, side),
                order=1,
                mode="edge",
                anti_aliasing=window.shape[0] > side,
                preserve_range=True,
            )
        expected = np.zeros((size, size), np.float32)
        top = (size - side) // 2
        expected[top : top + side, top : top + side] = window
        np.testing.assert_array_equal(x[i, :, :, 0], expected)
