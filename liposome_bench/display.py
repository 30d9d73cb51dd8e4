"""Rich tables shared by the ``svm``, ``cnn`` and ``benchmark`` commands.

Every function returns a renderable (or prints to a console it is given);
nothing here computes metrics: it shows a :class:`metrics.FoldSummary`.
Undefined values (NaN, see ``liposome_bench.metrics``) are shown as "—".
"""

from __future__ import annotations

import functools
import math

import numpy as np
from rich.table import Table

from liposome_bench import sweep as _sweep
from liposome_bench.comparison import budget_notes, recorded_settings
from liposome_bench.dataset import MIN_IMAGE_SIDE
from liposome_bench.metrics import (
    CLASS_METRIC_LABELS,
    CLASS_METRICS,
    OVERALL_METRIC_LABELS,
    OVERALL_METRICS,
    UNDEFINED,
    FoldSummary,
    MeanStd,
    summarise_folds,
)
from liposome_bench.results import FoldResult
from liposome_bench.settings import is_fixed_budget
from liposome_bench.stats import (
    NOT_ADJUSTED,
    significant_cells,
    suggestion_text,
    verdict_rows,
)

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
    """ "mean ± std"; the mean alone for one fold; "—" if never defined; a
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
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if not isinstance(value, (int, float, np.number)):
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
    table.add_row("folds", *(format_mean_std(summary.overall[m], n_folds) for m in OVERALL_METRICS))
    table.add_row("pooled", *(format_value(getattr(summary.pooled, m)) for m in OVERALL_METRICS))
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
            str(r.fold),
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


def _p(value) -> str:
    if value is None:
        return UNDEFINED
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def verdict_table(verdict: dict, comparison: dict, classes, prevalence=None) -> Table:
    """The headline verdict of one comparison (``stats.headline_verdict``):
    per class F1 and macro F1 differences (B − A, mean over the paired fold
    scores) with the corrected t-test's interval, p and Holm-adjusted p;
    accuracy, McNemar's test and (with ``prevalence``, the matching
    comparison of ``quantify.prevalence_error``) the error of the class
    fractions per group as secondary rows. The rows are
    ``stats.verdict_rows``, the ones the report's verdict section shows."""
    a, b = comparison["model_a"], comparison["model_b"]
    n = comparison["n_scores"]
    repeats, k = verdict.get("repeats", 1), verdict.get("k", "?")
    table = Table(
        title=f"verdict: {b} − {a}, {verdict['test']}, on {n} paired fold scores "
        f"({repeats} repeat{'s' if repeats != 1 else ''} x {k} folds)",
        caption=(
            f"Holm-adjusted across the per-class and macro F1 rows; * significant at "
            f"{verdict.get('alpha', 0.05)} after adjustment. {verdict.get('note', '')} "
            f"McNemar: particles only {b} got right vs only {a}, on the pooled "
            "predictions of one repeat (training variance ignored)."
        ),
    )
    for name, justify in (
        ("score", "left"),
        ("difference", "right"),
        ("interval (Holm-matched)", "right"),
        ("p", "right"),
        ("Holm p", "right"),
        ("verdict", "left"),
    ):
        table.add_column(name, justify=justify, style="bold" if name == "score" else None)
    for r in verdict_rows(verdict, comparison, classes, prevalence):
        table.add_row(
            r.label,
            r.difference,
            r.interval,
            _p(r.p),
            _p(r.p_holm) if r.adjusted else NOT_ADJUSTED,
            r.verdict,
        )
    return table


def prevalence_table(row: dict, classes):
    """The benchmark's prevalence-error row (``quantify.prevalence_error``):
    per model and class, the mean absolute error of the class's fraction over
    the test folds' groups; or a line saying why it was skipped."""
    if row.get("skipped"):
        return f"Prevalence error: skipped ({row['skipped']})."
    models = list(row["models"])
    first = row["models"][models[0]]
    table = Table(
        title=f"prevalence error (secondary): mean absolute error of each class's "
        f"fraction per {row.get('group_by', 'group')}, {row['method']}",
        caption=f"over the {first['n_groups']} test-fold groups (whole in grouped folds, so "
        "their true fractions are known); lower is closer. Paired test: the verdict "
        "tables' 'fraction MAE' row.",
    )
    table.add_column("class", style="bold")
    for name in models:
        table.add_column(name, justify="right")
    for cls in [*classes, "mean"]:
        values = [
            row["models"][m]["mean"] if cls == "mean" else row["models"][m]["per_class"][cls]
            for m in models
        ]
        table.add_row(cls, *("—" if v is None else f"{v:.3f}" for v in values))
    return table


# The benchmark's tables (liposome-bench benchmark) ------------------------------------------------------


def print_benchmark(summary: dict, console) -> None:
    """Print the side-by-side tables of a benchmark summary to a rich console:
    per class, every metric of every model in adjacent columns; overall
    metrics; each model's fold-averaged normalised confusion matrix; then the
    headline verdict of each CNN against the SVM (per-class and macro F1,
    corrected resampled t-test, Holm-adjusted; accuracy and McNemar as
    secondary lines). A * marks a CNN's F1 or macro F1 only where it differs
    from the SVM's significantly after the correction."""
    from rich.table import Table

    classes = summary["classes"]
    models = list(summary["models"])
    dataset = summary.get("dataset", {})
    k = (summary.get("folds") or {}).get("k", "?")
    verdict = summary.get("verdict") or {}
    significant = significant_cells(verdict)
    if dataset.get("synthetic"):
        console.print("[yellow]Synthetic data: these are not the thesis's results.[/yellow]")
    console.print(
        f"Per class and model: mean ± std over {k} folds [95 % bootstrap interval over "
        "particles]; * marks a CNN whose F1 (macro F1) differs from the SVM's significantly "
        f"({verdict.get('test', 'corrected resampled t-test')}, Holm-adjusted, on "
        f"{verdict.get('n_scores', '?')} paired fold scores); † a mean over fewer folds "
        "(undefined, 0/0, in the others); — undefined. F1 (thesis) = 2/(1/TPR + 1/TNR), "
        "section 4.6."
    )
    for j, cls in enumerate(classes):
        support = summary["models"][models[0]].get("support") or [None] * len(classes)
        table = Table(title=f"{cls} ({support[j]} particles)")
        table.add_column("metric", style="bold")
        for name in models:
            table.add_column(name, justify="right")
        for metric in CLASS_METRICS:
            entries = [summary["models"][m]["per_class"][cls][metric] for m in models]
            marks = [(m, cls, metric) in significant for m in models]
            table.add_row(CLASS_METRIC_LABELS[metric], *_rich_cells(entries, k, marks))
        console.print(table)
    table = Table(title="overall")
    table.add_column("metric", style="bold")
    for name in models:
        table.add_column(name, justify="right")
    for metric in OVERALL_METRICS:
        entries = [summary["models"][m]["overall"][metric] for m in models]
        marks = [(m, "overall", metric) in significant for m in models]
        table.add_row(OVERALL_METRIC_LABELS[metric], *_rich_cells(entries, k, marks))
    console.print(table)
    for name in models:
        console.print(
            confusion_table(
                summary["models"][name]["confusion"]["normalised_mean"] or [],
                classes,
                f"{name}: {k}-fold average normalised confusion matrix",
                caption="rows: true class (each row sums to 1); columns: predicted class",
            )
        )

    console.print(budget_table(summary))
    for note in budget_notes(summary):
        console.print(note, markup=False, soft_wrap=True)
    prevalence = summary.get("prevalence_error")
    if prevalence:
        console.print(prevalence_table(prevalence, classes))
    by_model = {c["model_b"]: c for c in (prevalence or {}).get("comparisons", [])}
    for comp in verdict.get("comparisons", []):
        console.print(verdict_table(verdict, comp, classes, by_model.get(comp["model_b"])))
        advice = suggestion_text(comp.get("repeats_suggestion"))
        if advice:
            console.print(f"Power: {advice}", soft_wrap=True)
    repeats = summary.get("repeats")
    if repeats:
        console.print(
            f"{repeats['count']} repeats (fold seeds {repeats['fold_seeds']}); the "
            "verdict uses the fold scores of all of them; run-to-run spread in "
            "summary.json and the report."
        )
    warning = (summary.get("folds") or {}).get("warning")
    if warning:
        console.print(f"Warning: {warning}", markup=False)
    duplicates = (summary.get("folds") or {}).get("near_duplicates") or {}
    if duplicates.get("warning"):
        console.print(f"Warning: {duplicates['warning']}", markup=False)


def _fold_budget(params: dict, fixed: bool = False) -> str:
    """One fold's training budget in words: a CNN's best epoch of those run
    (``fixed``: a fixed budget, the last epoch kept), an SVM's C and gamma with
    any grid extension."""
    if "epochs_run" in params:
        if fixed:
            return f"last of {params.get('epochs_run')}"
        text = f"best {params.get('epochs')} of {params.get('epochs_run')}"
        return text + (" LAST" if params.get("under_trained") else "")
    if "C" in params:
        text = f"{format_param(params.get('C'))}, {format_param(params.get('gamma'))}"
        if params.get("grid_extended"):
            text += " ext"
        if params.get("grid_edge"):
            text += " EDGE"
        return text
    return ""


def budget_table(summary: dict):
    """A rich table: per model and fold (numbered from 0, as in the fold
    files), the CNN's best epoch of those run and the SVM's chosen C/gamma,
    flagging possibly under-trained CNN folds and SVM grid edges."""
    from rich.table import Table

    k = (summary.get("folds") or {}).get("k", 0)
    title = "training budgets per fold"
    if summary.get("repeats"):
        title += " (first repeat)"
    table = Table(
        title=title,
        caption="CNN: the epoch kept of the epochs run (best: the best validation score "
        "with early stopping; last: a fixed budget, --early-stopping none); LAST: the "
        "best epoch was the last allowed, possibly under-trained. SVM: chosen C, gamma; ext: grid extended past an edge; "
        "EDGE: still on the edge at the extension limit.",
    )
    table.add_column("model", style="bold")
    for f in range(k):
        table.add_column(f"fold {f}")
    for name, m in summary["models"].items():
        fixed = is_fixed_budget(recorded_settings(summary, name))
        table.add_row(name, *(_fold_budget(p, fixed) for p in (m.get("params") or [])))
    return table


def _fmt(value, digits=3, signed=False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _rich_cells(entries, k, marks=None) -> list[str]:
    """Cells of one metric row; ``marks[i]`` puts a * on model i's cell (a
    significant difference from the reference, see stats.significant_cells)."""
    marks = marks or [False] * len(entries)
    cells = []
    for e, marked in zip(entries, marks):
        mean = e.get("mean")
        text = _fmt(mean, 2)
        if e.get("std") is not None:
            text += f" ± {_fmt(e['std'], 2)}"
        if mean is not None and isinstance(k, int) and e.get("n_folds", k) < k:
            text += "†"
        ci = e.get("ci") or [None, None]
        if ci[0] is not None:
            text += f" [{_fmt(ci[0], 2)}, {_fmt(ci[1], 2)}]"
        cells.append(f"[bold green]{text} *[/bold green]" if marked else text)
    return cells


# Commands' other tables (dataset, import, sweep, deploy) ------------------------


def print_dataset_info(info):
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    say = functools.partial(console.print, soft_wrap=True)
    n = info["n_particles"]
    say(f"[bold]{escape(info['root'] or '(in memory)')}[/bold]: {escape(info['description'])}")
    say(f"Problem {info['problem']}, {n} particles, fingerprint {info['fingerprint']}")
    classes = Table(title="Classes")
    classes.add_column("Class")
    classes.add_column("Particles", justify="right")
    classes.add_column("Share", justify="right")
    # Largest class first, as in the thesis's Tables 1 and 2.
    for row in sorted(info["class_counts"], key=lambda r: -r["count"]):
        classes.add_row(row["class"], str(row["count"]), f"{row['percent']:.2f}%")
    classes.add_row("Total", str(n), "100.00%" if n else "-", style="bold")
    console.print(classes)
    sizes = Table(title="Image size (px): min / median / max")
    sizes.add_column("Class")
    sizes.add_column("Width", justify="right")
    sizes.add_column("Height", justify="right")

    def span(stats):
        return f"{stats['min']} / {stats['median']:g} / {stats['max']}"

    per_class = [(c, s) for c, s in info["image_size"]["per_class"].items()]
    for name, stats in per_class + [("All", info["image_size"]["all"])]:
        if stats is None:
            sizes.add_row(name, "-", "-")
        else:
            sizes.add_row(
                name,
                span(stats["width"]),
                span(stats["height"]),
                style="bold" if name == "All" else None,
            )
    console.print(sizes)
    print_particle_sizes(console, info)
    px = info["pixel_size_nm"]
    if px["min"] is None:
        say("Pixel size: unknown (pass --pixel-size)")
    elif px["min"] == px["max"]:
        say(
            f"Pixel size: {px['min']:g} nm/px"
            + (f"; unknown for {px['unknown']}" if px["unknown"] else "")
        )
    else:
        say(
            f"Pixel size: {px['min']:g}-{px['max']:g} nm/px, median {px['median']:g}"
            + (f"; unknown for {px['unknown']}" if px["unknown"] else "")
        )
    derived = info["masks_derived"]
    say(f"Masks: {n - derived} from files, {derived} derived from the image")
    if info["folds"]:
        for f in info["folds"]:
            state = (
                "unreadable"
                if f.get("unreadable")
                else "matches this dataset"
                if f["matches"]
                else "made for another dataset"
            )
            grouped = f", grouped by {f['group_by']}" if f.get("group_by") else ""
            say(
                f"Folds: {f['file']} (k={f['k']}, seed {f['seed']}{grouped}): {state}", markup=False
            )
    else:
        say("Folds: none stored yet (made and stored on first use)")
    for key, g in (info.get("groups") or {}).items():
        per_class = ", ".join(f"{c} {n}" for c, n in g["per_class"].items())
        size = g["particles_per_group"]
        say(
            f"Groups by {key}: {g['n_groups']} in all; holding each class: {per_class}; "
            f"{size['min']}-{size['max']} particles per {key} (median {size['median']:g}). "
            f"Group folds by it with --group-by {key}.",
            markup=False,
        )
    for warning in info["warnings"]:
        say(f"Warning: {warning}", markup=False)


def print_particle_sizes(console, info):
    """Particle sizes and surround per class (dataset info)."""
    from rich.table import Table

    size, surround = info.get("particle_size"), info.get("surround_px")
    if not size or not surround:
        return
    table = Table(
        title=f"Particle size (equivalent diameter, {size['unit']}) and surround "
        "(px): min / median / max"
    )
    table.add_column("Class")
    table.add_column(f"Diameter ({size['unit']})", justify="right")
    table.add_column("Surround (px)", justify="right")

    def span(stats):
        return (
            "-"
            if stats is None
            else (f"{stats['min']:.3g} / {stats['median']:.3g} / {stats['max']:.3g}")
        )

    for name in size["per_class"]:
        table.add_row(name, span(size["per_class"][name]), span(surround["per_class"][name]))
    table.add_row("All", span(size["all"]), span(surround["all"]), style="bold")
    console.print(table)


def print_import(result):
    from rich.console import Console
    from rich.table import Table

    console = Console()
    dataset = result.dataset
    console.print(
        f"Wrote {len(dataset)} particles ({dataset.problem.name}) from "
        f"{len(result.micrographs)} micrographs to {result.out}",
        soft_wrap=True,
    )
    classes = Table()
    classes.add_column("Class")
    classes.add_column("Particles", justify="right")
    for name, count in dataset.class_counts().items():
        classes.add_row(name, str(count))
    console.print(classes)
    mics = Table(title="Per micrograph")
    for column in ("Micrograph", "Size (px)", "nm/px (from)", "Particles", "Edge-cut", "Dropped"):
        mics.add_column(column, justify="left" if column == "Micrograph" else "right")
    short = {"TIFF metadata": "TIFF", "MRC header": "MRC"}
    for m in result.micrographs:
        px = (
            f"{m.pixel_size_nm:g} ({short.get(m.pixel_size_from, m.pixel_size_from)})"
            if m.pixel_size_from != "unknown"
            else "unknown"
        )
        mics.add_row(
            m.micrograph,
            f"{m.width}x{m.height}",
            px,
            str(m.particles),
            str(m.edge_cut),
            str(m.dropped),
        )
    console.print(mics)
    if result.dropped:
        console.print(
            f"Dropped {result.dropped} particle(s) cut by the micrograph's edge (--drop-edge).",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    elif result.edge_cut:
        console.print(
            f"Kept {result.edge_cut} particle(s) cut by the micrograph's edge, flagged "
            "EdgeCut in particles.json (--drop-edge drops them).",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if result.widened:
        console.print(
            f"Widened {result.widened} crop(s) to the {MIN_IMAGE_SIDE} px a side the "
            "readers need (small particles at the micrograph's edge).",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if result.too_small:
        console.print(
            f"Dropped {result.too_small} particle(s) on micrographs under "
            f"{MIN_IMAGE_SIDE} px a side: no crop there reaches the {MIN_IMAGE_SIDE} "
            "px the readers need.",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if result.skipped_crowd:
        console.print(
            f"Skipped {result.skipped_crowd} iscrowd annotation(s): they mark groups, "
            "not particles.",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    for line in result.warnings:
        console.print(f"Warning: {line}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"Next: liposome-bench dataset check {result.out}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def print_sweep_plan(console, config, plan, n_particles):
    from rich.table import Table

    axes = list(config.axes)
    table = Table(
        title=f"{len(config.cells)} cells x {plan.k} folds = {plan.total} tasks "
        f"({len(plan.tasks)} to run)"
    )
    table.add_column("cell", style="bold")
    table.add_column("grid(s)")
    for axis in axes:
        table.add_column(axis)
    table.add_column("done", justify="right")
    for cell in config.cells:
        values = cell.settings.to_dict()
        grids = [g.name for g in config.grids if cell.id in g.cells]
        table.add_row(
            cell.id,
            ", ".join(grids),
            *[_sweep.level_text(values[a]) if a in values else "" for a in axes],
            f"{len(plan.done.get(cell.id, ()))}/{plan.k}",
        )
    console.print(table)
    seconds, how = _sweep.estimate_seconds(plan, n_particles)
    shape = _sweep.local_cluster_shape()
    console.print(
        f"Estimated {_sweep.format_duration(seconds)} of CPU time for {len(plan.tasks)} "
        f"task(s) on {n_particles} particles ({how}); about "
        f"{_sweep.format_duration(seconds / shape['cores'])} on this machine's "
        f"{shape['cores']} core(s) if they are used fully. Nothing was run.",
        soft_wrap=True,
    )


def print_sweep_summary(console, summary, metrics):
    from rich.table import Table

    if summary.get("synthetic"):
        console.print("[yellow]Synthetic data: these are not the thesis's results.[/yellow]")
    for metric in metrics:
        wide = _sweep.pivot_table(summary, metric)
        if wide.empty:
            continue
        table = Table(title=f"{metric}: mean ± std over folds")
        for column in wide.columns:
            table.add_column(str(column))
        for row in wide.itertuples(index=False):
            table.add_row(*[str(v) for v in row])
        console.print(table)
    if summary["comparisons"]:
        table = Table(
            title="paired comparisons on shared folds: F1 difference (b − a), "
            "corrected resampled t-test, Holm-adjusted p"
        )
        for name in ("axis", "where", "a", "b", "class", "difference", "p (Holm)", "verdict"):
            table.add_column(name)
        for c in summary["comparisons"]:
            p = c["p_holm"]
            table.add_row(
                c["axis"],
                c["where"],
                c["a"],
                c["b"],
                c["class"],
                f"{c['mean_difference']:+.3f}",
                "—" if p != p else f"{p:.3g}",
                c["verdict"],
            )
        console.print(table)


def print_generated(dataset, out, thesis_counts: dict, montage=None, console=None) -> None:
    """``generate``'s summary: particles per class against the thesis's shares."""
    from rich.console import Console

    console = console or Console()
    counts, problem = dataset.class_counts(), dataset.problem
    table = Table(title=f"{len(dataset)} synthetic {problem.name} particles in {out}")
    for column in ("class", "code", "particles", "share", "thesis"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name in problem.classes:
        table.add_row(
            name,
            str(problem.code_of(name)),
            str(counts[name]),
            f"{100 * counts[name] / len(dataset):.2f}%",
            f"{100 * thesis_counts[name] / sum(thesis_counts.values()):.2f}%",
        )
    console.print(table)
    if montage is not None:
        console.print(f"Montage: {montage}", soft_wrap=True)


def print_baseline_changes(console, changes, baseline) -> None:
    """``report --baseline``: the metrics that moved against the baseline."""
    moved = [c for c in changes if c.regressed or c.delta is None or abs(c.delta) >= 0.0005]
    table = Table(
        title=f"against baseline {baseline}: {len(moved)} of {len(changes)} metrics moved"
    )
    for name in (
        "model",
        "class",
        "metric",
        "baseline",
        "measured",
        "change",
        "tolerance",
        "status",
    ):
        table.add_column(
            name,
            justify="right" if name in ("baseline", "measured", "change", "tolerance") else "left",
        )
    for c in moved:
        status = (
            "[bold red]REGRESSED[/bold red]"
            if c.regressed
            else "not checked"
            if c.baseline is None
            else "up"
            if c.delta is not None and c.delta > 0
            else "down, within tolerance"
        )
        table.add_row(
            c.model,
            c.cls,
            c.metric,
            UNDEFINED if c.baseline is None else f"{c.baseline:.3f}",
            UNDEFINED if c.measured is None else f"{c.measured:.3f}",
            UNDEFINED if c.delta is None else f"{c.delta:+.3f}",
            f"{c.tolerance:g}",
            status,
        )
    if moved:
        console.print(table)


def print_particle_report(console, report) -> None:
    """``show``: one particle's row across models."""
    table = Table(title=f"particle {report.id}: true class {report.label}")
    for name in ("model", "fold", "predicted", "", "confidence", "scores"):
        table.add_column(name)
    for row in report.rows:
        form = "+.3f" if row["kind"] == "decision" else ".3f"
        scores = "\n".join(
            f"{k.replace('_vs_', ' vs ')} {UNDEFINED if v is None else format(v, form)}"
            for k, v in row["scores"].items()
        )
        table.add_row(
            row["model"],
            str(row["fold"]),
            row["predicted"],
            "right" if row["correct"] else "[bold red]wrong[/bold red]",
            row["confidence"],
            scores,
        )
    console.print(table)


# Commands' other tables (dataset, import, sweep, deploy) ------------------------


def print_card(card, out, console=None):
    """``train``'s summary of the model card it wrote."""
    from rich.console import Console

    console = console or Console()

    def say(text):
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    hp = card["training"]["hyperparameters"]
    overall = card["cross_validation"]["overall"]
    # What each family chose, read from its hyperparameters (registry families
    # other than the SVM and LipNet list theirs as key=value).
    if "C" in hp and "gamma" in hp:
        chosen = f"C={hp['C']:g}, gamma={hp['gamma']:g}"
    elif "epochs" in hp:
        chosen = f"{hp['epochs']} epochs (fold best epochs {hp['fold_best_epochs']})"
    else:
        chosen = ", ".join(f"{k}={v}" for k, v in hp.items() if k != "chosen_by") or "defaults"
    data = card["training"]["dataset"]
    say(
        f"{card['model']} trained on all {data['n_particles']} particles "
        f"({card['problem']['name']}): {chosen}, chosen by {hp['chosen_by']}."
    )

    def metric(name):
        m = overall.get(name) or {}
        ci = m.get("ci") or [None, None]
        if m.get("pooled") is None:
            return f"{name} -"
        return f"{name} {m['pooled']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"

    say(
        "Cross-validated (out-of-fold, 95 % bootstrap interval): "
        + ", ".join(metric(n) for n in ("macro_f1", "balanced_accuracy", "mcc") if n in overall)
        + (" (synthetic data)" if data.get("synthetic") else "")
    )
    say(
        f"Model bundle in {out}: model.json (model card), "
        + ", ".join(card["files"].values())
        + ", cv-predictions.csv."
    )


def print_fractions(table, key, path):
    """Per group, each class's fraction by each method with its interval."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    labelled = "true" in table
    out = Table(title=f"Class fractions per {key} (95 % bootstrap intervals)")
    for name in (key, "n", "class", "raw", "adjusted (ACC)", "prob. adjusted (PACC)"):
        out.add_column(name)
    if labelled:
        out.add_column("true")
    for (group, cls), rows in table.groupby(["group", "class"], sort=False):
        by = {r.method: r for r in rows.itertuples()}
        cells = [str(group), str(rows["n"].iloc[0]), str(cls)]
        for m in ("raw", "acc", "pacc"):
            r = by[m]
            cells.append(f"{r.fraction:.3f} [{r.low:.3f}, {r.high:.3f}]")
        if labelled:
            cells.append(f"{rows['true'].iloc[0]:.3f}")
        out.add_row(*cells)
    console.print(out)
    unidentified = table.attrs.get("unidentified") or {}
    for cls in dict.fromkeys(c for names in unidentified.values() for c in names):
        methods = " and ".join(m for m in ("acc", "pacc") if cls in unidentified.get(m, ()))
        console.print(
            f"Warning: in cross-validation the model gave {cls} particles no more {cls} "
            f"score than another class's, so {methods} cannot tell {cls} apart and may move "
            f"any share into or out of it; trust raw for {cls} (docs/deploy.md).",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"Fractions written to {path}.", markup=False, highlight=False, soft_wrap=True)


def print_predictions(result, path):
    import numpy as np
    from rich.console import Console

    console = Console()
    n, kept = len(result.y_pred), int((~result.abstained).sum())
    for name, t in result.thresholds.items():
        if t["threshold"] is None:
            console.print(
                f"{name}: no confidence threshold reaches precision {t['target']:g} in "
                f"the cross-validated predictions; every {name} prediction abstains.",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        else:
            console.print(
                f"{name}: precision {t['target']:g} needs confidence >= {t['threshold']:.4f} "
                f"(chosen on all {t['predicted']} cross-validated {name} predictions; on "
                f"those same predictions it reaches {t['precision']:.3f} by construction).",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        h = t.get("held_out")
        if h is not None:
            if h["precision"] is None:
                expect = "no fold kept any of its predictions"
            else:
                se = f" ± {h['precision_se']:.3f} (standard error)" if h["precision_se"] else ""
                expect = (
                    f"precision {h['precision']:.3f}{se}, keeping {h['kept']} of "
                    f"{h['predicted']} {name} predictions "
                    f"({100 * h['class_coverage']:.1f} %), coverage "
                    f"{100 * h['coverage']:.1f} % of all particles"
                )
            console.print(
                f"{name}: expect (out of sample: each fold's threshold chosen on the other "
                f"{h['folds'] - 1} folds) {expect}.",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        shift = t.get("calibration_shift")
        if shift:
            console.print(
                f"{name}: the final model's calibration differs from the cross-validated one "
                f"by up to {shift:.3f} in confidence on the same decision values.",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    console.print(
        f"{n} particles: {kept} classified, {n - kept} abstained "
        f"(coverage {100 * kept / max(n, 1):.1f} %).",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    labelled = [i for i, p in enumerate(result.dataset.particles) if p.label is not None]
    if labelled:
        classes = list(result.dataset.problem.classes)
        index = {c: i for i, c in enumerate(classes)}
        y_true = np.array([index[result.dataset.particles[i].label] for i in labelled])
        sel = np.asarray(labelled)

        def summary(keep):
            fold = FoldResult(
                "predict",
                0,
                [str(i) for i in sel[keep]],
                y_true[keep],
                result.y_pred[sel][keep],
                result.probabilities[sel][keep],
                classes,
                "probability",
            )
            return summarise_folds([fold], classes)

        if len(labelled) < n:
            console.print(
                f"{len(labelled)} of {n} particles have labels; metrics are on those.",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        print_model_summary(
            console, f"all {len(labelled)} labelled particles", summary(np.ones(len(sel), bool))
        )
        keep = ~result.abstained[sel]
        if keep.any() and not keep.all():
            print_model_summary(console, f"{int(keep.sum())} kept (not abstained)", summary(keep))
    console.print(f"Predictions in {path}", markup=False, highlight=False, soft_wrap=True)


def print_curve_plan(console, plan, seconds, n_particles):
    """``curve --dry-run``: the tasks per point and model, and a time estimate."""
    from rich.table import Table

    table = Table(
        title=f"{len(plan.points)} sizes x {plan.repeats} repeat(s) x "
        f"{len(plan.cells)} models x {plan.k} folds = {plan.total} tasks "
        f"({len(plan.tasks)} to run)"
    )
    for name in ("point", "size", "repeat", "model", "training particles (mean)", "to run"):
        table.add_column(name)
    for point in plan.points:
        for r in range(plan.repeats):
            sub = plan.subsamples[(point.label, r)]
            n_train = sum(len(sub.train_indices(f)) for f in range(plan.k)) / plan.k
            for cell in plan.cells:
                todo = sum(
                    1
                    for t in plan.tasks
                    if t.point == point and t.repeat == r and t.cell.id == cell.id
                )
                table.add_row(
                    point.label,
                    point.describe(),
                    str(r),
                    cell.id,
                    f"{n_train:.0f}",
                    f"{todo}/{plan.k}",
                )
    console.print(table)
    for label, message in plan.skipped.items():
        console.print(f"Point {label} skipped: {message}", soft_wrap=True)
    cores = _sweep.local_cluster_shape()["cores"]
    console.print(
        f"Estimated {_sweep.format_duration(seconds)} of CPU time for {len(plan.tasks)} task(s) on "
        f"{n_particles} particles (CNN: maximum epochs x fit particles at the assumed "
        f"rate; SVM: scaled from the measured full-data fold), about "
        f"{_sweep.format_duration(seconds / cores)} on this machine's {cores} core(s). Rough, CPU "
        "only. Nothing was run.",
        soft_wrap=True,
    )


def print_curve_summary(console, summary):
    """``curve``'s result: F1 per point and model, then the answer lines."""
    from rich.table import Table

    if summary.get("synthetic"):
        console.print("[yellow]Synthetic data: these are not the thesis's results.[/yellow]")
    classes = summary["classes"]
    table = Table(title="F1 per training size (mean ± sd over folds)")
    for name in ("point", "training particles", "model", *classes, "macro F1"):
        table.add_column(name)

    def cell(entry):
        m, s = entry["mean"], entry["sd"]
        if m is None:
            return "—"
        return f"{m:.2f}" if s is None else f"{m:.2f} ± {s:.2f}"

    for p in summary["points"]:
        for m in p["models"].values():
            table.add_row(
                p["label"],
                f"{p['n_train']:.0f}",
                m["model"],
                *[cell(m["f1"][c]) for c in classes],
                cell(m["macro_f1"]),
            )
    console.print(table)
    for label, message in summary.get("skipped", {}).items():
        console.print(f"Point {label} skipped: {message}", soft_wrap=True)
    for line in summary["lines"]:
        console.print(line, soft_wrap=True, markup=False)
