"""Particle galleries of a results folder: which particles each model gets
wrong, where the SVM and a CNN disagree, and which correct predictions of
the rare classes were nearly missed, drawn as the models saw them, with
Grad-CAM saliency beside each CNN input (``saliency.py``).

Everything is read from the results folder (predictions, saved fold models)
and the dataset it was run on; nothing is retrained. The choice of particles
is deterministic (:func:`select_galleries`):

``errors-<model>-<true>-as-<predicted>``
    each off-diagonal confusion cell of each model: up to N particles,
    highest-confidence errors first;
``<a>-right-<b>-wrong``
    the paired disagreements behind the verdict (the CNN right and the SVM
    wrong, and the reverse): the wrong model's most confident errors first;
``least-confident-<model>-<class>``
    the least confident correct predictions of each rare class (a class
    with less than an even share of the particles).

Ties are broken by particle id (numerically where ids are numbers). A CNN's
confidence is its softmax probability of the predicted class; the SVM's is
its *margin*, the summed one-vs-one decision values of the predicted class
against the others (LIBSVM's tie-breaking confidence, ``svm._ovr_from_ovo``).

Drawing uses PIL only (fast: a default lamellarity run's galleries take a
few seconds); tiles show the CNN input at its input mode and size, or the
SVM's masked crop at full resolution, with the mask outline in yellow.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liposome_bench.plotting import colormap
from liposome_bench.io import atomic_write
from liposome_bench import registry
from liposome_bench.errors import ConfigError, DatasetError, LiposomeBenchError, ResultsError
from liposome_bench.outputs import check_apart, check_in_results
from liposome_bench.results import ResultsDir
from liposome_bench import saliency
from liposome_bench.cnn import (
    keep_size_scale,
    keeps_size,
    mask_window,
    particle_window,
    prepare_images,
    window_lengths,
)
from liposome_bench.dataset import (
    Dataset,
    EXPORT_JSON,
    IMAGES_DIR,
    LAMELLARITY,
    MASKS_DIR,
    META_JSON,
    load_dataset,
)
from liposome_bench.models import INPUT_SIZES
from liposome_bench.saliency import MAX_SALIENCY_PARTICLES
from liposome_bench.synth import GENERATOR_VERSION, default_cache_dir

log = logging.getLogger(__name__)

#: Particles per gallery unless ``--gallery-size`` says otherwise.
GALLERY_SIZE = 16
#: Side of one image panel of a tile, in pixels.
PANEL = 96
#: Tiles are at least this wide, so their text fits.
MIN_TILE_WIDTH = 136
COLUMNS = 8
OUTLINE = (255, 214, 0)
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
#: Standardised intensities (mean 0, sd 1, cnn.prepare_images) shown from
#: black at -CONTRAST to white at +CONTRAST.
CONTRAST = 3.0


# Predictions -----------------------------------------------------------------


@dataclass
class ModelPredictions:
    """Every out-of-fold prediction of one finished model, in fold order."""

    name: str
    kind: str  # "probability" (CNN) or "decision" (SVM)
    ids: list[str]
    y_true: np.ndarray
    y_pred: np.ndarray
    fold: np.ndarray
    scores: np.ndarray
    score_names: list[str]
    confidence: np.ndarray = field(default=None)
    _index: dict | None = field(default=None, repr=False)

    @property
    def is_cnn(self) -> bool:
        """An image model (saliency and activation maps apply)."""
        return is_image_model(self.name)

    @property
    def has_probabilities(self) -> bool:
        """Its scores are class probabilities (else decision values)."""
        return self.kind == "probability"

    def index(self) -> dict:
        """Particle id -> row."""
        if self._index is None:
            self._index = {pid: i for i, pid in enumerate(self.ids)}
        return self._index


def is_image_model(name: str) -> bool:
    """Whether model ``name`` is registered with an image input size (a
    LipNet); SVM rows (``svm-<set>``) and other families are not."""
    try:
        return registry.get(name).input_size is not None
    except ConfigError:
        return False


def read_predictions(results_dir) -> tuple[list[str], dict]:
    """The classes and the predictions of every model of ``results_dir``
    whose folds have all finished.

    Returns
    -------
    classes : list of str
    predictions : dict model name -> ModelPredictions
    """
    results = ResultsDir(results_dir)
    run = results.read_run()
    if not run:
        raise ResultsError(
            f"{results.path} is not a results folder (no run.json). "
            "Pass the --out folder of a benchmark, svm or cnn run."
        )
    classes = list(run["dataset"]["classes"])
    k = (run.get("folds") or {}).get("k")
    out = {}
    for name in results.model_names():
        folds = results.load_model(name)
        if not folds or (k is not None and len(folds) != k):
            continue
        pred = ModelPredictions(
            name=name,
            kind=folds[0].score_kind,
            ids=[pid for r in folds for pid in r.ids],
            y_true=np.concatenate([r.y_true for r in folds]),
            y_pred=np.concatenate([r.y_pred for r in folds]),
            fold=np.concatenate([np.full(len(r.ids), r.fold) for r in folds]),
            scores=np.concatenate([r.scores for r in folds]),
            score_names=list(folds[0].score_names),
        )
        pred.confidence = confidence(pred, classes)
        out[name] = pred
    return classes, out


def confidence(pred: ModelPredictions, classes) -> np.ndarray:
    """Per particle, how sure the model was of its prediction: the softmax
    probability of the predicted class (CNN), or the SVM's margin, the sum of
    the one-vs-one decision values for the predicted class against each other
    class (pairs missing from a fold's training data count 0)."""
    n = len(pred.ids)
    rows = np.arange(n)
    if pred.has_probabilities:
        column = {name: j for j, name in enumerate(pred.score_names)}
        order = [column.get(c) for c in classes]
        if any(j is None for j in order):
            return np.full(n, np.nan)
        return pred.scores[:, order][rows, pred.y_pred]
    margin = np.zeros((n, len(classes)))
    column = {name: j for j, name in enumerate(pred.score_names)}
    for a in range(len(classes)):
        for b in range(a + 1, len(classes)):
            j = column.get(f"{classes[a]}_vs_{classes[b]}")
            if j is None:
                continue
            values = np.nan_to_num(pred.scores[:, j])
            margin[:, a] += values
            margin[:, b] -= values
    return margin[rows, pred.y_pred]


# Which particles -----------------------------------------------------------------


@dataclass
class Gallery:
    """One montage: its particles in drawing order and what they have in common."""

    key: str  # file stem
    title: str
    description: str
    model: str  # the model whose input is drawn
    ids: list[str]
    total: int  # particles that qualified; ``ids`` holds the first N
    others: tuple = ()  # further models whose prediction each tile names


def id_key(pid: str):
    """Sort key of a particle id: numbers numerically, then other ids as text."""
    return (0, int(pid), "") if pid.isdigit() else (1, 0, pid)


def _ordered(ids, values, descending: bool) -> list[str]:
    """``ids`` by ``values`` (NaN last), ties by id."""

    def key(item):
        pid, value = item
        if value is None or np.isnan(value):
            return (1, 0.0, id_key(pid))
        return (0, -value if descending else value, id_key(pid))

    return [pid for pid, _ in sorted(zip(ids, values), key=key)]


def rare_classes(y_true, n_classes: int) -> list[int]:
    """Classes holding less than an even share (1 / n_classes) of the particles."""
    counts = np.bincount(np.asarray(y_true, dtype=np.int64), minlength=n_classes)
    return [c for c in range(n_classes) if 0 < counts[c] < counts.sum() / n_classes]


def _slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in str(text))
    return "-".join(part for part in keep.split("-") if part)


def select_galleries(predictions: dict, classes, size: int = GALLERY_SIZE) -> list[Gallery]:
    """The galleries of a results folder's predictions (module docstring).

    Parameters
    ----------
    predictions : dict model -> ModelPredictions
    classes : list of str
    size : int
        At most this many particles per gallery.

    Returns
    -------
    list of Gallery, empty ones left out: every model's error cells (true
    class, then predicted class, in class order), then the disagreements of
    the SVM with each CNN, then the least confident correct predictions.
    """
    galleries = []
    for name, p in predictions.items():
        for t in range(len(classes)):
            for q in range(len(classes)):
                if t == q:
                    continue
                hit = np.flatnonzero((p.y_true == t) & (p.y_pred == q))
                if not hit.size:
                    continue
                ids = _ordered([p.ids[i] for i in hit], p.confidence[hit], descending=True)
                galleries.append(
                    Gallery(
                        f"errors-{_slug(name)}-{_slug(classes[t])}-as-{_slug(classes[q])}",
                        f"{name}: {classes[t]} called {classes[q]}",
                        f"{hit.size} particle(s); the most confident errors first.",
                        name,
                        ids[:size],
                        int(hit.size),
                    )
                )
    base = registry.baseline().names[0]
    svm = predictions.get(base)
    for name, p in predictions.items():
        # Every model against the SVM, but not the SVM's own rows (svm-<set>).
        if svm is None or p.kind == svm.kind:
            continue
        where = svm.index()
        common = [i for i, pid in enumerate(p.ids) if pid in where]
        j = np.array([where[p.ids[i]] for i in common], dtype=np.int64)
        i = np.array(common, dtype=np.int64)
        if not i.size:
            continue
        cnn_right = p.y_pred[i] == p.y_true[i]
        svm_right = svm.y_pred[j] == svm.y_true[j]
        for right, wrong, mask, conf in (
            (name, base, cnn_right & ~svm_right, svm.confidence[j]),
            (base, name, svm_right & ~cnn_right, p.confidence[i]),
        ):
            hit = np.flatnonzero(mask)
            if not hit.size:
                continue
            ids = _ordered([p.ids[i[h]] for h in hit], conf[hit], descending=True)
            galleries.append(
                Gallery(
                    f"{_slug(right)}-right-{_slug(wrong)}-wrong",
                    f"{right} right, {wrong} wrong",
                    f"{hit.size} particle(s) of the paired comparison {name} vs {base}; "
                    f"{wrong}'s most confident errors first.",
                    name,
                    ids[:size],
                    int(hit.size),
                    others=(base,),
                )
            )
    for name, p in predictions.items():
        for c in rare_classes(p.y_true, len(classes)):
            hit = np.flatnonzero((p.y_true == c) & (p.y_pred == c))
            if not hit.size:
                continue
            ids = _ordered([p.ids[i] for i in hit], p.confidence[hit], descending=False)
            galleries.append(
                Gallery(
                    f"least-confident-{_slug(name)}-{_slug(classes[c])}",
                    f"{name}: least confident correct {classes[c]}",
                    f"{hit.size} correct {classes[c]} prediction(s) (a rare class); the least "
                    "confident first.",
                    name,
                    ids[:size],
                    int(hit.size),
                )
            )
    return galleries


# The dataset the results were run on ------------------------------------------------


@dataclass
class DatasetLookup:
    """Where the particles were found, or why they were not."""

    particles: dict  # id -> dataset.Particle; empty when not found
    source: str | None
    note: str | None  # why the galleries were skipped, or None
    dataset: object = None  # the Dataset read (a subset of it for a lab export)


def _candidates(results_dir, data=None) -> list[tuple[Path, str]]:
    """Paths where the results' dataset may be, most specific first."""
    results = ResultsDir(results_dir)
    run = results.read_run()
    summary = {}
    for folder in (results.path, results.path.parent):
        path = folder / "summary.json"
        if path.is_file():
            try:
                summary = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                summary = {}
            break
    dataset = run.get("dataset", {})
    found = []
    if data is not None:
        found.append((Path(data), "--data"))
    recorded = (summary.get("settings") or {}).get("data")
    if recorded:
        found.append((Path(recorded), "the benchmark's --data"))
    source = str(dataset.get("source") or "")
    if source.startswith("quick subsample") and " of " in source:  # "... of PATH"
        found.append((Path(source.rsplit(" of ", 1)[1]), "run.json, the --quick run's dataset"))
    elif source:
        found.append((Path(source), "run.json"))
    if dataset.get("synthetic") and dataset.get("problem") in ("lamellarity", "encapsulation"):
        found.append(
            (
                default_cache_dir() / f"{dataset['problem']}-synthetic-v{GENERATOR_VERSION}-seed0",
                "the built-in dataset's cache",
            )
        )
    return found


def find_particles(
    results_dir, ids, labels: dict, data=None, *, whole: bool = False
) -> DatasetLookup:
    """The particles ``ids`` of the dataset ``results_dir`` was run on.

    The dataset is looked for at ``data`` (``report --data``), the
    benchmark's ``--data``, ``run.json``'s ``dataset.source`` (the quick
    subsample's parent for ``--quick``), and the built-in dataset's cache. A
    lab export is read for the wanted particles only; other formats whole.
    Every wanted particle must be there with the label the results give it.
    ``whole``: read every particle (lipnet-fcn's input scale needs them).

    Returns
    -------
    DatasetLookup
        With ``note`` set (and no particles) if the dataset is not found or
        does not match.
    """
    ids = list(dict.fromkeys(ids))
    tried = []
    for path, why in _candidates(results_dir, data):
        if not path.exists():
            tried.append(f"{path} ({why}) does not exist")
            continue
        try:
            dataset = _read_particles(path, None if whole else set(ids))
        except LiposomeBenchError as exc:
            tried.append(f"{path} ({why}) cannot be read: {exc}")
            continue
        particles = {p.id: p for p in dataset.particles}
        missing = [pid for pid in ids if pid not in particles]
        wrong = [pid for pid in ids if pid in particles and particles[pid].label != labels[pid]]
        if missing or wrong:
            bad = missing[:3] or wrong[:3]
            tried.append(
                f"{path} ({why}) is not the dataset of these results "
                f"({'lacks' if missing else 'labels differently'} particle(s) "
                f"{', '.join(bad)})"
            )
            continue
        return DatasetLookup(particles, str(path), None, dataset)
    note = (
        "The dataset of these results was not found, so no particle could be drawn: "
        + "; ".join(tried or ["no dataset location is recorded"])
        + ". Pass its location with `liposome-bench report RESULTS --data PATH`."
    )
    return DatasetLookup({}, None, note)


def _read_particles(path: Path, ids: set):
    """The dataset at ``path``; for a lab export folder only the particles
    ``ids`` (read through ``load_dataset`` from a filtered copy of its
    particles.json beside links to its image and mask folders), so a report
    on 14,000 particles reads the few hundred it draws."""
    listing = path / EXPORT_JSON
    if ids is None or not listing.is_file():
        return load_dataset(path)
    try:
        objects = json.loads(listing.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return load_dataset(path)  # its own error message says what is wrong
    if not isinstance(objects, list):
        return load_dataset(path)
    keep = [o for o in objects if isinstance(o, dict) and str(o.get("Id")) in ids]
    with tempfile.TemporaryDirectory(prefix="liposome-bench-gallery-") as tmp:
        tmp = Path(tmp)
        try:
            for folder in (IMAGES_DIR, MASKS_DIR):
                if (path / folder).is_dir():
                    os.symlink((path / folder).resolve(), tmp / folder, target_is_directory=True)
        except OSError:  # no symbolic links here: read the whole export
            return load_dataset(path)
        if (path / META_JSON).is_file():
            shutil.copyfile(path / META_JSON, tmp / META_JSON)
        (tmp / EXPORT_JSON).write_text(json.dumps(keep), encoding="utf-8")
        if not keep:
            raise DatasetError(f"{path} holds none of the particles of these results.")
        dataset = load_dataset(tmp)
    dataset.root = path
    return dataset


# How each model saw its particles ---------------------------------------------------


@dataclass
class ModelView:
    """The particles as one model saw them: ``windows`` (standardised 2-D
    arrays; a CNN's inputs, or the SVM's masked crops at full resolution),
    their ``masks`` on the same grid, and a CNN's network ``inputs``."""

    windows: list
    masks: list
    inputs: np.ndarray | None = None
    caption: str = ""


def _fit_mask(window: np.ndarray, size: int, side: int) -> np.ndarray:
    """A mask window resized like ``cnn.prepare_images`` resizes its image
    window (to ``side``, centred on a ``size`` canvas)."""
    from skimage.transform import resize

    out = np.zeros((size, size), dtype=bool)
    scaled = (
        resize(window.astype(np.float32), (side, side), order=1, mode="edge", preserve_range=True)
        >= 0.5
    )
    top = (size - side) // 2
    out[top : top + side, top : top + side] = scaled
    return out


def _keeps_size_any(preds, settings) -> bool:
    """Whether any model in ``preds`` keeps relative particle size (its inputs
    then need the whole dataset); ``settings``: run.json's per-model settings."""
    return any(keeps_size(name, settings.get(name, {}).get("input_scale")) for name in preds)


def model_view(model: str, settings: dict, particles: list, *, whole=None) -> ModelView:
    """How ``model`` (recorded ``settings`` from run.json) saw ``particles``.

    A CNN: its input mode at its input size (``cnn.prepare_images``); for
    one that keeps relative particle size (``input_scale`` keep, lipnet-fcn's
    default), the scale comes from
    ``whole``, the whole dataset (as in training). The SVM: the masked crop
    at full resolution, standardised as the CNNs' masked mode.
    """
    cnn = settings.get("kind") == "cnn" or "input_mode" in settings or is_image_model(model)
    if not cnn:
        windows = [particle_window(p, "masked") for p in particles]
        masks = [mask_window(p, "masked") for p in particles]
        return ModelView(windows, masks, None, "masked crop, full resolution")
    mode = settings.get("input_mode", "masked")
    size = int(settings.get("input_size") or INPUT_SIZES.get(model, 28))
    keep_size = keeps_size(model, settings.get("input_scale"))

    subset = Dataset(LAMELLARITY, list(particles))  # the problem plays no part
    if keep_size:
        if whole is None:
            raise ResultsError(
                f"{model} keeps relative particle size; its inputs need the whole dataset."
            )
        index = {p.id: i for i, p in enumerate(whole.particles)}
        inputs = prepare_images(whole, mode, size, keep_size=True)
        inputs = inputs[[index[p.id] for p in particles]]
        fit = keep_size_scale(whole, mode, size)
        targets = window_lengths(subset, mode, fit.unit) * fit.scale
    else:
        inputs = prepare_images(subset, mode, size)
        targets = None
    masks = []
    for i, p in enumerate(particles):
        window = mask_window(p, mode)
        side = size if targets is None else int(np.clip(round(targets[i]), 1, size))
        masks.append(_fit_mask(window, size, side))
    return ModelView(
        [x[..., 0] for x in inputs],
        masks,
        inputs,
        f"{mode} input, {size}x{size} px as the network saw it",
    )


# Drawing ---------------------------------------------------------------------------


def _font(size: int = 10):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _to_gray(window: np.ndarray) -> np.ndarray:
    scaled = (np.clip(window, -CONTRAST, CONTRAST) + CONTRAST) / (2 * CONTRAST)
    return (scaled * 255).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    """The mask's boundary pixels (inside pixels with an outside 4-neighbour)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _panel(rgb: np.ndarray, mask: np.ndarray | None = None):
    """An (h, w, 3) uint8 image scaled onto a PANEL x PANEL square: small
    inputs by a whole factor (pixels stay sharp), large crops shrunk; the
    mask outline drawn at panel resolution."""
    from PIL import Image

    h, w = rgb.shape[:2]
    side = max(h, w)
    if side <= PANEL:
        factor = PANEL // side
        new = (w * factor, h * factor)
        image = Image.fromarray(rgb).resize(new, Image.NEAREST)
    else:
        new = (max(1, round(w * PANEL / side)), max(1, round(h * PANEL / side)))
        image = Image.fromarray(rgb).resize(new, Image.BILINEAR)
    array = np.asarray(image).copy()
    if mask is not None:
        outline = Image.fromarray(mask.astype(np.uint8) * 255).resize(new, Image.NEAREST)
        scaled = np.asarray(outline) > 0
        array[_outline(scaled)] = OUTLINE
    canvas = np.full((PANEL, PANEL, 3), 255, dtype=np.uint8)
    top, left = (PANEL - array.shape[0]) // 2, (PANEL - array.shape[1]) // 2
    canvas[top : top + array.shape[0], left : left + array.shape[1]] = array
    return canvas


def input_panel(window, mask) -> np.ndarray:
    """The particle as the model saw it, with its mask outline."""
    return _panel(np.repeat(_to_gray(window)[..., None], 3, axis=2), mask)


def saliency_panel(window, cam) -> np.ndarray:
    """The input in gray under the saliency map in colour (jet), more opaque
    where the map is high."""
    gray = _to_gray(window).astype(np.float32)[..., None] / 255.0
    heat = colormap("jet")(np.clip(cam, 0, 1))[..., :3]
    alpha = 0.25 + 0.5 * np.clip(cam, 0, 1)[..., None]
    rgb = (1 - alpha) * gray + alpha * heat
    return _panel((rgb * 255).astype(np.uint8))


def _fit_text(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def draw_tiles(title: str, tiles: list, path, *, columns: int = COLUMNS):
    """Write a montage PNG: a title line, then tiles in rows.

    Parameters
    ----------
    tiles : list of (panels, lines)
        ``panels`` a list of RGB arrays (PANEL high) drawn side by side,
        ``lines`` the text under them.
    """
    from PIL import Image, ImageDraw

    font, title_font = _font(10), _font(13)
    widths = [sum(x.shape[1] + 2 for x in p) - 2 for p, _ in tiles] or [PANEL]
    n_lines = max((len(t) for _, t in tiles), default=0)
    tile_w = max(MIN_TILE_WIDTH, *widths) + 6
    panel_h = max((x.shape[0] for p, _ in tiles for x in p), default=PANEL)
    tile_h = panel_h + 6 + 12 * n_lines + 4
    columns = max(1, min(columns, len(tiles)))
    rows = max(1, -(-len(tiles) // columns))
    head = 24
    canvas = Image.new("RGB", (max(columns * tile_w, 320), head + rows * tile_h), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text(
        (4, 5), _fit_text(draw, title, title_font, canvas.width - 8), fill=TEXT, font=title_font
    )
    for k, (panels, lines) in enumerate(tiles):
        x0, y0 = (k % columns) * tile_w + 3, head + (k // columns) * tile_h
        x = x0
        for panel in panels:
            canvas.paste(Image.fromarray(panel), (x, y0))
            x += panel.shape[1] + 2
        for j, line in enumerate(lines):
            draw.text(
                (x0, y0 + panel_h + 3 + 12 * j),
                _fit_text(draw, line, font, tile_w - 6),
                fill=TEXT,
                font=font,
            )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: canvas.save(tmp, format="PNG"), suffix=".png")
    return path


# Saliency -----------------------------------------------------------------------


def compute_saliency(results_dir, pred: ModelPredictions, rows, inputs) -> np.ndarray:
    """Grad-CAM maps of the particles at ``rows`` (indices into ``pred``) for
    the class ``pred`` predicted, each with the saved network of the
    particle's own test fold (``<model>/models/fold-<i>.keras``), so the map
    explains the very prediction shown.

    Raises
    ------
    ResultsError
        If a fold's network was not saved or cannot be loaded.
    """
    rows = np.asarray(rows, dtype=np.int64)
    maps = np.zeros(np.asarray(inputs).shape[:3], dtype=np.float32)
    for fold in sorted(set(pred.fold[rows].tolist())):
        sel = np.flatnonzero(pred.fold[rows] == fold)
        net = saliency.load_fold_model(results_dir, pred.name, int(fold))
        maps[sel] = saliency.grad_cam(net, inputs[sel], pred.y_pred[rows[sel]])
    return maps


# The report's gallery section -------------------------------------------------------


def _confidence_text(pred: ModelPredictions, i: int) -> str:
    value = pred.confidence[i]
    if value is None or np.isnan(value):
        return "—"
    return f"p={value:.2f}" if pred.has_probabilities else f"margin {value:+.2f}"


@dataclass
class GalleryOutput:
    """What :func:`render_galleries` drew, for the report's text."""

    galleries: list  # (Gallery, path of its PNG)
    predictions: dict
    classes: list
    source: str | None = None
    note: str | None = None
    saliency_notes: list = field(default_factory=list)
    saliency_count: int = 0
    filter_images: list = field(default_factory=list)  # (caption, path)


def _results_subset(dataset, preds: dict):
    """The particles of ``dataset`` that the results hold (a ``--quick`` run
    trained on a subsample): lipnet-fcn's input scale comes from them."""
    if dataset is None:
        return None
    held = {pid for p in preds.values() for pid in p.ids}
    return dataset.subset([i for i, p in enumerate(dataset.particles) if p.id in held])


def render_galleries(
    results_dir,
    figures,
    *,
    size: int = GALLERY_SIZE,
    data=None,
    saliency: bool = True,
    filters: bool = False,
    max_saliency: int | None = None,
) -> GalleryOutput:
    """Draw every gallery of ``results_dir`` into ``figures/galleries/``.

    Parameters
    ----------
    results_dir : path
        The folder holding the models' fold files (repeat 0 of a repeated
        benchmark).
    figures : path
        The report's figure folder.
    size : int
        Particles per gallery (``--gallery-size``).
    data : path, optional
        Where the dataset is, if not where the results recorded it.
    saliency : bool
        Draw Grad-CAM beside each CNN input.
    filters : bool
        Also draw each CNN's first-layer filters and per-block activations
        (:func:`render_filters`).
    max_saliency : int, optional
        At most this many particles get a saliency map (default
        ``saliency.MAX_SALIENCY_PARTICLES``).

    Returns
    -------
    GalleryOutput
        With ``note`` set and nothing drawn when the dataset is not found.
    """
    results_dir, figures = Path(results_dir), Path(figures)
    classes, preds = read_predictions(results_dir)
    galleries = select_galleries(preds, classes, size)
    output = GalleryOutput([], preds, classes)
    settings = ResultsDir(results_dir).read_run().get("models", {})
    featured = _featured(preds, classes) if filters else {}
    wanted = list(
        dict.fromkeys(
            [pid for g in galleries for pid in g.ids]
            + [pid for ids in featured.values() for pid in ids.values()]
        )
    )
    if not wanted:
        return output
    labels = {}
    for p in preds.values():
        labels.update({pid: classes[t] for pid, t in zip(p.ids, p.y_true)})
    keeping = _keeps_size_any(preds, settings)
    lookup = find_particles(results_dir, wanted, labels, data, whole=keeping)
    output.source, output.note = lookup.source, lookup.note
    if lookup.note:
        log.warning("No particle galleries in the report: %s", lookup.note)
        return output
    whole = _results_subset(lookup.dataset, preds) if keeping else None
    views, cams = {}, {}
    limit = MAX_SALIENCY_PARTICLES if max_saliency is None else max_saliency
    budget = limit
    for name, pred in preds.items():
        ids = list(dict.fromkeys(pid for g in galleries if g.model == name for pid in g.ids))
        if name in featured:
            ids += [pid for pid in featured[name].values() if pid not in ids]
        if not ids:
            continue
        view = model_view(
            name, settings.get(name, {}), [lookup.particles[pid] for pid in ids], whole=whole
        )
        views[name] = (view, {pid: k for k, pid in enumerate(ids)})
        if saliency and pred.is_cnn and budget <= 0:
            output.saliency_notes.append(
                f"{name}: no saliency maps (at most {limit} per report, all used)"
            )
        elif saliency and pred.is_cnn:
            chosen = ids[:budget]
            where = pred.index()
            try:
                maps = compute_saliency(
                    results_dir, pred, [where[pid] for pid in chosen], view.inputs[: len(chosen)]
                )
            except LiposomeBenchError as exc:
                output.saliency_notes.append(f"{name}: no saliency maps ({exc})")
                log.warning("%s", output.saliency_notes[-1])
                continue
            cams[name] = dict(zip(chosen, maps))
            budget -= len(chosen)
            output.saliency_count += len(chosen)
            if len(chosen) < len(ids):
                output.saliency_notes.append(
                    f"{name}: saliency for the first {len(chosen)} of {len(ids)} particles "
                    f"(at most {limit} per report)"
                )
    stale = set((figures / "galleries").glob("*.png"))
    for g in galleries:
        path = figures / "galleries" / f"{g.key}.png"
        stale.discard(path)
        tiles = [_tile(k, pid, g, preds, classes, views, cams) for k, pid in enumerate(g.ids)]
        shown = f"{len(g.ids)} of {g.total}" if g.total > len(g.ids) else f"{g.total}"
        double = any(len(t[0]) > 1 for t in tiles)
        draw_tiles(
            f"{g.title} ({shown}); {views[g.model][0].caption}",
            tiles,
            path,
            columns=COLUMNS // 2 if double else COLUMNS,
        )
        output.galleries.append((g, path))
    if filters:
        output.filter_images = render_filters(results_dir, preds, classes, featured, views, figures)
        stale -= {path for _, path in output.filter_images}
    for path in stale:  # galleries of an earlier report of these results, now empty
        path.unlink(missing_ok=True)
    return output


def _tile(k, pid, gallery, preds, classes, views, cams):
    """The panels and text lines of particle ``pid``, tile number ``k``."""
    view, index = views[gallery.model]
    row = index[pid]
    panels = [input_panel(view.windows[row], view.masks[row])]
    cam = cams.get(gallery.model, {}).get(pid)
    if cam is not None:
        panels.append(saliency_panel(view.windows[row], cam))
    main = preds[gallery.model]
    i = main.index()[pid]
    lines = [f"#{k + 1}  {pid}", f"true {classes[main.y_true[i]]}"]
    if not gallery.others:
        lines += [f"called {classes[main.y_pred[i]]}", _confidence_text(main, i)]
    else:
        for name in (gallery.model, *gallery.others):
            p = preds[name]
            j = p.index()[pid]
            lines.append(f"{name}: {classes[p.y_pred[j]]} ({_confidence_text(p, j)})")
    return panels, lines


def gallery_section(output: GalleryOutput, relative) -> list[str]:
    """The report's "Particle galleries" section (markdown lines).

    ``relative`` turns a figure path into the link written in the report.
    """
    lines = ["## Particle galleries", ""]
    if output.note:
        return lines + [f"> **No galleries.** {output.note}", ""]
    if not output.galleries:
        return lines + ["No particle was misclassified, and no model disagrees with another.", ""]
    lines += [
        "Each tile is one particle as the model saw it (a CNN's input at its input mode and "
        "size; the SVM's masked crop at full resolution), its mask outlined in yellow, "
        "with its number in the gallery, its particle id, its true and predicted class and "
        "the model's confidence: a CNN's softmax probability of the predicted class (p=), the "
        "SVM's margin (its one-vs-one decision values for the predicted class summed over "
        "the other classes). Errors are shown most confident first, correct predictions "
        "least confident first; ties by particle id. The tables under each gallery list "
        "the ids tile by tile, to find the particles in the lab's export.",
        "",
    ]
    if output.saliency_count:
        lines += [
            "Beside each CNN input: its Grad-CAM saliency map for the predicted class "
            "(Selvaraju et al. 2017; red = where the evidence for that class lies), "
            "computed with the network of the particle's own test fold.",
            "",
        ]
    lines += [f"- {note}." for note in output.saliency_notes]
    lines += [f"Particles read from `{output.source}`.", ""]
    classes, preds = output.classes, output.predictions
    for gallery, path in output.galleries:
        lines += [
            f"### {gallery.title}",
            "",
            gallery.description,
            "",
            f"![{gallery.title}]({relative(path)})",
            "",
            "<details><summary>Particle ids, tile by tile</summary>",
            "",
        ]
        models = (gallery.model, *gallery.others)
        rows = []
        for k, pid in enumerate(gallery.ids):
            cells = [k + 1, f"`{pid}`"]
            for name in models:
                p = preds[name]
                i = p.index()[pid]
                if name == gallery.model:
                    cells += [classes[p.y_true[i]], int(p.fold[i]) + 1]
                cells.append(f"{classes[p.y_pred[i]]} ({_confidence_text(p, i)})")
            rows.append(cells)
        headers = ["#", "id", "true class", "fold", *[f"{m} predicted" for m in models]]
        lines.append("| " + " | ".join(headers) + " |")
        lines.append(
            "| " + " | ".join(["---:", "---", "---", "---:"] + ["---"] * len(models)) + " |"
        )
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        lines += ["", "</details>", ""]
    if output.filter_images:
        lines += [
            "## Learned filters and activations",
            "",
            "As thesis Figures 14-15: each CNN fold's first-layer 3x3 filters (seismic "
            "colours: blue negative, white 0, red positive, each fold on its own "
            "symmetric scale), and the output of each convolutional block's last "
            "convolution (after its ReLU; each map scaled to its own maximum) for the "
            "most confidently correct particle of each class, computed with the "
            "network of that particle's test fold.",
            "",
        ]
        for caption, path in output.filter_images:
            lines += [f"![{caption}]({relative(path)})", ""]
    return lines


# Learned filters and activations ------------------------------------------------------


def _featured(preds: dict, classes) -> dict:
    """Per CNN, the particle shown for each class in the activation maps: its
    most confident correct prediction of that class (ties by id)."""
    out = {}
    for name, p in preds.items():
        if not p.is_cnn:
            continue
        chosen = {}
        for c, cls in enumerate(classes):
            hit = np.flatnonzero((p.y_true == c) & (p.y_pred == c))
            if hit.size:
                chosen[cls] = _ordered([p.ids[i] for i in hit], p.confidence[hit], True)[0]
        out[name] = chosen
    return out


def _grid(
    maps: np.ndarray,
    columns: int,
    cell: int,
    colours,
    symmetric: bool,
    shared: bool = False,
    gap: int = 2,
    ground: int = 150,
) -> np.ndarray:
    """Maps (n, h, w) as a grid of ``cell``-px squares (``columns`` wide) on
    gray, coloured on [-max|m|, max|m|] if ``symmetric`` else [0, max], the
    maximum taken over all maps if ``shared``, else per map."""
    from PIL import Image

    n = len(maps)
    rows = -(-n // columns)
    out = np.full(
        (rows * (cell + gap) - gap, columns * (cell + gap) - gap, 3), ground, dtype=np.uint8
    )
    overall = float(np.abs(maps).max()) or 1.0
    for k, m in enumerate(maps):
        peak = overall if shared else (float(np.abs(m).max()) or 1.0)
        scaled = (m / peak + 1) / 2 if symmetric else np.clip(m / peak, 0, 1)
        rgb = (colours(scaled)[..., :3] * 255).astype(np.uint8)
        rgb = np.asarray(Image.fromarray(rgb).resize((cell, cell), Image.NEAREST))
        top, left = (k // columns) * (cell + gap), (k % columns) * (cell + gap)
        out[top : top + cell, left : left + cell] = rgb
    return out


def render_filters(results_dir, preds: dict, classes, featured: dict, views: dict, figures) -> list:
    """Per CNN: ``filters-<model>.png`` (first-layer filters, one row per
    fold, thesis Figure 14) and ``activations-<model>.png`` (each block's
    output for one particle per class, Figure 15).

    Returns
    -------
    list of (caption, path)
    """
    figures = Path(figures) / "galleries"
    made = []
    seismic, viridis = colormap("seismic"), colormap("viridis")
    for name, p in preds.items():
        if not p.is_cnn:
            continue
        nets = {}
        tiles = []
        for fold in sorted(set(p.fold.tolist())):
            try:
                nets[fold] = saliency.load_fold_model(results_dir, name, int(fold))
            except ResultsError:
                continue
            kernels = saliency.first_layer_filters(nets[fold])
            tiles.append(
                (
                    [
                        _grid(
                            kernels, 16, 21, seismic, symmetric=True, shared=True, gap=3, ground=40
                        )
                    ],
                    [
                        f"fold {fold + 1}: {len(kernels)} filters of "
                        f"{kernels.shape[1]}x{kernels.shape[2]}"
                    ],
                )
            )
        if not tiles:
            continue
        path = draw_tiles(
            f"{name}: first-layer filters per fold (blue < 0 < red)",
            tiles,
            figures / f"filters-{_slug(name)}.png",
            columns=1,
        )
        made.append((f"{name}: first-layer filters", path))
        view, index = views.get(name, (None, {}))
        tiles = []
        for cls, pid in featured.get(name, {}).items():
            if view is None or pid not in index:
                continue
            i = p.index()[pid]
            net = nets.get(int(p.fold[i]))
            if net is None:
                continue
            row = index[pid]
            panels, names = [input_panel(view.windows[row], view.masks[row])], []
            for layer, maps in saliency.block_activations(net, view.inputs[row]).items():
                panels.append(_grid(np.transpose(maps, (2, 0, 1)), 8, 22, viridis, symmetric=False))
                names.append(f"{layer} {maps.shape[0]}x{maps.shape[1]}")
            tiles.append(
                (
                    panels,
                    [
                        f"{cls}: particle {pid} ({_confidence_text(p, i)}, "
                        f"fold {int(p.fold[i]) + 1})",
                        "input, then " + "; ".join(names),
                    ],
                )
            )
        if tiles:
            path = draw_tiles(
                f"{name}: activation maps of each block, one particle per class",
                tiles,
                figures / f"activations-{_slug(name)}.png",
                columns=1,
            )
            made.append((f"{name}: activations per block", path))
    return made


# One particle across models (``liposome-bench show``) -----------------------------


@dataclass
class ParticleReport:
    """A particle's predictions by every model, and the image written."""

    id: str
    label: str
    rows: list  # dicts: model, kind, fold, predicted, correct, confidence, scores
    image: Path | None
    source: str | None
    note: str | None = None


def _model_folder(results_dir) -> Path:
    """The folder holding the fold files: ``results_dir``, or repeat 0 of a
    repeated benchmark."""
    path = Path(results_dir)
    if not (path / "run.json").is_file() and (path / "repeat-0" / "run.json").is_file():
        return path / "repeat-0"
    return path


def show_particle(
    results_dir, pid, out=None, *, data=None, saliency: bool = True
) -> ParticleReport:
    """Particle ``pid`` across every finished model of ``results_dir``, and a
    PNG of it: the whole particle image with its mask outline, then each
    model's view of it (with the Grad-CAM map of a CNN's prediction).

    Parameters
    ----------
    results_dir : path
    pid : str
        A particle id of the results (``predictions.csv``'s ``id``).
    out : path, optional
        Folder of the PNG ``particle-<id>.png``; default the current folder.
    data : path, optional
        The dataset, if it is no longer where the results recorded it.

    Returns
    -------
    ParticleReport
        ``image`` is None (and ``note`` says why) if the dataset is not found.

    Raises
    ------
    ResultsError
        If ``results_dir`` is not a results folder or lacks the particle.
    """
    pid = str(pid)
    out = Path(out) if out is not None else Path(".")
    png = out / f"particle-{_slug(pid)}.png"
    # Before any work: the image is neither an input nor a file of the run.
    check_in_results(png, results_dir, own=(png.name,))
    check_apart(png, {"--data": data})
    folder = _model_folder(results_dir)
    classes, preds = read_predictions(folder)
    having = [p for p in preds.values() if pid in p.index()]
    if not having:
        some = next(iter(preds.values())).ids[:3] if preds else []
        raise ResultsError(
            f"Particle {pid} is not among the predictions in {results_dir}"
            + (f" (ids like {', '.join(some)})" if some else " (no model has finished)")
            + ". Pass an id from its predictions.csv or fold-<i>.csv files."
        )
    rows = []
    for p in having:
        i = p.index()[pid]
        rows.append(
            {
                "model": p.name,
                "kind": p.kind,
                "fold": int(p.fold[i]) + 1,
                "predicted": classes[p.y_pred[i]],
                "correct": bool(p.y_pred[i] == p.y_true[i]),
                "confidence": _confidence_text(p, i),
                "scores": {
                    n: (None if np.isnan(v) else float(v))
                    for n, v in zip(p.score_names, p.scores[i])
                },
            }
        )
    label = classes[having[0].y_true[having[0].index()[pid]]]
    settings = ResultsDir(folder).read_run().get("models", {})
    keeping = _keeps_size_any(preds, settings)
    lookup = find_particles(folder, [pid], {pid: label}, data, whole=keeping)
    if lookup.note:
        return ParticleReport(pid, label, rows, None, None, lookup.note)
    particle = lookup.particles[pid]
    check_apart(png, {"the dataset": getattr(lookup.dataset, "root", None)})
    raw = np.asarray(particle.image, dtype=np.float32)
    spread = raw.std() if raw.std() > 1e-6 else 1.0
    tiles = [
        (
            [input_panel((raw - raw.mean()) / spread, particle.mask)],
            ["image with surround", f"{raw.shape[1]}x{raw.shape[0]} px", f"true {label}"],
        )
    ]
    notes = []
    whole = _results_subset(lookup.dataset, preds) if keeping else None
    for p in having:
        i = p.index()[pid]
        view = model_view(p.name, settings.get(p.name, {}), [particle], whole=whole)
        panels = [input_panel(view.windows[0], view.masks[0])]
        if saliency and p.is_cnn:
            try:
                cam = compute_saliency(folder, p, [i], view.inputs)[0]
                panels.append(saliency_panel(view.windows[0], cam))
            except LiposomeBenchError as exc:
                notes.append(f"{p.name}: no saliency map ({exc})")
        mark = "right" if p.y_pred[i] == p.y_true[i] else "wrong"
        tiles.append(
            (
                panels,
                [
                    f"{p.name} (fold {int(p.fold[i]) + 1})",
                    f"called {classes[p.y_pred[i]]} ({mark})",
                    _confidence_text(p, i),
                ],
            )
        )
    path = draw_tiles(
        f"particle {pid} (true {label}): each model's view"
        + (", with Grad-CAM for the CNN's prediction" if saliency else ""),
        tiles,
        png,
        columns=len(tiles),
    )
    return ParticleReport(
        pid, label, rows, path, lookup.source, "; ".join(notes) if notes else None
    )
