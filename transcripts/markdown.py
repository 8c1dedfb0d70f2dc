"""A run as readable markdown: what `assembly transcripts show` prints and the markdown export writes."""

from __future__ import annotations

import json
from typing import Any

from transcripts.store import Store, from_json


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(headers: list[str], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.strip().splitlines())


ROLE_ORDER = "CASE role WHEN 'moderator' THEN 0 WHEN 'witness' THEN 1 WHEN 'expert' THEN 2 ELSE 3 END"


def render_show(store: Store, run_id: str, *, transcript: bool = True) -> str:
    """The whole run as markdown: header, participants, transcript by phase, ballots, shift, tallies, verdict, cost."""
    with store.reading():
        return _render(store, run_id, transcript)


def _render(store: Store, run_id: str, transcript: bool) -> str:
    run = store.run(run_id)
    out = [f"# {run['question']}", ""]
    facts = [("run", run["id"]), ("status", run["status"] + (f" ({run['reason']})" if run["reason"] else "")),
             ("provenance", run["provenance"]), ("source", run["source"]), ("license", run["license"]),
             ("record id", run["external_id"]), ("started", run["started_at"]), ("finished", run["finished_at"]),
             ("seed", run["seed"]), ("options", ", ".join(run["options"]) if run["options"] else None)]
    out += [f"- **{k}**: {v}" for k, v in facts if v is not None] + [""]

    people = store.sql("SELECT id, role, name, attributes FROM participants WHERE run_id = ? "
                       f"ORDER BY {ROLE_ORDER}, id", [run_id])
    if people.height:
        rows = [(pid, role, name, "; ".join(f"{k}: {v}" for k, v in (from_json(attrs) or {}).items()))
                for pid, role, name, attrs in people.rows()]
        out += ["## Participants", "", table(["id", "role", "name", "attributes"], rows), ""]

    if transcript:
        turns = store.sql("SELECT phase, round, speaker_id, speaker, speaker_role, content FROM transcript "
                          "WHERE run_id = ? ORDER BY seq", [run_id])
        if turns.height:
            out += ["## Transcript", ""]
            current = None
            for phase, rnd, sid, name, role, content in turns.rows():
                if (phase, rnd) != current:
                    current = (phase, rnd)
                    out += [f"### {phase}" + (f", round {rnd}" if rnd is not None else ""), ""]
                who = name or sid
                out += [f"**{who}**" + (f" ({role})" if role else "") + ":", "", _quote(content) or ">", ""]

    changes = store.sql("SELECT participant_id, name, ballot_type, pre_choice, post_choice, changed FROM ballot_changes "
                        "WHERE run_id = ? ORDER BY participant_id", [run_id])
    if changes.height:
        rows = [(pid, name, kind, pre, post, {True: "yes", False: "no"}.get(changed, ""))
                for pid, name, kind, pre, post, changed in changes.rows()]
        out += ["## Ballots before and after", "", table(["id", "name", "type", "pre", "post", "changed"], rows), ""]
    shift = store.sql("SELECT option, pre_share, post_share, delta FROM opinion_shift WHERE run_id = ? "
                      "ORDER BY option", [run_id])
    if shift.height:
        out += ["## Opinion shift", "", table(["option", "pre share", "post share", "change"], shift.rows()), ""]

    tallies = store.sql("SELECT phase, rule, winner, scores, valid, abstained, explain FROM tallies WHERE run_id = ? "
                        "ORDER BY created_at", [run_id])
    if tallies.height:
        rows = [(phase, rule, winner, json.dumps(from_json(scores)) if scores else "", valid, abst, explain)
                for phase, rule, winner, scores, valid, abst, explain in tallies.rows()]
        out += ["## Tallies", "", table(["phase", "rule", "winner", "scores", "valid", "abstained", "why"], rows), ""]

    verdicts = store.sql("SELECT text, minority_report, winner, rule FROM verdicts WHERE run_id = ? ORDER BY created_at",
                         [run_id])
    for text, minority, winner, rule in verdicts.rows():
        out += ["## Verdict", ""]
        if winner:
            out += [f"**{winner}**" + (f" (by {rule})" if rule else ""), ""]
        out += [_quote(text), ""]
        if minority:
            out += ["### Minority report", "", _quote(minority), ""]

    cost = store.sql("SELECT role, model, calls, errors, input_tokens, output_tokens, cost_usd, total_s FROM call_costs "
                     "WHERE run_id = ?", [run_id])
    if cost.height:
        out += ["## Model calls", "",
                table(["role", "model", "calls", "errors", "tokens in", "tokens out", "cost USD", "seconds"], cost.rows()),
                ""]
    return "\n".join(out).rstrip() + "\n"
