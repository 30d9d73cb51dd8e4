"""Rich tables shared by the ``svm``, ``cnn`` and ``benchmark`` commands.

Every function returns a renderable (or prints to a console it is given);
nothing here computes metrics: it shows a :class:`metrics.FoldSummary`.
Undefined values (NaN, see ``liposome_bench.metrics``) are shown as "—".
"""

from __future__ import annotations

import math

import numpy as np
from rich.table import Table

from liposome_bench.metrics import (
    CLASS_METRIC_LABELS,
    CLASS_METRICS,
    OVERALL_METRIC_LABELS,
    OVERALL_METRICS,
    FoldSummary,
    MeanStd,
)

UNDEFINED = "—"
#: Marks a mean taken over fewer folds than were run (the value was 0/0 in
#: the others, e.g. PPV of a class a fold never predicted).
FEWER_FOLDS = "†"

METRIC_CAPTION = (
    "mean ± std over {n} fold{s}. F1 = 2·PPV·TPR/(PPV+TPR); "
    "F1 (thesis) = 2/(1/TPR + 1/TNR), thesis section 4.6. "
    f"{UNDEFINED} undefined (0/0); {FEWER_FOLDS} mean over the folds where it is defined."
)


def format_value(value, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals, or "—" if it is None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNDEFINED
    return f"{value:.{digits}f}"


def format_mean_std(ms: MeanStd, n_folds: int | None = None, digits: int = 2) -> str:
    """"mean ± std"; the mean alone for one fold; "—" if never defined; a
    trailing † when fewer than ``n_folds`` folds contributed."""
    if ms.n == 0:
        return UNDEFINED
    text = format_value(ms.mean, digits)
    if not math.isnan(ms.std):
        text += f" ± {format_value(ms.std, digits)}"
    if n_folds is not None and ms.n < n_folds:
        text += FEWER_FOLDS
    return text


def format_param(value) -> str:
    """A hyper-parameter for a table: integers (epochs) as they are, float
    powers of two as ``2^k`` (LIBSVM's C and gamma grid), other numbers with 4
    significant digits, None as "—"."""
    if value is None:
        return UNDEFINED
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return UNDEFINED
    if value > 0:
        exponent = math.log2(value)
        if abs(exponent - round(exponent)) < 1e-9 and abs(exponent) <= 64:
            return f"2^{int(round(exponent))}"
    return f"{value:.4g}"


def class_metric_table(summary: FoldSummary, title: str | None = None) -> Table:
    """Per-class TPR, TNR, PPV, NPV, F1 and F1 (thesis), mean ± std over folds.

    One column per class (so three classes fit an 80-column terminal), one
    row per metric, and a first row with each class's particle count over
    all test folds.
    """
    n_folds = len(summary.folds)
    table = Table(
        title=title,
        caption=METRIC_CAPTION.format(n=n_folds, s="" if n_folds == 1 else "s"),
        caption_justify="left",
    )
    table.add_column("metric", style="bold")
    for name in summary.classes:
        table.add_column(name, justify="right")
    table.add_row("n", *(str(s) for s in summary.support), end_section=True)
    for m in CLASS_METRICS:
        table.add_row(
            CLASS_METRIC_LABELS[m],
            *(format_mean_std(summary.per_class[name][m], n_folds) for name in summary.classes),
        )
    return table


def overall_metric_table(summary: FoldSummary, title: str | None = None) -> Table:
    """Accuracy, balanced accuracy, macro F1 and MCC: mean ± std over folds,
    and of all out-of-fold predictions pooled."""
    n_folds = len(summary.folds)
    table = Table(title=title)
    table.add_column("", style="bold")
    for m in OVERALL_METRICS:
        table.add_column(OVERALL_METRIC_LABELS[m], justify="right")
    table.add_row(
        "folds", *(format_mean_std(summary.overall[m], n_folds) for m in OVERALL_METRICS)
    )
    table.add_row(
        "pooled", *(format_value(getattr(summary.pooled, m)) for m in OVERALL_METRICS)
    )
    return table


def confusion_table(
    matrix, classes, title: str | None = None, *, digits: int = 2, caption: str | None = None
) -> Table:
    """A confusion matrix laid out as thesis Tables 7-10: rows are the true
    class, columns the predicted class; the diagonal is bold."""
    matrix = np.asarray(matrix, dtype=np.float64)
    table = Table(title=title, caption=caption, caption_justify="left")
    table.add_column("true \\ predicted", style="bold")
    for name in classes:
        table.add_column(str(name), justify="right")
    for i, name in enumerate(classes):
        cells = []
        for j in range(len(classes)):
            text = format_value(matrix[i, j], digits)
            cells.append(f"[bold]{text}[/bold]" if i == j else text)
        table.add_row(str(name), *cells)
    return table


def normalised_confusion_table(summary: FoldSummary, title: str | None = None) -> Table:
    """Row-normalised confusion matrix averaged over folds (Tables 7-8)."""
    n = len(summary.folds)
    return confusion_table(
        summary.confusion_normalised_mean,
        summary.classes,
        title or f"{n}-fold average normalised confusion matrix",
        caption="rows: true class (each sums to 1); columns: predicted class",
    )


def raw_confusion_table(summary: FoldSummary, title: str | None = None) -> Table:
    """Unnormalised confusion matrix averaged over folds (Tables 9-10)."""
    n = len(summary.folds)
    return confusion_table(
        summary.confusion_mean,
        summary.classes,
        title or f"{n}-fold average unnormalised confusion matrix",
        digits=1,
        caption="particles per test fold; rows: true, columns: predicted class",
    )


def fold_table(fold_results, params=(), timings=(), title: str | None = None) -> Table:
    """One row per fold with the chosen ``params`` and ``timings`` (seconds)
    of each :class:`results.FoldResult`."""
    table = Table(title=title)
    table.add_column("fold", justify="right")
    table.add_column("n test", justify="right")
    for p in params:
        table.add_column(p, justify="right")
    for t in timings:
        table.add_column(t, justify="right")
    for r in fold_results:
        table.add_row(
            str(r.fold + 1),
            str(len(r.ids)),
            *(format_param(r.params.get(p)) for p in params),
            *(
                format_value(r.timings.get(t), 1) if r.timings.get(t) is not None else UNDEFINED
                for t in timings
            ),
        )
    return table


def print_model_summary(console, name: str, summary: FoldSummary) -> None:
    """Print a model's per-class metric table, its overall metrics and its
    fold-averaged normalised confusion matrix to a rich ``console``."""
    console.rule(f"[bold]{name}")
    console.print(class_metric_table(summary, f"{name}: per-class metrics (one-vs-rest)"))
    console.print(overall_metric_table(summary, f"{name}: overall"))
    console.print(normalised_confusion_table(summary))
