"""Prompt templates (jinja2, StrictUndefined): every word a participant is shown lives in a .j2 file here."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

_HERE = Path(__file__).parent


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE),
        undefined=jinja2.StrictUndefined,  # a missing variable is a bug, not an empty string
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,
    )


def render_prompt(template: str, /, **context) -> str:
    """Render `template`.j2 with the given variables; surrounding blank lines are stripped."""
    return _environment().get_template(f"{template}.j2").render(**context).strip()
