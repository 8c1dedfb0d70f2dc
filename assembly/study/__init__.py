"""Studies: N independent juries (draws) of one question, or of every question of a bank, run side by side through
one set of loaded models, recorded as a study, and summarised with intervals over the draws.

    from assembly.study import run_study
    result = run_study(["examples/ai_assistant.yaml"], settings={"draws": 20})
    result.summary.questions[0].win_rates

Modules: sources (question files, lists, banks), plan (draws, seeds, digest), runner (local executor, resume),
ray_executor (`--executor ray`), outcomes (the store read back), summary and intervals (pure statistics).
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "run_study": "assembly.study.runner",
    "arun_study": "assembly.study.runner",
    "StudyResult": "assembly.study.runner",
    "StudySummary": "assembly.study.summary",
    "load_questions": "assembly.study.sources",
}

__all__ = ["StudyResult", "StudySummary", "arun_study", "load_questions", "run_study"]


def __getattr__(name: str):  # light on import: the runner pulls in LangGraph and the store
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'assembly.study' has no attribute {name!r}")
