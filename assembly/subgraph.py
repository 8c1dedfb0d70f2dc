"""The assembly as a node for other agents' graphs: a self-contained compiled graph whose state is plain data.

    from assembly import as_subgraph
    parent.add_node("citizens_jury", as_subgraph("examples/ai_assistant.yaml"))
    # parent state needs the keys `assembly_question` (optional override), `assembly_options` (optional),
    # and receives `assembly_result` (an AssemblyResult as a dict).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from assembly.config import AssemblySpec
from assembly.deliberation import adeliberate, resolve_spec


class SubgraphState(TypedDict, total=False):
    assembly_question: str
    assembly_options: list[str]
    assembly_result: dict[str, Any]


def as_subgraph(base: str | Path | dict | AssemblySpec, **deliberate_kwargs):
    """Compile a one-node graph that runs a whole assembly on `base`, with the question and options optionally
    taken from the parent's state; every run is recorded like any other."""
    base_spec = resolve_spec(base)

    async def run_assembly(state: SubgraphState) -> dict:
        data = base_spec.model_dump(mode="json")
        if state.get("assembly_question"):
            data["question"] = state["assembly_question"]
        if state.get("assembly_options"):
            data["ballot"]["options"] = list(state["assembly_options"])
        result = await adeliberate(data, **deliberate_kwargs)
        return {"assembly_result": result.model_dump(mode="json")}

    builder = StateGraph(SubgraphState)
    builder.add_node("assembly", run_assembly)
    builder.add_edge(START, "assembly")
    builder.add_edge("assembly", END)
    return builder.compile()
