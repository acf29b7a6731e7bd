"""The errors a user can fix, and how the command line reports them: one line (the cause, with file, line and field
where they exist, and what to do) and an exit status, 2 for a wrong command or option, 1 for bad data."""

from __future__ import annotations

from lightning_ft.environment import DEBUG_ENVIRONMENT, flag_set


class UserError(Exception):
    """An error in what the user gave, not in lightning_ft: reported as one line, without a traceback."""

    exit_status = 2


class UsageError(UserError, ValueError):
    """A wrong option value, a missing file or model, an unknown name: exit status 2."""


class DataError(UserError, ValueError):
    """Bad input data: the message names the file, the line (or record) and the field; exit status 1."""

    exit_status = 1


class UnsupportedError(UsageError, TypeError):
    """A model or component of the wrong kind for what was asked (a reward model asked to generate): a `UsageError`
    that is still the `TypeError` such checks raised before, for code that catches that."""


class MissingFileError(UsageError, FileNotFoundError):
    """A file or folder the user named that does not exist or lacks what is needed: a `UsageError` that is still a
    `FileNotFoundError`, for code that catches that."""


def debugging() -> bool:
    """Whether errors are shown with their full traceback (``--debug`` or ``LIGHTNING_FT_DEBUG=1``)."""
    return flag_set(DEBUG_ENVIRONMENT)
