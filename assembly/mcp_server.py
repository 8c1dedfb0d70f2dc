"""`assembly mcp`: the assembly as a Model Context Protocol server (the official `mcp` SDK, stdio transport), so
any MCP client — an IDE agent, Claude Desktop, another model's tool loop — can convene a citizens' assembly.

Tools:
  deliberate(question, options, ballot_type?, jurors?, rounds?, model?, seed?, population?) -> the AssemblyResult
  get_run(run_id) -> the run's status and, once completed, its AssemblyResult
Each answers a short summary and the JSON (as text, and as structured content); a bad or missing argument, or a
failed run, is a tool error (isError) with a one-line message, and the server keeps serving. Every run is recorded
in the store like any other. stdout carries the protocol, so nothing else may print there.
"""

# No `from __future__ import annotations`: the SDK reads the tools' annotations at run time, and they name types
# imported inside build_server (the SDK loads only when the server is built).
import json
from typing import Annotated, Any

from pydantic import Field

from assembly.ballot import BallotType
from assembly.errors import AssemblyError, MissingExtraError
from assembly.tools import HELP, describe_run, parse_args, run_deliberation, summarise

INSTRUCTIONS = ("Convene a simulated citizens' assembly: a stratified random jury of persona-conditioned language-model "
                "jurors hears the question, deliberates in moderated rounds and votes privately before and after. "
                "Use `deliberate` for a value question where informed people disagree; `get_run` reads a recorded run.")


def build_server(*, model: str | None = None, db: str | None = None, model_options: dict[str, Any] | None = None):
    """The MCP server. `model`: the model for calls that name none; `db`: the store every run is recorded in."""
    try:
        from mcp.server.mcpserver import MCPServer
        from mcp.server.mcpserver.exceptions import ToolError
        from mcp.types import CallToolResult, TextContent
    except ImportError as exc:
        raise MissingExtraError(f"assembly mcp needs the MCP SDK ({exc.name}): pip install 'assembly-sim[agents]'") \
            from None
    from transcripts import StoreError

    server = MCPServer(name="assembly", instructions=INSTRUCTIONS, log_level="WARNING")
    default_model = model  # the tool's own `model` argument shadows it

    def answer(summary: str, data: dict[str, Any]) -> CallToolResult:
        text = json.dumps(data, ensure_ascii=False, default=str)
        return CallToolResult(content=[TextContent(type="text", text=summary), TextContent(type="text", text=text)],
                              structured_content=data)

    @server.tool(description="Run a citizens' assembly on a question and return its verdict, tallies, vote shift "
                             "and minority report.")
    async def deliberate(
        question: Annotated[str, Field(description=HELP["question"])],
        options: Annotated[list[str], Field(description=HELP["options"])],
        ballot_type: Annotated[BallotType, Field(description=HELP["ballot_type"])] = "single",
        jurors: Annotated[int | None, Field(description=HELP["jurors"])] = None,
        rounds: Annotated[int | None, Field(description=HELP["rounds"])] = None,
        model: Annotated[str | None, Field(description=HELP["model"])] = None,
        seed: Annotated[int | None, Field(description=HELP["seed"])] = None,
        population: Annotated[str | None, Field(description=HELP["population"])] = None,
    ) -> CallToolResult:
        given = {"question": question, "options": options, "ballot_type": ballot_type, "jurors": jurors,
                 "rounds": rounds, "model": model, "seed": seed, "population": population}
        arguments = {k: v for k, v in given.items() if v is not None}
        try:
            result = await run_deliberation(parse_args(arguments), model=default_model, db=db,
                                            model_options=model_options)
        except (AssemblyError, StoreError) as exc:
            raise ToolError(str(exc)) from None
        return answer(summarise(result), result.model_dump(mode="json"))

    @server.tool(description="Read a recorded assembly run: its status and, once completed, its result.")
    async def get_run(run_id: Annotated[str, Field(description=HELP["run_id"])]) -> CallToolResult:
        from assembly.recorded import run_record
        from transcripts import Store, default_store_path

        try:
            record = run_record(Store(db or default_store_path(), read_only=True), run_id)
        except (AssemblyError, StoreError) as exc:
            raise ToolError(str(exc)) from None
        return answer(describe_run(record), record.model_dump(mode="json"))

    return server


def serve_stdio(**kwargs) -> None:
    """Serve on stdin/stdout until the client closes the connection."""
    build_server(**kwargs).run("stdio")
