"""FORMAT 1 survey distributions (shared/data/README.md) into the store (provenance 'imported-real').

Columns: question_id, question, options (a JSON array, ordinal order), attribute, group, option, count.

How a survey sits in the store (decided here, so fine-tuning reads surveys and deliberations through one path):
one run per question (external_id = question_id, options = the question's options); one `participant` per
(attribute, group) — id `attribute=group`, attributes {attribute: group} (none for `overall=all`), extra
{"kind": "survey-group", "respondents": n}; and for each of them ONE ballot that carries the group's whole answer
distribution: ballot_type "distribution", phase "final", `probabilities` = the normalised distribution, `choice` =
its most frequent option (ties: the first in option order). A group is a distribution, not N people: expanding
weighted counts into thousands of fictitious individual ballots would invent precision and bloat the store. The
views over pre/post question ballots (opinion_shift and friends) ignore these final-phase ballots.

Validation happens before anything is written and names file, line and field in one line: missing or doubled
columns, a wrong number of fields, an empty question_id / question / attribute / group, options that are not a JSON
array of >= 2 distinct strings, options that change within a question, an option not in the list, a negative /
non-numeric / non-finite count, a duplicate row, a group whose counts sum to 0. One file is one transaction: all of
it, or nothing. `read_survey_file` is THE strict FORMAT 1 reader: it lives here because `transcripts` imports nothing
from `assembly`, and assembly.evaluation.survey builds its typed questions on top of it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transcripts.clock import utcnow
from transcripts.errors import StoreError
from transcripts.polis import existing_external_ids, file_sha256, read_header, read_rows, write_tables
from transcripts.store import Store, new_id

COLUMNS = ("question_id", "question", "options", "attribute", "group", "option", "count")
BALLOT_TYPE = "distribution"


@dataclass
class GroupCounts:
    attribute: str
    group: str
    counts: list[float]
    line: int

    @property
    def n(self) -> float:
        return float(sum(self.counts))

    def probabilities(self, options: list[str]) -> dict[str, float]:
        total = self.n
        return {o: c / total for o, c in zip(options, self.counts)}


@dataclass
class SurveyItem:
    question_id: str
    question: str
    options: list[str]
    groups: dict[tuple[str, str], GroupCounts] = field(default_factory=dict)


def _options(text: str, where: str) -> list[str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StoreError(f"{where}: field 'options': {text!r} is not valid JSON ({exc.msg})") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StoreError(f"{where}: field 'options': {text!r} is not a JSON array of strings")
    if len(value) < 2:
        raise StoreError(f"{where}: field 'options': {text!r} needs at least 2 options")
    if len(set(value)) != len(value):
        raise StoreError(f"{where}: field 'options': {text!r} repeats an option")
    return value


def _count(text: str, where: str) -> float:
    try:
        count = float(text)
    except ValueError:
        raise StoreError(f"{where}: field 'count': {text!r} is not a number") from None
    if not math.isfinite(count):
        raise StoreError(f"{where}: field 'count': {text!r} must be a finite number >= 0; it is not finite")
    if count < 0:
        raise StoreError(f"{where}: field 'count': {text!r} must be a finite number >= 0; it is negative")
    return count


def _columns(path: Path, rows: Iterator[tuple[int, list[str]]]) -> dict[str, int]:
    """Column positions; a column named twice is refused, since read_header would silently keep the last one."""
    first = next(rows, None)
    col = read_header(path, iter([first] if first else []), COLUMNS)
    header = [h.strip() for h in first[1]]
    doubled = sorted({c for c in COLUMNS if header.count(c) > 1})
    if doubled:
        raise StoreError(f"{path}:1: column(s) {', '.join(doubled)} appear more than once")
    return col


def _item_for(items: dict[str, SurveyItem], raw_options: dict[str, str], row: dict[str, str],
              where: str) -> SurveyItem:
    """The row's question, created on its first row; later rows must repeat the same options."""
    qid, text = row["question_id"], row["options"]
    item = items.get(qid)
    if item is None:
        item = items[qid] = SurveyItem(qid, row["question"], _options(text, where))
        raw_options[qid] = text
    elif text != raw_options[qid] and _options(text, where) != item.options:
        raise StoreError(f"{where}: field 'options': differs from the options given earlier for question_id "
                         f"{qid!r} ({raw_options[qid]!r}; here {text!r})")
    if row["option"] not in item.options:
        raise StoreError(f"{where}: field 'option': {row['option']!r} is not one of {raw_options[qid]} "
                         f"(question_id {qid!r})")
    return item


def _check_totals(path: Path, items: dict[str, SurveyItem]) -> None:
    """A group with no answers has no distribution; name the line where the group starts."""
    for item in items.values():
        for g in item.groups.values():
            if g.n <= 0:
                raise StoreError(f"{path}:{g.line}: field 'count': the counts of (question_id={item.question_id!r}, "
                                 f"attribute={g.attribute!r}, group={g.group!r}) sum to 0")


def read_survey_file(path: str | Path, *, question_ids: Iterable[str] | None = None) -> list[SurveyItem]:
    """Read and validate a FORMAT 1 CSV (plain or gzip). `question_ids` keeps only those questions (a split)."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: file not found")
    rows = read_rows(path)
    col = _columns(path, rows)
    width = max(col.values()) + 1  # fields in the header
    items: dict[str, SurveyItem] = {}
    raw_options: dict[str, str] = {}  # question_id -> its options text as first seen
    seen: dict[tuple[str, str, str, str], int] = {}  # row key -> line
    for line, cells in rows:
        where = f"{path}:{line}"
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != width:
            raise StoreError(f"{where}: expected {width} fields, found {len(cells)}")
        row = {c: cells[col[c]] for c in COLUMNS}
        for name in ("question_id", "question", "attribute", "group"):
            if not row[name].strip():
                raise StoreError(f"{where}: field '{name}' is empty")
        count = _count(row["count"], where)
        item = _item_for(items, raw_options, row, where)
        qid, attribute, group, option = row["question_id"], row["attribute"], row["group"], row["option"]
        key = (qid, attribute, group, option)
        if key in seen:
            raise StoreError(f"{where}: duplicate row for (question_id={qid!r}, attribute={attribute!r}, "
                             f"group={group!r}, option={option!r}); first on line {seen[key]}")
        seen[key] = line
        counts = item.groups.get((attribute, group))
        if counts is None:
            counts = item.groups[(attribute, group)] = GroupCounts(attribute, group, [0.0] * len(item.options), line)
        counts.counts[item.options.index(option)] += count
    if not items:
        raise StoreError(f"{path}: no data rows")
    _check_totals(path, items)
    if question_ids is not None:
        wanted = set(question_ids)
        return [item for qid, item in items.items() if qid in wanted]
    return list(items.values())


def participant_id(attribute: str, group: str) -> str:
    return f"{attribute}={group}"


def survey_rows(items: list[SurveyItem], *, source: str, license: str | None, file_hash: str,
                file_name: str) -> tuple[list[str], dict[str, list[dict[str, Any]]]]:
    now = utcnow()
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in ("runs", "participants", "participant_attributes",
                                                             "ballots")}
    ids = []
    for item in items:
        run_id = new_id()
        ids.append(run_id)
        spec = {"format": "survey-distribution", "question_id": item.question_id, "options": item.options}
        summary = {"file": file_name, "sha256": file_hash, "groups": len(item.groups)}
        rows["runs"].append({
            "id": run_id, "question": item.question, "options": item.options, "spec": json.dumps(spec),
            "status": "completed", "provenance": "imported-real", "source": source, "license": license,
            "external_id": item.question_id, "started_at": now, "finished_at": now, "summary": json.dumps(summary),
        })
        for (attribute, group), g in item.groups.items():
            pid = participant_id(attribute, group)
            attrs = {} if attribute == "overall" else {attribute: group}
            probs = g.probabilities(item.options)
            modal = max(item.options, key=lambda o: (probs[o], -item.options.index(o)))
            rows["participants"].append({
                "run_id": run_id, "id": pid, "role": "participant", "name": f"{attribute}: {group}", "persona": None,
                "attributes": json.dumps(attrs, ensure_ascii=False),
                "extra": json.dumps({"kind": "survey-group", "attribute": attribute, "group": group,
                                     "respondents": g.n}, ensure_ascii=False),
            })
            rows["participant_attributes"].extend(
                {"run_id": run_id, "participant_id": pid, "attribute": k, "value": v} for k, v in attrs.items())
            rows["ballots"].append({
                "id": new_id(), "run_id": run_id, "participant_id": pid, "phase": "final",
                "ballot_type": BALLOT_TYPE, "status": "valid", "choice": modal,
                "probabilities": json.dumps(probs), "target": None, "created_at": now,
            })
    return ids, rows


def import_survey(
    store: Store,
    path: str | Path,
    *,
    source: str,
    license: str | None = None,
    question_ids: Iterable[str] | None = None,
    on_duplicate: str = "skip",
) -> list[str]:
    """Import a FORMAT 1 file (or the `question_ids` subset of it, e.g. a train split): one run per question.

    Questions already in the store under the same (source, question_id) are skipped (`on_duplicate="skip"`) or
    refused (`"error"`). Returns the new run ids."""
    if on_duplicate not in ("skip", "error"):
        raise StoreError("on_duplicate must be 'skip' or 'error'")
    if not source or not source.strip():
        raise StoreError("a survey import needs a source name (e.g. 'opinionqa')")
    path = Path(path)
    items = read_survey_file(path, question_ids=question_ids)
    existing = existing_external_ids(store, source)
    dupes = [item.question_id for item in items if item.question_id in existing]
    if dupes and on_duplicate == "error":
        raise StoreError(f"{path}: question {dupes[0]!r} from {source!r} is already in the store")
    fresh = [item for item in items if item.question_id not in existing]
    if not fresh:
        return []
    ids, rows = survey_rows(fresh, source=source, license=license, file_hash=file_sha256(path), file_name=path.name)
    write_tables(store, rows)
    return ids
