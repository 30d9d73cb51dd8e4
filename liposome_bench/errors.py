"""Exceptions for user mistakes: each message is one line saying what was
expected, what came, and the fix. The CLI prints it as ``Error: ...`` and
exits with code 2; nothing else is shown."""


class LiposomeBenchError(Exception):
    """Base class of every error caused by input the user can fix."""

    exit_code = 2


class DatasetError(LiposomeBenchError):
    """A dataset on disk is missing, malformed or inconsistent."""


class FoldError(LiposomeBenchError):
    """Folds cannot be made, or stored folds do not match the dataset."""


class ResultsError(LiposomeBenchError):
    """A results folder is malformed or belongs to another run."""


class ConfigError(LiposomeBenchError):
    """An option value or combination of options is invalid."""


class OutputError(LiposomeBenchError):
    """An output path cannot be written: a file where a folder is needed,
    permission denied, a read-only or full disk."""


class BundleError(LiposomeBenchError):
    """A model bundle is missing, damaged, too new, or made for other data."""


class SweepError(LiposomeBenchError):
    """Tasks of a sweep failed with user errors (each reported once)."""


class CurveError(LiposomeBenchError):
    """A learning curve that cannot be made (a training size too small for a class)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, systemd, batch schedulers), handled as Ctrl-C."""


#: Interruptions (SIGINT, SIGTERM) noted by the CLI's signal handlers, so that
#: one delivered while C code calls back into Python is not lost: Python
#: drops an exception raised in a ctypes callback (LIBSVM's print function
#: during ``svm_train``) with "Exception ignored", and training went on.
_pending: list[type] = []


def note_interruption(kind: type = KeyboardInterrupt) -> None:
    """Remember an interruption (called by the signal handlers)."""
    _pending.append(kind)


def clear_interruptions() -> None:
    _pending.clear()


def raise_if_interrupted() -> None:
    """Raise the first noted interruption, if any: call it after C code that
    calls back into Python returns (``svm._train_libsvm``)."""
    if _pending:
        kind = _pending[0]
        _pending.clear()
        raise kind()
