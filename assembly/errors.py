"""Errors a user can act on. The CLI prints their message on one line and exits nonzero; no traceback."""


class AssemblyError(Exception):
    """Base for every error whose message is meant for the user."""

    exit_code = 2


class SpecError(AssemblyError):
    """A question file or override is invalid: the message names the file, the field and the value."""


class MissingExtraError(AssemblyError):
    """An optional dependency for the chosen backend is not installed."""


class MissingAPIKeyError(AssemblyError):
    """An API backend was chosen but its key is not in the environment. The message names the variable."""
