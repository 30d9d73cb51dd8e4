"""Draw docs/img/predict-overlay.png: `predict --overlays` on a fixture
micrograph (docs/deploy.md, "Predictions back on the micrographs").

The fixture's 15 synthetic particles are imported, an SVM (fixed C and gamma:
two uncertain particles are too few for a grid search) is trained on them on
2 folds, and the same particles are predicted with --min-confidence 0.5.
Synthetic data and a model predicting its own training particles: the
figure shows the drawing, not an accuracy.

    python docs/img/make_overlay_figure.py
"""

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from click.testing import CliRunner  # noqa: E402

from liposome_bench.cli import cli  # noqa: E402

MICS = ROOT / "fixtures" / "micrographs"


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exit_code != 0:
        raise SystemExit(result.output)
    return result.output


def main(micrograph="m03"):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run(
            "dataset", "import", "coco", MICS / "coco.json", "--images", MICS / "images",
            "--out", tmp / "ds", "--pixel-size", "2.5",
        )  # fmt: skip
        (tmp / "svm.toml").write_text("[svm]\nC = 8.0\ngamma = 0.0078125\n")
        run(
            "train", "--model", "svm", "--data", tmp / "ds", "--folds", "2",
            "--config", tmp / "svm.toml", "--out", tmp / "m",
        )  # fmt: skip
        run(
            "predict", tmp / "m", "--data", tmp / "ds", "--min-confidence", "0.5",
            "--overlays", tmp / "overlays", "--out", tmp / "p.csv",
        )  # fmt: skip
        target = ROOT / "docs" / "img" / "predict-overlay.png"
        shutil.copyfile(tmp / "overlays" / f"{micrograph}.png", target)
        print(f"Wrote {target}")


if __name__ == "__main__":
    main()
