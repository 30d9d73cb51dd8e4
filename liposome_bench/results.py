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
import datetime as _dt
import errno
import hashlib
import json
import os
import shlex
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liposome_bench.dataset import Dataset, check_trainable
from liposome_bench.io import atomic_write_json, atomic_write_text
from liposome_bench.errors import ResultsError
from liposome_bench import __version__
from liposome_bench.progress import NullReporter
from liposome_bench.settings import check_seed

#: Version of summary.json's layout (written by comparison, read by report).
SUMMARY_SCHEMA_VERSION = 1
SCHEMA_VERSION = 1
RUN_JSON = "run.json"
LOCK_FILE = ".run.lock"

# Models may be prepared into one folder at once (the benchmark runs the SVM
# beside the CNN in two threads): run.json's read-modify-write is serialised
# by a lock per process and a file lock between processes.
_THREAD_LOCK = threading.Lock()


RUN_LOCK_FILE = ".busy.lock"


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)


def _read_holder(path: Path) -> dict:
    """Who holds (or last held) a run lock: what its file says, or {}."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError, RecursionError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe_holder(holder: dict) -> str:
    if not holder:
        return "another liposome-bench run"
    parts = [f"pid {holder.get('pid', '?')}"]
    if holder.get("host") and holder.get("host") != socket.gethostname():
        parts[0] += f" on {holder['host']}"
    if holder.get("command"):
        parts.append(f"`{holder['command']}`")
    if holder.get("started"):
        parts.append(f"started {holder['started']}")
    return "another liposome-bench run (" + ", ".join(parts) + ")"


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _this_holder(command: str | None) -> dict:
    if command is None:
        argv0 = os.path.basename(sys.argv[0]) if sys.argv else ""
        command = (
            shlex.join(["liposome-bench", *sys.argv[1:]])
            if argv0 in ("liposome-bench", "__main__.py")
            else f"python ({argv0 or '?'})"
        )
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


# Folders this process holds the run lock of (resolved path -> depth), so the
# benchmark can hold its folder's lock while run_svm / run_cnn work in it.
_HELD: dict[str, int] = {}
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def run_lock(folder, *, wait: bool = False, reporter=None, command: str | None = None):
    """Hold the advisory run lock of a results folder for a whole run.

    A second run into the same folder either refuses at once with one line
    (``wait=False``) or waits until the first has finished (``wait=True``),
    then resumes from its saved folds, so no fold is computed twice. The
    lock is ``fcntl.flock`` on ``RESULTS/.busy.lock``: the kernel releases it
    when its process ends, so a run killed without cleaning up leaves no
    lock behind; the file then still names the dead run, which the next run
    reports as a stale lock and clears. Where ``flock`` is unavailable
    (Windows, some network file systems) the lock is the file itself,
    created exclusively, and a lock naming a process that no longer runs on
    this host is stale and removed. Re-entrant within one process.

    Raises
    ------
    ResultsError
        If another run holds the lock and ``wait`` is False.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    with _HELD_GUARD:
        nested = key in _HELD
        if nested:
            _HELD[key] += 1
    if nested:
        try:
            yield
        finally:
            with _HELD_GUARD:
                _HELD[key] -= 1
        return

    reporter = reporter or NullReporter()
    path = folder / RUN_LOCK_FILE
    release = _acquire(path, folder, wait, reporter, _this_holder(command))
    with _HELD_GUARD:
        _HELD[key] = 1
    try:
        yield
    finally:
        with _HELD_GUARD:
            del _HELD[key]
        release()


def _busy(folder: Path, holder: dict) -> ResultsError:
    return ResultsError(
        f"{folder} is in use by {_describe_holder(holder)}. Wait for it to finish, pass "
        "--wait to start when it has (finished folds are then reused), or use another --out."
    )


def _stale_note(reporter, folder: Path, holder: dict) -> None:
    reporter.message(
        f"{folder}: cleared a stale lock left by {_describe_holder(holder)}, which "
        "ended without releasing it; its finished folds are kept."
    )


def _acquire(path: Path, folder: Path, wait: bool, reporter, me: dict):
    """Take the lock at ``path``; return the function that releases it."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    if fcntl is not None:
        fd = _open_lock(path)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(path)
                if not wait:
                    raise _busy(folder, holder) from None
                reporter.message(
                    f"{folder} is in use by {_describe_holder(holder)}; "
                    "waiting for it to finish (--wait)."
                )
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            return _acquire_file(path, folder, wait, reporter, me)
        except BaseException:
            os.close(fd)
            raise
        previous = _read_holder(path)
        if previous and previous.get("pid") != me["pid"]:
            _stale_note(reporter, folder, previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)

        def release():
            try:
                os.ftruncate(fd, 0)  # an empty file: nobody holds it
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

        return release
    return _acquire_file(path, folder, wait, reporter, me)


def _acquire_file(path: Path, folder: Path, wait: bool, reporter, me: dict):
    """The lock as an exclusively created file holding its owner (no flock)."""
    announced = False
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            holder = _read_holder(path)
            same_host = holder.get("host") in (None, socket.gethostname())
            if not holder or (same_host and not _pid_alive(holder.get("pid"))):
                _stale_note(reporter, folder, holder)
                path.unlink(missing_ok=True)
                continue
            if not wait:
                raise _busy(folder, holder) from None
            if not announced:
                reporter.message(
                    f"{folder} is in use by {_describe_holder(holder)}; "
                    "waiting for it to finish (--wait)."
                )
                announced = True
            time.sleep(1.0)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(me) + "\n")
        return lambda: path.unlink(missing_ok=True)


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


def _run_json_problem(run, strict: bool = True) -> str | None:
    """What is wrong with a parsed run.json, or None. Not ``strict``: only
    what ``prepare`` needs to compare it with a new run (the dataset's
    fingerprint), so that another dataset's folder is named as such."""
    if not isinstance(run, dict):
        return f"expected a JSON object, got {type(run).__name__}"
    dataset = run.get("dataset")
    if not isinstance(dataset, dict):
        return 'no "dataset" object'
    if not strict:
        return None
    classes = dataset.get("classes")
    if (
        not isinstance(classes, list)
        or len(classes) < 2
        or not all(isinstance(c, str) for c in classes)
    ):
        return 'its "dataset" has no list of class names ("classes")'
    folds = run.get("folds")
    if folds is not None and not (
        isinstance(folds, dict)
        and isinstance(folds.get("k"), int)
        and not isinstance(folds.get("k"), bool)
        and folds["k"] >= 2
    ):
        return '"folds" is not {"k": <folds>, "seed": <seed>}'
    if not isinstance(run.get("models", {}), dict):
        return '"models" is not an object'
    return None


def fold_file_hashes(folder) -> dict[str, str]:
    """SHA-256 of every fold file (``<model>/fold-<i>.json`` and ``.csv``, also
    under ``repeat-<r>/``) of a results folder, keyed by relative path:
    recorded in summary.json so that a summary whose fold files changed
    since is refused (``report.load_summary``)."""
    root = Path(folder)
    hashes = {}
    for path in sorted(root.rglob("fold-*")):
        rel = path.relative_to(root)
        if (
            path.suffix in (".json", ".csv")
            and path.is_file()
            and "models" not in rel.parts
            and not any(part.startswith(".") for part in rel.parts)
        ):
            hashes[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


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


def fold_record(k: int, seed: int, group_by: str | None = None) -> dict:
    """How run.json records a results folder's folds: ``{"k", "seed"}``, and
    ``"group_by"`` for grouped folds (what :meth:`ResultsDir.prepare` and
    :meth:`ResultsDir.check_resumable` compare)."""
    record = {"k": k, "seed": seed}
    if group_by:
        record["group_by"] = group_by
    return record


class ResultsDir:
    """A results folder on disk (see the module docstring for the layout)."""

    def __init__(self, path):
        self.path = Path(path)

    def lock(self, *, wait: bool = False, reporter=None, command: str | None = None):
        """The folder's run lock, held for a whole run (see ``run_lock``)."""
        return run_lock(self.path, wait=wait, reporter=reporter, command=command)

    def model_dir(self, model: str) -> Path:
        return self.path / model

    def models_subdir(self, model: str) -> Path:
        d = self.model_dir(model) / "models"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def read_run(self, *, strict: bool = True) -> dict:
        """The folder's run.json, or ``{}`` if there is none yet.

        Raises
        ------
        ResultsError
            If run.json is not valid JSON or lacks what every reader relies on
            (a dataset with its class names, folds, models; with ``strict``
            False only a dataset object).
        """
        path = self.path / RUN_JSON
        if not path.exists():
            return {}
        try:
            run = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise ResultsError(
                f"{path} is not valid JSON ({exc}). Delete the folder or use another --out."
            ) from None
        problem = _run_json_problem(run, strict)
        if problem:
            raise ResultsError(
                f"{path} is not a run.json written by liposome-bench: {problem}. Delete the "
                "folder (or that file) and run again, or use another --out."
            )
        return run

    def prepare(self, dataset: Dataset, folds, model: str, settings: dict) -> None:
        """Record that ``model`` with ``settings`` runs on ``dataset``/``folds``.

        Raises
        ------
        ResultsError
            If the folder holds results of another dataset, other folds, or
            this model with other settings.
        """
        if isinstance(settings, dict) and "seed" in settings:
            check_seed(settings["seed"], "seed")
        # prepare.prepare_run checks before any work; this keeps the same cheap
        # check (class counts) for the library's run_svm / run_cnn called directly.
        check_trainable(dataset)
        with _locked(self.path):
            self._prepare(dataset, folds, model, settings)

    def _prepare(self, dataset: Dataset, folds, model: str, settings: dict) -> None:
        run = self.read_run(strict=False)
        data = {
            "problem": dataset.problem.name,
            "classes": list(dataset.problem.classes),
            "fingerprint": dataset.fingerprint() if folds is None else folds.fingerprint,
            "n_particles": len(dataset),
            "synthetic": dataset.synthetic,
            "source": str(dataset.root) if dataset.root else dataset.description,
        }
        fold_info = (
            None
            if folds is None
            else fold_record(folds.k, folds.seed, getattr(folds, "group_by", None))
        )
        settings = json.loads(json.dumps(settings))  # normalise tuples etc.
        if run:
            self._check_same_run(run, data["fingerprint"], fold_info)
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
            run = {
                "schema_version": SCHEMA_VERSION,
                "tool_version": __version__,
                "dataset": data,
                "folds": fold_info,
                "models": {},
            }
        run.setdefault("models", {})[model] = settings
        atomic_write_json(self.path / RUN_JSON, run)

    def order_models(self, names) -> None:
        """Put run.json's models in the order of ``names`` (the command's: the
        SVM rows, then the CNNs). Models register as they start, so models
        run beside each other or as Dask tasks can register in either order;
        the tables and predictions.csv follow run.json's. Models not in
        ``names`` keep their order after those that are."""
        with _locked(self.path):
            run = self.read_run(strict=False)  # {} when there is none yet
            models = run.get("models")
            if not models:
                return
            rank = {name: i for i, name in enumerate(names)}
            ordered = dict(sorted(models.items(), key=lambda kv: rank.get(kv[0], len(rank))))
            if list(ordered) != list(models):
                run["models"] = ordered
                atomic_write_json(self.path / RUN_JSON, run)

    def check_resumable(self, fingerprint: str, fold_info: dict | None) -> None:
        """Refuse, before any work, a folder whose run.json holds another
        dataset (``fingerprint``) or other folds (``{"k", "seed"[,
        "group_by"]}``); a folder without one passes. Each model's settings
        are checked when it starts (:meth:`prepare`)."""
        run = self.read_run(strict=False)
        if run:
            self._check_same_run(run, fingerprint, fold_info)

    def _check_same_run(self, run: dict, fingerprint: str, fold_info: dict | None) -> None:
        old = run.get("dataset", {})
        if old.get("fingerprint") != fingerprint:
            raise ResultsError(
                f"{self.path} holds results for another dataset (fingerprint "
                f"{old.get('fingerprint')}, this one {fingerprint}). "
                "Use another --out or delete that folder."
            )
        self.read_run()  # the same dataset: the rest must be well-formed too
        if run.get("folds") != fold_info:
            raise ResultsError(
                f"{self.path} holds results made with folds {run.get('folds')}, "
                f"not {fold_info}. Use another --out or delete that folder."
            )

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
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise ResultsError(f"{path} or its .csv cannot be read ({exc}). {fix}") from None
        if missing:
            raise ResultsError(
                f"{path.with_suffix('.csv')} lacks column(s) {', '.join(missing)}. {fix}"
            )
        csv_path = path.with_suffix(".csv")
        if "fold" in table.columns:
            other = sorted({str(f) for f in table["fold"].tolist()} - {str(fold)})
            if other:
                raise ResultsError(
                    f"{csv_path} holds rows of fold(s) {', '.join(other)} besides fold {fold} "
                    f"(another fold's file appended?). {fix}"
                )
        duplicated = table["id"][table["id"].duplicated()].tolist()
        if duplicated:
            raise ResultsError(
                f"{csv_path} lists particle {duplicated[0]} more than once "
                f"({len(duplicated)} repeated row(s)). {fix}"
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
        found = [r for r in (self.load_fold(model, f, classes) for f in numbers) if r is not None]
        # Every particle is tested in exactly one fold.
        first: dict[str, int] = {}
        for r in found:
            for pid in r.ids:
                if pid in first:
                    raise ResultsError(
                        f"{self.model_dir(model)}: particle {pid} is in the test rows of "
                        f"fold-{first[pid]}.csv and fold-{r.fold}.csv; each particle belongs "
                        f"to one fold. Delete {self.fold_json(model, r.fold)} to run that "
                        "fold again."
                    )
                first[pid] = r.fold
        n = run["dataset"].get("n_particles")
        if (
            run.get("folds")
            and len(found) == run["folds"]["k"]
            and isinstance(n, int)
            and len(first) != n
        ):
            raise ResultsError(
                f"{self.model_dir(model)}: its {len(found)} folds test {len(first)} particles "
                f"but run.json says the dataset has {n}. Delete {self.model_dir(model)} to run "
                "it again."
            )
        return found

    def model_names(self) -> list[str]:
        return list(self.read_run().get("models", {}))
