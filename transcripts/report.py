"""One run as a single self-contained HTML page: question, verdict and minority report, jury composition against
the population, ballot movement, tallies under each rule, speaking shares, model costs and the full transcript.

Charts are inline SVG and styles inline CSS, so the file opens offline, mails as one attachment and prints.
Population marginals (`{attribute: {group: share}}`) come from the `population` argument or, failing that, from
`runs.summary["population"]`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from transcripts.charts import grouped_bars, transition_matrix
from transcripts.clock import utcnow
from transcripts.errors import StoreError
from transcripts.exports import _write_text
from transcripts.store import Store, from_json

MAX_GROUPS = 12  # attributes with more distinct values than this (free text, ids) are not charted


def _template() -> jinja2.Template:
    source = resources.files("transcripts").joinpath("report.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(source)


def _shares(values: list[str]) -> dict[str, float]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return {k: n / len(values) for k, n in counts.items()} if values else {}


def render_report(store: Store, run_id: str, *, population: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """The report page as a string."""
    with store.reading():
        return _render(store, run_id, population)


def write_report(store: Store, run_id: str, path: str | os.PathLike[str], *,
                 population: Mapping[str, Mapping[str, float]] | None = None) -> Path:
    """Write the report for `run_id` to `path` (a folder gets `<run id>.html`); return the file written."""
    html = render_report(store, run_id, population=population)
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / f"{run_id}.html"
    _write_text(path, html)
    return path


def _rows(store: Store, query: str, run_id: str) -> list[dict[str, Any]]:
    return list(store.sql(query, [run_id]).iter_rows(named=True))


def _render(store: Store, run_id: str, population: Mapping[str, Mapping[str, float]] | None) -> str:
    run = store.run(run_id)
    if population is None:
        population = (run.get("summary") or {}).get("population")
    population = {a: dict(g) for a, g in (population or {}).items()}

    people = _rows(store, "SELECT id, role FROM participants WHERE run_id = ?", run_id)
    voter_role = "juror" if any(p["role"] == "juror" for p in people) else "participant"
    voters = {p["id"] for p in people if p["role"] == voter_role}
    attrs = _rows(store, "SELECT participant_id, attribute, value FROM participant_attributes WHERE run_id = ?", run_id)
    by_attribute: dict[str, list[str]] = {}
    for a in attrs:
        if a["participant_id"] in voters and a["value"] is not None:
            by_attribute.setdefault(a["attribute"], []).append(a["value"])
    # Without population marginals: every attribute with few groups, except raw source answers (FORMAT 2 `*_raw`).
    charted = list(population) or sorted(a for a, v in by_attribute.items()
                                         if len(set(v)) <= MAX_GROUPS and not a.endswith("_raw"))
    label = "jury" if voter_role == "juror" else "participants"
    composition_charts = []
    for attribute in charted:
        jury = _shares(by_attribute.get(attribute, []))
        pop = population.get(attribute, {})
        groups = list(pop) + sorted(g for g in jury if g not in pop)
        series = {label: [jury.get(g, 0.0) for g in groups]}
        if pop:
            series["population"] = [pop.get(g) for g in groups]
        composition_charts.append(Markup(grouped_bars(groups, series, title=attribute)))

    shift = _rows(store, "SELECT ballot_type, option, pre_share, post_share, pre_valid, post_valid FROM opinion_shift "
                         "WHERE run_id = ? ORDER BY ballot_type, option", run_id)
    shift_chart = transition_chart = None
    changes: list[dict[str, Any]] = []
    if shift:
        kinds = [s["ballot_type"] for s in shift]
        kind = max(set(kinds), key=lambda k: (sum(s["pre_valid"] + s["post_valid"] for s in shift
                                                  if s["ballot_type"] == k), k))
        rows = [s for s in shift if s["ballot_type"] == kind]
        options = list(run["options"] or []) + [s["option"] for s in rows if s["option"] not in (run["options"] or [])]
        share = {s["option"]: s for s in rows}
        shift_chart = Markup(grouped_bars(
            options, {"before": [share[o]["pre_share"] if o in share else 0.0 for o in options],
                      "after": [share[o]["post_share"] if o in share else 0.0 for o in options]},
            title=f"Support by option ({kind} ballots, share of valid ballots)"))
        changes = _rows(store, "SELECT * FROM ballot_changes WHERE run_id = ? ORDER BY participant_id", run_id)
        changes = [c for c in changes if c["ballot_type"] == kind]
        counts: dict[tuple[str, str], int] = {}
        for c in changes:
            if c["pre_choice"] is not None and c["post_choice"] is not None:
                key = (c["pre_choice"], c["post_choice"])
                counts[key] = counts.get(key, 0) + 1
        if counts and kind != "approval":
            transition_chart = Markup(transition_matrix(options, counts, title="Who moved where"))

    tallies = _rows(store, "SELECT * FROM tallies WHERE run_id = ? ORDER BY created_at, id", run_id)
    for t in tallies:
        t["scores_text"] = _scores_text(from_json(t["scores"]))
        t["expected_text"] = _scores_text(from_json(t.get("expected")), "{:.1f}")
        t["win_text"] = _scores_text(from_json(t.get("win_probability")), "{:.0%}")
    verdicts = _rows(store, "SELECT * FROM verdicts WHERE run_id = ? ORDER BY created_at", run_id)
    stability_chart = None
    deciding = next((t for t in tallies if t["phase"] == "post" and verdicts and t["rule"] == verdicts[-1]["rule"]
                     and t.get("win_probability")), None)
    if deciding is not None:
        wins = from_json(deciding["win_probability"])
        stability_chart = Markup(grouped_bars(
            list(wins), {"probability of winning": [float(v) for v in wins.values()]},
            title=f"If the jurors' votes were drawn again ({deciding['rule']}, {deciding['redraws']} redraws)"))
    # Every speaker, plus the voters who never spoke (a silent juror is a finding, not a missing row).
    speaking = _rows(store, """
        SELECT coalesce(s.speaker_id, p.id) AS speaker_id, coalesce(s.name, p.name) AS name,
               coalesce(s.role, p.role) AS role, coalesce(s.words, 0) AS words, coalesce(s.word_share, 0) AS word_share
        FROM (SELECT * FROM speaking_share WHERE run_id = $1) s
        FULL OUTER JOIN (SELECT * FROM participants WHERE run_id = $1 AND role IN ('juror', 'participant')) p
          ON p.id = s.speaker_id
        ORDER BY words DESC, speaker_id""", run_id)
    speaking_chart = None
    if speaking and any(s["words"] for s in speaking):
        speaking_chart = Markup(grouped_bars(
            [f"{s['name'] or s['speaker_id']} ({s['role'] or '?'})" for s in speaking],
            {"share of words": [s["word_share"] for s in speaking]}, title="Share of all words spoken",
            peak=max(s["word_share"] for s in speaking), label_width=220))
    turns = _rows(store, "SELECT * FROM transcript WHERE run_id = ? ORDER BY seq", run_id)
    previous = None
    for t in turns:
        t["new_phase"] = (t["phase"], t["round"]) != previous
        previous = (t["phase"], t["round"])

    return _template().render(
        run=run, generator="report", verdicts=verdicts, deciding=deciding, stability_chart=stability_chart,
        n_jurors=len(voters), voter_role=voter_role, has_population=bool(population),
        composition_charts=composition_charts, shift_chart=shift_chart, transition_chart=transition_chart,
        changes=changes, tallies=tallies, speaking_chart=speaking_chart,
        costs=_rows(store, "SELECT * FROM call_costs WHERE run_id = ?", run_id), turns=turns,
        generated_at=utcnow().strftime("%Y-%m-%d %H:%M UTC"), store_path=str(store.path),
    )


def _scores_text(scores: Any, number: str = "{:g}") -> str:
    if isinstance(scores, dict):
        return ", ".join(f"{k}: {number.format(v)}" if isinstance(v, (int, float)) else f"{k}: {v}"
                         for k, v in scores.items())
    return json.dumps(scores) if scores is not None else ""


def check_population(population: Any) -> None:
    """Raise StoreError unless `population` looks like {attribute: {group: share}}."""
    if not isinstance(population, Mapping) or not all(
        isinstance(g, Mapping) and all(isinstance(v, (int, float)) for v in g.values()) for g in population.values()
    ):
        raise StoreError("population must map attribute -> {group: share}")
