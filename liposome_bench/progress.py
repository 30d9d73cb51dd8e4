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

        self.console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._task = None
        self._fold = ""
        self._started = False

    def _ensure_started(self):
        if not self._started:
            self._progress.start()
            self._started = True

    def stage(self, name, total=None):
        self._ensure_started()
        if self._task is not None:
            self._progress.stop_task(self._task)
        self._fold = ""
        self._task = self._progress.add_task(name, total=total, detail="")

    def advance(self, n=1):
        if self._task is not None:
            self._progress.advance(self._task, n)

    def fold(self, fold, k):
        # Fold numbers as in the files (fold-0.json ...): 0-based.
        self._fold = f"fold {fold} (of 0-{k - 1})"
        if self._task is not None:
            self._progress.update(self._task, detail=self._fold)

    def epoch(self, epoch, epochs, **metrics):
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if v is not None)
        if self._task is not None:
            self._progress.update(
                self._task, detail=f"{self._fold}  epoch {epoch}/{epochs}  {shown}"
            )

    def message(self, text):
        self._ensure_started()
        self._progress.console.print(text)

    def close(self):
        if self._started:
            self._progress.stop()
            self._started = False
