"""Matplotlib figures (one module for all plotting; functions are added, not
restructured). Every function saves a PNG atomically and returns its path."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from liposome_bench.io import atomic_write
from liposome_bench.metrics import CLASS_METRIC_LABELS, UNDEFINED
from liposome_bench.settings import AUGMENTATIONS

#: The per-class metrics of the report's bar chart (thesis figure 22).
BAR_METRICS = ("tpr", "tnr", "ppv", "npv", "f1")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colormap(name: str):
    """A matplotlib colormap by name (values in [0, 1] -> RGBA), for images
    drawn without a figure (galleries)."""
    import matplotlib

    return matplotlib.colormaps[name]


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight"), suffix=".png")
    return path


def plot_micrograph_crops(image, particles, path, *, classes=None, title=None) -> Path:
    """A micrograph with each imported particle outlined: its crop (dashed),
    its mask's outline and its class (``dataset import``; docs/data-formats.md).

    Parameters
    ----------
    image : ndarray, 2-D
        The micrograph.
    particles : list of dict
        Each with ``crop`` [x, y, width, height] (px in the micrograph),
        ``label`` and optionally ``mask`` (bool array of the crop's shape)
        and ``edge_cut`` (drawn with a red crop outline).
    path : path
        PNG to write.
    classes : sequence of str, optional
        Class order for the colours and legend (default: first seen).
    title : str, optional

    Returns
    -------
    Path
    """
    plt = _pyplot()
    from matplotlib.patches import Patch, Rectangle

    classes = list(classes or dict.fromkeys(p["label"] for p in particles))
    colours = plt.get_cmap("tab10")
    height, width = image.shape
    fig, ax = plt.subplots(figsize=(7.5, 7.5 * height / width + 0.4))
    lo, hi = np.percentile(image, [0.05, 99.95])
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    for p in particles:
        colour = colours(classes.index(p["label"]) % 10)
        x, y, w, h = p["crop"]
        ax.add_patch(
            Rectangle(
                (x - 0.5, y - 0.5),
                w,
                h,
                fill=False,
                lw=1.2,
                ls="--",
                edgecolor="red" if p.get("edge_cut") else colour,
            )
        )
        if p.get("mask") is not None:
            ax.contour(
                np.arange(x, x + w),
                np.arange(y, y + h),
                p["mask"].astype(float),
                levels=[0.5],
                colors=[colour],
                linewidths=1.2,
            )
        if p.get("name") is not None:
            ax.text(x + 2, y + 2, str(p["name"]), color=colour, fontsize=7, va="top")
    handles = [
        Patch(edgecolor=colours(i % 10), facecolor="none", label=c) for i, c in enumerate(classes)
    ]
    if any(p.get("edge_cut") for p in particles):
        handles.append(
            Patch(edgecolor="red", facecolor="none", ls="--", label="crop of an edge-cut particle")
        )
    return _finish_micrograph(fig, ax, handles, width, height, title, path)


def _finish_micrograph(fig, ax, handles, width, height, title, path) -> Path:
    """Legend below, axes fitted to the micrograph, title; save and close."""
    plt = _pyplot()

    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        ncol=4,
        fontsize=8,
        frameon=False,
    )
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_micrograph_predictions(image, particles, path, *, classes, title=None) -> Path:
    """A micrograph with each particle's mask outline coloured by its
    predicted class; abstentions outlined dashed in white with a "?"
    (``predict --overlays``; docs/deploy.md).

    Parameters
    ----------
    image : ndarray, 2-D
        The micrograph.
    particles : list of dict
        Each with ``crop`` [x, y, width, height] (px in the micrograph),
        ``mask`` (bool array of the crop's shape), ``predicted`` (a class
        name) and ``abstained`` (bool).
    path : path
        PNG to write.
    classes : sequence of str
        The model's classes, in order (colours and legend).
    title : str, optional

    Returns
    -------
    Path
    """
    plt = _pyplot()
    from matplotlib.lines import Line2D

    classes = list(classes)
    colours = plt.get_cmap("tab10")
    height, width = image.shape
    fig, ax = plt.subplots(figsize=(7.5, 7.5 * height / width + 0.4))
    lo, hi = np.percentile(image, [0.05, 99.95])
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    for p in particles:
        x, y, w, h = p["crop"]
        abstained = bool(p["abstained"])
        colour = "white" if abstained else colours(classes.index(p["predicted"]) % 10)
        # Padded by one pixel so a mask touching its crop's edge still closes.
        padded = np.pad(p["mask"].astype(float), 1)
        ax.contour(
            np.arange(x - 1, x + w + 1),
            np.arange(y - 1, y + h + 1),
            padded,
            levels=[0.5],
            colors=[colour],
            linewidths=1.4,
            linestyles="--" if abstained else "-",
        )
        if abstained:
            rows, cols = np.nonzero(p["mask"])
            ax.text(
                x + cols.mean(),
                y + rows.mean(),
                "?",
                color="white",
                fontsize=11,
                fontweight="bold",
                ha="center",
                va="center",
            )
    handles = [
        Line2D([], [], color=colours(i % 10), lw=1.6, label=c) for i, c in enumerate(classes)
    ]
    handles.append(Line2D([], [], color="0.4", lw=1.6, ls="--", label="abstained (?)"))
    return _finish_micrograph(fig, ax, handles, width, height, title, path)


def _level_label(value) -> str:
    if isinstance(value, (list, tuple)):
        if tuple(value) == AUGMENTATIONS:
            return "all"
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def plot_axis_f1(per_fold: dict, sweep: dict, grid: dict, axis: str, path) -> Path | None:
    """Per-class F1 by the levels of one axis of a sweep grid, as grouped
    bars (thesis Figures 17-21): one group per level, one bar per class;
    bar height the mean over folds (and over the grid's other axes, which
    the title names), whiskers the standard deviation.

    Parameters
    ----------
    per_fold : dict
        cell id -> array (n_folds, n_classes) of per-fold F1.
    sweep : dict
        The sweep folder's sweep.json.
    grid : dict
        One of ``sweep["grids"]``.
    axis : str
        One of the grid's axes.
    path : path
        PNG to write.

    Returns
    -------
    Path, or None when no cell of the grid has a finished fold.
    """
    classes = sweep["dataset"]["classes"]
    cells = sweep["cells"]
    levels = []
    values: dict = {}
    for cell_id in grid["cells"]:
        level = _level_label(cells[cell_id]["settings"].get(axis))
        if level not in levels:
            levels.append(level)
        folds = per_fold.get(cell_id)
        if folds is not None and len(folds):
            values.setdefault(level, []).append(folds)
    if not values:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(
        figsize=(max(4.5, 1.1 * len(levels) * len(classes) / 2), 3.6), layout="constrained"
    )
    width = 0.8 / len(classes)
    x = np.arange(len(levels))
    colours = plt.get_cmap("tab10")
    for j, cls in enumerate(classes):
        means, stds = [], []
        for level in levels:
            stack = (
                np.concatenate(values[level], axis=0)[:, j]
                if level in values
                else np.array([np.nan])
            )
            defined = stack[~np.isnan(stack)]
            means.append(defined.mean() if defined.size else np.nan)
            stds.append(defined.std(ddof=1) if defined.size > 1 else 0.0)
        pos = x - 0.4 + width * (j + 0.5)
        ax.bar(pos, np.nan_to_num(means), width, label=cls, color=colours(j))
        ax.errorbar(pos, means, yerr=stds, fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
    ax.set_xticks(
        x,
        levels,
        rotation=20 if max(len(v) for v in levels) > 10 else 0,
        ha="right" if max(len(v) for v in levels) > 10 else "center",
    )
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1 (mean ± sd over folds)")
    ax.set_xlabel(axis)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    others = [a for a in grid["axes"] if a != axis]
    title = f"{sweep['dataset']['problem']} — {grid['name']}: F1 per class by {axis}"
    if others:
        title += f"\n(averaged over {', '.join(others)})"
    if sweep["dataset"].get("synthetic"):
        title += "\nsynthetic data"
    ax.set_title(title, fontsize="medium")
    path = _save(fig, path)
    plt.close(fig)
    return path


def plot_coverage_curves(curves: dict, classes, path, *, title: str = "") -> Path | None:
    """Abstention: accuracy, and each class's precision, of the predictions
    kept against coverage (the share of particles not abstained), one line
    per model.

    Parameters
    ----------
    curves : dict
        Model name -> :func:`abstention.coverage_curve` result.
    classes : sequence of str
    path : path of the PNG
    title : str

    Returns
    -------
    Path, or None when there is no curve.
    """
    if not curves:
        return None
    plt = _pyplot()

    panels = ["accuracy", *[f"precision: {c}" for c in classes]]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(3.6 * len(panels), 3.4),
        sharex=True,
        squeeze=False,
        layout="constrained",
    )
    colours = plt.get_cmap("tab10")
    for m, (name, curve) in enumerate(curves.items()):
        coverage = np.asarray(curve["coverage"], dtype=np.float64)
        series = [curve["accuracy"], *curve["precision"]]
        for ax, values in zip(axes[0], series):
            ax.plot(
                coverage,
                np.asarray(values, dtype=np.float64),
                color=colours(m),
                label=name,
                drawstyle="steps-post",
                linewidth=1.4,
            )
    for ax, panel in zip(axes[0], panels):
        ax.set_title(panel)
        ax.set_xlim(1.0, 0.0)  # from keeping everything to abstaining on most
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("coverage (share not abstained)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("of the predictions kept")
    axes[0][0].legend(loc="lower left", fontsize="small")
    if title:
        fig.suptitle(title)
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_cells_f1(per_fold: dict, sweep: dict, path) -> Path | None:
    """Per-class F1 of every cell of a sweep (the SVM beside the CNNs, as in
    thesis Figure 22), mean ± sd over folds; cells without a finished fold
    are left out.

    Parameters
    ----------
    per_fold : dict
        cell id -> array (n_folds, n_classes) of per-fold F1.
    sweep : dict
        The sweep folder's sweep.json.
    path : path
        PNG to write.

    Returns
    -------
    Path, or None when no cell has a finished fold.
    """
    classes = sweep["dataset"]["classes"]
    cells = [c for c in sweep["cells"] if len(per_fold.get(c, ()))]
    if not cells:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(
        figsize=(max(6.0, 0.45 * len(cells) * len(classes)), 4.0), layout="constrained"
    )
    width = 0.8 / len(classes)
    x = np.arange(len(cells))
    colours = plt.get_cmap("tab10")
    for j, cls in enumerate(classes):
        values = [per_fold[c][:, j][~np.isnan(per_fold[c][:, j])] for c in cells]
        means = [v.mean() if v.size else np.nan for v in values]
        stds = [v.std(ddof=1) if v.size > 1 else 0.0 for v in values]
        pos = x - 0.4 + width * (j + 0.5)
        ax.bar(pos, np.nan_to_num(means), width, label=cls, color=colours(j))
        ax.errorbar(pos, means, yerr=stds, fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
    ax.set_xticks(x, cells, rotation=45, ha="right", fontsize="small")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1 (mean ± sd over folds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    title = f"{sweep['dataset']['problem']}: F1 per class of every cell"
    if sweep["dataset"].get("synthetic"):
        title += " (synthetic data)"
    ax.set_title(title, fontsize="medium")
    path = _save(fig, path)
    plt.close(fig)
    return path


# Report figures (liposome-bench report) ---------------------------------------


def _nan(value) -> float:
    return float("nan") if value is None else float(value)


def plot_metric_bars(summary: dict, path) -> Path:
    """Per-class TPR, TNR, PPV, NPV and F1 of every model as grouped bars
    (like thesis figure 22): bar height is the estimate from all out-of-fold
    predictions pooled, whiskers its 95 % bootstrap interval over particles."""
    plt = _pyplot()

    classes = summary["classes"]
    models = list(summary["models"])
    fig, axes = plt.subplots(
        1,
        len(classes),
        figsize=(4.2 * len(classes), 3.8),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(BAR_METRICS))
    colours = plt.get_cmap("tab10")
    for ax, cls in zip(axes[0], classes):
        for m, name in enumerate(models):
            entries = summary["models"][name]["per_class"][cls]
            pooled = np.array([_nan(entries[k].get("pooled")) for k in BAR_METRICS])
            ci = np.array(
                [[_nan(v) for v in (entries[k].get("ci") or [None, None])] for k in BAR_METRICS]
            )
            lower = np.clip(pooled - ci[:, 0], 0, None)
            upper = np.clip(ci[:, 1] - pooled, 0, None)
            pos = x - 0.4 + width * (m + 0.5)
            ax.bar(pos, np.nan_to_num(pooled), width, label=name, color=colours(m))
            ax.errorbar(
                pos,
                pooled,
                yerr=[lower, upper],
                fmt="none",
                ecolor="black",
                elinewidth=0.8,
                capsize=2,
            )
        ax.set_title(cls)
        ax.set_xticks(x, [CLASS_METRIC_LABELS[k] for k in BAR_METRICS])
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("pooled out-of-fold estimate\n(95 % CI over particles)")
    axes[0][-1].legend(loc="lower right", fontsize="small")
    fig.suptitle(f"{summary.get('dataset', {}).get('problem', '')}: per-class metrics")
    path = Path(path)
    _save(fig, path)
    plt.close(fig)
    return path


def plot_confusion_heatmaps(summary: dict, path) -> Path:
    """Fold-averaged row-normalised confusion matrix of every model, as
    annotated heatmaps side by side."""
    plt = _pyplot()

    classes = summary["classes"]
    models = list(summary["models"])
    fig, axes = plt.subplots(
        1,
        len(models),
        figsize=(3.4 * len(models) + 1.2, 3.8),
        squeeze=False,
        layout="constrained",
    )
    for ax, name in zip(axes[0], models):
        matrix = np.array(
            [
                [_nan(v) for v in row]
                for row in summary["models"][name]["confusion"]["normalised_mean"]
            ]
        )
        ax.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
        for i in range(len(classes)):
            for j in range(len(classes)):
                value = matrix[i, j]
                ax.text(
                    j,
                    i,
                    UNDEFINED if np.isnan(value) else f"{value:.2f}",
                    ha="center",
                    va="center",
                    color="white" if value > 0.6 else "black",
                    fontsize=9,
                )
        ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
        ax.set_yticks(range(len(classes)), classes if ax is axes[0][0] else [])
        ax.set_xlabel("predicted")
        ax.set_title(name)
    axes[0][0].set_ylabel("true")
    fig.suptitle("fold-averaged normalised confusion matrices")
    path = Path(path)
    _save(fig, path)
    plt.close(fig)
    return path


def plot_training_curves(histories: dict, path) -> Path | None:
    """Training and validation curves of every CNN fold: one panel per
    recorded quantity (``loss`` with ``val_loss``, ...), one line per fold.

    Parameters
    ----------
    histories : dict
        model -> list of (fold, history dict name -> list of per-epoch values).
    path : path of the PNG.

    Returns
    -------
    The path written, or None if no model recorded a history.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    panels = []  # (model, quantity)
    for model, folds in histories.items():
        names = []
        for _, history in folds:
            for n in history:
                base = n.removeprefix("val_")
                if base not in names:
                    names.append(base)
        panels += [(model, n) for n in names]
    if not panels:
        return None
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, layout="constrained"
    )
    colours = plt.get_cmap("tab10")
    for ax, (model, quantity) in zip(axes.ravel(), panels):
        for fold, history in histories[model]:
            for key, style in ((quantity, "-"), (f"val_{quantity}", "--")):
                values = history.get(key)
                if isinstance(values, list) and values:
                    epochs = np.arange(1, len(values) + 1)
                    ax.plot(
                        epochs,
                        [_nan(v) for v in values],
                        style,
                        color=colours(fold % 10),
                        label=f"fold {fold}{' val' if key.startswith('val_') else ''}",
                    )
        ax.set_title(f"{model}: {quantity}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    axes.ravel()[0].legend(fontsize="x-small", ncol=2)
    fig.suptitle("CNN training (solid) and validation (dashed) curves")
    path = Path(path)
    _save(fig, path)
    plt.close(fig)
    return path


# The report --------------------------------------------------------------------


def plot_montage(rows, labels, path, *, per_class: int) -> Path:
    """A grid of 8-bit particle images, one row per class (``synth.write_montage``):
    ``rows[i]`` the images of row i, all of one size, ``labels[i]`` its label."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    H, W = next(im.shape for row in rows for im in row)
    cell = 1.35
    fig = Figure(figsize=(cell * per_class + 1.6, cell * len(rows) * H / W + 0.2), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), per_class, squeeze=False)
    fig.subplots_adjust(
        left=1.5 / (cell * per_class + 1.6),
        right=0.995,
        top=0.99,
        bottom=0.01,
        wspace=0.04,
        hspace=0.04,
    )
    for ci, row in enumerate(rows):
        for j in range(per_class):
            ax = axes[ci, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(row):
                ax.imshow(row[j], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                ax.axis("off")
        axes[ci, 0].set_ylabel(labels[ci], rotation=0, ha="right", va="center", fontsize=10)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def plot_learning_curves(summary: dict, path) -> Path | None:
    """F1 against training particles (log x) from a ``curve`` summary: one
    panel per class and one for macro F1; each model's mean over folds with
    whiskers of ± one standard deviation, its fitted power law
    ``1 - F1 = b n^-c`` (dashed, extended to the crossing or 3x the data),
    and the crossing with its bootstrap interval (shaded; drawn only up to
    10x the data).

    Parameters
    ----------
    summary : dict
        ``curve.summarise_curve``'s result.
    path : path
        PNG to write.

    Returns
    -------
    Path, or None when no crossing entry (no point with both models) exists.
    """
    items = summary.get("crossings", [])
    if not items:
        return None
    panels = list(dict.fromkeys(item["class"] for item in items))
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.4 * len(panels), 3.3), layout="constrained", squeeze=False
    )
    colours = plt.get_cmap("tab10")
    models = list(dict.fromkeys([i["model_a"] for i in items] + [i["model_b"] for i in items]))
    for ax, cls in zip(axes[0], panels):
        drawn = set()
        for item in (i for i in items if i["class"] == cls):
            n = np.asarray(item["n"], dtype=np.float64)
            n_max = float(n.max())
            crossing = item.get("crossing")
            reach = max(3 * n_max, 1.3 * crossing) if crossing else 3 * n_max
            grid = np.geomspace(max(n.min() * 0.8, 1), min(reach, 10 * n_max), 100)
            for side in ("a", "b"):
                model, cell = item[f"model_{side}"], item[f"cell_{side}"]
                colour = colours(models.index(model))
                fit = item[f"fit_{side}"]
                if fit.get("c") is not None and fit.get("log_b") is not None:
                    ax.plot(
                        grid,
                        1 - np.exp(fit["log_b"] - fit["c"] * np.log(grid)),
                        "--",
                        color=colour,
                        lw=1,
                    )
                if cell in drawn:
                    continue
                drawn.add(cell)
                sd = np.array([_nan(v) for v in item[f"sd_{side}"]])
                ax.errorbar(
                    n,
                    item[f"f1_{side}"],
                    yerr=np.nan_to_num(sd),
                    fmt="o-",
                    color=colour,
                    capsize=2,
                    label=model,
                    ms=4,
                )
            if crossing:
                ax.axvline(crossing, color="grey", lw=0.8)
                low, high = item.get("low"), item.get("high")
                if low is not None:
                    ax.axvspan(
                        low, high if high is not None else 10 * n_max, color="grey", alpha=0.15
                    )
            ax.axvspan(2 * n_max, grid.max() * 1.05, color="orange", alpha=0.06, lw=0)
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_title(cls, fontsize="medium")
        ax.set_xlabel(
            "training particles" + (" (all classes)" if cls == "macro F1" else f" of {cls}")
        )
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("F1 (mean ± sd over folds)")
    axes[0][-1].legend(fontsize="small", loc="lower right")
    title = (
        f"{summary['problem']}: learning curves; dashed: fitted power law, "
        "grey: crossing (bootstrap 95 %), orange: beyond 2x the data (a guess)"
    )
    if summary.get("synthetic"):
        title += " — synthetic data"
    fig.suptitle(title, fontsize="small")
    path = _save(fig, path)
    plt.close(fig)
    return path
