"""Where the CLI writes: results on stdout, progress and errors on stderr (so `--json` output stays parseable)."""

from __future__ import annotations

import json
import sys

from rich.console import Console

out = Console(soft_wrap=True)
if not out.is_terminal:  # piped or captured: no terminal width to respect, so do not fold tables at 80 columns
    out = Console(soft_wrap=True, width=200)
err = Console(stderr=True, soft_wrap=True)


def print_json(data) -> None:
    """Machine output: plain JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")
    sys.stdout.flush()
