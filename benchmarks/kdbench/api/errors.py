"""User-facing errors: the CLI prints these as one line and exits non-zero, before any record is written."""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when it has none), for the
    one-line errors that wrap a library's."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class KDBenchError(Exception):
    """Base class of errors caused by the user's input or environment, not by a bug."""


class ConfigError(KDBenchError):
    """A suite file, method name, hyperparameter or CLI option is wrong."""


class DataError(KDBenchError):
    """A dataset is missing or malformed; the message says how to get it."""


class TeacherError(KDBenchError):
    """A cached teacher does not match its recorded hash or accuracy."""


class ReportError(KDBenchError):
    """There are no run records to report on (missing, empty or wholly unreadable results folder)."""


class StorageError(KDBenchError):
    """A result could not be written (disk full, folder removed): the run stops, saying what was kept."""


class GroupsCrashed(KDBenchError):
    """A worker running a group died or raised (killed, out of memory, a node lost): the run exits
    non-zero; what finished is recorded, and a rerun resumes the rest."""
