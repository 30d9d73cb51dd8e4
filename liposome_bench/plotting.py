"""Matplotlib figures (one function per figure; report.py and the commands
call them). Every figure is written as PNG, atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from liposome_bench.dataset import atomic_write


def _save_png(fig, path: Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight"),
                 suffix=".png")
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["accuracy", *[f"precision: {c}" for c in classes]]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), sharex=True,
                             squeeze=False, layout="constrained")
    colours = plt.get_cmap("tab10")
    for m, (name, curve) in enumerate(curves.items()):
        coverage = np.asarray(curve["coverage"], dtype=np.float64)
        series = [curve["accuracy"], *curve["precision"]]
        for ax, values in zip(axes[0], series):
            ax.plot(coverage, np.asarray(values, dtype=np.float64), color=colours(m),
                    label=name, drawstyle="steps-post", linewidth=1.4)
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
    out = _save_png(fig, path)
    plt.close(fig)
    return out
