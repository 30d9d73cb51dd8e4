"""Matplotlib figures (one module for all plotting; functions are added, not
restructured). Every function saves a PNG atomically and returns its path."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from liposome_bench.dataset import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight"),
                 suffix=".png")
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
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, lw=1.2, ls="--",
                               edgecolor="red" if p.get("edge_cut") else colour))
        if p.get("mask") is not None:
            ax.contour(np.arange(x, x + w), np.arange(y, y + h), p["mask"].astype(float),
                       levels=[0.5], colors=[colour], linewidths=1.2)
        if p.get("name") is not None:
            ax.text(x + 2, y + 2, str(p["name"]), color=colour, fontsize=7, va="top")
    handles = [Patch(edgecolor=colours(i % 10), facecolor="none", label=c)
               for i, c in enumerate(classes)]
    if any(p.get("edge_cut") for p in particles):
        handles.append(Patch(edgecolor="red", facecolor="none", ls="--",
                             label="crop of an edge-cut particle"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=4,
              fontsize=8, frameon=False)
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
