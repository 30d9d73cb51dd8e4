"""The markdown report, its plots and the baseline regression gate, on a
results folder made of hand-built FoldResults (no training)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from liposome_bench import report
from liposome_bench.cli import cli
from liposome_bench.dataset import LAMELLARITY, Dataset, Particle
from liposome_bench.errors import ResultsError
from liposome_bench.folds import Folds, make_folds
from liposome_bench.results import FoldResult, ResultsDir

CLASSES = list(LAMELLARITY.classes)
K = 3


def _dataset(n_per_class=(18, 9, 6)):
    particles = []
    for c, n in enumerate(n_per_class):
        for i in range(n):
            image = np.full((12, 12), c * 60 + i, dtype=np.uint8)
            mask = np.zeros((12, 12), dtype=bool)
            mask[3:9, 3:9] = True
            particles.append(Particle(f"{c}{i:03d}", CLASSES[c], image, mask, 1.0))
    return Dataset(LAMELLARITY, particles, description="hand-made", synthetic=True)


def make_results(path, accuracy=None, seed=0):
    """A results folder with an SVM and a CNN on a hand-made dataset; the
    CNN is right more often than the SVM."""
    accuracy = accuracy or {"svm": 0.6, "lipnet-4": 0.85}
    dataset = _dataset()
    y = dataset.y
    fold_of = make_folds(y, CLASSES, K, seed=0)
    folds = Folds(K, 0, dataset.fingerprint(), fold_of)
    results = ResultsDir(path)
    rng = np.random.default_rng(seed)
    for model, acc in accuracy.items():
        results.prepare(dataset, folds, model, {"acc": acc})
        pred = np.where(rng.random(len(y)) < acc, y, (y + 1) % 3)
        for f in range(K):
            test = folds.test_indices(f)
            n = len(test)
            if model == "svm":
                scores, names, kind = rng.normal(size=(n, 3)), ["0v1", "0v2", "1v2"], "decision"
                params, history = {"C": 2.0, "gamma": 0.125}, None
            else:
                scores = rng.dirichlet(np.ones(3), size=n)
                names, kind = CLASSES, "probability"
                params = {"epochs": 3}
                history = {"loss": [1.0, 0.8, 0.7], "val_loss": [1.1, 0.9, 0.85]}
            results.save_fold(
                FoldResult(
                    model,
                    f,
                    [dataset.ids[i] for i in test],
                    y[test],
                    pred[test],
                    scores,
                    names,
                    kind,
                    params,
                    {"fit": 1.0},
                    history,
                ),
                CLASSES,
            )
    return results.path


@pytest.fixture
def results_folder(tmp_path):
    return make_results(tmp_path / "results")


def test_summary_from_fold_files(results_folder):
    summary = report.load_summary(results_folder)
    assert list(summary["models"]) == ["svm", "lipnet-4"]
    assert summary["dataset"]["synthetic"] is True
    (comp,) = summary["comparisons"]
    assert (comp["model_a"], comp["model_b"]) == ("svm", "lipnet-4")
    assert comp["n_particles"] == 33
    assert summary["models"]["svm"]["params"][0] == {"C": 2.0, "gamma": 0.125}


def test_report_has_every_section_and_plots(results_folder, tmp_path):
    out = report.render_report(results_folder, tmp_path / "out" / "report.md")
    text = out.read_text()
    for heading in [
        "# liposome-bench report: lamellarity",
        "## Verdict",
        "## Dataset",
        "## Protocol",
        "## Per-class metrics, side by side",
        "### uncertain",
        "### Overall",
        "## Paired comparison",
        "## Confusion matrices",
        "## CNN training curves",
        "## Reproducibility",
    ]:
        assert heading in text, heading
    assert "**Synthetic data.**" in text
    assert "| svm | lipnet-4 |" in text
    # Class counts and shares from the particles the models saw (18, 9, 6).
    assert "| unilamellar | 18 | 54.5 % |" in text
    figures = tmp_path / "out" / "report-figures"
    for name in ["metrics.png", "confusion.png", "training.png"]:
        png = figures / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"](report-figures/{name})" in text
    assert not list((tmp_path / "out").glob(".*tmp*")), "temporary files left behind"


def test_report_marks_only_significant_differences(results_folder):
    summary = report.load_summary(results_folder)
    comp = summary["verdict"]["comparisons"][0]
    for e in comp["per_class"].values():
        e["significant"] = False
    comp["macro_f1"]["significant"] = False
    text = report.format_report(summary)
    table_rows = [
        line
        for line in text.splitlines()
        if line.startswith("| F1 |") or line.startswith("| TPR |")
    ]
    assert table_rows and not any("**" in line for line in table_rows)
    # A significant uncertain-class F1 difference marks the CNN's F1 cell only.
    comp["per_class"]["uncertain"]["significant"] = True
    text = report.format_report(summary)
    section = text[text.index("### uncertain") : text.index("### Overall")]
    (f1_row,) = [line for line in section.splitlines() if line.startswith("| F1 |")]
    svm_cell, cnn_cell = f1_row.split("|")[2:4]
    assert cnn_cell.strip().startswith("**") and "** *" in cnn_cell
    assert "**" not in svm_cell
    assert not any(line.startswith("| TPR |") and "**" in line for line in section.splitlines())


def test_report_verdict_names_the_test_and_the_fold_scores(results_folder):
    summary = report.load_summary(results_folder)
    text = report.format_report(summary)
    verdict = text[text.index("## Verdict") : text.index("## Dataset")]
    assert "corrected resampled t-test (Nadeau & Bengio 2003) on 3 paired fold scores" in verdict
    assert "One repeat: the t-test's training variance comes from the 3 folds only" in verdict
    assert "| F1 uncertain |" in verdict and "| **macro F1** |" in verdict
    assert "| accuracy (secondary) |" in verdict and "| McNemar (secondary) |" in verdict
    test = summary["comparisons"][0]["mcnemar"]
    assert (
        f"McNemar row: {test['only_b']} particles only lipnet-4 got right, "
        f"{test['only_a']} only svm got right"
    ) in verdict


def test_report_title_of_a_custom_problem_names_the_dataset(results_folder):
    summary = report.load_summary(results_folder)
    summary["dataset"].update(
        problem="custom", source="/data/lab-2024/crops", classes=["small", "large"]
    )
    assert report.format_report(summary).startswith(
        "# liposome-bench report: crops, custom problem (small, large)\n"
    )


def test_report_pixel_size_and_fold_numbers(results_folder):
    summary = report.load_summary(results_folder)
    summary["dataset"]["pixel_size_nm"] = {"min": 1.2, "median": 1.6, "max": 2.0, "unknown": 0}
    text = report.format_report(summary)
    assert "Pixel size: median 1.6 nm/px (range 1.2-2 nm/px)." in text
    # Fold numbers start at 0, as in the fold files (fold-0.json).
    chosen = text[text.index("Chosen per fold, svm:") :]
    assert "\n| 0 | 2 | 0.125 |" in chosen


def test_report_without_cnn_history_has_no_curves(tmp_path):
    folder = make_results(tmp_path / "r", accuracy={"svm": 0.7})
    out = report.render_report(folder)
    assert out == folder / "report.md"
    text = out.read_text()
    assert "## CNN training curves" not in text
    assert "Only one model was run" in text


def test_report_refuses_a_folder_that_is_not_results(tmp_path):
    with pytest.raises(ResultsError, match="is not a results folder"):
        report.render_report(tmp_path)
    with pytest.raises(ResultsError, match="is not a folder"):
        report.render_report(tmp_path / "missing")


def test_gate_passes_against_its_own_baseline(results_folder, tmp_path):
    baseline = report.write_baseline(results_folder, tmp_path / "baseline.json")
    data = json.loads(baseline.read_text())
    assert data["kind"] == report.BASELINE_KIND
    assert set(data["models"]) == {"svm", "lipnet-4"}
    changes = report.compare_to_baseline(results_folder, baseline)
    assert len(changes) == 2 * (3 * 6 + 4)
    assert report.check_baseline(results_folder, baseline) == []


def _edit_baseline(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_gate_fails_when_a_baseline_value_is_raised(results_folder, tmp_path):
    baseline = report.write_baseline(results_folder, tmp_path / "baseline.json")
    measured = json.loads(baseline.read_text())["models"]["svm"]["per_class"]["uncertain"]["f1"]

    def raise_f1(data, by):
        data["models"]["svm"]["per_class"]["uncertain"]["f1"] = measured + by

    # Raised by less than the tolerance: still passes.
    _edit_baseline(baseline, lambda d: raise_f1(d, 0.015))
    assert report.check_baseline(results_folder, baseline, tolerance=0.02) == []
    # Raised by more: exactly that metric regresses.
    _edit_baseline(baseline, lambda d: raise_f1(d, 0.05))
    (reg,) = report.check_baseline(results_folder, baseline, tolerance=0.02)
    assert reg.key == "svm/uncertain/f1"
    assert reg.delta == pytest.approx(-0.05)
    assert "svm/uncertain/f1 fell from" in reg.describe()
    # A wider override for that metric lets it pass again.
    _edit_baseline(baseline, lambda d: d.update(overrides={"svm/*/f1": 0.1}))
    assert report.check_baseline(results_folder, baseline, tolerance=0.02) == []


def test_lowering_baseline_values_never_fails(results_folder, tmp_path):
    baseline = report.write_baseline(results_folder, tmp_path / "baseline.json")

    def lower_all(data):
        for m in data["models"].values():
            for metrics in list(m["per_class"].values()) + [m["overall"]]:
                for k, v in metrics.items():
                    if v is not None:
                        metrics[k] = v - 0.3

    _edit_baseline(baseline, lower_all)
    changes = report.compare_to_baseline(results_folder, baseline, tolerance=0.0)
    assert not any(c.regressed for c in changes)
    assert all(c.delta == pytest.approx(0.3) for c in changes if c.delta is not None)


def test_missing_model_is_a_regression(results_folder, tmp_path):
    baseline = report.write_baseline(results_folder, tmp_path / "baseline.json")
    _edit_baseline(baseline, lambda d: d["models"].update({"lipnet-2": d["models"]["lipnet-4"]}))
    regressions = report.check_baseline(results_folder, baseline)
    assert regressions and {r.model for r in regressions} == {"lipnet-2"}
    assert "missing" in regressions[0].describe()


@pytest.mark.parametrize(
    "key, overrides, expected",
    [
        ("svm/uncertain/f1", {}, 0.02),
        ("svm/uncertain/f1", {"*/*/f1": 0.1}, 0.1),
        ("svm/uncertain/f1", {"*/*/f1": 0.1, "svm/uncertain/f1": 0.05}, 0.05),
        ("svm/uncertain/f1", {"svm/*/*": 0.3, "*/uncertain/*": 0.2}, 0.3),
        ("lipnet-4/overall/mcc", {"svm/*/*": 0.3}, 0.02),
    ],
)
def test_tolerance_for(key, overrides, expected):
    assert report.tolerance_for(key, overrides, 0.02) == expected


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not valid JSON"),
        ('{"kind": "something else"}', "is not a liposome-bench baseline"),
        (
            '{"kind": "liposome-bench baseline", "schema_version": 9, "models": {}}',
            "has baseline schema version 9; expected 1",
        ),
        (
            '{"kind": "liposome-bench baseline", "schema_version": 1, "models": {},'
            ' "overrides": {"svm/*/*": -1}}',
            "must map model/class/metric patterns",
        ),
    ],
)
def test_bad_baseline_files_are_refused(results_folder, tmp_path, content, message):
    path = tmp_path / "baseline.json"
    path.write_text(content)
    with pytest.raises(ResultsError, match=message):
        report.check_baseline(results_folder, path)


def test_missing_baseline_file_is_refused(results_folder, tmp_path):
    with pytest.raises(ResultsError, match="does not exist"):
        report.check_baseline(results_folder, tmp_path / "nope.json")


def test_budget_notes_flag_under_trained_folds_and_grid_edges(results_folder):
    from liposome_bench.comparison import budget_notes

    summary = report.load_summary(results_folder)
    summary["settings"]["models"]["lipnet-4"]["early_stopping"] = "macro_f1"
    summary["models"]["lipnet-4"]["params"] = [
        {
            "epochs": 7,
            "epochs_run": 12,
            "max_epochs": 30,
            "stopped_early": True,
            "under_trained": False,
        },
        {
            "epochs": 30,
            "epochs_run": 30,
            "max_epochs": 30,
            "stopped_early": False,
            "under_trained": True,
        },
        {
            "epochs": 9,
            "epochs_run": 14,
            "max_epochs": 30,
            "stopped_early": True,
            "under_trained": False,
        },
    ]
    summary["models"]["svm"]["params"] = [
        {"C": 8.0, "gamma": 2.0**-15, "grid_extended": ["gamma down to 2^-15"], "grid_edge": []},
        {"C": 8.0, "gamma": 2.0**-7, "grid_extended": [], "grid_edge": []},
        {
            "C": 2.0**19,
            "gamma": 2.0**-7,
            "grid_extended": ["C up to 2^15", "C up to 2^19"],
            "grid_edge": ["C"],
        },
    ]
    notes = budget_notes(summary)
    assert (
        "lipnet-4: early stopping ended 2 of 3 folds before the maximum of 30 epochs "
        "(best epochs 7, 30, 9)."
    ) in notes
    assert any(
        n.startswith(
            "lipnet-4: fold(s) 1 had their best validation macro F1 at the "
            "last allowed epoch: possibly under-trained."
        )
        for n in notes
    )
    assert any(
        "fold(s) 0, 2; the grid was extended there (fold 0: gamma down to 2^-15; "
        "fold 2: C up to 2^15, C up to 2^19)" in n
        for n in notes
    )
    assert any(n.startswith("svm: in fold(s) 2 the best point is still on the edge") for n in notes)
    text = report.format_report(summary)
    assert "possibly under-trained" in text and "| under_trained |" in text


def test_budget_notes_name_a_fixed_budget(results_folder):
    from liposome_bench.comparison import budget_notes

    summary = report.load_summary(results_folder)
    summary["settings"]["models"]["lipnet-4"]["early_stopping"] = "none"
    summary["models"]["lipnet-4"]["params"] = [
        {"epochs": 30, "epochs_run": 30, "max_epochs": 30, "under_trained": False}
    ] * 3
    notes = budget_notes(summary)
    assert (
        "lipnet-4: a fixed budget of 30 epochs per fold, the last epoch's weights kept "
        "(no early stopping)."
    ) in notes
    assert not any("early stopping ended" in n or "under-trained" in n for n in notes)


# The gate checks its inputs (issue 26) ------------------------------------------------------


def _write_summary(results_folder):
    """summary.json as the benchmark writes it: the folder's summary and its fold hashes."""
    from liposome_bench.results import SUMMARY_SCHEMA_VERSION, fold_file_hashes

    summary = report.load_summary(results_folder)
    summary["schema_version"] = SUMMARY_SCHEMA_VERSION
    summary["fold_files"] = fold_file_hashes(results_folder)
    path = results_folder / "summary.json"
    path.write_text(json.dumps(summary))
    return path


def test_an_intact_summary_passes_its_own_gate(results_folder, tmp_path):
    _write_summary(results_folder)
    baseline = report.write_baseline(results_folder, tmp_path / "baseline.json")
    assert report.check_baseline(results_folder, baseline) == []


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda m: m["per_class"]["uncertain"]["f1"].update(mean=0.99), "svm/uncertain/f1"),
        (
            lambda m: m["overall"]["macro_f1"].update(mean=m["overall"]["macro_f1"]["mean"] + 1e-6),
            "svm/overall/macro_f1",
        ),
        (lambda m: m["overall"]["accuracy"].update(mean="0.9"), "svm/overall/accuracy"),
    ],
)
def test_a_summary_edited_by_hand_is_refused_by_report_and_the_gate(
    results_folder, tmp_path, edit, key
):
    baseline = report.write_baseline(results_folder, tmp_path / "baseline.json")
    path = _write_summary(results_folder)
    summary = json.loads(path.read_text())
    edit(summary["models"]["svm"])
    path.write_text(json.dumps(summary))
    with pytest.raises(ResultsError, match=f"summary.json: {key} is .* but its fold files give"):
        report.check_baseline(results_folder, baseline)
    result = CliRunner().invoke(
        cli,
        [
            "report",
            str(results_folder),
            "--baseline",
            str(baseline),
            "--out",
            str(tmp_path / "r.md"),
        ],
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith(f"Error: {path}: {key} is ")


def test_write_baseline_refuses_a_folder_missing_a_models_folds(results_folder, tmp_path):
    for suffix in ("json", "csv"):
        (results_folder / "lipnet-4" / f"fold-2.{suffix}").unlink()
    out = tmp_path / "baseline.json"
    result = CliRunner().invoke(
        cli,
        [
            "report",
            str(results_folder),
            "--write-baseline",
            str(out),
            "--out",
            str(tmp_path / "r.md"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "is incomplete: lipnet-4 (2 of 3 folds finished)" in result.output
    assert not out.exists()


def test_write_baseline_refuses_a_garbage_run_json(results_folder, tmp_path):
    _write_summary(results_folder)
    (results_folder / "run.json").write_text("{garbage")
    with pytest.raises(ResultsError, match="run.json"):
        report.write_baseline(results_folder, tmp_path / "baseline.json")
    assert not (tmp_path / "baseline.json").exists()


def test_protocol_line_names_input_scale_schedule_and_weight_averaging():
    from liposome_bench.report import _describe_settings

    recorded = {
        "kind": "cnn",
        "input_mode": "masked",
        "input_size": 28,
        "input_scale": None,
        "augment": ["flip"],
        "balance": "oversample",
        "validation_fraction": 0.1,
        "early_stopping": "macro_f1",
        "patience": 5,
        "epochs": 30,
        "optimizer": "adam",
        "batch_size": 128,
        "learning_rate": 0.002,
        "warmup_epochs": 1.0,
        "lr_schedule": "cosine",
        "weight_averaging": 0.99,
        "label_smoothing": 0.1,
    }
    plain = _describe_settings(recorded, "lipnet-4")
    assert "each particle resized to the input" in plain
    assert "learning rate 0.002 (cosine after a 1-epoch warm-up)" in plain
    assert "moving average of the weights (momentum 0.99)" in plain
    # Unset: the model's default, which keeps size for the fully convolutional net.
    assert "particle size kept" in _describe_settings(recorded, "lipnet-fcn")
    kept = _describe_settings(
        {**recorded, "input_scale": "keep", "weight_averaging": 0}, "lipnet-4"
    )
    assert "particle size kept" in kept and "moving average" not in kept
    older = {k: v for k, v in recorded.items() if k not in ("learning_rate", "lr_schedule")}
    assert "learning rate" not in _describe_settings(older, "lipnet-4")
