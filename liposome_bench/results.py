"""The results folder shared by ``svm``, ``cnn``, ``benchmark`` and ``report``.

Layout (schema version ``SCHEMA_VERSION``)::

    RESULTS/
      run.json                  dataset (problem, classes, fingerprint, size,
                                synthetic or not), folds (k, seed), and the
                                settings of every model run into this folder
      <model>/fold-<i>.json     one finished fold: params chosen (C, gamma,
                                epochs...), timings, training history, device
      <model>/fold-<i>.csv      its test particles: id, label, fold,
                                predicted, one column per score
      <model>/models/           trained models (LIBSVM files, .keras files)
      summary.json, predictions.csv, report.md ...   written by later steps

A fold's JSON is written last and atomically, so its presence means the fold
is complete: re-running the same command resumes at the first fold without
one. A folder made for another dataset, other folds or other settings of a
model is refused rather than mixed in.
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liposome_bench.dataset import Dataset, atomic_write_json, atomic_write_text
from liposome_bench.errors import ResultsError

SCHEMA_VERSION = 1
RUN_JSON = "run.json"
LOCK_FILE = ".run.lock"

# Models may be prepared into one folder at once (the benchmark runs the SVM
# beside the CNN in two threads): run.json's read-modify-write is serialised
# by a lock per process and a file lock between processes.
_THREAD_LOCK = threading.Lock()


@contextlib.contextmanager
def _locked(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCK, open(folder / LOCK_FILE, "a") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: threads are still serialised
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class FoldResult:
    """Predictions of one model on one test fold, with what produced them.

    ``scores`` is (n_test, len(score_names)): class probabilities for a CNN
    (``score_kind='probability'``) or one-vs-one decision values for the SVM
    (``score_kind='decision'``). ``y_true`` and ``y_pred`` are class indices.
    """

    model: str
    fold: int
    ids: list[str]
    y_true: np.ndarray
    y_pred: np.ndarray
    scores: np.ndarray
    score_names: list[str]
    score_kind: str
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    history: dict | None = None
    device: str = "cpu"


class ResultsDir:
    """A results folder on disk (see the module docstring for the layout)."""

    def __init__(self, path):
        self.path = Path(path)

    def model_dir(self, model: str) -> Path:
        return self.path / model

    def models_subdir(self, model: str) -> Path:
        d = self.model_dir(model) / "models"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def read_run(self) -> dict:
        """The folder's run.json, or ``{}`` if there is none yet."""
        path = self.path / RUN_JSON
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ResultsError(
                f"{path} is not valid JSON ({exc}). Delete the folder or use another --out."
            ) from None

    def prepare(self, dataset: Dataset, folds, model: str, settings: dict) -> None:
        """Record that ``model`` with ``settings`` runs on ``dataset``/``folds``.

        Raises
        ------
        ResultsError
            If the folder holds results of another dataset, other folds, or
            this model with other settings.
        """
        with _locked(self.path):
            self._prepare(dataset, folds, model, settings)

    def _prepare(self, dataset: Dataset, folds, model: str, settings: dict) -> None:
        run = self.read_run()
        data = {
            "problem": dataset.problem.name,
            "classes": list(dataset.problem.classes),
            "fingerprint": dataset.fingerprint() if folds is None else folds.fingerprint,
            "n_particles": len(dataset),
            "synthetic": dataset.synthetic,
            "source": str(dataset.root) if dataset.root else dataset.description,
        }
        fold_info = {"k": folds.k, "seed": folds.seed} if folds is not None else None
        if fold_info is not None and getattr(folds, "group_by", None):
            fold_info["group_by"] = folds.group_by
        settings = json.loads(json.dumps(settings))  # normalise tuples etc.
        if run:
            old = run.get("dataset", {})
            if old.get("fingerprint") != data["fingerprint"]:
                raise ResultsError(
                    f"{self.path} holds results for another dataset (fingerprint "
                    f"{old.get('fingerprint')}, this one {data['fingerprint']}). "
                    "Use another --out or delete that folder."
                )
            if run.get("folds") != fold_info:
                raise ResultsError(
                    f"{self.path} holds results made with folds {run.get('folds')}, "
                    f"not {fold_info}. Use another --out or delete that folder."
                )
            old_settings = run.get("models", {}).get(model)
            if old_settings is not None and old_settings != settings:
                changed = sorted(
                    k
                    for k in set(old_settings) | set(settings)
                    if old_settings.get(k) != settings.get(k)
                )
                raise ResultsError(
                    f"{self.path} holds {model} results made with other settings "
                    f"({', '.join(changed)} differ). Use another --out or delete "
                    f"{self.model_dir(model)}."
                )
        else:
            from liposome_bench import __version__

            run = {
                "schema_version": SCHEMA_VERSION,
                "tool_version": __version__,
                "dataset": data,
                "folds": fold_info,
                "models": {},
            }
        run.setdefault("models", {})[model] = settings
        atomic_write_json(self.path / RUN_JSON, run)

    def fold_json(self, model: str, fold: int) -> Path:
        return self.model_dir(model) / f"fold-{fold}.json"

    def save_fold(self, result: FoldResult, class_names) -> None:
        """Write one finished fold: the CSV first, then the JSON that marks
        the fold complete (both atomically)."""
        import pandas as pd

        d = self.model_dir(result.model)
        d.mkdir(parents=True, exist_ok=True)
        table = pd.DataFrame(
            {
                "id": result.ids,
                "label": [class_names[i] for i in result.y_true],
                "fold": result.fold,
                "predicted": [class_names[i] for i in result.y_pred],
            }
        )
        for j, name in enumerate(result.score_names):
            table[f"score_{name}"] = result.scores[:, j]
        atomic_write_text(d / f"fold-{result.fold}.csv", table.to_csv(index=False))
        atomic_write_json(
            self.fold_json(result.model, result.fold),
            {
                "model": result.model,
                "fold": result.fold,
                "score_kind": result.score_kind,
                "score_names": list(result.score_names),
                "params": result.params,
                "timings": result.timings,
                "history": result.history,
                "device": result.device,
            },
        )

    def load_fold(self, model: str, fold: int, class_names) -> FoldResult | None:
        """The saved fold, or None if it has not finished.

        Raises
        ------
        ResultsError
            If the fold's files are unreadable or do not fit together.
        """
        import pandas as pd

        path = self.fold_json(model, fold)
        if not path.exists():
            return None
        fix = f"Delete {path} to run that fold again."
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            score_names = list(meta["score_names"])
            table = pd.read_csv(path.with_suffix(".csv"), dtype={"id": str})
            columns = ["id", "label", "predicted"] + [f"score_{n}" for n in score_names]
            missing = [c for c in columns if c not in table.columns]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ResultsError(f"{path} or its .csv cannot be read ({exc}). {fix}") from None
        if missing:
            raise ResultsError(
                f"{path.with_suffix('.csv')} lacks column(s) {', '.join(missing)}. {fix}"
            )
        index = {c: i for i, c in enumerate(class_names)}
        unknown = sorted(set(table["label"]).union(table["predicted"]) - set(index))
        if unknown:
            raise ResultsError(
                f"{path.with_suffix('.csv')} holds class(es) {', '.join(map(str, unknown))}, "
                f"not among {', '.join(class_names)}. {fix}"
            )
        return FoldResult(
            model=model,
            fold=fold,
            ids=table["id"].tolist(),
            y_true=table["label"].map(index).to_numpy(np.int64),
            y_pred=table["predicted"].map(index).to_numpy(np.int64),
            scores=table[[f"score_{n}" for n in score_names]].to_numpy(np.float64),
            score_names=score_names,
            score_kind=meta.get("score_kind", ""),
            params=meta.get("params", {}),
            timings=meta.get("timings", {}),
            history=meta.get("history"),
            device=meta.get("device", "cpu"),
        )

    def load_model(self, model: str) -> list[FoldResult]:
        """Every finished fold of ``model``, in fold order."""
        run = self.read_run()
        if not run:
            raise ResultsError(
                f"{self.path} is not a results folder (no {RUN_JSON}). "
                "Run `liposome-bench benchmark --out` first."
            )
        classes = run["dataset"]["classes"]
        if run.get("folds"):
            numbers = range(run["folds"]["k"])
        else:  # prepared without stored folds: whatever fold files exist
            numbers = sorted(
                int(p.stem.split("-", 1)[1])
                for p in self.model_dir(model).glob("fold-*.json")
                if p.stem.split("-", 1)[1].isdigit()
            )
        found = [self.load_fold(model, f, classes) for f in numbers]
        return [r for r in found if r is not None]

    def model_names(self) -> list[str]:
        return list(self.read_run().get("models", {}))
