"""The assembly as a LangChain tool, for agents built on LangChain or LangGraph:

    tool = assembly.as_tool(db="runs.duckdb")            # or as_tool("examples/ai_assistant.yaml", ...)
    graph.add_node("tools", ToolNode([tool]))             # a model that binds it may now convene an assembly

The model calls it with the arguments of assembly.tools.DeliberateArgs (question, options, ballot_type, jurors,
rounds, model, seed, population) and reads a short summary followed by the result as JSON; the typed
AssemblyResult is the tool message's artifact. A bad argument or a failed run comes back to the model as the
error's one-line message (ToolException), not as a crash of the agent.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from assembly.config import AssemblySpec, format_validation_error
from assembly.deliberation import resolve_spec
from assembly.errors import AssemblyError, MissingExtraError
from assembly.providers.base import Model
from assembly.result import AssemblyResult
from assembly.tools import DeliberateArgs, parse_args, run_deliberation, summarise

if TYPE_CHECKING:  # pragma: no cover
    from langchain_core.tools import StructuredTool

DESCRIPTION = ("Convene a simulated citizens' assembly: a stratified random jury of persona-conditioned jurors "
               "deliberates on a value question where informed people disagree, votes privately before and after, "
               "and returns its verdict, vote shift and minority report.")


def as_tool(
    base: str | Path | dict | AssemblySpec | None = None,
    *,
    name: str = "citizens_assembly",
    description: str = DESCRIPTION,
    model: str | None = None,
    db: str | Path | None = None,
    models: Model | dict[str, Model] | None = None,
    model_options: dict[str, Any] | None = None,
) -> StructuredTool:
    """A StructuredTool that runs and records one assembly per call. `base`: a question file (or dict/spec) whose
    witnesses, jury and procedure every call keeps, replacing its question and options; `model`: the model for calls
    that name none; `db`, `models`, `model_options`: as for `assembly.deliberate`."""
    try:
        from langchain_core.tools import StructuredTool, ToolException
    except ImportError as exc:
        raise MissingExtraError(f"as_tool needs langchain-core ({exc.name}): pip install 'assembly-sim[agents]'") \
            from None
    base_spec = resolve_spec(base) if base is not None else None

    async def arun(**arguments: Any) -> tuple[str, AssemblyResult]:
        from transcripts import StoreError

        try:
            result = await run_deliberation(parse_args(arguments, name), base=base_spec, model=model, db=db,
                                            models=models, model_options=model_options)
        except (AssemblyError, StoreError, ValidationError) as exc:
            raise ToolException(str(exc)) from None
        return f"{summarise(result)}\n\n{result.model_dump_json()}", result

    def run(**arguments: Any) -> tuple[str, AssemblyResult]:
        return asyncio.run(arun(**arguments))

    return StructuredTool.from_function(func=run, coroutine=arun, name=name, description=description,
                                        args_schema=DeliberateArgs, response_format="content_and_artifact",
                                        handle_tool_error=True,
                                        handle_validation_error=lambda exc: format_validation_error(
                                            name, exc, DeliberateArgs))
