"""Rich tables of fold summaries: values, undefined cells, layout."""

import math

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
)
from liposome_bench.metrics import MeanStd, summarise_folds
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
