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
