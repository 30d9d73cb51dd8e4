"""Learning curves: subsampled training folds (test folds unchanged, whole
groups), the sizes, the power-law fits and crossings, and a real run of
``liposome-bench curve`` on the tiny set through Dask."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from liposome_bench import curve
from liposome_bench.cli import cli
from liposome_bench.errors import ConfigError, CurveError
from liposome_bench.folds import Folds, make_folds

CLASSES = ["unilamellar", "multilamellar", "uncertain"]


@pytest.fixture(scope="module")
def fixed_set():
    """A fixed tiny set: 45 labels (24/12/9), 15 micrographs of 3, 3 folds."""
    y = np.array([0] * 24 + [1] * 12 + [2] * 9)
    rng = np.random.default_rng(7)
    y = y[rng.permutation(len(y))]
    groups = np.array([f"m{i // 3}" for i in range(len(y))], dtype=object)
    plain = Folds(3, 0, "f", make_folds(y, CLASSES, 3, 0))
    grouped = Folds(3, 0, "f", make_folds(y, CLASSES, 3, 0, groups), None, "micrograph", groups)
    return y, plain, grouped


def test_test_folds_are_identical_at_every_size_and_training_is_stratified(fixed_set):
    y, folds, _ = fixed_set
    previous = None
    for fraction in (0.25, 0.5, 1.0):
        sub = curve.subsample_training(folds, y, CLASSES, fraction=fraction, seed=3)
        for f in range(3):
            np.testing.assert_array_equal(sub.test_indices(f), folds.test_indices(f))
            train, full = sub.train_indices(f), folds.train_indices(f)
            assert set(train) <= set(full) and not set(train) & set(sub.test_indices(f))
            counts = np.bincount(y[train], minlength=3)
            np.testing.assert_array_equal(
                counts, np.round(fraction * np.bincount(y[full], minlength=3))
            )
            if previous is not None:  # nested within one repeat
                assert set(previous.train_indices(f)) <= set(train)
        previous = sub
    full = curve.subsample_training(folds, y, CLASSES, fraction=1.0)
    for f in range(3):
        np.testing.assert_array_equal(full.train_indices(f), folds.train_indices(f))
    # Another repeat draws another subsample; counts per class stay.
    other = curve.subsample_training(folds, y, CLASSES, fraction=0.5, seed=3, repeat=1)
    same = curve.subsample_training(folds, y, CLASSES, fraction=0.5, seed=3, repeat=0)
    assert any(set(other.train_indices(f)) != set(same.train_indices(f)) for f in range(3))
    capped = curve.subsample_training(folds, y, CLASSES, per_class=5)
    for f in range(3):
        assert np.bincount(y[capped.train_indices(f)], minlength=3).tolist() == [5, 5, 5]


def test_grouped_subsamples_keep_whole_groups(fixed_set):
    y, _, folds = fixed_set
    for fraction in (0.25, 0.5):
        sub = curve.subsample_training(folds, y, CLASSES, fraction=fraction, seed=1)
        for f in range(3):
            np.testing.assert_array_equal(sub.test_indices(f), folds.test_indices(f))
            full, train = folds.train_indices(f), sub.train_indices(f)
            kept = set(folds.groups[train])
            for g in kept:  # every member of a kept group that trains in this fold
                members = set(full[folds.groups[full] == g])
                assert members <= set(train), f"group {g} split at {fraction}"
            assert len(train) < len(full)
            targets = np.round(fraction * np.bincount(y[full], minlength=3))
            assert (np.bincount(y[train], minlength=3) >= targets).all()


def test_a_size_too_small_for_a_class_is_skipped_with_one_line(fixed_set, tmp_path):
    y, folds, _ = fixed_set
    with pytest.raises(CurveError) as info:
        curve.subsample_training(folds, y, CLASSES, fraction=0.07)
    assert str(info.value).startswith(
        "At 7% of the training folds, class 'uncertain' keeps no training particle in fold "
    )
    assert "\n" not in str(info.value)
    cells = curve.model_cells(["lipnet-1"])
    plan = curve.plan_curve(
        folds, y, CLASSES, tmp_path / "out", cells, curve.parse_points("0.07,0.5")
    )
    assert list(plan.skipped) == ["f0.07"] and [p.label for p in plan.points] == ["f0.5"]
    assert len(plan.tasks) == 2 * 3 and plan.done == 0
    assert curve.estimate_seconds(plan) > 0


@pytest.mark.parametrize(
    "fractions, per_class, message",
    [
        ("0,0.5", None, "--fractions are shares of the training folds in (0, 1]; got 0."),
        ("a", None, "--fractions expects comma-separated numbers"),
        (None, "2.5", "--per-class takes whole numbers of particles of at least 1; got 2.5."),
        ("0.5", "10", "Give --fractions or --per-class, not both."),
    ],
)
def test_bad_sizes_are_refused(fractions, per_class, message):
    with pytest.raises(ConfigError) as info:
        curve.parse_points(fractions, per_class)
    assert str(info.value).startswith(message)


def test_the_default_sizes_are_the_issue_s():
    assert [p.value for p in curve.parse_points()] == [0.1, 0.25, 0.5, 1.0]
    assert [p.label for p in curve.parse_points(per_class="50,20")] == ["n20", "n50"]


def test_power_law_fit_and_crossing_are_recovered():
    n = np.array([10.0, 25, 50, 100])
    svm = 1 - 0.5 * n**-0.1  # flat: ahead at these sizes
    cnn = 1 - 1.5 * n**-0.3  # steeper: catches up
    fit_s, fit_c = curve.fit_power_law(n, svm), curve.fit_power_law(n, cnn)
    assert fit_s["c"] == pytest.approx(0.1) and fit_c["c"] == pytest.approx(0.3)
    assert np.exp(fit_c["log_b"]) == pytest.approx(1.5)
    expected = 3.0**5  # 0.5 n^-0.1 = 1.5 n^-0.3
    assert curve.crossing(fit_s, fit_c) == pytest.approx(expected)
    np.testing.assert_allclose(curve.predict_power_law(fit_c, n), cnn)
    # Nearly parallel lines cross beyond any float (found by the quick run).
    assert curve.crossing({"log_b": 0.0, "c": 0.1}, {"log_b": 10.0, "c": 0.1 + 1e-5}) == np.inf
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.005, (4, 5))
    est = curve.crossing_estimate(n, svm[:, None] + noise, cnn[:, None] - noise, n_boot=200)
    assert est["crossing"] == pytest.approx(expected, rel=0.3)
    assert est["low"] <= est["crossing"] <= est["high"]
    item = {
        "class": "uncertain",
        "model_a": "svm",
        "model_b": "lipnet-4",
        "f1_a": list(svm),
        "f1_b": list(cnn),
        "verdict_at_largest": "no significant difference",
        **est,
    }
    line = curve.summary_line(item)
    assert line.startswith(
        "uncertain: at 100 particles the svm is ahead (F1 svm 0.68 vs "
        "lipnet-4 0.62; no significant difference); the fitted curves "
        "cross near 2"
    )
    assert "beyond 2x the data this extrapolation is a guess" in line
    assert "no crossing is extrapolated" in curve.summary_line({**item, "not_learning": ["svm"]})
    # Nearly parallel curves far apart: no crossing within 10x.
    flat = 1 - 0.9 * n**-0.11
    far = curve.crossing_estimate(n, svm[:, None] + noise, flat[:, None] + noise, n_boot=50)
    assert far["crossing"] == np.inf and far["share_crossing"] == 0
    line = curve.summary_line({**item, **far, "f1_b": list(flat)})
    assert line.endswith("the fitted curves do not cross within 10x the data (1000 particles).")


def test_curve_runs_on_dask_resumes_and_renders(tmp_path, tiny_export_copy):
    out = tmp_path / "curve"
    args = [
        "curve",
        "--data",
        str(tiny_export_copy),
        "--cnn",
        "lipnet-1",
        "--epochs",
        "1",
        "--fractions",
        "0.2,0.5,1",
        "--folds",
        "3",
        "--workers",
        "1",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    # At 20 % the SVM's grid search lacks a class: said once for the point.
    assert result.output.count("Point f0.2 (20% of the training folds): The C/gamma") == 1
    assert "Synthetic data" in result.output
    summary = json.loads((out / curve.SUMMARY_JSON).read_text())
    assert [p["label"] for p in summary["points"]] == ["f0.2", "f0.5", "f1"]
    assert {c["class"] for c in summary["crossings"]} == {*CLASSES, curve.MACRO}
    for line in summary["lines"]:
        assert line in result.output.replace("\n", " ") or line[:40] in result.output
    last = summary["points"][-1]
    assert len(last["verdicts"]) == 1 and set(last["verdicts"][0]["per_class"]) == set(CLASSES)
    assert all("p_holm_curve" in e for e in last["verdicts"][0]["per_class"].values())
    # Every point is tested on the same particles.
    ids = {}
    for p in ("f0.5", "f1"):
        for cell in (d for d in (out / "cells").iterdir() if d.name.endswith(f"-{p}-r0")):
            for f in range(3):
                (csv,) = cell.glob(f"*/fold-{f}.csv")
                rows = csv.read_text().splitlines()
                ids.setdefault(f, set()).add(tuple(r.split(",")[0] for r in rows[1:]))
    assert all(len(v) == 1 for v in ids.values())

    again = CliRunner().invoke(cli, args + ["--scheduler", "tcp://127.0.0.1:1"])
    # Only the failed SVM tasks of f0.2 remain; they need the (unreachable) cluster.
    assert again.exit_code == 2 and "Cannot reach the Dask scheduler" in again.output
    assert "15 of 18 tasks already finished" in " ".join(again.output.split())
    report = CliRunner().invoke(cli, ["report", str(out)])
    assert report.exit_code == 0, report.output
    text = (out / "report.md").read_text()
    assert "## Answer" in text and "Synthetic data" in text
    assert (out / "report-figures" / "curves.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--fractions", "0,1"],
            (
                "Error: --fractions are shares of the training folds in (0, 1]; "
                "got 0. Use --per-class for counts."
            ),
        ),
        (
            ["--fractions", "0.5", "--per-class", "5"],
            ("Error: Give --fractions or --per-class, not both."),
        ),
        (
            ["--scheduler", "slurm"],
            (
                "Error: --scheduler 'slurm': no protocol; expected 'local' or "
                "tcp://HOST:PORT with PORT in 1-65535 (e.g. "
                "tcp://10.0.0.5:8786)."
            ),
        ),
    ],
)
def test_cli_refuses_bad_options_with_one_line(tiny_export_copy, tmp_path, args, message):
    result = CliRunner().invoke(
        cli, ["curve", "--data", str(tiny_export_copy), "--out", str(tmp_path / "o"), *args]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == message


def test_cli_dry_run_lists_tasks_and_runs_nothing(tiny_export_copy, tmp_path):
    out = tmp_path / "o"
    result = CliRunner().invoke(
        cli,
        [
            "curve",
            "--data",
            str(tiny_export_copy),
            "--out",
            str(out),
            "--folds",
            "3",
            "--fractions",
            "0.07,0.5,1",
            "--cnn",
            "lipnet-1,lipnet-2",
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "2 sizes x 1 repeat(s) x 3 models x 3 folds = 18 tasks (18 to run)" in text
    assert "Point f0.07 skipped: At 7% of the training folds" in text
    assert "Estimated" in text and "Nothing was run." in text
    assert not out.exists() or not (out / curve.CURVE_JSON).exists()
