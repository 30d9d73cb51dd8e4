"""Rich tables of fold summaries: values, undefined cells, layout."""

import io
import math
import re
from dataclasses import asdict

import numpy as np
import pytest
from rich.console import Console

from liposome_bench.display import (
    class_metric_table,
    confusion_table,
    fold_table,
    format_mean_std,
    format_param,
    format_value,
    print_model_summary,
    raw_confusion_table,
    verdict_table,
)
from liposome_bench.metrics import MeanStd, summarise_folds
from liposome_bench import report, stats
from liposome_bench.results import FoldResult

CLASSES = ["unilamellar", "multilamellar", "uncertain"]


def _fold(fold, y_true, y_pred, **params):
    n = len(y_true)
    return FoldResult(
        "svm",
        fold,
        [str(i) for i in range(n)],
        np.asarray(y_true),
        np.asarray(y_pred),
        np.zeros((n, 0)),
        [],
        "decision",
        params=params,
        timings={"fit_s": 1.25},
    )


def _render(renderable, width=80):
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize(
    "value, expected",
    [(0.123, "0.12"), (1.0, "1.00"), (math.nan, "—"), (None, "—")],
)
def test_format_value(value, expected):
    assert format_value(value) == expected


@pytest.mark.parametrize(
    "ms, n_folds, expected",
    [
        (MeanStd(0.5, 0.1, 5), 5, "0.50 ± 0.10"),
        (MeanStd(0.5, math.nan, 1), 1, "0.50"),
        (MeanStd(0.5, 0.1, 3), 5, "0.50 ± 0.10†"),
        (MeanStd(math.nan, math.nan, 0), 5, "—"),
    ],
)
def test_format_mean_std(ms, n_folds, expected):
    assert format_mean_std(ms, n_folds) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        (128.0, "2^7"),
        (2**-11, "2^-11"),
        (3.0, "3"),
        (0.8679, "0.8679"),
        (None, "—"),
        ("coarse", "coarse"),
        (8, "8"),
        (2, "2"),
    ],
)
def test_format_param_shows_powers_of_two(value, expected):
    assert format_param(value) == expected


def test_class_metric_table_shows_fold_means_and_fits_80_columns():
    folds = [_fold(0, [0, 0, 1, 2], [0, 1, 1, 2]), _fold(1, [0, 0, 1, 2], [0, 0, 1, 0])]
    summary = summarise_folds(folds, CLASSES)
    text = _render(class_metric_table(summary))
    assert max(len(line) for line in text.splitlines()) <= 80
    tpr_row = next(line for line in text.splitlines() if line.startswith("│ TPR"))
    # unilamellar TPR: 0.5 and 1.0 -> mean 0.75, sample std 0.35
    assert "0.75 ± 0.35" in tpr_row
    # uncertain is never predicted in fold 1: PPV defined in one fold only.
    ppv_row = next(line for line in text.splitlines() if line.startswith("│ PPV"))
    assert ppv_row.rstrip("│ ").endswith("1.00†")
    assert "F1 (thesis)" in text and "2/(1/TPR + 1/TNR)" in text


def test_confusion_table_rows_are_true_classes():
    matrix = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [np.nan, np.nan, np.nan]])
    text = _render(confusion_table(matrix, CLASSES))
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if "│" in line}
    assert rows["multilamellar"].split("│")[2].strip() == "0.20"
    assert rows["uncertain"].count("—") == 3


def test_raw_confusion_table_is_the_average_per_fold():
    folds = [_fold(0, [0, 0, 1, 2], [0, 0, 1, 2]), _fold(1, [0, 1, 2], [0, 1, 2])]
    text = _render(raw_confusion_table(summarise_folds(folds, CLASSES)))
    first = next(line for line in text.splitlines() if line.startswith("│ unilamellar"))
    assert first.split("│")[2].strip() == "1.5"


def test_print_model_summary_and_fold_table():
    folds = [
        _fold(0, [0, 1, 2], [0, 1, 2], C=128.0, gamma=2**-11, grid_score=0.87),
        _fold(1, [0, 1, 2], [0, 1, 1], C=8.0, gamma=2**-7, grid_score=None),
    ]
    console = Console(width=100, record=True, color_system=None)
    print_model_summary(console, "SVM", summarise_folds(folds, CLASSES))
    console.print(fold_table(folds, ("C", "gamma", "grid_score"), ("fit_s",)))
    text = console.export_text()
    for part in (
        "per-class metrics",
        "overall",
        "normalised confusion matrix",
        "balanced accuracy",
        "2^7",
        "2^-11",
        "0.87",
        "1.2",
    ):
        assert part in text


def _verdict_summary(seed):
    """A headline verdict of "cnn" against "svm" over 2 repeats x 5 folds,
    with a McNemar line, from random predictions (``seed``)."""
    rng = np.random.default_rng(seed)
    runs = {"svm": [], "cnn": []}
    for _repeat in range(2):
        folds = {"svm": [], "cnn": []}
        for fold in range(5):
            y = np.repeat([0, 1, 2], [40, 30, 10])
            for name, errors in (("svm", (8, 20)), ("cnn", (2, 14))):
                pred = y.copy()
                bad = rng.choice(80, rng.integers(*errors), replace=False)
                pred[bad] = (y[bad] + 1) % 3
                folds[name].append(_fold(fold, y, pred))
        for name in runs:
            runs[name].append(folds[name])
    correct = {name: np.concatenate([r.y_true == r.y_pred for r in runs[name][0]]) for name in runs}
    mcnemar = {"cnn": asdict(stats.mcnemar_test(correct["svm"], correct["cnn"]))}
    verdict = stats.headline_verdict(runs, "svm", CLASSES, 400, k=5, mcnemar=mcnemar)
    return {"classes": CLASSES, "comparisons": verdict["comparisons"], "verdict": verdict}


def _display_rows(verdict, comparison) -> list[list[str]]:
    console = Console(record=True, width=400, file=io.StringIO())
    console.print(verdict_table(verdict, comparison, CLASSES))
    return [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in console.export_text().splitlines()
        if line.startswith("│")
    ]


def _report_rows(summary) -> list[list[str]]:
    text = "\n".join(report._verdict_section(summary))
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    # The report writes p-values as "p = 0.012" and the headline label bold.
    return [
        [re.sub(r"^\*\*(.*)\*\*$", r"\1", row[0])] + [re.sub(r"^p (= )?", "", c) for c in row[1:]]
        for row in rows
    ]


@pytest.mark.parametrize("seed", [0, 3])
def test_display_and_report_render_the_same_verdict_rows(seed):
    summary = _verdict_summary(seed)
    verdict = summary["verdict"]
    (comparison,) = verdict["comparisons"]
    rows = stats.verdict_rows(verdict, comparison, CLASSES)
    shown = _display_rows(verdict, comparison)
    assert shown == _report_rows(summary)
    assert [r[0] for r in shown] == [
        *(f"F1 {c}" for c in CLASSES),
        "macro F1",
        "accuracy (secondary)",
        "McNemar (secondary)",
    ]
    assert [[r[1], r[2], r[5]] for r in shown] == [
        [r.difference, r.interval, r.verdict] for r in rows
    ]
    assert [r[4] for r in shown][-2:] == [stats.NOT_ADJUSTED] * 2
    assert shown[-1][5] == stats.mcnemar_verdict(comparison["mcnemar"], "svm", "cnn")
    # Issue 25: a row Holm calls "no significant difference" has an interval
    # holding 0, and says what it could have detected.
    for r in rows[: len(CLASSES) + 1]:
        low, high = (float(v) for v in r.interval.strip("[]").split(", "))
        assert (low > 0 or high < 0) == r.significant == r.difference.endswith(" *")
        if not r.significant:
            assert r.detectable > 0 and "cannot tell differences smaller than" in r.verdict


def test_the_verdict_rows_seeds_hold_both_outcomes():
    """The seeds above give significant and non-significant rows."""
    outcomes = set()
    for seed in (0, 3):
        verdict = _verdict_summary(seed)["verdict"]
        rows = stats.verdict_rows(verdict, verdict["comparisons"][0], CLASSES)
        outcomes.update(r.significant for r in rows[: len(CLASSES) + 1])
    assert outcomes == {True, False}


@pytest.mark.parametrize(
    "early_stopping, under_trained, cell",
    [
        ("none", False, "last of 30"),
        ("macro_f1", True, "best 30 of 30 LAST"),
        ("loss", False, "best 12 of 17"),
    ],
)
def test_budget_table_names_a_fixed_budget(early_stopping, under_trained, cell):
    """Issue 25: with --early-stopping none every fold keeps its last epoch, so
    the cell says so instead of "best 30 of 30"."""
    from liposome_bench.display import budget_table

    epochs, run = (12, 17) if early_stopping == "loss" else (30, 30)
    params = {"epochs": epochs, "epochs_run": run, "under_trained": under_trained}
    summary = {
        "folds": {"k": 1},
        "settings": {"models": {"lipnet-4": {"early_stopping": early_stopping}}},
        "models": {"lipnet-4": {"params": [params]}},
    }
    console = Console(file=io.StringIO(), width=200)
    console.print(budget_table(summary))
    row = next(line for line in console.file.getvalue().splitlines() if "lipnet-4" in line)
    assert cell in row and ("best" in row) == (early_stopping != "none")
