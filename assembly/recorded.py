"""A recorded run read back as the typed result its run returned (AssemblyResult): the run's summary holds all of it
but the jurors, which come back from the participants and their question ballots."""

from __future__ import annotations

import json

from pydantic import ValidationError

from assembly.ballot import Ballot
from assembly.ballot_types import kind_of
from assembly.result import AssemblyResult, JurorSummary
from assembly.tools import RunRecord


def recorded_result(store, run_id: str) -> AssemblyResult | None:
    """The result of a completed engine run; None for other runs (unfinished, imported, distilled)."""
    run = store.run(run_id)
    summary = run["summary"] or {}
    if run["status"] != "completed" or summary.get("run_id") != run_id:
        return None
    votes: dict[tuple[str, str], Ballot] = {}
    for pid, phase, kind, status, choice, ranking, approvals, reason in store.sql(
            "SELECT participant_id, phase, ballot_type, status, choice, ranking, approvals, reason "
            "FROM question_ballots WHERE run_id = ? AND phase IN ('pre', 'post')", [run_id]).rows():
        votes[(pid, phase)] = Ballot(participant_id=pid, phase=phase, type=kind, status=status, choice=choice,
                                     ranking=ranking, approvals=approvals, reason=reason)
    jurors = []
    for pid, name, attributes in store.sql("SELECT id, name, attributes FROM participants WHERE run_id = ? AND "
                                           "role = 'juror' ORDER BY id", [run_id]).rows():
        pre, post = votes.get((pid, "pre")), votes.get((pid, "post"))
        kind = kind_of((pre or post).type) if (pre or post) else None
        a, b = (kind.label(pre), kind.label(post)) if kind else (None, None)
        jurors.append(JurorSummary(id=pid, name=name or pid, attributes=json.loads(attributes or "{}"), pre=a,
                                   post=b, changed=a is not None and b is not None and a != b))
    try:
        return AssemblyResult.model_validate({**summary, "jurors": jurors})
    except ValidationError:
        return None


def run_record(store, target: str) -> RunRecord:
    """Where a run (an id, a unique prefix or 'latest') stands, with its result once completed."""
    with store.reading():
        run = store.run(store.resolve_run(target))
        when = {k: None if run[k] is None else str(run[k]) for k in ("started_at", "finished_at")}
        return RunRecord(run_id=run["id"], status=run["status"], reason=run["reason"], question=run["question"],
                         options=list(run["options"] or []), result=recorded_result(store, run["id"]), **when)
