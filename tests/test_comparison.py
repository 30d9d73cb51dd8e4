"""run_benchmark end to end on the tiny dataset, and the CI regression gate
against the committed baseline fixtures/ci-baseline.json.

The CI benchmark is the ``--quick`` benchmark of the tiny synthetic dataset
(45 particles, 3 folds; SVM with the coarse grid, lipnet-4 for 2 epochs),
seeded, on the CPU. To rewrite the baseline after an intended change:

    LIPOSOME_BENCH_WRITE_CI_BASELINE=1 python -m pytest tests/test_comparison.py -k ci_baseline

Tolerance: the default absolute 0.02 for every metric of both models, no
overrides. It is honest for run-to-run CPU variation because that variation
was measured to change no prediction: the same run with oneDNN off
(TF_ENABLE_ONEDNN_OPTS=0, other kernels) or with one TensorFlow thread
(another summation order) moved the CNN's probabilities by at most 9e-8
and the SVM's decision values by 0, while the smallest gap between the
CNN's top two probabilities was 1.5e-4 and the smallest |SVM decision value|
4e-3. With 3-9 test particles per class and fold a single flipped particle
moves a per-class fold mean by 0.04-0.5, so any tolerance below that is the
same as "identical"; a wider one would not make the gate more robust, only
blind. What does change the numbers wholesale is a change of random
streams: the Keras backend (the JAX backend flipped 34 of 45 CNN
predictions, per-class drops up to 0.52) or a TensorFlow/Keras version that
draws initial weights or augmentations differently. Then the gate fails and
the baseline must be re-recorded, after checking the change is intended (see
docs/benchmark.md, "CI regression gate").
"""

import json
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ENGINE_CNN, ENGINE_FOLDS, ENGINE_SVM, _built_once

from liposome_bench import comparison, display
from liposome_bench import report
from liposome_bench.errors import ResultsError
from liposome_bench.progress import NullReporter
from liposome_bench.settings import CNNSettings, SVMSettings

CI_BASELINE = Path(__file__).resolve().parents[1] / "fixtures" / "ci-baseline.json"
#: Per-metric tolerances stored in the CI baseline: none (see the module docstring).
CI_OVERRIDES = {}
QUICK_FOLDS = 3


def quick_benchmark(tiny_export, out, **options):
    """The CI benchmark's call: ``--quick``, 3 folds, float32 everywhere (the
    automatic bfloat16 of CPUs with native bfloat16 would make the CI
    baseline depend on the CPU)."""
    return comparison.run_benchmark(
        "lamellarity",
        tiny_export,
        quick=True,
        k=QUICK_FOLDS,
        out=out,
        cnn_options={"mixed_precision": False},
        **options,
    )


def run_quick_once(tmp_path_factory, tiny_export):
    """The CI benchmark (``--quick``, 3 folds, tiny export), run once per
    session however many xdist workers ask (the first builds it under a file
    lock, the others wait and read it) and shared with test_resume.py and
    test_gallery.py. Read-only: (results folder, its summary.json)."""
    with _built_once(tmp_path_factory, "quick-run") as (root, build):
        out = root / "quick-run"
        if build:
            quick_benchmark(tiny_export, out)
    return out, json.loads((out / "summary.json").read_text())


@pytest.fixture
def quick_run(tmp_path_factory, tiny_export):
    return run_quick_once(tmp_path_factory, tiny_export)


def test_quick_run_writes_a_complete_summary(quick_run, tiny_dataset):
    out, summary = quick_run
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["schema_version"] == report.SUMMARY_SCHEMA_VERSION
    assert on_disk["kind"] == comparison.SUMMARY_KIND
    assert list(on_disk["models"]) == ["svm", "lipnet-4"]
    assert on_disk["dataset"]["fingerprint"] == tiny_dataset.fingerprint()
    assert on_disk["dataset"]["class_counts"] == tiny_dataset.class_counts()
    assert on_disk["dataset"]["synthetic"] is True
    assert on_disk["folds"]["k"] == QUICK_FOLDS
    assert sum(on_disk["folds"]["sizes"]) == len(tiny_dataset)
    assert on_disk["settings"]["quick"] is True
    assert on_disk["settings"]["models"]["lipnet-4"]["epochs"] == comparison.QUICK_EPOCHS
    assert on_disk["settings"]["models"]["svm"]["grid"] == "coarse"
    for key in ("numpy", "scikit-learn", "libsvm-official", "keras", "keras backend"):
        assert key in on_disk["versions"], key
    for key in ("dataset_s", "folds_s", "svm_s", "lipnet-4_s", "stats_s", "total_s"):
        assert on_disk["timings"][key] >= 0, key
    assert on_disk["device"]["cnn"] and on_disk["device"]["cnn"][0].startswith("cpu")
    (comp,) = on_disk["comparisons"]
    assert (comp["model_a"], comp["model_b"], comp["n_particles"]) == ("svm", "lipnet-4", 45)
    assert "--quick" in on_disk["equivalent_command"]


def test_predictions_csv_has_every_particle_and_model(quick_run, tiny_dataset):
    out, _ = quick_run
    table = pd.read_csv(out / "predictions.csv", dtype={"id": str})
    assert table["id"].tolist() == tiny_dataset.ids
    assert table["label"].tolist() == [p.label for p in tiny_dataset.particles]
    classes = list(tiny_dataset.problem.classes)
    assert [f"lipnet-4_score_{c}" for c in classes] == [
        c for c in table.columns if c.startswith("lipnet-4_score_")
    ]
    probabilities = table[[f"lipnet-4_score_{c}" for c in classes]].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (table["lipnet-4_predicted"] == [classes[i] for i in probabilities.argmax(1)]).all()
    assert len([c for c in table.columns if c.startswith("svm_score_")]) == 3  # one-vs-one
    # The same predictions as the fold files the models wrote.
    fold0 = pd.read_csv(out / "svm" / "fold-0.csv", dtype={"id": str}).set_index("id")
    merged = table.set_index("id").loc[fold0.index]
    assert (merged["svm_predicted"] == fold0["predicted"]).all()
    assert (merged["fold"] == 0).all()


def test_tables_print_side_by_side(quick_run):
    from rich.console import Console

    _, summary = quick_run
    console = Console(record=True, width=200)
    display.print_benchmark(summary, console)
    text = console.export_text()
    flat = " ".join(text.split())
    for needle in [
        "unilamellar (24 particles)",
        "uncertain (9 particles)",
        "F1 (thesis)",
        "balanced accuracy",
        "MCC",
        "normalised confusion matrix",
        "verdict: lipnet-4 − svm, corrected resampled t-test",
        "on 3 paired fold scores",
        "F1 uncertain",
        "macro F1",
        "Holm p",
        "McNemar (secondary)",
        "from the 3 folds only",
        "interval (Holm-matched)",
    ]:
        assert needle in flat, needle
    header = next(line for line in text.splitlines() if "metric" in line and "svm" in line)
    assert header.index("svm") < header.index("lipnet-4")


def test_ci_baseline(quick_run):
    """The project's CI regression gate: the tiny deterministic benchmark
    against the committed baseline."""
    out, summary = quick_run
    if os.environ.get("LIPOSOME_BENCH_WRITE_CI_BASELINE"):
        report.write_baseline(out, CI_BASELINE, overrides=CI_OVERRIDES)
    baseline = report.read_baseline(CI_BASELINE)
    recorded = (baseline["source"].get("versions") or {}).get("keras backend")
    if recorded != summary["versions"].get("keras backend"):
        pytest.skip(
            f"the CI baseline was recorded with the {recorded} Keras backend; "
            "another backend draws other random numbers"
        )
    assert baseline["source"]["fingerprint"] == summary["dataset"]["fingerprint"], (
        "The tiny test dataset changed (synthetic generator?), so the committed CI baseline "
        "no longer applies. Check the change is intended, then rewrite it with "
        "LIPOSOME_BENCH_WRITE_CI_BASELINE=1 python -m pytest tests/test_comparison.py -k ci_baseline"
    )
    regressions = report.check_baseline(out, CI_BASELINE)
    assert not regressions, "\n".join(r.describe() for r in regressions)


def test_gate_catches_a_raised_baseline_value(quick_run, tmp_path):
    out, summary = quick_run
    data = json.loads(report.write_baseline(out, tmp_path / "baseline.json").read_text())
    measured = summary["models"]["svm"]["per_class"]["multilamellar"]["tpr"]["mean"]
    data["models"]["svm"]["per_class"]["multilamellar"]["tpr"] = measured + 0.021
    path = tmp_path / "raised.json"
    path.write_text(json.dumps(data))
    (reg,) = report.check_baseline(out, path)
    assert reg.key == "svm/multilamellar/tpr"
    data["models"]["svm"]["per_class"]["multilamellar"]["tpr"] = measured + 0.019
    path.write_text(json.dumps(data))
    assert report.check_baseline(out, path) == []


def test_report_of_the_quick_run(quick_run, tmp_path):
    out, _ = quick_run
    path = report.render_report(out, tmp_path / "report.md")
    text = path.read_text()
    assert "**Quick run**" in text and "**Synthetic data.**" in text
    assert "liposome-bench benchmark --problem lamellarity" in text
    assert (tmp_path / "report-figures" / "training.png").exists()


def test_repeats_write_one_folder_per_fold_seed(tmp_path, tiny_export):
    out = tmp_path / "rep"
    summary = comparison.run_benchmark(
        "lamellarity",
        tiny_export,
        cnn_models=[],
        quick=True,
        k=QUICK_FOLDS,
        repeats=2,
        out=out,
        svm_options={"C": 8.0, "gamma": 0.0078125},
        n_resamples=100,
    )
    assert summary["repeats"]["fold_seeds"] == [0, 1]
    for r in range(2):
        one = json.loads((out / f"repeat-{r}" / "summary.json").read_text())
        assert one["folds"]["seed"] == r
    spread = summary["repeats"]["spread"]["svm"]["uncertain"]["f1"]
    assert spread["n"] == 2 and spread["min"] <= spread["mean"] <= spread["max"]
    table = pd.read_csv(out / "predictions.csv")
    assert sorted(table["repeat"].unique()) == [0, 1]
    assert len(table) == 2 * 45
    # Different fold seeds: different fold assignments.
    folds = [table[table["repeat"] == r].sort_values("id")["fold"].to_numpy() for r in (0, 1)]
    assert not np.array_equal(*folds)
    text = report.render_report(out).read_text()
    assert "## Run-to-run spread" in text
    # A single run may not go into a folder of repeated runs.
    with pytest.raises(ResultsError, match="holds a run with --repeats"):
        comparison.run_benchmark(
            "lamellarity", tiny_export, cnn_models=[], quick=True, k=QUICK_FOLDS, out=out
        )


@pytest.mark.parametrize(
    "gpu, cores, where", [(True, 1, "gpu"), (False, 2, "cpu")], ids=["gpu", "cpu-only"]
)
def test_the_svm_runs_beside_the_cnn(monkeypatch, gpu, cores, where):
    """With a GPU, or on a CPU-only machine of two cores or more, the SVM
    runs in a thread while the CNN trains: the fake SVM below only finishes
    once the fake CNN has started."""
    from liposome_bench import cnn, svm

    cnn_started = threading.Event()
    seen = {}

    def fake_svm(*args, jobs, reporter, **kwargs):
        seen["svm_waited"] = cnn_started.wait(timeout=30)
        seen["svm_jobs"] = jobs

    def fake_cnn(dataset, folds, results, settings, reporter, **kwargs):
        cnn_started.set()
        seen.setdefault("cnn", []).append(settings.model)

    monkeypatch.setattr(svm, "run_svm", fake_svm)
    monkeypatch.setattr(cnn, "run_cnn", fake_cnn)
    monkeypatch.setattr(comparison, "_gpu_available", lambda: gpu)
    monkeypatch.setattr(comparison, "usable_cores", lambda: cores)
    messages = []

    class Messages(NullReporter):
        def message(self, text):
            messages.append(text)

    cnns = {m: CNNSettings(model=m) for m in ("lipnet-4", "lipnet-2")}
    assert comparison.svm_beside(cnns) == where
    timings = comparison._run_models(None, None, None, SVMSettings(), cnns, 0, 2, Messages())
    assert seen == {"svm_waited": True, "svm_jobs": 2, "cnn": ["lipnet-4", "lipnet-2"]}
    assert set(timings) == {"svm_s", "lipnet-4_s", "lipnet-2_s"}
    assert messages[0] == comparison.BESIDE_MESSAGES[where].format(jobs=2)


def test_beside_the_cnn_the_outputs_keep_the_commands_model_order(
    monkeypatch, tmp_path, tiny_export
):
    """Models register in run.json as they start, and beside each other the
    CNN can start first; the summary and predictions.csv still list the SVM
    first, as a serial run does. Here the SVM waits until the CNN has
    registered."""
    import time

    from liposome_bench import svm

    monkeypatch.setattr(comparison, "_gpu_available", lambda: False)
    monkeypatch.setattr(comparison, "usable_cores", lambda: 2)
    out = tmp_path / "out"
    real_run_svm = svm.run_svm

    def svm_after_the_cnn(*args, **kwargs):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            run = out / "run.json"
            if run.exists() and "lipnet-4" in json.loads(run.read_text()).get("models", {}):
                break
            time.sleep(0.05)
        return real_run_svm(*args, **kwargs)

    monkeypatch.setattr(svm, "run_svm", svm_after_the_cnn)
    summary = quick_benchmark(tiny_export, out, near_duplicates=False, estimate=False)
    assert list(summary["models"]) == ["svm", "lipnet-4"]
    columns = list(pd.read_csv(out / "predictions.csv", nrows=1).columns)
    assert columns.index("svm_predicted") < columns.index("lipnet-4_predicted")


@pytest.mark.parametrize("cnns", [{"lipnet-4": CNNSettings()}, {}], ids=["one-core", "no-cnn"])
def test_on_one_core_or_without_a_cnn_models_run_one_after_the_other(monkeypatch, cnns):
    from liposome_bench import cnn, svm

    order = []
    monkeypatch.setattr(svm, "run_svm", lambda *a, **k: order.append("svm"))
    monkeypatch.setattr(cnn, "run_cnn", lambda *a, **k: order.append(a[3].model))
    monkeypatch.setattr(comparison, "_gpu_available", lambda: False)
    monkeypatch.setattr(comparison, "usable_cores", lambda: 1 if cnns else 2)
    assert comparison.svm_beside(cnns) is None
    comparison._run_models(None, None, None, SVMSettings(), cnns, 0, 1, NullReporter())
    assert order == ["svm", *(s.model for s in cnns.values())]


def test_quick_subset_is_stratified_and_kept_in_memory(tiny_dataset):
    from liposome_bench.dataset import Dataset

    big = Dataset(
        tiny_dataset.problem, tiny_dataset.particles * 4, root=Path("/nowhere"), synthetic=True
    )
    for i, p in enumerate(big.particles):
        big.particles[i] = type(p)(**{**p.__dict__, "id": f"{i}"})
    subset = comparison.quick_subset(big, seed=0)
    assert subset.root is None  # its folds are never stored beside the full dataset's
    counts = subset.class_counts()
    assert sum(counts.values()) <= comparison.QUICK_PARTICLES + len(counts)
    assert min(counts.values()) >= comparison.QUICK_MIN_PER_CLASS
    assert subset.fingerprint() != big.fingerprint()


def test_repeated_verdict_rests_on_every_repeats_fold_scores(monkeypatch, tmp_path, tiny_export):
    """With --repeats the headline verdict pairs the fold scores of all
    repeats (the CNN is a stand-in that predicts every particle right)."""
    from liposome_bench import cnn
    from liposome_bench.results import FoldResult

    def perfect_cnn(dataset, folds, results, settings, *, seed, reporter, **kwargs):
        classes = list(dataset.problem.classes)
        results.prepare(dataset, folds, settings.model, {"stand-in": True})
        for f in range(folds.k):
            test = folds.test_indices(f)
            y = dataset.y[test]
            results.save_fold(
                FoldResult(
                    settings.model,
                    f,
                    [dataset.ids[i] for i in test],
                    y,
                    y,
                    np.eye(len(classes))[y],
                    classes,
                    "probability",
                    {
                        "epochs": 3,
                        "epochs_run": 8,
                        "max_epochs": 30,
                        "stopped_early": True,
                        "under_trained": False,
                    },
                    {},
                ),
                classes,
            )

    monkeypatch.setattr(cnn, "run_cnn", perfect_cnn)
    summary = comparison.run_benchmark(
        "lamellarity",
        tiny_export,
        cnn_models=["lipnet-1"],
        quick=True,
        k=QUICK_FOLDS,
        repeats=2,
        out=tmp_path / "rep",
        svm_options={"C": 8.0, "gamma": 0.0078125},
        n_resamples=50,
    )
    verdict = summary["verdict"]
    assert verdict["repeats"] == 2 and verdict["n_scores"] == 2 * QUICK_FOLDS
    (comp,) = verdict["comparisons"]
    assert comp["n_scores"] == 2 * QUICK_FOLDS
    assert "2 repeats x 3 folds = 6 paired fold scores" in verdict["note"]
    # Each repeat's own summary rests on its own folds only.
    one = json.loads((tmp_path / "rep" / "repeat-1" / "summary.json").read_text())
    assert one["verdict"]["n_scores"] == QUICK_FOLDS
    # The perfect stand-in is never worse than the SVM.
    assert comp["macro_f1"]["difference"] >= 0
    assert all(
        e["verdict"] in ("no significant difference", "lipnet-1 better")
        for e in comp["per_class"].values()
    )


def test_benchmark_svm_uses_all_features_on_a_custom_problem(tmp_path, tiny_dataset):
    """Issue 23, item 6: without --config or a chosen feature set, a custom
    problem's SVM gets every feature; a lamellarity run keeps vironova."""
    import copy

    from liposome_bench.dataset import Dataset, custom_problem, write_export

    particles = copy.deepcopy(tiny_dataset.particles)
    for p in particles:
        p.label = {"unilamellar": "a", "multilamellar": "b", "uncertain": "c"}[p.label]
    custom = write_export(Dataset(custom_problem(["a", "b", "c"]), particles), tmp_path / "ds")
    summary = comparison.run_benchmark(
        None,
        custom,
        cnn_models=[],
        quick=True,
        k=QUICK_FOLDS,
        out=tmp_path / "run",
        svm_options={"C": 8.0, "gamma": 0.0078125},
        n_resamples=100,
    )
    fold = json.loads((tmp_path / "run" / "svm" / "fold-0.json").read_text())
    assert fold["params"]["feature_set"] == "all", summary.keys()


def test_metrics_by_size_quartile_in_summary_and_report(tmp_path, tiny_export):
    """Issue 23, item 7: summary.json and the report give each model's
    metrics within each quartile of particle size."""
    from liposome_bench.metrics import metrics_by_size_quartile

    out = tmp_path / "q"
    summary = comparison.run_benchmark(
        "lamellarity",
        tiny_export,
        cnn_models=[],
        quick=True,
        k=QUICK_FOLDS,
        out=out,
        svm_options={"C": 8.0, "gamma": 0.0078125},
        n_resamples=100,
    )
    by = json.loads((out / "summary.json").read_text())["by_size_quartile"]
    assert by == json.loads(json.dumps(summary["by_size_quartile"]))
    rows = by["models"]["svm"]
    assert [r["quartile"] for r in rows] == [1, 2, 3, 4]
    assert sum(r["n"] for r in rows) == len(pd.read_csv(out / "predictions.csv"))
    assert all(rows[q]["size_max"] <= rows[q + 1]["size_min"] for q in range(3))
    text = report.render_report(out).read_text()
    assert "## Metrics by particle size quartile" in text
    # The function itself: a model right on small particles only.
    sizes = np.arange(8.0)
    y = np.array([0, 1] * 4)
    pred = np.where(sizes < 2, y, 1 - y)
    got = metrics_by_size_quartile(sizes, y, pred, ["a", "b"])
    assert [r["n"] for r in got] == [2, 2, 2, 2]
    assert [r["accuracy"] for r in got] == [1.0, 0.0, 0.0, 0.0]


def _regrouped(dataset, n_groups: int):
    """``dataset`` with its particles dealt to ``n_groups`` micrographs in turn
    (the tiny set has only 2-3 micrographs, too few for grouped folds)."""
    import dataclasses

    from liposome_bench.dataset import Dataset

    particles = [
        dataclasses.replace(p, meta={**p.meta, "micrograph": f"G{i % n_groups}"})
        for i, p in enumerate(dataset.particles)
    ]
    return Dataset(dataset.problem, particles, synthetic=True)


def test_prevalence_error_row_on_grouped_folds(tmp_path, tiny_dataset):
    """Issue 22 item 3: with folds grouped by micrograph the summary, the table
    and the report carry each model's error of the class fractions per test
    micrograph, equal to a hand computation from predictions.csv, with the
    paired test against the SVM."""
    from rich.console import Console

    from liposome_bench.display import print_benchmark

    dataset = _regrouped(tiny_dataset, 9)
    out = tmp_path / "grouped"
    summary = comparison.run_benchmark(
        "lamellarity",
        dataset,
        cnn_models=["lipnet-2"],
        k=3,
        group_by="micrograph",
        out=out,
        svm_options={"C": 8.0, "gamma": 0.0078125},
        cnn_options={"epochs": 1, "mixed_precision": False},
        n_resamples=50,
    )
    row = json.loads((out / "summary.json").read_text())["prevalence_error"]
    assert row["group_by"] == "micrograph" and set(row["models"]) == {"svm", "lipnet-2"}
    classes = summary["classes"]
    table = pd.read_csv(out / "predictions.csv", dtype={"id": str})
    group = {p.id: p.meta["micrograph"] for p in dataset.particles}
    table["group"] = table["id"].map(group)
    for model in ("svm", "lipnet-2"):
        errors = []
        for _, part in table.groupby("group"):
            assert part["fold"].nunique() == 1  # whole groups in grouped folds
            true = part["label"].value_counts(normalize=True)
            pred = part[f"{model}_predicted"].value_counts(normalize=True)
            errors.append([abs(pred.get(c, 0.0) - true.get(c, 0.0)) for c in classes])
        by_hand = np.mean(errors, axis=0)
        got = row["models"][model]
        assert got["n_groups"] == 9 and got["n_scores"] == 3
        np.testing.assert_allclose([got["per_class"][c] for c in classes], by_hand)
        assert got["mean"] == pytest.approx(by_hand.mean())
        assert all(0.0 <= got["per_class"][c] <= 1.0 for c in classes)
    (comp,) = row["comparisons"]
    assert (comp["model_a"], comp["model_b"], comp["n_scores"]) == ("svm", "lipnet-2", 3)
    # Each fold's score is the mean of its groups' errors, so the mean of the
    # paired differences is that of the per-fold means.
    fold_of = table.groupby("group")["fold"].first()
    per_fold = {m: [] for m in ("svm", "lipnet-2")}
    for f in range(3):
        part = table[table["group"].isin(fold_of.index[fold_of == f])]
        for m in per_fold:
            e = []
            for _, g in part.groupby("group"):
                true = g["label"].value_counts(normalize=True)
                pred = g[f"{m}_predicted"].value_counts(normalize=True)
                e.append(np.mean([abs(pred.get(c, 0.0) - true.get(c, 0.0)) for c in classes]))
            per_fold[m].append(np.mean(e))
    expected = np.mean(np.subtract(per_fold["lipnet-2"], per_fold["svm"]))
    assert comp["mean"]["difference"] == pytest.approx(expected)
    assert 0.0 <= comp["mean"]["p"] <= 1.0 or comp["mean"]["p"] is None
    console = Console(record=True, width=200)
    print_benchmark(summary, console)
    text = console.export_text()
    assert "prevalence error (secondary)" in text and "fraction MAE (secondary)" in text
    md = report.render_report(out, tmp_path / "report.md").read_text()
    assert "## Prevalence error (secondary)" in md and "fraction MAE (secondary)" in md


def test_prevalence_error_row_is_skipped_on_ungrouped_folds(tiny_dataset):
    from liposome_bench.folds import load_or_make_folds

    folds = load_or_make_folds(tiny_dataset, k=3, seed=0)
    row = comparison.prevalence_error_row([], tiny_dataset, folds, {})
    assert "not grouped" in row["skipped"] and "--group-by" in row["skipped"]


def test_prevalence_error_row_over_repeats(tmp_path, tiny_dataset):
    """With --repeats the top-level row rests on every repeat's folds."""
    summary = comparison.run_benchmark(
        "lamellarity",
        _regrouped(tiny_dataset, 9),
        cnn_models=[],
        k=3,
        repeats=2,
        group_by="micrograph",
        out=tmp_path / "rep",
        svm_options={"C": 8.0, "gamma": 0.0078125},
        n_resamples=50,
    )
    svm = summary["prevalence_error"]["models"]["svm"]
    assert (svm["n_scores"], svm["n_groups"]) == (6, 18)
    first = json.loads((tmp_path / "rep" / "repeat-0" / "summary.json").read_text())
    assert first["prevalence_error"]["models"]["svm"]["n_scores"] == 3


def fold_means(summary: dict) -> dict:
    """Every model's per-class and overall fold-mean metrics of a summary."""
    return {
        name: {
            "overall": {k: v["mean"] for k, v in m["overall"].items()},
            **{c: {k: v["mean"] for k, v in per.items()} for c, per in m["per_class"].items()},
        }
        for name, m in summary["models"].items()
    }


def assert_same_benchmark(a: Path, b: Path) -> None:
    """Two benchmark folders hold the same predictions and summary metrics."""
    left, right = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    assert fold_means(left) == fold_means(right)
    assert left["repeats"]["spread"] == right["repeats"]["spread"]
    # The verdict, but for the --repeats suggestion (it scales the run's wall time).
    assert [
        {k: v for k, v in c.items() if k != "repeats_suggestion"}
        for c in left["verdict"]["comparisons"]
    ] == [
        {k: v for k, v in c.items() if k != "repeats_suggestion"}
        for c in right["verdict"]["comparisons"]
    ]
    assert left["verdict"]["comparisons"]
    one, two = (pd.read_csv(p / "predictions.csv") for p in (a, b))
    predicted = [c for c in one.columns if c.endswith("_predicted")]
    assert len(one) == 2 * 45 and len(predicted) == 2
    pd.testing.assert_frame_equal(
        one[["repeat", "id", "fold", *predicted]], two[["repeat", "id", "fold", *predicted]]
    )
    scores = [c for c in one.columns if "_score_" in c]
    # Same seeds, the same network; only TensorFlow's thread count differs.
    np.testing.assert_allclose(one[scores], two[scores], atol=1e-5, rtol=0)


class _Lines:
    """A reporter that keeps every message."""

    def __init__(self):
        self.lines = []

    def message(self, text):
        self.lines.append(text)

    def __getattr__(self, name):
        return lambda *a, **k: None


def test_benchmark_on_a_local_dask_cluster_equals_the_serial_run(
    tmp_path, tiny_export, serial_repeats_run
):
    """--repeats 2 as (repeat, fold, model) tasks on a 2-worker local cluster:
    the same predictions and summary as the serial, in-process run (the
    session's ``serial_repeats_run``); the features and images are made once,
    each as a task of its own."""
    messages = _Lines()
    comparison.run_benchmark(
        "lamellarity",
        tiny_export,
        cnn_models=["lipnet-1"],
        k=ENGINE_FOLDS,
        repeats=2,
        out=tmp_path / "local",
        svm_options=ENGINE_SVM,
        cnn_options=ENGINE_CNN,
        n_resamples=100,
        scheduler="local",
        n_workers=2,
        reporter=messages,
    )
    done = [line for line in messages.lines if " done on worker " in line]
    assert "Local Dask cluster: 2 worker(s) x 1 core(s), no GPU." in messages.lines
    assert len(done) == 2 * ENGINE_FOLDS * 2
    assert not any(" done on worker " in line for line in serial_repeats_run["lines"])
    assert_same_benchmark(serial_repeats_run["out"], tmp_path / "local")


def test_serial_repeats_make_the_features_and_images_once(serial_repeats_run):
    """The serial --repeats 2 run (``serial_repeats_run``, with spies on
    ``features.extract_features`` and ``cnn.prepare_cnn_images``) made each
    once for both repeats (in either order: the SVM's features are made
    beside the CNN's images on 2+ cores)."""
    assert sorted(serial_repeats_run["calls"]) == ["features", "images"]
