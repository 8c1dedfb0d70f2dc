"""Clauses built from store records: one completed run, or one question of a completed study.

Everything comes from what the run recorded (runs, tallies, verdicts, question_ballots / opinion_shift, participants,
llm_calls; a study's summary in studies.summary), never from a fresh computation, so a clause says exactly what the
store says and can be rebuilt from it at any time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from assembly.clauses.model import (
    Clause,
    Decision,
    Interval,
    MinorityView,
    ModelUse,
    OptionSupport,
    Provenance,
    RuleOutcome,
    Support,
)
from assembly.errors import AssemblyError

ROLES = ("juror", "witness", "moderator")


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def has_studies(store) -> bool:
    """Whether the store has the studies table (migration 0007)."""
    return bool(store.sql("SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                          "AND table_name = 'studies'").item())


def resolve_target(store, target: str) -> tuple[str, str]:
    """("run" | "study", full id) for a run id, a unique prefix or 'latest' — or, when no run matches, a study's."""
    from transcripts import StoreError

    try:
        return "run", store.resolve_run(target)
    except StoreError as run_error:
        if "ambiguous" in str(run_error) or target == "latest" or not has_studies(store):
            raise
        try:
            return "study", store.resolve_study(target)
        except StoreError:
            raise AssemblyError(f"no run or study matches {target!r} in {store.path}") from None


def clause_for(store, target: str, *, question: str | None = None) -> Clause:
    """The clause of a run or a study (`question`: which question of a study of several, by key)."""
    with store.reading():
        kind, found = resolve_target(store, target)
        if kind == "study":
            return study_clause(store, found, question=question)
        if question is not None:
            raise AssemblyError(f"--question picks a question of a study; {found} is a run")
        return run_clause(store, found)


def clauses_for(names: Sequence[str], open_store: Callable[[], Any], *, question: str | None = None) -> list[Clause]:
    """The clause each name stands for: a clause file when the name is a file or ends like one (.yaml, .json, ...),
    else a run or study in the store `open_store()` opens — once, on first need, and closed at the end."""
    from assembly.clauses.render import FORMATS, load_clause

    found, opened = [], []
    try:
        for name in names:
            path = Path(name)
            if path.is_file() or path.suffix.lower() in FORMATS:
                found.append(load_clause(path))
                continue
            if not opened:
                opened.append(open_store())
            found.append(clause_for(opened[0], name, question=question))
    finally:
        for store in opened:
            store.close()
    return found


def _finished(kind: str, ident: str, status: str, reason: str | None) -> None:
    if status != "completed":
        why = f" ({reason})" if reason else ""
        raise AssemblyError(f"{kind} {ident} is {status}{why}: a clause cites only a completed {kind}")


def run_clause(store, run_id: str) -> Clause:
    run = store.run(run_id)
    _finished("run", run_id, run["status"], run["reason"])
    spec = run["spec"] or {}
    ballot = spec.get("ballot") or {}
    options = list(run["options"] or ballot.get("options") or [])
    verdicts = store.sql("SELECT text, minority_report, winner, rule FROM verdicts WHERE run_id = ? "
                         "ORDER BY created_at DESC LIMIT 1", [run_id]).rows()
    if not verdicts:
        raise AssemblyError(f"run {run_id} recorded no verdict: there is no decision to cite")
    text, report, winner, rule = verdicts[0]
    tallies = {(phase, r): (w, _json(expected) or {}, _json(wins) or {}, stab, redraws, valid, abstained)
               for phase, r, w, expected, wins, stab, redraws, valid, abstained in store.sql(
                   "SELECT phase, rule, winner, expected, win_probability, stability, redraws, valid, abstained "
                   "FROM tallies WHERE run_id = ?", [run_id]).rows()}
    rules = list(ballot.get("rules") or dict.fromkeys(r for _, r in tallies))
    rule = rule or (rules[0] if rules else None)
    post = tallies.get(("post", rule))
    pre = tallies.get(("pre", rule))
    shares = {option: (pre_share, post_share, delta) for option, pre_share, post_share, delta in store.sql(
        "SELECT option, pre_share, post_share, delta FROM opinion_shift WHERE run_id = ? AND ballot_type = "
        "coalesce(?, ballot_type)", [run_id, ballot.get("type")]).rows()}
    support = Support(
        basis="run",
        options=[OptionSupport(option=o, pre_share=shares.get(o, (None,) * 3)[0],
                               post_share=shares.get(o, (None,) * 3)[1], shift=shares.get(o, (None,) * 3)[2],
                               expected=post[1].get(o) if post else None,
                               win_probability=post[2].get(o) if post else None) for o in options],
        rules=[RuleOutcome(rule=r, winner=tallies[("post", r)][0],
                           pre_winner=tallies[("pre", r)][0] if ("pre", r) in tallies else None,
                           stability=tallies[("post", r)][3]) for r in rules if ("post", r) in tallies],
        valid={phase: t[5] for (phase, r), t in tallies.items() if r == rule},
        abstained={phase: t[6] for (phase, r), t in tallies.items() if r == rule},
        stability=post[3] if post else None,
        redraws=post[4] if post else None,
    )
    return Clause(
        question=run["question"], options=options,
        decision=Decision(winner=winner, rule=rule, statement=text, pre_winner=pre[0] if pre else None),
        support=support,
        minority=_minority(store, run_id, winner, report, options),
        provenance=_provenance(store, [run], spec),
    )


def _minority(store, run_id: str, winner: str | None, report: str | None, options: list[str]) -> MinorityView | None:
    """Those whose valid post-ballot does not back the winner (as the minority report is written for)."""
    if winner is None:
        return None
    backed = [list(s) for (s,) in store.sql("SELECT supports FROM question_ballots WHERE run_id = ? AND phase = 'post' "
                                            "AND status = 'valid'", [run_id]).rows()]
    others = [s for s in backed if winner not in s]
    chosen = {o for s in others for o in s}
    return MinorityView(jurors=len(others), of=len(backed), options=[o for o in options if o in chosen],
                        report=report)


def _provenance(store, runs: list[dict[str, Any]], spec: dict[str, Any]) -> Provenance:
    """Who, how and with what, over one run or a study's draws (jury seats then averaged over the draws)."""
    ids = [r["id"] for r in runs]
    first = runs[0]
    jury = spec.get("jury") or {}
    stratify = list(jury.get("stratify") or [])
    marks = ", ".join("?" * len(ids))
    seats: dict[str, dict[str, float]] = {}
    for attribute, value, n in store.sql(
            "SELECT a.attribute, a.value, count(*) FROM participant_attributes a JOIN participants p "
            "ON p.run_id = a.run_id AND p.id = a.participant_id "
            f"WHERE a.run_id IN ({marks}) AND p.role = 'juror' GROUP BY ALL ORDER BY ALL", ids).rows():
        if not stratify or attribute in stratify:
            seats.setdefault(attribute, {})[value] = n / len(ids) if len(ids) > 1 else n
    humans = [pid for (pid,) in store.sql(
        f"SELECT DISTINCT id FROM participants WHERE run_id IN ({marks}) AND "
        "json_extract_string(extra, '$.provenance') = 'human' ORDER BY id", ids).rows()]
    reported: dict[str, tuple[list[str], int]] = {}
    for role, model, calls in store.sql(
            f"SELECT role, model, count(*) FROM llm_calls WHERE run_id IN ({marks}) AND error IS NULL "
            "GROUP BY ALL ORDER BY ALL", ids).rows():
        names, total = reported.get(role, ([], 0))
        reported[role] = ([*names, model], total + calls)
    configured = (first["summary"] or {}).get("models") or {}
    models_spec = spec.get("models") or {}
    models = []
    for role in ROLES:
        name = configured.get(role) or models_spec.get(role) or models_spec.get("default")
        if name or role in reported:
            names, calls = reported.get(role, ([], 0))
            models.append(ModelUse(role=role, spec=name or "(unrecorded)", reported=names, calls=calls))
    versions = {k: str(v) for k, v in (first["versions"] or {}).items()}
    layout = versions.get("prompt_layout")
    return Provenance(
        run_id=first["id"] if len(runs) == 1 else None,
        store=str(Path(store.path).resolve()),
        source=first["provenance"],
        population=jury.get("population"),
        population_shares=(first["summary"] or {}).get("population") or {},
        jury_size=jury.get("size"),
        stratify=stratify,
        jury=seats,
        human_seats=humans,
        ballot_type=(spec.get("ballot") or {}).get("type"),
        rules=list((spec.get("ballot") or {}).get("rules") or []),
        procedure=spec.get("procedure") or {},
        witnesses=[f"{w.get('name')} ({w.get('expertise')})" for w in spec.get("witnesses") or []],
        models=models,
        versions=versions,
        prompt_layout=int(layout) if layout and layout.isdigit() else None,
        seeds=[r["seed"] for r in runs if r["seed"] is not None],
        started_at=min(r["started_at"] for r in runs),
        finished_at=max((r["finished_at"] for r in runs if r["finished_at"] is not None), default=None),
    )


# --- studies -------------------------------------------------------------------------------------------------------


def _interval(estimate: Any) -> Interval | None:
    low, high = getattr(estimate, "low", None), getattr(estimate, "high", None)
    return None if low is None or high is None else Interval(low=low, high=high)


def study_clause(store, study_id: str, *, question: str | None = None) -> Clause:
    """One question of a completed study (assembly.study): support is each option's win probability across the
    draws (Wilson 95%) and its mean vote shares (bootstrap 95%); the statement and the minority view are those of
    the first draw the modal winner won, and the provenance covers every completed draw."""
    from assembly.study.summary import QuestionSummary

    study = store.study(study_id)
    _finished("study", study_id, study["status"], study["reason"])
    found = [QuestionSummary.model_validate(q) for q in (study["summary"] or {}).get("questions") or []]
    if question is not None:
        found = [q for q in found if q.key == question]
        if not found:
            raise AssemblyError(f"study {study_id} has no question with key {question!r}")
    if len(found) != 1:
        raise AssemblyError(f"study {study_id} asks {len(found)} questions; pick one with --question KEY")
    q = found[0]
    draws = store.sql("SELECT run_id, winner FROM study_draws WHERE study_id = ? AND question_key = ? AND current "
                      "AND status = 'completed' ORDER BY draw", [study_id, q.key]).rows()
    if not draws:
        raise AssemblyError(f"study {study_id} has no completed draw of {q.key!r} to cite")
    deciding = q.rules[0]
    shown = next((run_id for run_id, winner in draws if winner == q.modal_winner), draws[0][0])
    example = run_clause(store, shown)
    runs = [store.run(run_id) for run_id, _ in draws]
    wins = {w.option: w for w in q.win_rates if w.rule == deciding}
    shares = {s.option: s for s in q.shares}
    options = []
    for o in q.options:
        s, w = shares.get(o), wins.get(o)
        options.append(OptionSupport(
            option=o, pre_share=s.pre.mean if s else None, post_share=s.post.mean if s else None,
            shift=s.shift.mean if s else None, win_probability=w.share if w else None,
            pre_interval=_interval(s.pre) if s else None, post_interval=_interval(s.post) if s else None,
            shift_interval=_interval(s.shift) if s else None, win_interval=_interval(w) if w else None))
    rules = []
    for rule in q.rules:
        rates = [w for w in q.win_rates if w.rule == rule and w.option in q.options and w.k]
        rules.append(RuleOutcome(rule=rule, winner=max(rates, key=lambda w: w.k).option if rates else None))
    support = Support(basis="study", options=options, rules=rules, draws=q.completed,
                      stability=q.stability_within.mean, stability_interval=_interval(q.stability_within),
                      agreement=q.modal_agreement.share, agreement_interval=_interval(q.modal_agreement))
    provenance = _provenance(store, runs, runs[0]["spec"] or {})
    provenance.study_id, provenance.runs = study_id, [r["id"] for r in runs]
    minority = example.minority.model_copy(update={"run_id": shown}) if example.minority else None
    return Clause(question=q.question, options=q.options,
                  decision=Decision(winner=q.modal_winner, rule=deciding, statement=example.decision.statement,
                                    statement_run=shown),
                  support=support, minority=minority, provenance=provenance)
