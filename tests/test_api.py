"""The Python API: typed JSON-serialisable result, async twin, and the assembly as a node in another graph."""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypedDict

import pytest
import yaml
from langgraph.graph import END, START, StateGraph

import assembly
from assembly.errors import AssemblyError
from assembly.providers.scripted import ScriptedModel
from tests.conftest import MINIMAL


def test_deliberate_from_dict_is_json_serialisable(tmp_path):
    spec = yaml.safe_load(MINIMAL)
    result = assembly.deliberate(spec, models=ScriptedModel(), db=tmp_path / "s.duckdb", jurors=4)
    data = json.loads(result.model_dump_json())
    assert data["status"] == "completed" and len(data["jurors"]) == 4
    assert assembly.AssemblyResult.model_validate(data) == result
    assert sum(result.post_counts.values()) + result.abstentions["post"] == 4


def test_async_twin_and_loop_guard(tmp_path):
    spec = yaml.safe_load(MINIMAL)

    async def main():
        with pytest.raises(AssemblyError, match="adeliberate"):
            assembly.deliberate(spec, models=ScriptedModel(), db=tmp_path / "a.duckdb")
        return await assembly.adeliberate(spec, models=ScriptedModel(), db=tmp_path / "a.duckdb", rounds=1)

    result = asyncio.run(main())
    assert result.status == "completed"


class AgentState(TypedDict, total=False):
    user_request: str
    assembly_question: str
    assembly_options: list[str]
    assembly_result: dict[str, Any]
    answer: str


def test_assembly_as_a_node_in_another_graph(tmp_path):
    """An agent meets a value question mid-task, asks a citizens' jury, and acts on the verdict."""
    model = ScriptedModel(choose=lambda r: "Ask first")

    def frame_question(state: AgentState) -> dict:
        return {"assembly_question": f"How should I handle: {state['user_request']}?",
                "assembly_options": ["Do it", "Ask first"]}

    def act(state: AgentState) -> dict:
        return {"answer": f"jury says: {state['assembly_result']['verdict']['winner']}"}

    parent = StateGraph(AgentState)
    parent.add_node("frame", frame_question)
    parent.add_node("jury", assembly.as_subgraph(yaml.safe_load(MINIMAL), models=model, db=tmp_path / "s.duckdb",
                                                  jurors=4, rounds=1))
    parent.add_node("act", act)
    parent.add_edge(START, "frame")
    parent.add_edge("frame", "jury")
    parent.add_edge("jury", "act")
    parent.add_edge("act", END)
    out = asyncio.run(parent.compile().ainvoke({"user_request": "delete the user's old photos"}))
    assert out["answer"] == "jury says: Ask first"
    assert out["assembly_result"]["question"].startswith("How should I handle")
    # The jurors were asked the parent's question, not the base file's.
    assert any("delete the user's old photos" in m.content for r in model.history for m in r.messages)


def test_cached_prompt_tokens_are_summed_into_the_run_usage(tmp_path, capsys):
    from assembly.cli.run import print_summary
    from assembly.providers.types import Usage
    from assembly.providers.wrappers import ModelWrapper
    from transcripts import Store

    class HalfCached(ModelWrapper):
        """Reports half of every prompt as read from a prompt cache, and one token written to it."""

        async def generate(self, request):
            response = await self.inner.generate(request)
            used = response.usage
            return response.model_copy(update={"usage": Usage(
                input_tokens=used.input_tokens, output_tokens=used.output_tokens,
                cached_input_tokens=used.input_tokens // 2, cache_write_tokens=1)})

    spec = yaml.safe_load(MINIMAL)
    result = assembly.deliberate(spec, models=HalfCached(ScriptedModel()), db=tmp_path / "s.duckdb", jurors=4)
    stored = Store(tmp_path / "s.duckdb").sql(
        "select sum(input_tokens) i, sum(cached_input_tokens) c, sum(cache_write_tokens) w, count(*) n "
        "from llm_calls where run_id = ?", [result.run_id]).row(0)
    assert stored[1] > 0
    assert (result.usage.input_tokens, result.usage.cached_input_tokens, result.usage.cache_write_tokens) == stored[:3]
    assert result.usage.cache_write_tokens == result.usage.calls == stored[3]
    print_summary(result)
    assert f"{stored[1]} of {stored[0]} prompt tokens cached" in capsys.readouterr().out
