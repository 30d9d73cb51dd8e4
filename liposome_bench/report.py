"""The markdown report of a results folder, its plots, and the regression gate.

Everything here reads saved results only (``summary.json`` when the
``benchmark`` command wrote one, else the fold files of ``svm`` / ``cnn``
runs, summarised afresh by :func:`stats.summarise_results`); nothing is
retrained.

Baseline files (``write_baseline`` / ``check_baseline``)::

    {
      "schema_version": 1,
      "kind": "liposome-bench baseline",
      "statistic": "mean over folds",
      "source": {"problem": ..., "fingerprint": ..., "folds": {...},
                 "command": ...},
      "overrides": {"lipnet-4/*/*": 0.15, "*/uncertain/ppv": 0.1},
      "models": {
        "svm": {
          "per_class": {"unilamellar": {"tpr": 0.93, "tnr": ..., ...}, ...},
          "overall": {"accuracy": ..., "balanced_accuracy": ..., "macro_f1": ...,
                      "mcc": ...}
        },
        "lipnet-4": {...}
      }
    }

Every value is a model's mean over folds of one metric (``null`` where it was
undefined; such entries are not checked). A metric *regresses* when it falls
below ``baseline - tolerance``; rising is never a failure. The tolerance is
absolute: ``--tolerance`` for every metric, except where a key of
``overrides`` matches ``model/class/metric`` (``overall`` is the class of
the overall metrics; ``*`` and ``?`` are shell wildcards). The most specific
matching key wins (the one with the fewest wildcards; among equals, the
first in the file). A model or metric in the baseline that the results lack
is a regression too.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path


from liposome_bench.io import atomic_write_json, atomic_write_text
from liposome_bench.errors import ResultsError
from liposome_bench.settings import is_fixed_budget
from liposome_bench.stats import (
    NOT_ADJUSTED,
    significant_cells,
    suggestion_text,
    verdict_rows,
)
from liposome_bench.metrics import (
    UNDEFINED,
    format_signed as _signed,
    CLASS_METRIC_LABELS,
    CLASS_METRICS,
    OVERALL_METRIC_LABELS,
    OVERALL_METRICS,
    summarise_folds,
)
from liposome_bench.plotting import (
    plot_confusion_heatmaps,
    plot_coverage_curves,
    plot_metric_bars,
    plot_training_curves,
)
from liposome_bench.results import ResultsDir, SUMMARY_SCHEMA_VERSION, fold_file_hashes
from liposome_bench import registry, stats
from liposome_bench.abstention import accuracy_at_coverage, coverage_curves_of_results
from liposome_bench.cnn import keeps_size
from liposome_bench.comparison import budget_notes
from liposome_bench.gallery import gallery_section, render_galleries

SUMMARY_JSON = "summary.json"
BASELINE_SCHEMA_VERSION = 1
BASELINE_KIND = "liposome-bench baseline"
#: The per-class metrics drawn as bars (thesis figure 22).


# Reading a results folder ----------------------------------------------------


def load_summary(results_dir) -> dict:
    """The summary of a results folder.

    ``summary.json`` if the ``benchmark`` command wrote one; otherwise the
    folder's finished models (from ``svm`` / ``cnn`` runs) summarised now,
    with the dataset and settings from its ``run.json``.

    Raises
    ------
    ResultsError
        If the folder is not a results folder, its summary is unreadable or
        of a newer schema, or it holds no finished model.
    """
    results = ResultsDir(results_dir)
    if not results.path.is_dir():
        raise ResultsError(
            f"{results.path} is not a folder. Pass the --out folder of a benchmark, svm or cnn run."
        )
    path = results.path / SUMMARY_JSON
    if path.exists():
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ResultsError(
                f"{path} is not valid JSON ({exc}). Re-run the benchmark with the same --out "
                "to rewrite it."
            ) from None
        except RecursionError:
            raise ResultsError(
                f"{path} nests too deeply to be a summary. Re-run the benchmark with the same "
                "--out to rewrite it."
            ) from None
        version = summary.get("schema_version") if isinstance(summary, dict) else None
        if not isinstance(version, int) or version > SUMMARY_SCHEMA_VERSION:
            raise ResultsError(
                f"{path} has summary schema version {version!r}; this liposome-bench reads "
                f"versions up to {SUMMARY_SCHEMA_VERSION}. Upgrade liposome-bench."
            )
        _check_summary(summary, path)
        check_fold_files(summary, results.path, path)
        check_summary_metrics(summary, results.path, path)
        return summary
    run = results.read_run()
    summary = stats.summarise_results(results, reference=registry.baseline().names[0])
    summary.update(
        schema_version=SUMMARY_SCHEMA_VERSION,
        tool_version=run.get("tool_version"),
        dataset=run.get("dataset", {}),
        folds=run.get("folds"),
        settings={"models": run.get("models", {})},
    )
    return summary


def _check_summary(summary: dict, path: Path) -> None:
    """Refuse a summary.json lacking what the report and the gate read."""
    models = summary.get("models")
    classes = summary.get("classes")
    ok = (
        isinstance(models, dict)
        and models
        and isinstance(classes, list)
        and all(
            isinstance(m, dict)
            and isinstance(m.get("per_class"), dict)
            and isinstance(m.get("overall"), dict)
            for m in models.values()
        )
    )
    if not ok:
        raise ResultsError(
            f'{path} is not a benchmark summary (no "classes" list, or "models" without '
            "per_class and overall metrics). Re-run the benchmark with the same --out to "
            "rewrite it."
        )


def check_fold_files(summary: dict, results_dir, path=None) -> None:
    """Refuse a summary whose fold files changed since it was written.

    ``summary["fold_files"]`` (written by the benchmark) holds the SHA-256 of
    every fold file it summarises; a summary without it (older versions) is
    not checked.

    Raises
    ------
    ResultsError
        If a recorded fold file is missing or its content changed.
    """
    recorded = summary.get("fold_files")
    if recorded is None:
        return
    path = path or Path(results_dir) / SUMMARY_JSON
    if not isinstance(recorded, dict):
        raise ResultsError(
            f'{path}: "fold_files" is not an object of file hashes. Re-run '
            "the benchmark with the same --out to rewrite it."
        )
    current = fold_file_hashes(results_dir)
    changed = sorted(k for k in recorded if k in current and current[k] != recorded[k])
    missing = sorted(k for k in recorded if k not in current)
    if changed or missing:
        parts = []
        if changed:
            parts.append(f"{len(changed)} changed (first: {changed[0]})")
        if missing:
            parts.append(f"{len(missing)} missing (first: {missing[0]})")
        raise ResultsError(
            f"{path} no longer matches the fold files it summarises: {', '.join(parts)} since "
            "it was written. Re-run the same benchmark command with this --out to summarise "
            "them again, or restore the files."
        )


def check_summary_metrics(summary: dict, results_dir, path=None) -> None:
    """Refuse a summary.json whose metrics are not those of its fold files.

    Every model's per-class and overall means over folds (what the report
    shows and the gate compares) are recomputed from the fold files (the
    out-of-fold predictions, themselves checked against the summary's
    ``fold_files`` hashes) and must agree to 1e-9.

    Raises
    ------
    ResultsError
        Naming the first metric that differs, or the model whose fold files
        cannot be read.
    """
    path = path or Path(results_dir) / SUMMARY_JSON
    detail = _detail_dir(results_dir, summary)
    results = ResultsDir(detail)
    classes = [str(c) for c in summary["classes"]]
    for model, recorded in summary["models"].items():
        try:
            folds = results.load_model(model)
            computed = summarise_folds(folds, classes)
        except (ResultsError, ValueError, IndexError, KeyError) as exc:
            raise ResultsError(
                f"{path}: the fold files of {model} in {detail} cannot be summarised again "
                f"({exc}). Re-run the benchmark with the same --out to rewrite the summary."
            ) from None
        pairs = [
            (
                f"{cls}/{metric}",
                recorded["per_class"].get(cls),
                metric,
                computed.per_class[cls][metric].mean,
            )
            for cls in classes
            for metric in CLASS_METRICS
        ]
        pairs += [
            (f"overall/{metric}", recorded["overall"], metric, computed.overall[metric].mean)
            for metric in OVERALL_METRICS
        ]
        for key, group, metric, value in pairs:
            entry = group.get(metric) if isinstance(group, dict) else None
            mean = entry.get("mean") if isinstance(entry, dict) else entry
            if not _same_value(mean, value):
                raise ResultsError(
                    f"{path}: {model}/{key} is {mean!r} but its fold files give "
                    f"{_num(value, 6) if math.isfinite(value) else None}; the summary was "
                    "edited or belongs to other results. Re-run the benchmark with the same "
                    "--out to rewrite it."
                )


def _same_value(recorded, computed: float) -> bool:
    if not math.isfinite(computed):
        return recorded is None or (isinstance(recorded, float) and math.isnan(recorded))
    return (
        isinstance(recorded, (int, float))
        and not isinstance(recorded, bool)
        and math.isfinite(recorded)
        and abs(recorded - computed) <= 1e-9
    )


def _histories(results_dir, model: str) -> list[tuple[int, dict]]:
    """(fold, history) of each finished fold of ``model`` that recorded one."""
    out = []
    results = ResultsDir(results_dir)
    for path in sorted(results.model_dir(model).glob("fold-*.json")):
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue  # a fold file we cannot read has no curve to draw
        history = meta.get("history")
        if isinstance(history, dict) and history:
            out.append((int(meta.get("fold", 0)), history))
    return sorted(out, key=lambda item: item[0])


def _detail_dir(results_dir, summary) -> Path:
    """The folder whose fold files back the summary's models (repeat 0 of a
    repeated benchmark)."""
    repeats = summary.get("repeats")
    if repeats and repeats.get("dirs"):
        return Path(results_dir) / repeats["dirs"][0]
    return Path(results_dir)


# Formatting ------------------------------------------------------------------


def _num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNDEFINED
    return f"{value:.{digits}f}"


def _cell(entry: dict, bold: bool = False, k=None) -> str:
    """ "mean ± std; pooled p [low, high]" of one metric entry of a model
    summary; a † when the mean is over fewer than ``k`` folds."""
    mean = _num(entry.get("mean"))
    if bold and mean != UNDEFINED:
        mean = f"**{mean}** *"
    if entry.get("std") is not None:
        mean += f" ± {_num(entry['std'], 2)}"
    if isinstance(k, int) and entry.get("mean") is not None and entry.get("n_folds", k) < k:
        mean += "†"
    low, high = entry.get("ci") or (None, None)
    if entry.get("pooled") is not None:
        mean += f"; pooled {_num(entry['pooled'], 2)}"
        if low is not None and high is not None:
            mean += f" [{_num(low, 2)}, {_num(high, 2)}]"
    return mean


def _md_table(headers, rows, align=None) -> str:
    align = align or ["---"] + ["---:"] * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _matrix_table(matrix, classes, digits) -> str:
    rows = []
    for i, name in enumerate(classes):
        cells = []
        for j in range(len(classes)):
            value = matrix[i][j] if matrix is not None else None
            text = _num(value, digits)
            cells.append(f"**{text}**" if i == j else text)
        rows.append([name, *cells])
    return _md_table(["true \\ predicted", *classes], rows)


def render_report(
    results_dir, out=None, *, gallery_size: int = 16, filters: bool = False, data=None
) -> Path:
    """Write a markdown report of a results folder, with PNG plots beside it.

    Parameters
    ----------
    results_dir : path
        A results folder (``benchmark``, ``svm`` or ``cnn`` ``--out``).
    out : path, optional
        The markdown file; default ``results_dir/report.md``. Plots go to
        the folder ``<out stem>-figures`` beside it.
    gallery_size : int
        Particles per gallery (``gallery.render_galleries``); 0 leaves the
        galleries out.
    filters : bool
        Also draw each CNN's first-layer filters and block activations.
    data : path, optional
        The dataset, if it is no longer where the results recorded it.

    Returns
    -------
    Path of the markdown file.

    Raises
    ------
    ResultsError
        If ``results_dir`` is not a results folder or holds no finished model.
    """
    results_dir = Path(results_dir)
    summary = load_summary(results_dir)
    out = Path(out) if out is not None else results_dir / "report.md"
    figures = out.parent / f"{out.stem}-figures"
    detail = _detail_dir(results_dir, summary)
    histories = {
        name: _histories(detail, name)
        for name, m in summary["models"].items()
        if m.get("score_kind") == "probability"
    }
    images = {
        "bars": plot_metric_bars(summary, figures / "metrics.png"),
        "confusion": plot_confusion_heatmaps(summary, figures / "confusion.png"),
        "curves": plot_training_curves(histories, figures / "training.png"),
        "coverage": _coverage_figure(detail, summary, figures / "coverage.png"),
    }
    galleries = None
    if gallery_size > 0:
        drawn = render_galleries(detail, figures, size=gallery_size, data=data, filters=filters)
        galleries = gallery_section(drawn, lambda p: _relative(p, out.parent))
    text = format_report(
        summary,
        images={k: _relative(v, out.parent) for k, v in images.items()},
        galleries=galleries,
    )
    atomic_write_text(out, text)
    return out


def _relative(path, start) -> str | None:
    if path is None:
        return None
    return Path(os.path.relpath(path, start)).as_posix()


def format_report(summary: dict, images: dict | None = None, galleries=None) -> str:
    """The markdown text of a report on ``summary`` (see :func:`load_summary`);
    ``images`` maps "bars", "confusion", "curves" to relative PNG paths;
    ``galleries`` are the lines of the particle galleries' section."""
    images = images or {}
    dataset = summary.get("dataset", {})
    parts = [f"# liposome-bench report: {_title(dataset)}", ""]
    if dataset.get("synthetic"):
        parts += [
            "> **Synthetic data.** These results come from liposome-bench's built-in "
            "synthetic particles, not from the lab's TEM images. They show that the "
            "pipeline works; they are never the thesis's results and say nothing about "
            "real liposomes.",
            "",
        ]
    if summary.get("settings", {}).get("quick"):
        parts += [
            "> **Quick run** (`--quick`): a small subsample and few epochs, a smoke test "
            "only. Do not read anything into these numbers.",
            "",
        ]
    parts += _verdict_section(summary)
    parts += _prevalence_section(summary)
    parts += _dataset_section(summary)
    parts += _protocol_section(summary)
    parts += _metric_section(summary, images.get("bars"))
    parts += _size_quartile_section(summary)
    parts += _comparison_section(summary)
    parts += _confusion_section(summary, images.get("confusion"))
    parts += galleries or []
    if images.get("curves"):
        parts += ["## CNN training curves", "", f"![training curves]({images['curves']})", ""]
    parts += _abstention_section(summary, images.get("coverage"))
    parts += _repeats_section(summary)
    parts += _environment_section(summary)
    if summary.get("incomplete"):
        parts += [
            "## Unfinished models",
            "",
            "Not summarised (re-run the same command with the same `--out` to finish):",
            "",
        ]
        parts += [f"- {m}: folds finished {f}" for m, f in summary["incomplete"].items()]
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def _title(dataset: dict) -> str:
    """The problem; a custom problem (classes read from the labels) with the
    dataset's name, since "custom" alone says nothing."""
    problem = dataset.get("problem", "?")
    if problem in ("lamellarity", "encapsulation"):
        return problem
    source = dataset.get("source") or dataset.get("subsample") or ""
    name = Path(str(source)).name if source else ""
    classes = dataset.get("classes") or []
    kinds = f" ({', '.join(classes)})" if classes else ""
    return f"{name or 'unnamed dataset'}, {problem} problem{kinds}"


#: Coverages at which the report tabulates the accuracy of the kept predictions.
COVERAGE_POINTS = (1.0, 0.9, 0.8, 0.5)


def _coverage_figure(detail, summary, path) -> Path | None:
    """Coverage curves of every model (plotting.plot_coverage_curves); their
    accuracy at COVERAGE_POINTS goes into ``summary["abstention"]``."""
    curves = coverage_curves_of_results(detail, list(summary["models"]), summary["classes"])
    summary["abstention"] = {
        name: {c: accuracy_at_coverage(curve, c) for c in COVERAGE_POINTS}
        for name, curve in curves.items()
    }
    return plot_coverage_curves(
        curves, summary["classes"], path, title="Abstaining below a confidence threshold"
    )


def _abstention_section(summary, image) -> list[str]:
    table = summary.get("abstention")
    if not table:
        return []
    rows = [[name] + [_num(acc) for acc in values.values()] for name, values in table.items()]
    lines = [
        "## Abstention: coverage against accuracy",
        "",
        "Each model abstains on the particles whose predicted class has a probability below a "
        "threshold; raising it keeps fewer particles (coverage) and, if the probabilities "
        "rank errors well, more of them right. Out-of-fold predictions; the SVM's "
        "decision values are calibrated to probabilities on the other folds only.",
        "",
        _md_table(
            ["model"] + [f"accuracy at {100 * c:.0f} % coverage" for c in COVERAGE_POINTS], rows
        ),
        "",
    ]
    if image:
        lines += [f"![coverage curves]({image})", ""]
    return lines


def _verdict_section(summary) -> list[str]:
    lines = ["## Verdict", ""]
    if not summary.get("comparisons"):
        return lines + ["Only one model was run; there is nothing to compare.", ""]
    verdict = summary.get("verdict")
    if verdict and verdict.get("comparisons"):
        return lines + _headline_lines(verdict, summary["classes"], summary.get("prevalence_error"))
    for comp in summary["comparisons"]:
        a, b = comp["model_a"], comp["model_b"]
        test = comp["mcnemar"]
        lines.append(
            f"- **{b} vs {a}**: {comp['verdict']} overall "
            f"(McNemar {format_p_value(test['p_value'])}, on {comp['n_particles']} particles)."
        )
        for cls, d in comp["f1_difference"].items():
            lines.append(
                f"  - {cls}: F1 difference {_signed(d['difference'])} "
                f"[{_signed(d['ci'][0])}, {_signed(d['ci'][1])}]: {d['verdict']}."
            )
    lines += [
        "",
        "Differences are "
        f"{summary['comparisons'][0]['model_b']} minus "
        f"{summary['comparisons'][0]['model_a']}; intervals are 95 % paired "
        "bootstrap intervals over particles.",
        "",
    ]
    return lines


def _prevalence_section(summary) -> list[str]:
    """Per model and class, the error of the class fractions per group over
    the test folds (``quantify.prevalence_error``)."""
    row = summary.get("prevalence_error")
    if not row:
        return []
    lines = ["## Prevalence error (secondary)", ""]
    if row.get("skipped"):
        return lines + [f"Not computed: {row['skipped']}.", ""]
    models = list(row["models"])
    first = row["models"][models[0]]
    rows = []
    for cls in [*summary["classes"], "mean"]:
        values = [
            row["models"][m]["mean"] if cls == "mean" else row["models"][m]["per_class"][cls]
            for m in models
        ]
        rows.append([cls, *(UNDEFINED if v is None else f"{v:.3f}" for v in values)])
    lines += [
        f"Mean absolute error of each class's fraction per {row.get('group_by', 'group')} "
        f"({row['method']} of the out-of-fold predictions) over the {first['n_groups']} "
        "groups of the test folds; grouped folds keep each group whole, so its true "
        "fractions are its labels'. Lower is closer. The verdict tables' 'fraction MAE' "
        "row compares the models' per-fold mean errors by the same corrected t-test "
        "(not adjusted).",
        "",
        _md_table(["class", *models], rows, align=["---", *(["---:"] * len(models))]),
        "",
    ]
    return lines


def _headline_lines(verdict: dict, classes, prevalence=None) -> list[str]:
    """The headline verdict (``stats.headline_verdict``) as markdown, with
    the prevalence-error row (``quantify.prevalence_error``) when given: the
    rows of ``stats.verdict_rows``, the ones ``display.verdict_table`` shows."""
    lines = []
    by_model = {c["model_b"]: c for c in (prevalence or {}).get("comparisons", [])}
    for comp in verdict["comparisons"]:
        a, b = comp["model_a"], comp["model_b"]
        lines += [
            f"**{b} vs {a}**: {verdict['test']} on {comp['n_scores']} paired fold scores "
            f"({verdict['repeats']} repeat{'s' if verdict['repeats'] != 1 else ''} x "
            f"{verdict['k']} folds); p-values Holm-adjusted across the per-class and macro "
            f"F1 rows. * significant at {verdict['alpha']} after adjustment.",
            "",
        ]
        rows = [
            [
                f"**{r.label}**" if r.headline else r.label,
                r.difference,
                r.interval,
                format_p_value(r.p),
                format_p_value(r.p_holm) if r.adjusted else NOT_ADJUSTED,
                r.verdict,
            ]
            for r in verdict_rows(verdict, comp, classes, by_model.get(comp["model_b"]))
        ]
        test = comp.get("mcnemar")
        lines.append(
            _md_table(
                ["score", f"{b} − {a} (mean)", "interval (Holm-matched)", "p", "Holm p", "verdict"],
                rows,
                align=["---", "---:", "---:", "---:", "---:", "---"],
            )
        )
        lines.append("")
        advice = suggestion_text(comp.get("repeats_suggestion"))
        if advice:
            lines += [f"Power: {advice}", ""]
        if test:
            lines += [
                f"McNemar row: {test['only_b']} particles only {b} got right, "
                f"{test['only_a']} only {a} got right ({test['method']}, "
                f"{format_p_value(test['p_value'])}), on the pooled out-of-fold predictions "
                "of the first repeat. It holds the trained models fixed and ignores training "
                "variance (Dietterich 1998), and counts mostly the largest class: a "
                "secondary line, not the verdict.",
                "",
            ]
    lines += [
        f"Differences are the first-named model minus the second (e.g. "
        f"{verdict['comparisons'][0]['model_b']} − {verdict['comparisons'][0]['model_a']}), "
        f"averaged over the paired fold scores; intervals and p-values from the "
        f"{verdict['test']}, whose variance "
        "correction counts the overlap of the training sets. " + verdict.get("note", ""),
        "",
    ]
    return lines


def format_p_value(p) -> str:
    """A p-value as "p = 0.012", or "p < 0.001" below that."""
    if p is None:
        return f"p = {UNDEFINED}"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _dataset_section(summary) -> list[str]:
    dataset = summary.get("dataset", {})
    lines = ["## Dataset", ""]
    facts = [
        ("problem", dataset.get("problem")),
        ("source", dataset.get("source")),
        ("synthetic", "yes" if dataset.get("synthetic") else "no"),
        ("particles", dataset.get("n_particles")),
        ("fingerprint", f"`{dataset.get('fingerprint')}`"),
    ]
    if dataset.get("subsample") and dataset["subsample"] != dataset.get("source"):
        facts.append(("subsample", dataset["subsample"]))
    lines += [f"- {k}: {v}" for k, v in facts if v is not None]
    lines.append("")
    counts = dataset.get("class_counts")
    if not counts:
        # Results of svm/cnn runs: count the particles the models saw.
        first = next(iter(summary["models"].values()))
        counts = dict(zip(summary["classes"], first.get("support", [])))
    total = sum(counts.values()) or 1
    lines.append(
        _md_table(
            ["class", "particles", "share"],
            [[c, n, f"{100 * n / total:.1f} %"] for c, n in counts.items()]
            + [["total", total, "100 %"]],
        )
    )
    lines.append("")
    sizes = dataset.get("image_size")
    if sizes:
        lines.append(
            "Image sizes in px, with the surround (median, range): "
            + "; ".join(
                f"{axis} {_num(s['median'], 0)} ({s['min']}-{s['max']})"
                for axis, s in sizes.items()
                if s
            )
            + "."
        )
        lines.append("")
    px = dataset.get("pixel_size_nm") or {}
    if px.get("median") is not None:
        lines.append(
            f"Pixel size: median {px['median']:.3g} nm/px (range {px['min']:.3g}-"
            f"{px['max']:.3g} nm/px)"
            + (f"; unknown for {px['unknown']} particles" if px.get("unknown") else "")
            + "."
        )
        lines.append("")
    if dataset.get("warnings"):
        lines += ["Reader warnings:", ""] + [f"- {w}" for w in dataset["warnings"]] + [""]
    return lines


def _protocol_section(summary) -> list[str]:
    folds = summary.get("folds") or {}
    settings = summary.get("settings", {})
    model_settings = settings.get("models", {})
    lines = ["## Protocol", ""]
    lines.append(
        f"- {folds.get('k', '?')}-fold stratified cross-validation (fold seed "
        f"{folds.get('seed', '?')}); every model is trained and tested on the same folds "
        "(thesis section 8.1); test folds are never resampled. Folds are numbered from 0, "
        "as in the fold files."
    )
    if folds.get("group_by"):
        lines.append(
            f"- Grouped by {folds['group_by']}: every {folds['group_by']} lies in one fold"
            + (
                f" ({folds['n_groups']} in all, {', '.join(map(str, folds['groups_per_fold']))}"
                " per fold)"
                if folds.get("groups_per_fold")
                else ""
            )
            + "; the SVM's inner grid-search folds and the CNN's validation split are "
            "grouped the same way."
        )
    elif folds.get("warning"):
        lines.append(f"- **Not grouped.** {folds['warning']}")
    if (folds.get("near_duplicates") or {}).get("warning"):
        lines.append(f"- **Near-duplicates.** {folds['near_duplicates']['warning']}")
    for name, s in model_settings.items():
        plain = _describe_settings(s, name)
        shown = ", ".join(f"{k} = `{_short(v)}`" for k, v in s.items())
        lines.append(f"- **{name}**: {plain}" + (f" All settings: {shown}." if shown else ""))
    boot = summary.get("bootstrap", {})
    if boot:
        lines.append(
            f"- Intervals: {boot.get('n_resamples')} bootstrap resamples of the out-of-fold "
            f"predictions ({boot.get('method')}, stratified by {boot.get('stratified_by')}, "
            f"seed {boot.get('seed')}), {100 * boot.get('confidence', 0.95):.0f} % level, "
            "not corrected for multiple comparisons."
        )
    verdict = summary.get("verdict") or {}
    if verdict:
        lines.append(
            f"- Verdict: per class F1 and macro F1, {verdict['test']} over "
            f"{verdict['n_scores']} paired fold scores ({verdict['repeats']} repeat(s) x "
            f"{verdict['k']} folds), {verdict['correction']}; significant where the adjusted "
            f"p < {verdict['alpha']}. {verdict.get('note', '')}"
        )
    lines.append(
        "- Secondary: McNemar's test on per-particle correctness (exact binomial below "
        "25 discordant particles) and paired bootstrap intervals of each class's F1 "
        "difference over particles; both hold the trained models fixed (no training "
        "variance) and are not corrected for multiple comparisons."
    )
    lines.append("")

    notes = budget_notes(summary)
    if notes:
        heading = (
            "Training budgets (first repeat):" if summary.get("repeats") else "Training budgets:"
        )
        lines += [heading, ""] + [f"- {n}" for n in notes] + [""]
    for name, m in summary["models"].items():
        params = m.get("params") or []
        keys = [k for k in FOLD_PARAMS if any(k in p for p in params)]
        if params and keys:
            lines.append(f"Chosen per fold, {name}:")
            lines.append("")
            lines.append(
                _md_table(
                    ["fold", *keys],
                    [[i, *(_short(p.get(k)) for k in keys)] for i, p in enumerate(params)],
                )
            )
            lines.append("")
    return lines


#: Per-fold choices worth a column in the report, where a model records them.
FOLD_PARAMS = (
    "C",
    "gamma",
    "grid_score",
    "grid_extended",
    "grid_edge",
    "epochs",
    "epochs_run",
    "stopped_early",
    "under_trained",
    "n_fit",
    "n_validation",
    "n_test",
)


def _describe_settings(s: dict, model: str = "") -> str:
    """The protocol of one model in words, from its recorded settings."""
    if s.get("kind") == "cnn" or "input_mode" in s:
        keep = keeps_size(model, s.get("input_scale"))
        scale = (
            "particle size kept (a window fixed for every particle, padded, never resized)"
            if keep
            else "each particle resized to the input"
        )
        parts = [
            f"input mode {s.get('input_mode')} at {s.get('input_size')} px, {scale}",
            "augmentation " + (", ".join(s["augment"]) if s.get("augment") else "none"),
            f"class balancing {s.get('balance')} (training folds only)",
        ]
        if is_fixed_budget(s):
            parts.append(
                f"{s.get('epochs')} epochs, no early stopping, the last epoch's weights kept"
                + (
                    f" (a {100 * s['validation_fraction']:.0f} % validation split carved from "
                    "the training folds is only scored)"
                    if s.get("validation_fraction")
                    else ""
                )
            )
        elif s.get("validation_fraction"):
            parts.append(
                f"early stopping on the validation {s.get('early_stopping', 'loss')} "
                f"(patience {s.get('patience')}) on a "
                f"{100 * s['validation_fraction']:.0f} % validation split carved from the "
                f"training folds, at most {s.get('epochs')} epochs"
            )
        else:
            parts.append(f"{s.get('epochs')} epochs, no early stopping")
        rate = ""
        if s.get("learning_rate") is not None:
            schedule = s.get("lr_schedule") or "constant"
            warmup = s.get("warmup_epochs")
            after = f" after a {_short(warmup)}-epoch warm-up" if warmup else ""
            rate = f"learning rate {_short(s['learning_rate'])} ({schedule}{after}), "
        parts.append(
            f"{s.get('optimizer')}, batch size {s.get('batch_size')}, {rate}"
            f"label smoothing {s.get('label_smoothing')}"
        )
        if s.get("weight_averaging"):
            parts.append(
                f"scored and kept with an exponential moving average of the weights "
                f"(momentum {s['weight_averaging']})"
            )
        return "; ".join(parts) + "."
    if "grid" in s or "C" in s:
        if s.get("grid") is None:
            search = f"C = {s.get('C')}, gamma = {s.get('gamma')} fixed (no grid search)"
        else:
            search = (
                f"C and gamma by the {s.get('grid')} grid search with inner "
                f"cross-validation on the training folds only, maximising "
                f"{s.get('grid_score')}"
            )
        return (
            f"{s.get('feature_set')} features ({s.get('source')}), scaled on the training "
            f"folds; class weights {s.get('class_weight')}; {search}."
        )
    return ""


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ",".join(_short(v) for v in value)
    return str(value)


def _metric_section(summary, bars) -> list[str]:
    classes = summary["classes"]
    models = list(summary["models"])
    k = (summary.get("folds") or {}).get("k")

    significant = significant_cells(summary.get("verdict") or {})
    lines = ["## Per-class metrics, side by side", ""]
    lines.append(
        "Each cell: mean ± standard deviation over folds; then the estimate from all "
        "out-of-fold predictions pooled (the bars in the figure) with its 95 % bootstrap "
        "interval over particles. Bold with * marks a CNN whose F1 (macro F1) differs from "
        "the SVM's significantly after Holm's adjustment (see Verdict); no other cell is "
        "marked. † marks a mean over fewer "
        "folds (the value was undefined, 0/0, in the others). F1 = 2·PPV·TPR/(PPV+TPR); "
        f"F1 (thesis) = 2/(1/TPR + 1/TNR), section 4.6. {UNDEFINED}: undefined."
    )
    lines.append("")
    for cls in classes:
        support = None
        first = summary["models"][models[0]]
        if first.get("support"):
            support = first["support"][classes.index(cls)]
        lines.append(f"### {cls}" + (f" ({support} particles)" if support is not None else ""))
        lines.append("")
        rows = []
        for metric in CLASS_METRICS:
            entries = [summary["models"][m]["per_class"][cls][metric] for m in models]
            best = {i for i, m in enumerate(models) if (m, cls, metric) in significant}
            rows.append(
                [
                    CLASS_METRIC_LABELS[metric],
                    *(_cell(e, i in best, k) for i, e in enumerate(entries)),
                ]
            )
        lines.append(_md_table(["metric", *models], rows))
        lines.append("")
    lines.append("### Overall")
    lines.append("")
    rows = []
    for metric in OVERALL_METRICS:
        entries = [summary["models"][m]["overall"][metric] for m in models]
        best = {i for i, m in enumerate(models) if (m, "overall", metric) in significant}
        rows.append(
            [
                OVERALL_METRIC_LABELS[metric],
                *(_cell(e, i in best, k) for i, e in enumerate(entries)),
            ]
        )
    lines.append(_md_table(["metric", *models], rows))
    lines.append("")
    if bars:
        lines += [f"![per-class metrics]({bars})", ""]
    return lines


def _size_quartile_section(summary) -> list[str]:
    """Macro F1 and accuracy of every model within each quartile of
    particle size (``summary["by_size_quartile"]``)."""
    by = summary.get("by_size_quartile") or {}
    models = list(by.get("models") or {})
    if not models:
        return []

    def num(value, fmt=".3f"):
        return UNDEFINED if value is None or math.isnan(value) else format(value, fmt)

    first = by["models"][models[0]]
    rows = []
    for q, row in enumerate(first):
        span = (
            f"{num(row['size_min'], '.4g')}–{num(row['size_max'], '.4g')}"
            if row["size_min"] is not None
            else UNDEFINED
        )
        cells = []
        for m in models:
            r = by["models"][m][q]
            cells.append(f"{num(r['macro_f1'])} / {num(r['accuracy'])}")
        rows.append([f"Q{row['quartile']}", span, str(row["n"]), *cells])
    return [
        "## Metrics by particle size quartile",
        "",
        (
            f"Particles split at the quartiles of their {by['size']} over the whole dataset; "
            "each cell: macro F1 / accuracy of the pooled out-of-fold predictions in that "
            f"quartile. {UNDEFINED}: undefined (no particle)."
        ),
        "",
        _md_table(["quartile", "size", "particles", *models], rows),
        "",
    ]


def _comparison_section(summary) -> list[str]:
    if not summary.get("comparisons"):
        return []
    classes = summary["classes"]
    lines = [
        "## Paired comparison over particles (secondary)",
        "",
        "Bootstrap intervals over particles and McNemar's test, on the pooled "
        "out-of-fold predictions of one run: they hold the trained models fixed, so "
        "they ignore training variance and are not the verdict.",
        "",
    ]
    rows = []
    for comp in summary["comparisons"]:
        test = comp["mcnemar"]
        for cls in classes:
            d = comp["f1_difference"][cls]
            rows.append(
                [
                    f"{comp['model_b']} − {comp['model_a']}",
                    cls,
                    _signed(d["difference"]),
                    f"[{_signed(d['ci'][0])}, {_signed(d['ci'][1])}]",
                    d["verdict"],
                ]
            )
        rows.append(
            [
                f"{comp['model_b']} − {comp['model_a']}",
                "all (McNemar)",
                f"{test['only_b']} vs {test['only_a']}",
                f"{format_p_value(test['p_value'])} ({test['method']})",
                comp["verdict"],
            ]
        )
    lines.append(
        _md_table(
            ["comparison", "class", "F1 difference", "95 % interval", "verdict"],
            rows,
            align=["---", "---", "---:", "---:", "---"],
        )
    )
    lines += [
        "",
        'McNemar rows of "B − A": the first count is the particles only B '
        "(the first-named model, e.g. the CNN) got right, the second those only A "
        "got right; the other particles were right or wrong for both.",
        "",
    ]
    return lines


def _confusion_section(summary, heatmap) -> list[str]:
    classes = summary["classes"]
    lines = [
        "## Confusion matrices",
        "",
        "Rows: true class; columns: predicted class. Raw: particles per test fold, "
        "averaged over folds (thesis Tables 9-10). Normalised: each row divided by "
        "its total, averaged over folds.",
        "",
    ]
    for name, m in summary["models"].items():
        conf = m["confusion"]
        lines += [
            f"### {name}",
            "",
            "Raw (fold average):",
            "",
            _matrix_table(conf.get("mean"), classes, 1),
            "",
            "Normalised (fold average):",
            "",
            _matrix_table(conf.get("normalised_mean"), classes, 2),
            "",
        ]
    if heatmap:
        lines += [f"![normalised confusion matrices]({heatmap})", ""]
    return lines


def _repeats_section(summary) -> list[str]:
    repeats = summary.get("repeats")
    if not repeats or not repeats.get("spread"):
        return []
    lines = [
        "## Run-to-run spread",
        "",
        f"The whole {summary.get('folds', {}).get('k', '?')}-fold run was repeated "
        f"{repeats['count']} times with fold seeds {repeats['fold_seeds']}. The tables "
        "above are those of the first repeat; below, the spread of each model's "
        "fold-mean F1 over the repeats (mean ± std [min, max]).",
        "",
    ]
    spread = repeats["spread"]
    models = list(spread)
    rows = []
    for cls in summary["classes"] + ["overall"]:
        metric = "f1" if cls != "overall" else "macro_f1"
        cells = []
        for m in models:
            s = spread[m].get(cls, {}).get(metric)
            cells.append(
                UNDEFINED
                if not s
                else f"{_num(s['mean'])} ± {_num(s['std'], 2)} "
                f"[{_num(s['min'], 2)}, {_num(s['max'], 2)}]"
            )
        rows.append([cls if cls != "overall" else "macro F1", *cells])
    lines += [_md_table(["F1", *models], rows), ""]
    return lines


def _environment_section(summary) -> list[str]:
    lines = ["## Reproducibility", ""]
    command = summary.get("command") or summary.get("equivalent_command")
    if command:
        lines += ["Run again with:", "", "```", command, "```", ""]
        if summary.get("equivalent_command") and summary.get("command") != summary.get(
            "equivalent_command"
        ):
            lines += [
                "Same run with every setting spelled out:",
                "",
                "```",
                summary["equivalent_command"],
                "```",
                "",
            ]
    else:
        lines += [
            "These results were not written by `liposome-bench benchmark`; the "
            "settings of each model are listed under Protocol.",
            "",
        ]
    facts = []
    if summary.get("seed") is not None:
        facts.append(f"seed {summary['seed']}")
    if summary.get("created"):
        facts.append(f"run finished {summary['created']}")
    if summary.get("tool_version"):
        facts.append(f"liposome-bench {summary['tool_version']}")
    if facts:
        lines += ["- " + "; ".join(facts)]
    versions = summary.get("versions") or {}
    if versions:
        lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    device = summary.get("device")
    if device:
        lines.append("- device: " + ", ".join(f"{k} {_short(v)}" for k, v in device.items()))
    timings = summary.get("timings") or {}
    if timings:
        lines.append(
            "- wall time (s): "
            + ", ".join(
                f"{k.removesuffix('_s')} {v:.1f}"
                for k, v in timings.items()
                if isinstance(v, (int, float))
            )
        )
    guess = timings.get("estimate")
    if isinstance(guess, dict) and "total_s" in timings:
        lines.append(
            f"- estimated before training: {guess.get('low_s', 0):.0f} to "
            f"{guess.get('high_s', 0):.0f} s (measured from then on: "
            f"{timings['total_s'] - guess.get('done_at_s', 0):.0f} s)"
        )
    lines.append("")
    return lines


# Regression gate ---------------------------------------------------------------


@dataclass
class BaselineChange:
    """One metric of one model compared with the baseline."""

    model: str
    cls: str  # a class name, or "overall"
    metric: str
    baseline: float | None
    measured: float | None
    tolerance: float

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.measured is None:
            return None
        return self.measured - self.baseline

    @property
    def regressed(self) -> bool:
        if self.baseline is None:
            return False
        if self.measured is None:
            return True
        # A hair of slack so a value equal to baseline - tolerance passes
        # despite floating-point rounding.
        return self.measured < self.baseline - self.tolerance - 1e-12

    @property
    def key(self) -> str:
        return f"{self.model}/{self.cls}/{self.metric}"

    def describe(self) -> str:
        if self.measured is None:
            return f"{self.key}: missing or undefined (baseline {_num(self.baseline)})"
        return (
            f"{self.key} fell from {_num(self.baseline)} to {_num(self.measured)} "
            f"({self.delta:+.3f}, tolerance {self.tolerance:g})"
        )


def _baseline_values(summary: dict) -> dict:
    models = {}
    for name, m in summary["models"].items():
        models[name] = {
            "per_class": {
                cls: {k: m["per_class"][cls][k]["mean"] for k in CLASS_METRICS}
                for cls in summary["classes"]
            },
            "overall": {k: m["overall"][k]["mean"] for k in OVERALL_METRICS},
        }
    return models


def write_baseline(results_dir, path, *, overrides: dict | None = None) -> Path:
    """Write a baseline file (format in the module docstring) from a results
    folder: every model's per-class and overall metrics, means over folds.

    Parameters
    ----------
    results_dir : path
    path : path of the JSON file to write.
    overrides : dict, optional
        ``model/class/metric`` pattern -> absolute tolerance, stored in the file.

    Returns
    -------
    Path written.

    Raises
    ------
    ResultsError
        If the folder is unreadable (its summary or run.json) or incomplete:
        a model of its run.json without every fold finished.
    """
    summary = load_summary(results_dir)
    _check_complete(summary, results_dir)
    dataset = summary.get("dataset", {})
    baseline = {
        "schema_version": BASELINE_SCHEMA_VERSION,
        "kind": BASELINE_KIND,
        "statistic": "mean over folds",
        "source": {
            "problem": dataset.get("problem"),
            "fingerprint": dataset.get("fingerprint"),
            "synthetic": dataset.get("synthetic"),
            "folds": summary.get("folds"),
            "command": summary.get("command") or summary.get("equivalent_command"),
            "tool_version": summary.get("tool_version"),
            "versions": summary.get("versions"),
        },
        "overrides": dict(overrides or {}),
        "models": _baseline_values(summary),
    }
    path = Path(path)
    atomic_write_json(path, baseline)
    return path


def _check_complete(summary: dict, results_dir) -> None:
    """Refuse to write a baseline of some models only: every model of the
    run (run.json) must be in the summary with every fold finished."""
    detail = ResultsDir(_detail_dir(results_dir, summary))
    run = detail.read_run()
    if not run:
        raise ResultsError(
            f"{detail.path} has no run.json, so what the run holds cannot be "
            "checked. Pass the --out folder of a benchmark, svm or cnn run."
        )
    models = run.get("models") if isinstance(run.get("models"), dict) else {}
    k = (run.get("folds") or {}).get("k") if isinstance(run.get("folds"), dict) else None
    missing = []
    for model in models:
        if model not in summary["models"]:
            finished = len(detail.load_model(model))
            missing.append(f"{model} ({finished} of {k} folds finished)")
    incomplete = summary.get("incomplete") or {}
    missing += [
        f"{m} ({len(f)} of {k} folds finished)"
        for m, f in incomplete.items()
        if not any(x.startswith(f"{m} (") for x in missing)
    ]
    if missing:
        raise ResultsError(
            f"{detail.path} is incomplete: {', '.join(missing)}; a baseline of the other "
            "models would not gate it. Finish the run (the same command again), then write "
            "the baseline."
        )


def read_baseline(path) -> dict:
    """Read and check a baseline file.

    Raises
    ------
    ResultsError
        If it is missing, not JSON, or not a baseline of a known version.
    """
    path = Path(path)
    try:
        baseline = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(
            f"Baseline {path} does not exist. Write one with "
            "`liposome-bench report RESULTS --write-baseline FILE`."
        ) from None
    except (OSError, ValueError, RecursionError) as exc:
        raise ResultsError(
            f"Baseline {path} is not valid JSON ({type(exc).__name__}: {exc}). Rewrite it "
            "with --write-baseline."
        ) from None
    if not isinstance(baseline, dict) or baseline.get("kind") != BASELINE_KIND:
        raise ResultsError(
            f'{path} is not a liposome-bench baseline (expected "kind": "{BASELINE_KIND}"). '
            "Write one with --write-baseline."
        )
    version = baseline.get("schema_version")
    if version != BASELINE_SCHEMA_VERSION:
        raise ResultsError(
            f"{path} has baseline schema version {version!r}; expected "
            f"{BASELINE_SCHEMA_VERSION}. Rewrite it with --write-baseline."
        )
    overrides = baseline.get("overrides", {})
    if not isinstance(overrides, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
        for v in overrides.values()
    ):
        raise ResultsError(
            f'{path}: "overrides" must map model/class/metric patterns to tolerances >= 0; '
            f"got {overrides!r}."
        )
    if not isinstance(baseline.get("models"), dict):
        raise ResultsError(f'{path} has no "models" object. Rewrite it with --write-baseline.')
    for model, values in baseline["models"].items():
        bad = _bad_baseline_entry(model, values)
        if bad:
            raise ResultsError(f"{path}: {bad}. Rewrite it with --write-baseline.")
    return baseline


def _bad_baseline_entry(model: str, values) -> str | None:
    """What is wrong with one model's entry of a baseline, or None."""
    shape = '{"per_class": {class: {metric: value}}, "overall": {metric: value}}'
    if not isinstance(values, dict):
        return f"model {model!r} is {type(values).__name__}, expected {shape}"
    per_class = values.get("per_class", {})
    overall = values.get("overall", {})
    if (
        not isinstance(per_class, dict)
        or not isinstance(overall, dict)
        or not all(isinstance(m, dict) for m in per_class.values())
    ):
        return f"model {model!r} is not {shape}"
    groups = [(cls, metrics) for cls, metrics in per_class.items()] + [("overall", overall)]
    for cls, metrics in groups:
        for metric, value in metrics.items():
            number = value is None or (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
            )
            if not number:
                return (
                    f"{model}/{cls}/{metric} is {value!r}; expected a number (or null "
                    "where the metric was undefined)"
                )
    return None


def tolerance_for(key: str, overrides: dict, default: float) -> float:
    """The tolerance of ``model/class/metric`` ``key``: the most specific
    matching override (fewest wildcards, then first listed), else ``default``."""
    best = None
    for pattern, value in overrides.items():
        if fnmatch.fnmatchcase(key, pattern):
            wildcards = pattern.count("*") + pattern.count("?")
            if best is None or wildcards < best[0]:
                best = (wildcards, float(value))
    return default if best is None else best[1]


def compare_to_baseline(
    results_dir, baseline_path, tolerance: float = 0.02
) -> list[BaselineChange]:
    """Every baseline metric of every baseline model next to its measured value.

    Parameters
    ----------
    results_dir : path
    baseline_path : path
    tolerance : float
        Absolute tolerance where the baseline has no override.

    Returns
    -------
    list of BaselineChange, in baseline order.

    Raises
    ------
    ResultsError
        If the baseline or the results cannot be read, or the tolerance is negative.
    """
    if not tolerance >= 0:
        raise ResultsError(f"--tolerance must be 0 or more; got {tolerance}.")
    baseline = read_baseline(baseline_path)
    summary = load_summary(results_dir)
    overrides = baseline.get("overrides", {})
    changes = []
    for model, values in baseline["models"].items():
        measured_model = summary["models"].get(model)
        groups = [(cls, metrics) for cls, metrics in values.get("per_class", {}).items()]
        groups.append(("overall", values.get("overall", {})))
        for cls, metrics in groups:
            for metric, base in metrics.items():
                measured = None
                if measured_model is not None:
                    source = (
                        measured_model["overall"]
                        if cls == "overall"
                        else measured_model["per_class"].get(cls, {})
                    )
                    measured = (source.get(metric) or {}).get("mean")
                key = f"{model}/{cls}/{metric}"
                changes.append(
                    BaselineChange(
                        model,
                        cls,
                        metric,
                        None if base is None else float(base),
                        None if measured is None else float(measured),
                        tolerance_for(key, overrides, tolerance),
                    )
                )
    return changes


def check_baseline(results_dir, baseline_path, tolerance: float = 0.02) -> list[BaselineChange]:
    """The metrics that fell by more than their tolerance below the baseline
    (empty when the results pass). See :func:`compare_to_baseline`."""
    return [c for c in compare_to_baseline(results_dir, baseline_path, tolerance) if c.regressed]
