"""Particle galleries: which particles, in which order, on a small fixed
result; drawing them from the dataset on disk; the report's section; and
``show`` on a real (quick benchmark) results folder."""

import numpy as np
import pytest
from click.testing import CliRunner
from test_comparison import run_quick_once

from liposome_bench import gallery
from liposome_bench.cli import cli
from liposome_bench.dataset import LAMELLARITY, Dataset, Particle, write_export
from liposome_bench.errors import ResultsError
from liposome_bench.folds import Folds
from liposome_bench.results import FoldResult, ResultsDir

CLASSES = list(LAMELLARITY.classes)
U, M, C = 0, 1, 2  # unilamellar, multilamellar, uncertain
NAN = float("nan")

# id, fold, true class, CNN probabilities, SVM prediction, SVM decision values
# (unilamellar vs multilamellar, unilamellar vs uncertain, multilamellar vs uncertain).
ROWS = [
    ("1", 0, U, (0.90, 0.05, 0.05), U, (1.0, 1.0, 0.0)),
    ("2", 0, U, (0.20, 0.70, 0.10), U, (0.5, 0.5, 0.0)),
    ("10", 0, U, (0.20, 0.70, 0.10), M, (-1.0, 0.2, 0.5)),
    ("3", 0, M, (0.10, 0.60, 0.30), U, (0.4, 0.1, 0.0)),
    ("4", 0, C, (0.50, 0.10, 0.40), C, (0.0, -1.0, -1.0)),
    ("5", 1, U, (0.60, 0.30, 0.10), U, (1.0, 1.0, 1.0)),
    ("6", 1, U, (0.10, 0.80, 0.10), M, (-0.2, 0.1, 0.3)),
    ("7", 1, M, (0.10, 0.50, 0.40), M, (-1.0, 0.0, 1.0)),
    ("8", 1, C, (0.20, 0.20, 0.60), U, (0.3, 0.2, 0.0)),
    ("9", 1, U, (0.70, 0.20, 0.10), U, (1.0, 1.0, 0.0)),
    ("11", 1, U, (0.80, 0.10, 0.10), U, (1.0, 1.0, 0.0)),
    ("12", 1, U, (0.80, 0.10, 0.10), U, (1.0, NAN, 0.0)),
]

# With --gallery-size 2: (file stem, ids in drawing order, particles that qualified).
EXPECTED = [
    # SVM errors, most confident (largest margin) first.
    ("errors-svm-unilamellar-as-multilamellar", ["10", "6"], 2),
    ("errors-svm-multilamellar-as-unilamellar", ["3"], 1),
    ("errors-svm-uncertain-as-unilamellar", ["8"], 1),
    # CNN errors: 6 (p=0.8), then 2 and 10 tie at p=0.7 and go by id, 2 < 10.
    ("errors-lipnet-4-unilamellar-as-multilamellar", ["6", "2"], 3),
    ("errors-lipnet-4-uncertain-as-unilamellar", ["4"], 1),
    # Disagreements: the wrong model's most confident errors first; 3 and 8
    # tie at SVM margin 0.5.
    ("lipnet-4-right-svm-wrong", ["3", "8"], 2),
    ("svm-right-lipnet-4-wrong", ["2", "4"], 2),
    # Rare classes (fewer than 12 / 3 particles): least confident correct first.
    ("least-confident-svm-multilamellar", ["7"], 1),
    ("least-confident-svm-uncertain", ["4"], 1),
    ("least-confident-lipnet-4-multilamellar", ["7", "3"], 2),
    ("least-confident-lipnet-4-uncertain", ["8"], 1),
]


def _dataset():
    particles = []
    rng = np.random.default_rng(0)
    for pid, _, label, *_ in ROWS:
        image = (rng.random((24, 24)) * 200).astype(np.uint8)
        mask = np.zeros((24, 24), dtype=bool)
        mask[5:19, 6:18] = True
        particles.append(Particle(pid, CLASSES[label], image, mask, 1.0))
    return Dataset(LAMELLARITY, particles, description="hand-made", synthetic=True)


def make_fixed_results(path):
    """The results of ROWS: the SVM (decision values) and lipnet-4
    (probabilities) on 2 folds, written as the svm and cnn commands would."""
    dataset = _dataset()
    fold_of = np.array([r[1] for r in ROWS])
    folds = Folds(2, 0, dataset.fingerprint(), fold_of)
    results = ResultsDir(path)
    results.prepare(dataset, folds, "svm", {"feature_set": "vironova"})
    results.prepare(
        dataset, folds, "lipnet-4", {"kind": "cnn", "input_mode": "masked", "input_size": 12}
    )
    for f in range(2):
        rows = [r for r in ROWS if r[1] == f]
        ids = [r[0] for r in rows]
        y = np.array([r[2] for r in rows])
        probs = np.array([r[3] for r in rows])
        results.save_fold(
            FoldResult(
                "svm",
                f,
                ids,
                y,
                np.array([r[4] for r in rows]),
                np.array([r[5] for r in rows]),
                [
                    "unilamellar_vs_multilamellar",
                    "unilamellar_vs_uncertain",
                    "multilamellar_vs_uncertain",
                ],
                "decision",
            ),
            CLASSES,
        )
        results.save_fold(
            FoldResult("lipnet-4", f, ids, y, probs.argmax(axis=1), probs, CLASSES, "probability"),
            CLASSES,
        )
    return dataset, results.path


@pytest.fixture
def fixed(tmp_path):
    return make_fixed_results(tmp_path / "results")


def test_confidence_is_probability_or_margin(fixed):
    _, path = fixed
    classes, preds = gallery.read_predictions(path)
    assert classes == CLASSES and list(preds) == ["svm", "lipnet-4"]
    svm, cnn = preds["svm"], preds["lipnet-4"]
    where = svm.index()
    # Predicted multilamellar: -(-1.0) + 0.5; predicted uncertain: 1 + 1;
    # a missing (NaN) pair counts 0.
    assert svm.confidence[where["10"]] == pytest.approx(1.5)
    assert svm.confidence[where["4"]] == pytest.approx(2.0)
    assert svm.confidence[where["12"]] == pytest.approx(1.0)
    assert cnn.confidence[cnn.index()["6"]] == pytest.approx(0.8)


def test_selection_which_ids_in_which_order(fixed):
    _, path = fixed
    classes, preds = gallery.read_predictions(path)
    chosen = gallery.select_galleries(preds, classes, size=2)
    assert [(g.key, g.ids, g.total) for g in chosen] == EXPECTED


def test_a_larger_gallery_keeps_the_order(fixed):
    _, path = fixed
    classes, preds = gallery.read_predictions(path)
    chosen = {g.key: g.ids for g in gallery.select_galleries(preds, classes, size=16)}
    assert chosen["errors-lipnet-4-unilamellar-as-multilamellar"] == ["6", "2", "10"]


def test_rare_classes_hold_less_than_an_even_share():
    assert gallery.rare_classes([0] * 8 + [1] * 2 + [2] * 2, 3) == [1, 2]
    assert gallery.rare_classes([0, 1, 2], 3) == []


def test_galleries_are_drawn_from_the_dataset_on_disk(fixed, tmp_path):
    dataset, path = fixed
    export = write_export(dataset, tmp_path / "export")
    out = gallery.render_galleries(path, tmp_path / "figures", size=2, data=export)
    assert out.note is None and out.source == str(export)
    assert [(g.key, g.ids) for g, _ in out.galleries] == [(k, ids) for k, ids, _ in EXPECTED]
    for _, png in out.galleries:
        assert png.is_file() and png.stat().st_size > 1000
    # No fold network was saved, and the report says so instead of drawing none silently.
    assert any("lipnet-4: no saliency maps" in n for n in out.saliency_notes)
    lines = gallery.gallery_section(out, lambda p: p.name)
    text = "\n".join(lines)
    assert "![lipnet-4 right, svm wrong](lipnet-4-right-svm-wrong.png)" in text
    assert "| 1 | `6` | unilamellar | 2 | multilamellar (p=0.80) |" in text
    assert "| 2 | `4` | uncertain | 1 | unilamellar (p=0.50) | uncertain (margin +2.00) |" in text


def test_missing_dataset_is_said_not_skipped(fixed, tmp_path):
    _, path = fixed
    out = gallery.render_galleries(path, tmp_path / "figures")
    assert out.galleries == [] and "was not found" in out.note
    text = "\n".join(gallery.gallery_section(out, str))
    assert "**No galleries.**" in text and "--data PATH" in text


def test_a_dataset_with_other_labels_is_refused(fixed, tmp_path):
    dataset, path = fixed
    dataset.particles[2].label = "uncertain"  # particle 10
    export = write_export(dataset, tmp_path / "export")
    out = gallery.render_galleries(path, tmp_path / "figures", data=export)
    assert out.galleries == [] and "labels differently particle(s) 10" in out.note


def test_the_export_is_read_for_the_wanted_particles_only(fixed, tmp_path):
    dataset, path = fixed
    export = write_export(dataset, tmp_path / "export")
    labels = {p.id: p.label for p in dataset.particles}
    lookup = gallery.find_particles(path, ["6", "10"], labels, data=export)
    assert sorted(lookup.particles) == ["10", "6"] and len(lookup.dataset) == 2
    np.testing.assert_array_equal(lookup.particles["6"].image, dataset.particles[6].image)


def test_show_needs_a_known_particle(fixed):
    _, path = fixed
    with pytest.raises(ResultsError, match="Particle 99 is not among the predictions"):
        gallery.show_particle(path, "99")


# On a real results folder (the session's quick benchmark of the tiny export,
# with its saved fold networks) ------------------------------------------------------


@pytest.fixture
def quick_run(tmp_path_factory, tiny_export):
    return run_quick_once(tmp_path_factory, tiny_export)


def test_report_links_galleries_with_saliency(quick_run, tmp_path):
    from liposome_bench.report import render_report

    out, _ = quick_run
    path = render_report(out, tmp_path / "report.md", gallery_size=4, filters=True)
    text = path.read_text()
    assert "## Particle galleries" in text and "Grad-CAM" in text
    assert "## Learned filters and activations" in text
    figures = tmp_path / "report-figures" / "galleries"
    assert (figures / "filters-lipnet-4.png").is_file()
    pngs = sorted(figures.glob("errors-*.png"))
    assert pngs, "the quick run's models make errors"
    for png in pngs:
        assert f"](report-figures/galleries/{png.name})" in text


def test_show_prints_every_model_and_writes_the_image(quick_run, tmp_path):
    import pandas as pd

    out, _ = quick_run
    table = pd.read_csv(out / "predictions.csv", dtype={"id": str})
    pid = table["id"].iloc[-1]
    result = CliRunner().invoke(
        cli, ["show", pid, "--results", str(out), "--out", str(tmp_path)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert f"particle {pid}: true class {table['label'].iloc[-1]}" in result.output
    assert "svm" in result.output and "lipnet-4" in result.output
    assert (tmp_path / f"particle-{pid}.png").is_file()


def test_show_refuses_an_unknown_id(quick_run):
    out, _ = quick_run
    result = CliRunner().invoke(cli, ["show", "no-such-id", "--results", str(out)])
    assert result.exit_code == 2
    assert result.output.startswith("Error: Particle no-such-id is not among the predictions")


@pytest.mark.parametrize(
    "model, mode, scale",
    [
        ("lipnet-4", "masked", None),
        ("lipnet-4", "surrounding", None),
        ("lipnet-fcn", "cropped", None),
        ("lipnet-4", "masked", "keep"),
    ],
)
def test_tiles_are_the_network_inputs(tiny_dataset, model, mode, scale):
    from liposome_bench.cnn import prepare_images

    size = 16
    keep = model == "lipnet-fcn" or scale == "keep"
    expected = prepare_images(tiny_dataset, mode, size, keep_size=keep)
    rows = [3, 30, 44]
    view = gallery.model_view(
        model,
        {"kind": "cnn", "input_mode": mode, "input_size": size, "input_scale": scale},
        [tiny_dataset.particles[i] for i in rows],
        whole=tiny_dataset,
    )
    np.testing.assert_allclose(view.inputs, expected[rows], atol=1e-6)
    for window, mask in zip(view.windows, view.masks):
        assert window.shape == mask.shape == (size, size)
        assert 0 < mask.sum() < size * size


def test_report_command_draws_from_a_moved_dataset(fixed, tmp_path):
    dataset, path = fixed
    export = write_export(dataset, tmp_path / "moved")
    result = CliRunner().invoke(
        cli,
        ["report", str(path), "--data", str(export), "--gallery-size", "2"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    text = (path / "report.md").read_text()
    assert "report-figures/galleries/errors-svm-unilamellar-as-multilamellar.png" in text
    assert "**No galleries.**" not in text
    result = CliRunner().invoke(cli, ["report", str(path), "--gallery-size", "0"])
    assert result.exit_code == 0 and "## Particle galleries" not in (path / "report.md").read_text()


def test_saliency_is_capped_and_the_report_says_so(quick_run, tmp_path):
    out, _ = quick_run
    drawn = gallery.render_galleries(out, tmp_path / "figures", size=4, max_saliency=3)
    assert drawn.saliency_count == 3
    assert any("saliency for the first 3 of" in n for n in drawn.saliency_notes)
    first = drawn.galleries[0][1]
    # A later report with smaller galleries leaves no stale gallery behind.
    kept = gallery.render_galleries(out, tmp_path / "figures", size=1, saliency=False)
    assert sorted((tmp_path / "figures" / "galleries").glob("*.png")) == sorted(
        p for _, p in kept.galleries
    )
    assert first.is_file()
