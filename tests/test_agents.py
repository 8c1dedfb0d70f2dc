"""The assembly as a tool for agents: the MCP server driven by the SDK's own client over stdio, and the LangChain
tool called by a LangGraph agent whose (scripted) chat model decides to use it."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

import assembly
from tests.scripted_cli import SCRIPTED_CLI
from transcripts import Store

QUESTION = {"question": "Should the market square be car-free on Saturdays?", "options": ["Yes", "No"],
            "ballot_type": "yes_no", "jurors": 3, "rounds": 1, "seed": 4}


def test_mcp_server_over_stdio(tmp_path):
    mcp = pytest.importorskip("mcp")
    db = tmp_path / "mcp.duckdb"
    # The server is this repository's CLI with the scripted backend registered (tests/scripted_cli.py).
    params = mcp.StdioServerParameters(command=SCRIPTED_CLI[0], args=[*SCRIPTED_CLI[1:], "mcp", "--model",
                                                                      "scripted:demo", "--db", str(db)],
                                       env={**os.environ, "OMP_NUM_THREADS": "1"})

    async def session():
        async with mcp.Client(params) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            done = await client.call_tool("deliberate", QUESTION)
            looked_up = await client.call_tool("get_run", {"run_id": "latest"})
            errors = [await client.call_tool("deliberate", args) for args in (
                {"options": ["Yes", "No"]},  # missing question
                {"question": "Q?", "options": ["Only one"]},
                {"question": "Q?", "options": "Yes, No"},
                {"question": "Q?", "options": ["A", "B"], "jurors": 1},
            )]
            errors.append(await client.call_tool("get_run", {"run_id": "nope"}))
            still = await client.call_tool("get_run", {"run_id": "latest"})  # the server survived them all
            return tools, done, looked_up, errors, still

    tools, done, looked_up, errors, still = asyncio.run(asyncio.wait_for(session(), 300))
    assert set(tools) == {"deliberate", "get_run"}
    schema = tools["deliberate"].input_schema
    assert schema["required"] == ["question", "options"] and "population" in schema["properties"]
    assert not done.is_error
    summary, payload = done.content[0].text, json.loads(done.content[1].text)
    assert payload == done.structured_content and payload["status"] == "completed"
    assert len(payload["jurors"]) == 3 and payload["options"] == ["Yes", "No"]
    assert payload["verdict"]["winner"] in summary and payload["run_id"] in summary
    run = Store(db).run(payload["run_id"])
    assert run["status"] == "completed" and run["question"] == QUESTION["question"]
    assert not looked_up.is_error and looked_up.structured_content["result"]["run_id"] == payload["run_id"]
    assert looked_up.structured_content["result"]["verdict"] == payload["verdict"]
    for error in errors:
        assert error.is_error, error
    assert "at least 2" in errors[1].content[0].text and "no run matches" in errors[4].content[0].text
    assert not still.is_error


def test_langchain_tool_in_a_langgraph_agent(tmp_path):
    pytest.importorskip("langchain_core")
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    class Deciding(BaseChatModel):
        """Calls the assembly when asked a value question; then answers from what the tool returned."""

        @property
        def _llm_type(self) -> str:
            return "scripted-agent"

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            last = messages[-1]
            if isinstance(last, ToolMessage):
                reply = AIMessage(content=f"The citizens' assembly answered. {last.content.splitlines()[0]}")
            else:
                reply = AIMessage(content="", tool_calls=[{"name": "citizens_assembly", "id": "call-1",
                                                           "args": QUESTION}])
            return ChatResult(generations=[ChatGeneration(message=reply)])

    db = tmp_path / "agent.duckdb"
    tool = assembly.as_tool(model="scripted:demo", db=db)
    assert set(tool.args) == {"question", "options", "ballot_type", "jurors", "rounds", "model", "seed", "population"}
    model = Deciding()

    async def agent(state: MessagesState) -> dict:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([tool]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    state = asyncio.run(graph.compile().ainvoke({"messages": [("user", "Should the square be car-free?")]}))

    told = next(m for m in state["messages"] if isinstance(m, ToolMessage))
    result = told.artifact
    assert isinstance(result, assembly.AssemblyResult) and result.status == "completed"
    run = Store(db).run(result.run_id)
    assert run["status"] == "completed" and run["question"] == QUESTION["question"] and run["seed"] == 4
    final = state["messages"][-1]
    assert isinstance(final, AIMessage) and not final.tool_calls
    assert result.verdict.winner in final.content and result.run_id in final.content

    bad = asyncio.run(tool.ainvoke({"name": "citizens_assembly", "id": "call-2", "type": "tool_call",
                                    "args": {"question": "Q?", "options": ["Only one"]}}))
    assert bad.status == "error" and "options" in bad.content and "\n" not in bad.content
