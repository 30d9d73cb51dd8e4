"""Draw docs/img/import-micrograph.png: a fixture micrograph with the crops
`dataset import coco` cut from it (docs/data-formats.md, "From micrographs").

    python docs/img/make_import_figure.py
"""

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from liposome_bench.dataset import load_dataset  # noqa: E402
from liposome_bench.importers import import_coco, read_micrograph  # noqa: E402
from liposome_bench.plotting import plot_micrograph_crops  # noqa: E402

MICS = ROOT / "fixtures" / "micrographs"


def main(micrograph="m01", file="m01.tif"):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ds"
        import_coco(MICS / "coco.json", MICS / "images", out, surround=20)
        dataset = load_dataset(out)
        objects = {str(o["Id"]): o for o in json.loads((out / "particles.json").read_text())}
        particles = [
            {
                "crop": objects[p.id]["Crop"],
                "label": p.label,
                "mask": p.mask,
                "edge_cut": objects[p.id]["EdgeCut"],
            }
            for p in dataset.particles
            if p.meta["micrograph"] == micrograph
        ]
        image, px, _ = read_micrograph(MICS / "images" / file)
        path = plot_micrograph_crops(
            image,
            particles,
            ROOT / "docs" / "img" / "import-micrograph.png",
            classes=dataset.problem.classes,
            title=f"fixtures/micrographs/images/{file} ({px:g} nm/px): crops with "
            "--surround 20 (dashed) and masks (solid), by class (synthetic)",
        )
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
