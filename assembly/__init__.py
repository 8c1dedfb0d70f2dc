"""assembly: simulated citizens' assemblies with language models.

    import assembly
    result = assembly.deliberate("examples/ai_assistant.yaml", model="embedded", seed=7)
    print(result.verdict.text)

Heavy modules (LangGraph, the store, model backends) load on first use, so `import assembly` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "deliberate": "assembly.deliberation",
    "adeliberate": "assembly.deliberation",
    "resolve_spec": "assembly.deliberation",
    "distill": "assembly.distilled",
    "adistill": "assembly.distilled",
    "resume": "assembly.resuming",
    "aresume": "assembly.resuming",
    "build_graph": "assembly.graph",
    "AssemblyContext": "assembly.graph_state",
    "as_subgraph": "assembly.subgraph",
    "as_tool": "assembly.langchain_tool",
    "AssemblyResult": "assembly.result",
    "AssemblySpec": "assembly.config",
    "load_spec": "assembly.config",
    "AssemblyError": "assembly.errors",
    "SpecError": "assembly.errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from assembly.config import AssemblySpec, load_spec
    from assembly.deliberation import adeliberate, deliberate, resolve_spec
    from assembly.distilled import adistill, distill
    from assembly.errors import AssemblyError, SpecError
    from assembly.graph import build_graph
    from assembly.graph_state import AssemblyContext
    from assembly.langchain_tool import as_tool
    from assembly.result import AssemblyResult
    from assembly.resuming import aresume, resume
    from assembly.subgraph import as_subgraph


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'assembly' has no attribute {name!r}")
