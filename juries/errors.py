"""The one error type of `juries`: its message is meant for a user, on one line."""


class JuryError(ValueError):
    """A population frame, a where-filter or a quota is invalid; the message names the file, field or group."""
