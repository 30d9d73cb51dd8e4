"""Progress events from long work (feature extraction, folds, epochs).

Library functions take a ``reporter`` and call its methods; they never print.
``NullReporter`` ignores everything (tests, library use); ``RichReporter``
shows one live rich display: stage, fold, epoch, last metrics, elapsed and
remaining time.
"""

from __future__ import annotations


class NullReporter:
    """Receives progress events and ignores them."""

    def stage(self, name: str, total: int | None = None) -> None:
        """A new stage starts (e.g. 'features', 'svm', 'lipnet-4') with
        ``total`` units of work (folds, particles), if known."""

    def advance(self, n: int = 1) -> None:
        """``n`` units of the current stage are done."""

    def fold(self, fold: int, k: int) -> None:
        """Work on fold ``fold`` (0-based) of ``k`` starts."""

    def epoch(self, epoch: int, epochs: int, **metrics) -> None:
        """Epoch ``epoch`` (1-based) of at most ``epochs`` finished with ``metrics``."""

    def message(self, text: str) -> None:
        """A line worth showing the user (device used, resumed folds...)."""

    def close(self) -> None:
        """The work is over; remove any live display."""


class RichReporter(NullReporter):
    """A single rich live display for the whole run."""

    def __init__(self, console=None):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class EtaColumn(TimeRemainingColumn):
            """The epoch-based estimate when training reports one, else rich's
            estimate from the stage's progress."""

            def render(self, task):
                eta = task.fields.get("eta")
                return Text(eta, style="progress.remaining") if eta else super().render(task)

        self.console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            EtaColumn(),
            console=self.console,
            transient=False,
        )
        self._task = None
        self._fold = ""
        self._eta = EpochEta()
        self._started = False
        self._shown = set()

    def _ensure_started(self):
        if not self._started:
            self._progress.start()
            self._started = True

    def stage(self, name, total=None):
        self._ensure_started()
        if self._task is not None:
            self._progress.stop_task(self._task)
        self._fold = ""
        self._eta = EpochEta()
        self._task = self._progress.add_task(name, total=total, detail="", eta="")

    def advance(self, n=1):
        if self._task is not None:
            self._progress.advance(self._task, n)

    def fold(self, fold, k):
        self._eta.fold(fold, k)
        # Fold numbers as in the files (fold-0.json ...): 0-based.
        self._fold = f"fold {fold} (of 0-{k - 1})"
        if self._task is not None:
            self._progress.update(self._task, detail=self._fold)

    def epoch(self, epoch, epochs, **metrics):
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if v is not None)
        eta = self._eta.epoch(epoch, epochs)
        if self._task is not None:
            self._progress.update(
                self._task,
                detail=f"{self._fold}  epoch {epoch}/{epochs}  {shown}",
                eta=format_eta(*eta) if eta else "",
            )

    def message(self, text):
        # A line already shown (the device line, printed by the command and by
        # run_cnn) is not repeated.
        if text in self._shown:
            return
        self._shown.add(text)
        self._ensure_started()
        self._progress.console.print(text)

    def close(self):
        if self._started:
            self._progress.stop()
            self._started = False


class EpochEta:
    """Estimated time left in a k-fold training stage, from the epochs seen.

    After each epoch: the mean time per epoch of the current fold so far
    (the first epoch, with its compilation, included) times the epochs left:
    the rest of this fold up to its maximum, and for each later fold the
    mean epochs run by the finished folds (early stopping), or the maximum
    while no fold has finished. Until then the estimate is an upper bound.
    """

    def __init__(self, clock=None):
        import time

        self._clock = clock or time.perf_counter
        self._fold, self._k = 0, 1
        self._start = None
        self._last_epoch = 0
        self._runs = []  # epochs run by finished folds

    def fold(self, fold: int, k: int) -> None:
        """Fold ``fold`` (0-based) of ``k`` starts."""
        if self._start is not None and self._last_epoch:
            self._runs.append(self._last_epoch)
        self._fold, self._k = fold, k
        self._start, self._last_epoch = self._clock(), 0

    def epoch(self, epoch: int, epochs: int):
        """Epoch ``epoch`` (1-based) of at most ``epochs`` finished:
        (seconds left, whether that is an upper bound), or None before a
        fold started."""
        if self._start is None or epoch < 1:
            return None
        self._last_epoch = epoch
        per_epoch = (self._clock() - self._start) / epoch
        later = max(0, self._k - self._fold - 1)
        expected = sum(self._runs) / len(self._runs) if self._runs else epochs
        left = per_epoch * (max(0, epochs - epoch) + later * expected)
        return left, not self._runs


def format_eta(seconds: float, upper_bound: bool = False) -> str:
    """``"≤ 3:05"`` / ``"~1:02:00"``: seconds left as h:mm:ss or m:ss.

    >>> format_eta(185, True), format_eta(3720.4)
    ('≤ 3:05', '~1:02:00')
    """
    seconds = int(round(max(0.0, seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    text = f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
    return ("≤ " if upper_bound else "~") + text
