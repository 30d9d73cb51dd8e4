"""Regenerate the pictures of docs/synthetic-data.md.

    python docs/img/make_montages.py

Writes montage-lamellarity.png and montage-encapsulation.png (random
particles per class, ``write_montage``) and realism.png: one example of
each realism element of the generator, with the particle's mask outlined
in red. The examples are picked from the generator's own scene description
(it records which particles touch a neighbour, lie on the micrograph's edge,
and so on), so each panel shows what its title says.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from liposome_bench import synth  # noqa: E402


def generate_with_scenes(problem, n, seed):
    """The data set and the generator's scene description of it."""
    kept = {}
    draw = synth._draw_scenes

    def keep(*args, **kwargs):
        kept["scenes"] = draw(*args, **kwargs)
        return kept["scenes"]

    synth._draw_scenes = keep
    try:
        dataset = synth.generate_dataset(problem, n=n, seed=seed)
    finally:
        synth._draw_scenes = draw
    counts = dataset.class_counts()
    _, labels, appearance, borderline = synth.plan_appearance(problem, counts, seed)
    return dataset, kept["scenes"], labels, appearance, borderline


def first(condition, skip=0):
    found = np.flatnonzero(condition)
    return int(found[min(skip, len(found) - 1)]) if len(found) else None


def realism_panels():
    lam, s, labels, appearance, borderline = generate_with_scenes("lamellarity", 3000, 0)
    enc, e, elabels, eappearance, eborderline = generate_with_scenes("encapsulation", 3000, 0)
    ne = s.neighbours
    touching = (
        (ne["dens"][:, 0] > 0)
        & (ne["dist"][:, 0] - ne["r"][:, 0] - s.extent < -3.0)
        & (ne["r"][:, 0] > 40)
        & (s.extent < 55)
        & (s.contrast > np.median(s.contrast))
    )
    classes = lam.problem.classes
    ec = enc.problem.classes
    mic = s.micrograph
    panels = [
        (lam, first(touching & ~s.merge & (labels == 0)), "touching neighbour"),
        (lam, first(s.merge), "mask merged\nwith a neighbour"),
        (lam, first(s.cut_side >= 0), "cut by the\nmicrograph edge"),
        (
            lam,
            first((np.abs(s.mask_shift).sum(axis=1) >= 2) & (s.mask_grow != 0)),
            "mask off by 1-2 px",
        ),
        (
            lam,
            first((s.blobs["opacity"][:, 1] > 0.75) & (s.blobs["r"][:, 1] > 30)),
            "textured ice crystal",
        ),
        (
            lam,
            first((s.blobs["opacity"][:, 1] > 0) & (s.blobs["opacity"][:, 1] < 0.65)),
            "thin ice\ncontamination",
        ),
        (
            lam,
            first(borderline & (labels == 0) & (appearance == 1)),
            "labelled unilamellar,\nlooks multilamellar",
        ),
        (
            lam,
            first(borderline & (labels == 2) & (appearance == 1)),
            "labelled uncertain,\nlooks multilamellar",
        ),
        (
            enc,
            first(eborderline & (elabels == 0) & (eappearance == 2)),
            "labelled full,\nlooks uncertain",
        ),
        (
            enc,
            first(eborderline & (elabels == 1) & (eappearance == 2)),
            "labelled empty,\nlooks uncertain",
        ),
    ]
    # Two micrographs side by side: thin, bright ice against thick, dim ice.
    level = np.array([s.level[mic == m].mean() for m in range(mic.max() + 1)])
    for m, name in ((int(np.argmax(level)), "bright"), (int(np.argmin(level)), "dim")):
        members = np.flatnonzero((mic == m) & (labels == 0))[:2]
        for k, i in enumerate(members):
            panels.append(
                (
                    lam,
                    int(i),
                    f"micrograph {lam.particles[i].meta['micrograph']}\n({name} exposure)",
                )
            )
    return [(ds, i, title) for ds, i, title in panels if i is not None], classes, ec


def write_realism(path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels, _, _ = realism_panels()
    cols = 7
    rows = (len(panels) + cols - 1) // cols
    fig = Figure(figsize=(2.0 * cols, 2.35 * rows), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (ds, i, title) in zip(axes.flat, panels):
        p = ds.particles[i]
        ax.imshow(p.image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.contour(p.mask, levels=[0.5], colors="red", linewidths=0.6)
        ax.set_title(f"{title}\n[{p.label}]", fontsize=7.5)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.01, wspace=0.05, hspace=0.45)
    fig.savefig(path, format="png")


def main():
    for problem in ("lamellarity", "encapsulation"):
        dataset = synth.generate_dataset(problem, n=3000, seed=0)
        synth.write_montage(dataset, HERE / f"montage-{problem}.png", per_class=8, seed=0)
    write_realism(HERE / "realism.png")
    print("written:", ", ".join(str(p.name) for p in sorted(HERE.glob("*.png"))))


if __name__ == "__main__":
    main()
