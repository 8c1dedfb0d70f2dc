"""A study's draws as recorded: the store's views read into DrawOutcome rows for the summary.

Only each slot's current run counts (the latest of a question and draw: a re-run supersedes the run it repeats);
vote shares come from `opinion_shift` / `opinion_shift_by_group`, winners and stability from the post-ballot
tallies, so the summary and the SQL views read the same numbers.
"""

from __future__ import annotations

import json

from assembly.study.summary import DrawOutcome

_CURRENT = "SELECT run_id FROM study_draws WHERE study_id = $study AND current AND status = 'completed'"


def current_runs(store, study_id: str) -> dict[tuple[str, int], tuple[str, str]]:
    """(question key, draw) -> (run id, status) of each slot's current run."""
    rows = store.sql("SELECT question_key, draw, run_id, status FROM study_draws WHERE study_id = $study AND current",
                     {"study": study_id}).rows()
    return {(key, draw): (run_id, status) for key, draw, run_id, status in rows}


def load_outcomes(store, study_id: str) -> list[DrawOutcome]:
    with store.reading():
        current = current_runs(store, study_id)
        params = {"study": study_id}
        specs = dict(store.sql(f"SELECT id, spec FROM runs WHERE id IN ({_CURRENT})", params).rows())
        tallies = store.sql(f"SELECT run_id, rule, winner, stability FROM tallies WHERE phase = 'post' "
                            f"AND run_id IN ({_CURRENT})", params).rows()
        shares = store.sql(f"SELECT run_id, ballot_type, option, pre_share, post_share FROM opinion_shift "
                           f"WHERE run_id IN ({_CURRENT})", params).rows()
        groups = store.sql(f"SELECT run_id, ballot_type, attribute, value, option, delta FROM opinion_shift_by_group "
                           f"WHERE run_id IN ({_CURRENT})", params).rows()
    kinds = {run_id: ((json.loads(spec) if spec else {}).get("ballot") or {}).get("type")
             for run_id, spec in specs.items()}
    rules = {run_id: ((json.loads(spec) if spec else {}).get("ballot") or {}).get("rules") or []
             for run_id, spec in specs.items()}
    winners: dict[str, dict[str, str | None]] = {}
    stability: dict[str, float | None] = {}
    for run_id, rule, winner, stab in tallies:
        winners.setdefault(run_id, {})[rule] = winner
        if rules.get(run_id) and rule == rules[run_id][0]:
            stability[run_id] = stab
    pre: dict[str, dict[str, float]] = {}
    post: dict[str, dict[str, float]] = {}
    for run_id, kind, option, pre_share, post_share in shares:
        if kind != kinds.get(run_id):
            continue
        if pre_share is not None:
            pre.setdefault(run_id, {})[option] = pre_share
        if post_share is not None:
            post.setdefault(run_id, {})[option] = post_share
    shifts: dict[str, dict[tuple[str, str], dict[str, float]]] = {}
    for run_id, kind, attribute, value, option, delta in groups:
        if kind == kinds.get(run_id) and delta is not None and value is not None:
            shifts.setdefault(run_id, {}).setdefault((attribute, value), {})[option] = delta
    return [DrawOutcome(question=key, draw=draw, run_id=run_id, status=status, winners=winners.get(run_id, {}),
                        stability=stability.get(run_id), pre=pre.get(run_id, {}), post=post.get(run_id, {}),
                        groups=shifts.get(run_id, {}))
            for (key, draw), (run_id, status) in sorted(current.items())]
