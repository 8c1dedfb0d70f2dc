"""`--mode assembly`: score a group through a full mini-assembly instead of single private ballots.

For one (question, group) we build an assembly spec whose whole jury belongs to the group (a quota of N seats for
it; the jury draw fills the other attributes from the population frame conditional on the group), run it with
`assembly.adeliberate` (private pre-ballot, moderated deliberation, private post-ballot), and read both ballots of
every juror back from the store (with the juror's option probabilities when the backend scores options).
The jury seed depends on the group only, so the same jury sits for every question, as the single-ballot panels do.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from assembly.ballot import Ballot
from assembly.evaluation.survey import SurveyQuestion


def assembly_spec(question: SurveyQuestion, attribute: str, group: str, model_name: str, config) -> dict[str, Any]:
    from assembly.seeds import seed_for

    n = max(2, config.jurors_per_group)
    return {
        "title": f"eval {question.question_id} {attribute}={group}",
        "question": question.question,
        "ballot": {"type": "single", "options": list(question.options)},
        "jury": {"size": n, "population": config.population, "stratify": [], "quotas": {attribute: {group: n}},
                 "seed": seed_for(config.seed, f"{attribute}={group}")},
        "procedure": {"rounds": config.assembly_rounds, "questions": False, "vote": config.vote,
                      "option_orders": config.option_orders, "calibration": config.calibration},
        "models": {"default": _valid_spec(model_name)},
    }


def _valid_spec(name: str) -> str:
    """The spec names the model for the record; the model object itself is injected (it may be a test double)."""
    from assembly.errors import SpecError
    from assembly.providers.registry import parse_model_spec

    try:
        return str(parse_model_spec(name))
    except SpecError:
        return "embedded"


async def run_mini_assembly(question: SurveyQuestion, key: tuple[str, str], model, config, *, deliberate_fn=None,
                            db: str | None = None) -> tuple[list[Ballot], list[Ballot], int]:
    """Run one mini-assembly; return (pre ballots, post ballots, model calls)."""
    if deliberate_fn is None:
        from assembly.deliberation import adeliberate as deliberate_fn
    attribute, group = key
    spec = assembly_spec(question, attribute, group, getattr(model, "name", "embedded"), config)
    with tempfile.TemporaryDirectory(prefix="assembly-eval-") as tmp:
        store_path = db or str(Path(tmp) / "eval.duckdb")
        result = await deliberate_fn(spec, models=model, db=store_path, provenance="eval")
        pre, post = read_ballots(store_path, result.run_id)
    return pre, post, int(getattr(getattr(result, "usage", None), "calls", 0) or 0)


def read_ballots(store_path: str, run_id: str) -> tuple[list[Ballot], list[Ballot]]:
    from transcripts import Store

    store = Store(store_path, read_only=True)
    try:
        frame = store.sql(
            "SELECT participant_id, phase, ballot_type, status, choice, probabilities, reason, attempts, method, "
            "detail FROM ballots WHERE run_id = ? AND target IS NULL ORDER BY participant_id", [run_id])
    finally:
        store.close()
    out: dict[str, list[Ballot]] = {"pre": [], "post": []}
    for row in frame.iter_rows(named=True):
        if row["phase"] not in out:
            continue
        probs, detail = (json.loads(v) if isinstance(v, str) else v for v in (row["probabilities"], row["detail"]))
        out[row["phase"]].append(Ballot(
            participant_id=row["participant_id"], phase=row["phase"], type=row["ballot_type"], status=row["status"],
            choice=row["choice"], probabilities=probs, reason=row["reason"], attempts=row["attempts"] or 1,
            method=row["method"], detail=detail,
        ))
    return out["pre"], out["post"]
