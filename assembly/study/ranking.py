"""Where a real assembly would teach the most: a study's questions ranked by how unsettled the simulated verdict is.

Per question and *variant* (one study's draws of it: a model, a procedure), the deciding rule's win distribution over
the completed draws (the summary's win rates; "(no winner)" is an outcome of its own when it occurs). Entropies are
normalised by the log of the number of outcomes, so 0 is a verdict every draw agrees on and 1 a uniform spread:

  * within — the mean over variants of each variant's normalised entropy: how much juries of one kind disagree;
  * uncertainty — the normalised entropy of the pooled distribution (the variants weighted equally, whatever their
    draws): what the rank is by;
  * between — uncertainty minus within, the Jensen–Shannon divergence of the variants over the same log: how much
    the variants (models, procedures) disagree with each other; 0 with one variant;
  * total_variation — the mean over pairs of variants of half the L1 distance between their win distributions, and
    top_differs — whether their modal winners differ (both None with one variant).

Variants of one question are the studies' questions with the same text (case and spacing aside): the same bank
studied again with another `--model` or template, or question files of one study that differ only in models or
procedure. Everything is read from what the studies recorded (`studies.summary`, the runs' specs), so a recorded
study ranks exactly like a fresh one. Entropy from few draws is biased low: the draws column says how many it saw.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from assembly.clauses.diff import flatten, question_key
from assembly.errors import AssemblyError
from assembly.study.summary import NO_WINNER, QuestionSummary

RANKINGS = ("uncertainty",)
RANKING_SCHEMA = "assembly.study-ranking/1"
# Study settings a variant's label leaves out: the runs' specs show their effect (model, seed, jurors, rounds), or
# they chose the questions rather than how they were asked (template, split, limit).
_IN_SPEC = ("model", "seed", "jurors", "rounds", "template", "split", "limit")


class Variant(BaseModel):
    study_id: str
    key: str  # the question's key in that study
    label: str  # what sets it apart from the question's other variants (or its study, when nothing does)
    # what made it, flattened: its runs' models, procedure, jury and rules, and its study's other settings (mode, ...)
    setting: dict[str, Any] = Field(default_factory=dict)
    draws: int  # completed
    winner: str | None  # the modal winner
    win: dict[str, float] = Field(default_factory=dict)  # outcome -> share of completed draws won (deciding rule)
    entropy: float | None = None  # normalised; None without a completed draw


class RankedQuestion(BaseModel):
    rank: int
    question: str
    options: list[str]
    draws: int  # completed, over every variant
    uncertainty: float | None
    within: float | None
    between: float | None
    total_variation: float | None
    top_differs: bool | None
    variants: list[Variant]


class Ranking(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    schema_: Literal["assembly.study-ranking/1"] = Field(RANKING_SCHEMA, alias="schema")
    by: str
    studies: list[str]
    questions: list[RankedQuestion]

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def check_ranking(by: str) -> None:
    if by not in RANKINGS:
        raise AssemblyError(f"--rank {by!r}: expected one of {', '.join(RANKINGS)}")


def normalised_entropy(p: dict[str, float], outcomes: int) -> float:
    """Shannon entropy of `p` over log(outcomes): 0 when one outcome has all the mass, 1 when they share it evenly."""
    if outcomes < 2:
        return 0.0
    return max(0.0, -sum(v * math.log(v) for v in p.values() if v > 0) / math.log(outcomes))


def total_variation(a: dict[str, float], b: dict[str, float]) -> float:
    return 0.5 * sum(abs(a.get(o, 0.0) - b.get(o, 0.0)) for o in {*a, *b})


def _win(summary: QuestionSummary) -> dict[str, float]:
    deciding = summary.rules[0] if summary.rules else None
    return {w.option: w.share for w in summary.win_rates if w.rule == deciding and w.share is not None}


def rank_questions(found: Sequence[tuple[QuestionSummary, Variant]], by: str = "uncertainty") -> list[RankedQuestion]:
    """Group variants by question text and rank the questions, most unsettled first (questions without a completed
    draw last; ties keep the order the questions were given in). `found`: each variant with its question's summary;
    the variants' `win`, `winner` and `draws` are filled from it here."""
    check_ranking(by)
    groups: dict[str, list[tuple[QuestionSummary, Variant]]] = {}
    for summary, variant in found:
        groups.setdefault(question_key(summary.question), []).append((summary, variant))
    ranked = []
    for members in groups.values():
        options = list(dict.fromkeys(o for s, _ in members for o in s.options))
        variants = [v.model_copy(update={"draws": s.completed, "winner": s.modal_winner, "win": _win(s)})
                    for s, v in members]
        outcomes = len(options) + any(NO_WINNER in v.win for v in variants)
        seen = [v for v in variants if v.draws]
        for v in seen:
            v.entropy = normalised_entropy(v.win, outcomes)
        ranked.append(_measure(members[0][0].question, options, variants, seen, outcomes))
    order = sorted(range(len(ranked)), key=lambda i: (ranked[i].uncertainty is None, -(ranked[i].uncertainty or 0),
                                                      -(ranked[i].between or 0), i))
    return [ranked[i].model_copy(update={"rank": n}) for n, i in enumerate(order, start=1)]


def _measure(question: str, options: list[str], variants: list[Variant], seen: list[Variant],
             outcomes: int) -> RankedQuestion:
    draws = sum(v.draws for v in variants)
    if not seen:
        return RankedQuestion(rank=0, question=question, options=options, draws=draws, uncertainty=None, within=None,
                              between=None, total_variation=None, top_differs=None, variants=variants)
    pooled: dict[str, float] = {}
    for v in seen:
        for o, share in v.win.items():
            pooled[o] = pooled.get(o, 0.0) + share / len(seen)
    within = sum(v.entropy for v in seen) / len(seen)
    uncertainty = normalised_entropy(pooled, outcomes)
    several = len(seen) > 1
    pairs = list(combinations(seen, 2))
    return RankedQuestion(
        rank=0, question=question, options=options, draws=draws, uncertainty=uncertainty, within=within,
        between=max(0.0, uncertainty - within) if several else 0.0,
        total_variation=sum(total_variation(a.win, b.win) for a, b in pairs) / len(pairs) if several else None,
        top_differs=len({v.winner for v in seen}) > 1 if several else None, variants=variants)


# --- reading recorded studies ---------------------------------------------------------------------------------------


def _setting(spec: dict[str, Any]) -> dict[str, Any]:
    """The parts of a run's spec that make one variant of a question differ from another."""
    models = spec.get("models") or {}
    roles = {role: models.get(role) or models.get("default") for role in ("juror", "witness", "moderator")}
    parts = {"models": roles if len(set(roles.values())) > 1 else roles["juror"],
             "procedure": spec.get("procedure") or {}, "jury": spec.get("jury") or {},
             "ballot.rules": (spec.get("ballot") or {}).get("rules")}
    return flatten(parts)


def read_variants(store, study_id: str) -> list[tuple[QuestionSummary, Variant]]:
    """A recorded study's questions as variants, from `studies.summary`, its settings and one current run's spec
    per question."""
    study = store.study(study_id)
    settings = {f"study.{k}": v for k, v in ((study["spec"] or {}).get("settings") or {}).items()
                if k not in _IN_SPEC}
    questions = (study["summary"] or {}).get("questions")
    if not questions:
        raise AssemblyError(f"study {study_id} has no summary to rank (status {study['status']}); "
                            "resume it to finish its draws")
    specs = dict(store.sql(
        "SELECT d.question_key, any_value(r.spec ORDER BY d.draw) FROM study_draws d JOIN runs r ON r.id = d.run_id "
        "WHERE d.study_id = ? AND d.current GROUP BY d.question_key", [study_id]).rows())
    found = []
    for q in questions:
        summary = QuestionSummary.model_validate(q)
        spec = specs.get(summary.key)
        spec = json.loads(spec) if isinstance(spec, str) else (spec or {})
        found.append((summary, Variant(study_id=study_id, key=summary.key, label=study_id,
                                       setting={**settings, **_setting(spec)}, draws=0, winner=None)))
    return found


def _labelled(found: list[tuple[QuestionSummary, Variant]]) -> list[tuple[QuestionSummary, Variant]]:
    """Each variant labelled by the settings in which it differs from the other variants of its question."""
    by_question: dict[str, list[Variant]] = {}
    for summary, v in found:
        by_question.setdefault(question_key(summary.question), []).append(v)
    out = []
    for summary, v in found:
        others = by_question[question_key(summary.question)]
        keys = [k for k in v.setting if len({repr(o.setting.get(k)) for o in others}) > 1]
        label = ", ".join(f"{k}={v.setting[k]}" for k in keys) or v.study_id
        out.append((summary, v.model_copy(update={"label": label})))
    return out


def rank_studies(store, study_ids: Sequence[str], by: str = "uncertainty") -> Ranking:
    """Rank the questions of recorded studies (ids as the store has them) by `by`."""
    check_ranking(by)
    ids = list(dict.fromkeys(study_ids))
    with store.reading():
        found = [item for study_id in ids for item in read_variants(store, study_id)]
    return Ranking(by=by, studies=ids, questions=rank_questions(_labelled(found), by))


# --- the ranked list as a file ----------------------------------------------------------------------------------------

RANKING_FORMATS = {".csv": "csv", ".json": "json"}
CSV_COLUMNS = ("rank", "question", "options", "draws", "variants", "winners", "uncertainty", "within", "between",
               "total_variation", "top_differs")


def ranking_rows(ranking: Ranking) -> list[dict[str, Any]]:
    """One flat row per question (the CSV's): lists joined with ' | ', numbers rounded to 4 places."""
    def num(x: float | None) -> float | None:
        return None if x is None else round(x, 4)

    return [{"rank": q.rank, "question": q.question, "options": " | ".join(q.options), "draws": q.draws,
             "variants": " | ".join(v.label for v in q.variants),
             "winners": " | ".join(v.winner or "—" for v in q.variants), "uncertainty": num(q.uncertainty),
             "within": num(q.within), "between": num(q.between), "total_variation": num(q.total_variation),
             "top_differs": q.top_differs} for q in ranking.questions]


def ranking_format(path: Path) -> str:
    """The format a ranked list is written in, by the file's suffix."""
    try:
        return RANKING_FORMATS[path.suffix.lower()]
    except KeyError:
        raise AssemblyError(f"{path}: unknown format {path.suffix or '(no suffix)'!r} for the ranked list; use one "
                            f"of {', '.join(RANKING_FORMATS)}") from None


def render_ranking(ranking: Ranking, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(ranking.dump(), ensure_ascii=False, indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(ranking_rows(ranking))
    return buffer.getvalue()
