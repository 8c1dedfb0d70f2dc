"""The one exception the store raises: a single readable line, never a DuckDB traceback."""


class StoreError(Exception):
    """A store operation failed; str(error) is one line meant for the person at the terminal."""
