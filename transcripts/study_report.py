"""One study as a single self-contained HTML page: per question, the probability each option wins under each rule
with its 95% interval, vote shares before and after deliberation, the shift per option and per group, stability
within and across draws; then every draw with its run.

It reads what the study recorded — `studies.summary` (written by the engine's study runner) and the `study_draws`
view — and computes nothing statistical itself. Inline SVG and CSS, like the run report (report.py).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from transcripts.charts import interval_bars
from transcripts.clock import utcnow
from transcripts.exports import _write_text
from transcripts.store import Store

MAX_SECTIONS = 50  # questions drawn in full; a larger bank gets its overview table and the first ones
MAX_DRAW_ROWS = 1000


def _template() -> jinja2.Template:
    source = resources.files("transcripts").joinpath("study_report.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(source)


def render_study_report(store: Store, study_id: str) -> str:
    with store.reading():
        study = store.study(study_id)
        draws = list(store.sql("SELECT * FROM study_draws WHERE study_id = ? ORDER BY question_key, draw, "
                               "started_at", [study_id]).head(MAX_DRAW_ROWS).iter_rows(named=True))
    summary = study["summary"] or {}
    questions = summary.get("questions") or []
    sections = [_section(q) for q in questions[:MAX_SECTIONS]]
    return _template().render(study=study, summary=summary, questions=questions, sections=sections,
                              more=max(0, len(questions) - MAX_SECTIONS), draws=draws, max_rows=MAX_DRAW_ROWS,
                              generated_at=utcnow().strftime("%Y-%m-%d %H:%M UTC"), store_path=str(store.path))


def write_study_report(store: Store, study_id: str, path: str | os.PathLike[str]) -> Path:
    """Write the study report to `path` (a folder gets `<study id>.html`); return the file written."""
    html = render_study_report(store, study_id)
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / f"{study_id}.html"
    _write_text(path, html)
    return path


def _bars(rows: list[dict[str, Any]], label, *, title: str, signed: bool = False) -> Markup:
    labels = [label(r) for r in rows]
    width = min(380, max(120, 12 + 7 * max((len(t) for t in labels), default=0)))  # room for the longest label
    return Markup(interval_bars(labels, [r["value"] for r in rows], [r["low"] for r in rows],
                                [r["high"] for r in rows], title=title, signed=signed, label_width=width))


def _section(q: dict[str, Any]) -> dict[str, Any]:
    deciding = q["rules"][0]
    wins = [{"label": w["option"], "value": w["share"], "low": w["low"], "high": w["high"]}
            for w in q["win_rates"] if w["rule"] == deciding]
    shifts = [{"label": s["option"], "value": s["shift"]["mean"], "low": s["shift"]["low"], "high": s["shift"]["high"]}
              for s in q["shares"]]
    groups = [{"label": f"{g['attribute']}={g['group']}: {g['option']}", "value": g["mean"], "low": g["low"],
               "high": g["high"]} for g in q["group_shifts"]]
    n = q["completed"]
    return {
        "q": q,
        "win_chart": _bars(wins, lambda r: r["label"], title=f"Probability of winning ({deciding}, {n} draws, "
                                                                 "95% Wilson interval)"),
        "shift_chart": _bars(shifts, lambda r: r["label"], signed=True,
                             title="Pre → post shift in vote share (mean over draws, 95% bootstrap interval)"),
        "group_chart": None if not groups else _bars(
            groups, lambda r: r["label"], signed=True,
            title="Shift by group (mean post − pre share, 95% bootstrap interval)"),
    }
