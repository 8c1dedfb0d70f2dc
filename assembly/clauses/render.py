"""Clauses and their diffs as files: Markdown for people, YAML and JSON (with the schema id) for machines. The format
follows the output file's suffix; a clause file read back must be YAML or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import ValidationError

from assembly.clauses.model import CLAUSE_SCHEMA, Clause, ClauseDiff, Interval, OptionSupport
from assembly.errors import AssemblyError

FORMATS = {".md": "md", ".markdown": "md", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}


def format_of(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise AssemblyError(f"{path}: unknown clause format {path.suffix or '(no suffix)'!r}; "
                            f"use one of {', '.join(FORMATS)}") from None


def render(item: Clause | ClauseDiff, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(item.dump(), ensure_ascii=False, indent=2) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(item.dump(), sort_keys=False, allow_unicode=True, width=120)
    return clause_markdown(item) if isinstance(item, Clause) else diff_markdown(item)


def load_clause(path: Path) -> Clause:
    """A clause written as YAML or JSON; one-line AssemblyError for anything else."""
    fmt = format_of(path)
    if fmt == "md":
        raise AssemblyError(f"{path}: a Markdown clause cannot be read back; give its .yaml or .json form")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise AssemblyError(f"{path}: cannot read the clause ({exc})") from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise AssemblyError(f"{path}: malformed {fmt.upper()}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or data.get("schema") != CLAUSE_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise AssemblyError(f"{path}: schema: expected {CLAUSE_SCHEMA!r}, got {found!r}")
    try:
        return Clause.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        raise AssemblyError(f"{path}: {where}: {error['msg']}") from None


# --- Markdown ------------------------------------------------------------------------------------------------------


def _pct(value: float | None, interval: Interval | None = None, signed: bool = False) -> str:
    if value is None:
        return "—"
    value = 0.0 if round(value * 100) == 0 else value  # no "-0%"
    text = f"{value * 100:+.0f}%" if signed else f"{value * 100:.0f}%"
    if interval is not None:
        text += f" [{interval.low * 100:.0f}–{interval.high * 100:.0f}%]"
    return text


def _value(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _quote(text: str) -> list[str]:
    return [f"> {line}" if line else ">" for line in text.strip().splitlines()] or [">"]


def _support_table(options: list[OptionSupport], study: bool) -> list[str]:
    head = ["option", "pre share", "post share", "shift", "P(win)" + (" over draws" if study else "")]
    if not study:
        head.insert(4, "expected")
    lines = [_row(head), "|" + "---|" * len(head)]
    for o in options:
        cells = [o.option, _pct(o.pre_share, o.pre_interval), _pct(o.post_share, o.post_interval),
                 _pct(o.shift, o.shift_interval, signed=True), _pct(o.win_probability, o.win_interval)]
        if not study:
            cells.insert(4, "—" if o.expected is None else f"{o.expected:.2f}")
        lines.append(_row(cells))
    return lines


def clause_markdown(clause: Clause) -> str:
    d, s, p, m = clause.decision, clause.support, clause.provenance, clause.minority
    study = s.basis == "study"
    out = [f"# Clause: {clause.question}", "",
           f"*{clause.schema_} · {clause.label} · finished {p.finished_at or '—'}*", "", "## Decision", ""]
    how = f" under {d.rule}" if d.rule else ""
    if study:
        out.append(f"**{d.winner or 'no winner'}**{how}, the most frequent winner over {s.draws} independent juries "
                   f"({_pct(s.agreement, s.agreement_interval)} of draws).")
    else:
        before = f"; before deliberation: {d.pre_winner}" if d.pre_winner != d.winner else ""
        out.append(f"**{d.winner or 'no winner'}**{how}{before}.")
    out += ["", *_quote(d.statement), ""]
    if d.statement_run:
        out += [f"(the verdict of draw run {d.statement_run})", ""]
    out += ["## Support", "", *_support_table(s.options, study), ""]
    if s.stability is not None:
        if study:
            out.append(f"Verdict stability within draws: {_pct(s.stability, s.stability_interval)} of redraws of "
                       "the jurors' votes elect the draw's winner again (mean over draws).")
        else:
            out.append(f"Verdict stability: {d.winner} wins again in {_pct(s.stability)} of {s.redraws} redraws of "
                       "the jurors' votes from their recorded distributions.")
    if s.valid:
        out.append("Valid ballots: " + ", ".join(f"{k} {v}" for k, v in s.valid.items())
                   + ("; abstentions: " + ", ".join(f"{k} {v}" for k, v in s.abstained.items()) if s.abstained else "")
                   + ".")
    others = [r for r in s.rules if r.rule != d.rule]
    if others:
        out.append("Other rules: " + "; ".join(f"{r.rule} → {r.winner or 'no winner'}" for r in others) + ".")
    out.append("")
    out += ["## Minority view", ""]
    if m is None:
        out += ["No winner, so no minority.", ""]
    elif m.jurors == 0:
        out += [f"None: all {m.of} valid post-ballots backed {d.winner}.", ""]
    else:
        source = f" (draw run {m.run_id})" if m.run_id else ""
        out += [f"{m.jurors} of {m.of} jurors{source} backed {', '.join(m.options) or 'other options'}.", ""]
        if m.report:
            out += [*_quote(m.report), ""]
    out += ["## Provenance", ""]
    facts = [
        ("study", f"{p.study_id} ({len(p.runs)} completed draws)" if p.study_id else None),
        ("run", p.run_id), ("store", p.store), ("record", p.source),
        ("population", p.population and (p.population + (
            " — " + "; ".join(f"{a}: " + ", ".join(f"{g} {v:.0%}" for g, v in shares.items())
                              for a, shares in p.population_shares.items()) if p.population_shares else ""))),
        ("jury", p.jury_size and f"{p.jury_size} jurors, stratified by {', '.join(p.stratify) or 'nothing'}"),
        ("jury composition" + (" (mean seats per draw)" if study else ""),
         "; ".join(f"{a}: " + ", ".join(f"{g} {n:g}" for g, n in groups.items()) for a, groups in p.jury.items())),
        ("seated by people", ", ".join(p.human_seats)),
        ("ballot", p.ballot_type and f"{p.ballot_type}, rules {', '.join(p.rules)}"),
        ("procedure", ", ".join(f"{k} {v}" for k, v in p.procedure.items())),
        ("witnesses", "; ".join(p.witnesses)),
        ("models", "; ".join(f"{u.role}: {u.spec}" + (f" (answered as {', '.join(u.reported)}; {u.calls} calls)"
                                                      if u.reported else "") for u in p.models)),
        ("versions", ", ".join(f"{k} {v}" for k, v in p.versions.items())),
        ("prompt layout", p.prompt_layout),
        ("seeds", ", ".join(str(x) for x in p.seeds)),
        ("dates", f"{p.started_at} → {p.finished_at}"),
    ]
    out += [f"- **{k}**: {v}" for k, v in facts if v not in (None, "", [])]
    return "\n".join(out).rstrip() + "\n"


def diff_markdown(diff: ClauseDiff) -> str:
    out = [f"# Clause diff: {diff.question}", "", f"*{diff.schema_} · A = {diff.a} · B = {diff.b}*", "",
           "## Decision", ""]
    if not diff.decision:
        out.append("Unchanged.")
    out += [f"- **{c.field}**: {_value(c.a)} → {_value(c.b)}" for c in diff.decision]
    out += ["", "## Support", "", _row(["option", "post share A → B", "Δ", "pre share A → B", "Δ", "P(win) A → B",
                                        "Δ"]), "|" + "---|" * 7]
    for o in diff.support:
        out.append(_row([o.option, f"{_pct(o.a_post_share)} → {_pct(o.b_post_share)}",
                         _pct(o.post_share_delta, signed=True), f"{_pct(o.a_pre_share)} → {_pct(o.b_pre_share)}",
                         _pct(o.pre_share_delta, signed=True),
                         f"{_pct(o.a_win_probability)} → {_pct(o.b_win_probability)}",
                         _pct(o.win_probability_delta, signed=True)]))
    out += ["", "## Provenance", ""]
    if not diff.provenance:
        out.append("Made the same way.")
    out += [f"- **{c.field}**: {_value(c.a)} → {_value(c.b)}" for c in diff.provenance]
    return "\n".join(out).rstrip() + "\n"
