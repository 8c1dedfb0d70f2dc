"""Where the store lives when nobody says: easy to find, like `llm logs path`."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "ASSEMBLY_STORE"


def default_store_path() -> Path:
    """`$ASSEMBLY_STORE` if set, else `$XDG_DATA_HOME/assembly/assembly.duckdb`
    (XDG_DATA_HOME defaulting to `~/.local/share`)."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "assembly" / "assembly.duckdb"
