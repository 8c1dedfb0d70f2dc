"""`assembly mcp`: serve the assembly to MCP clients over stdio (tools `deliberate` and `get_run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def mcp(
    model: Annotated[str | None, typer.Option(help="Model spec for calls that name none (default: embedded).")] = None,
    db: Annotated[Path | None, typer.Option(help="The store runs are recorded in (default: see `assembly "
                                                 "transcripts path`).")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads for local models.")] = None,
) -> None:
    """Serve the assembly as an MCP server on stdio: configure your client to run `assembly mcp`."""
    from assembly.mcp_server import serve_stdio

    serve_stdio(model=model, db=str(db) if db else None,
                model_options={"threads": threads} if threads is not None else None)
