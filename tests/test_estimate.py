"""The time estimate benchmark prints before training (liposome_bench.estimate)."""

from types import SimpleNamespace

import numpy as np
import pytest

from liposome_bench import comparison, estimate
from liposome_bench.settings import CNNSettings, SVMSettings


def test_power_law_extrapolates_through_two_points_with_a_clipped_exponent():
    # t = n^2: doubling n quadruples t.
    value, p = estimate._power_law((100, 200), (1.0, 4.0), 400)
    assert p == pytest.approx(2.0) and value == pytest.approx(16.0)
    # Flat timings (fixed overheads) are extrapolated at the floor: LIBSVM's
    # measured growth above 2,000 particles (SVM_EXPONENTS), or as asked.
    value, p = estimate._power_law((100, 200), (1.0, 1.0), 400)
    assert p == estimate.SVM_EXPONENTS[0] == 1.7 and value == pytest.approx(2.0**1.7)
    value, p = estimate._power_law((100, 200), (1.0, 1.0), 400, exponents=(1.0, 2.5))
    assert p == 1.0 and value == pytest.approx(2.0)
    value, p = estimate._power_law((100, 200), (1.0, 64.0), 400)
    assert p == 2.5


def test_cnn_range_spans_early_stopping_to_the_epoch_cap(tiny_dataset):
    settings = CNNSettings(epochs=12, early_stopping="macro_f1", patience=3, mixed_precision=False)
    (low, high), details = estimate.calibrate_cnn(tiny_dataset, settings, k=3, folds=2 * 3)
    assert 0 < low < high
    assert details["epochs"] == [4, 12]
    # high - low is 2 repeats x 3 folds x 8 more epochs of the measured epoch
    # time (epoch_s is rounded to 0.01 s: 48 x 0.005 s at most).
    assert high - low == pytest.approx(2 * 3 * 8 * details["epoch_s"], abs=0.25)
    # The inputs are prepared once for both repeats; every fold is counted.
    fold = details["startup_s"] + 12 * details["epoch_s"] + details["test_s"]
    assert high == pytest.approx(details["prepare_s"] + 2 * 3 * fold, abs=0.5)
    line = estimate.describe(estimate.Estimate(svm_s=60.0, cnn_s={"lipnet-4": (low, high)}))
    assert line.startswith("Estimated time on this machine:") and "lipnet-4" in line


def test_a_cnn_that_cannot_stop_early_gets_one_figure_not_a_range():
    stopping = CNNSettings(epochs=30, early_stopping="macro_f1", patience=5)
    assert estimate.fewest_epochs(stopping) == 6
    assert estimate.fewest_epochs(stopping.replace(patience=29)) == 30
    assert estimate.fewest_epochs(stopping.replace(validation_fraction=0)) == 30
    assert estimate.fewest_epochs(CNNSettings()) == CNNSettings().epochs  # the default: fixed
    fixed = estimate.describe(estimate.Estimate(svm_s=60.0, cnn_s={"lipnet-4": (600.0, 600.0)}))
    assert "about 11.0 min" in fixed and "lipnet-4 about 10.0 min" in fixed
    assert " to " not in fixed and "stopping early" not in fixed
    ranged = estimate.describe(estimate.Estimate(svm_s=60.0, cnn_s={"lipnet-4": (120.0, 600.0)}))
    assert "lipnet-4 2.0 min to 10.0 min" in ranged and "stopping early" in ranged


def test_benchmark_stores_and_reports_its_estimate(tiny_export, tmp_path, monkeypatch):
    monkeypatch.setattr(comparison, "ESTIMATE_MIN_PARTICLES", 10)
    messages = []

    from liposome_bench.progress import NullReporter

    class Reporter(NullReporter):
        def message(self, text):
            messages.append(text)

    summary = comparison.run_benchmark(
        "lamellarity",
        tiny_export,
        cnn_models=[],
        k=3,
        out=tmp_path / "out",
        svm_options={"grid": "coarse"},
        n_resamples=20,
        reporter=Reporter(),
    )
    guess = summary["timings"]["estimate"]
    assert guess["svm_s"] > 0 and guess["low_s"] == guess["high_s"] == guess["svm_s"]
    assert any(m.startswith("Estimated time on this machine:") for m in messages)
    summary = comparison.run_benchmark(
        "lamellarity",
        tiny_export,
        cnn_models=[],
        k=3,
        out=tmp_path / "out2",
        svm_options={"C": 8.0, "gamma": 0.0078125},  # no grid search: only the estimate matters
        n_resamples=20,
        estimate=False,
    )
    assert "estimate" not in summary["timings"]


def test_svm_calibration_counts_features_and_every_fold(tiny_dataset):
    seconds, details = estimate.calibrate_svm(
        tiny_dataset, SVMSettings(grid="coarse"), k=3, folds=2 * 3
    )
    per_fold = details["grid_s"] + details["fit_s"]
    # The features are computed once for both repeats (comparison reuses them).
    assert seconds == pytest.approx(details["features_s"] + 2 * 3 * per_fold, abs=0.6)
    low, high = estimate.SVM_EXPONENTS
    assert all(low <= e <= high for e in details["exponents"].values())
    assert details["measured"]  # the training sizes timed (both capped at the tiny set)


@pytest.mark.parametrize("max_samples, searched", [(32, [32]), (None, [32, 16])])
def test_the_svm_calibration_searches_the_smaller_size_only_where_it_counts(
    tiny_dataset, monkeypatch, max_samples, searched
):
    # Folds of 36 training particles (k=5) search at most max_samples of
    # them: at 32, the larger calibration size itself, which the figure is
    # then taken from; with no cap, at 36, extrapolated from both sizes.
    from liposome_bench import svm

    monkeypatch.setattr(estimate, "SVM_SIZES", (16, 32))
    monkeypatch.setitem(svm.GRIDS["coarse"], "max_samples", max_samples)
    real, calls = svm.search_grid, []

    def counted(X, y, **options):
        calls.append(len(y))
        return real(X, y, **options)

    monkeypatch.setattr(svm, "search_grid", counted)
    seconds, details = estimate.calibrate_svm(tiny_dataset, SVMSettings(grid="coarse"), k=5)
    assert calls == searched
    small, large = details["measured"]["16"], details["measured"]["32"]
    assert small["fit_s"] is not None and large["grid_s"] is not None
    if max_samples == 32:
        assert small["grid_s"] is None and details["exponents"]["grid"] is None
        assert details["grid_s"] == pytest.approx(large["grid_s"], abs=0.06)
    else:
        assert small["grid_s"] is not None and details["exponents"]["grid"] is not None


def test_linear_extrapolation_keeps_the_fixed_part():
    # 1 s fixed + 0.01 s per particle.
    assert estimate._linear((100, 200), (2.0, 3.0), 1000) == pytest.approx(11.0)
    # Noisy timings that fall with size never extrapolate below the larger one.
    assert estimate._linear((100, 200), (3.0, 2.0), 1000) == pytest.approx(3.0)


def test_a_resumed_benchmark_estimates_only_its_unfinished_folds(
    tiny_export, tmp_path, monkeypatch
):
    """Re-running after an interruption: the estimate counts the folds still
    to train (and says so), and a finished run makes none."""
    monkeypatch.setattr(comparison, "ESTIMATE_MIN_PARTICLES", 10)
    messages = []

    from liposome_bench.progress import NullReporter

    class Reporter(NullReporter):
        def message(self, text):
            messages.append(text)

    def run():
        messages.clear()
        return comparison.run_benchmark(
            "lamellarity",
            tiny_export,
            cnn_models=[],
            k=3,
            out=tmp_path / "out",
            svm_options={"C": 8.0, "gamma": 0.0078125},
            n_resamples=20,
            reporter=Reporter(),
        )

    whole = run()["timings"]["estimate"]
    assert whole["tasks"] == [3, 3]
    assert any(m.startswith("Estimated time on this machine: ") for m in messages)
    (tmp_path / "out" / "svm" / "fold-1.json").unlink()
    resumed = run()["timings"]["estimate"]
    assert resumed["tasks"] == [1, 3]
    assert any(
        m.startswith("Estimated time on this machine for the 1 of 3 (repeat, fold, model) tasks")
        for m in messages
    )
    # Features once, then one fold's fit instead of three.
    part = resumed["details"]["svm"]
    assert resumed["svm_s"] == pytest.approx(part["features_s"] + part["fit_s"], abs=0.1)
    assert "estimate" not in run()["timings"]  # nothing left to train
    assert not any("time estimate" in m for m in messages)


def test_a_models_finished_folds_are_not_calibrated(tiny_dataset):
    settings = SVMSettings(C=8.0, gamma=0.0078125)
    cnn = {"lipnet-1": CNNSettings(model="lipnet-1", epochs=2, mixed_precision=False)}
    guess = estimate.estimate_benchmark(
        tiny_dataset, 3, 2, settings, cnn, folds_left={"svm": 2, "lipnet-1": 0}
    )
    assert guess.tasks == (2, 12)
    assert guess.svm_s > 0 and guess.cnn_s == {} and "lipnet-1" not in guess.details


def test_beside_the_cnn_the_svm_adds_only_a_share_of_the_shorter_part():
    cnn = {"lipnet-4": (120.0, 600.0)}
    one_then_other = estimate.Estimate(svm_s=60.0, cnn_s=cnn)
    beside = estimate.Estimate(svm_s=60.0, cnn_s=cnn, beside=True)
    assert (one_then_other.low_s, one_then_other.high_s) == (180.0, 660.0)
    cost = estimate.BESIDE_COST
    assert beside.low_s == pytest.approx(120.0 + cost * 60.0)
    assert beside.high_s == pytest.approx(600.0 + cost * 60.0)
    longer_svm = estimate.Estimate(svm_s=900.0, cnn_s=cnn, beside=True)
    assert longer_svm.high_s == pytest.approx(900.0 + cost * 600.0)
    assert "SVM about 60 s beside the CNN" in estimate.describe(beside)
    assert "beside" not in estimate.describe(one_then_other)
    assert beside.to_dict()["beside"] is True


def test_on_dask_the_estimate_says_it_is_a_serial_runs_time():
    guess = estimate.Estimate(svm_s=60.0, cnn_s={"lipnet-4": (600.0, 600.0)})
    assert "serial" not in estimate.describe(guess)
    line = estimate.describe(guess, "tcp://10.0.0.5:8786")
    assert line.endswith(
        "That is a serial run's time; how --scheduler tcp://10.0.0.5:8786 shares the tasks "
        "among its workers is not modelled."
    )


def _dry_run(export, out, **options):
    return comparison.run_benchmark(
        "lamellarity",
        export,
        cnn_models=options.pop("cnn_models", []),
        k=3,
        out=out,
        svm_options={"C": 8.0, "gamma": 0.0078125},
        n_resamples=20,
        dry_run=True,
        **options,
    )


def test_a_dry_run_plans_and_estimates_but_writes_nothing(tiny_export, tmp_path, monkeypatch):
    monkeypatch.setattr(comparison, "ESTIMATE_MIN_PARTICLES", 10)
    out = tmp_path / "out"
    plan = _dry_run(tiny_export, out, repeats=2)
    assert plan["dry_run"] and plan["tasks"] == [6, 6] and plan["per_model"] == {"svm": 6}
    # The SVM was calibrated (its seconds, rounded to 0.1 s, can be 0.0 on
    # this tiny set: that assertion failed in 1 run of 5).
    assert plan["estimate"]["details"]["svm"]["measured"] and plan["no_estimate"] is None
    assert not out.exists()
    text = comparison.plan_text(plan)
    assert text.startswith(
        "Dry run: 6 (repeat, fold, model) tasks (2 repeat(s) x 3 folds x 1 model)"
    )
    assert "No time estimate" not in text
    assert plan["beside"] is None and "beside" not in text  # no CNN
    # Every model is counted, whether or not an estimate is made.
    monkeypatch.setattr(comparison, "usable_cores", lambda: 2)
    monkeypatch.setattr(comparison, "_gpu_available", lambda: False)
    plan = _dry_run(tiny_export, out, cnn_models=["lipnet-fcn"], estimate=False)
    assert plan["tasks"] == [6, 6] and plan["per_model"] == {"svm": 3, "lipnet-fcn": 3}
    assert plan["estimate"] is None and plan["no_estimate"] == "--no-estimate was given"
    text = comparison.plan_text(plan)
    assert "No time estimate: --no-estimate was given." in text
    # The plan says what the run would print: on 2 cores without a GPU the
    # SVM runs beside the CNN.
    assert plan["beside"] == comparison.BESIDE_MESSAGES["cpu"].format(jobs=1)
    assert plan["beside"] in text
    monkeypatch.setattr(comparison, "usable_cores", lambda: 1)
    plan = _dry_run(tiny_export, out, cnn_models=["lipnet-fcn"], estimate=False)
    assert plan["beside"] is None and "beside" not in comparison.plan_text(plan)
    assert not out.exists()


def test_a_dry_run_of_a_started_folder_counts_what_is_left(tiny_export, tmp_path, monkeypatch):
    monkeypatch.setattr(comparison, "ESTIMATE_MIN_PARTICLES", 10)
    out = tmp_path / "out"
    run = dict(
        cnn_models=[],
        k=3,
        out=out,
        svm_options={"C": 8.0, "gamma": 0.0078125},
        n_resamples=20,
        estimate=False,
    )
    comparison.run_benchmark("lamellarity", tiny_export, **run)
    plan = _dry_run(tiny_export, out)
    assert plan["tasks"] == [0, 3] and plan["no_estimate"] == "every task is done"
    assert "all 3 (repeat, fold, model) tasks" in comparison.plan_text(plan)
    assert "without --dry-run to start" not in comparison.plan_text(plan)
    (out / "svm" / "fold-2.json").unlink()
    before = sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*"))
    plan = _dry_run(tiny_export, out)
    assert plan["tasks"] == [1, 3] and plan["estimate"]["tasks"] == [1, 3]
    assert "1 of 3 (repeat, fold, model) tasks" in comparison.plan_text(plan)
    assert sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    # What the real run would refuse, the dry run refuses first, before its calibration.
    calibrated = []
    monkeypatch.setattr(
        comparison._estimate, "estimate_benchmark", lambda *a, **k: calibrated.append(1)
    )
    with pytest.raises(comparison.ResultsError, match="made with folds"):
        _dry_run(tiny_export, out, fold_seed=7)
    assert not calibrated
    with pytest.raises(comparison.ResultsError, match="holds a run without --repeats"):
        _dry_run(tiny_export, out, repeats=2)


def test_benchmark_dry_run_from_the_command_line(tiny_export, tmp_path):
    from click.testing import CliRunner

    from liposome_bench.cli import cli

    out = tmp_path / "out"
    args = ["benchmark", "--problem", "lamellarity", "--data", str(tiny_export)]
    args += ["--cnn", "lipnet-1", "--folds", "3", "--out", str(out), "--dry-run"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "Dry run: 6 (repeat, fold, model) tasks (1 repeat(s) x 3 folds x 2 models)" in (
        result.output
    )
    # The tiny set is under ESTIMATE_MIN_PARTICLES: the plan says why there is no estimate.
    assert "No time estimate: the set has" in result.output
    assert not out.exists()


def test_an_epoch_at_half_speed_does_not_set_the_calibration(monkeypatch):
    # Two of the four later epochs slow (as on an Intel Xeon with AMX): the
    # lower median keeps the steady 0.3 s; the median would say 0.45 s.
    clock = iter([0.0, 2.0, 2.3, 2.9, 3.2, 3.8])

    def fake_train_fold(*args, reporter, **kwargs):
        for epoch in range(estimate.CALIBRATION_EPOCHS):
            reporter.epoch(epoch + 1, estimate.CALIBRATION_EPOCHS)
        return "net", {}

    monkeypatch.setattr(estimate, "train_fold", fake_train_fold)
    monkeypatch.setattr(estimate, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    monkeypatch.setattr(estimate, "CALIBRATION_EPOCHS", 5)
    settings = CNNSettings(model="lipnet-1")
    x, y = np.zeros((8, 28, 28, 1), np.float32), np.zeros(8, int)
    first, steady, net = estimate._time_epochs(x, y, x, y, settings, ["a", "b"], "cpu", 0)
    assert first == pytest.approx(2.0) and steady == pytest.approx(0.3) and net == "net"
