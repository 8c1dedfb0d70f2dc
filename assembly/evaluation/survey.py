"""FORMAT 1 — the survey-distribution CSV: typed reader, writer, split and metadata helpers.

Columns: question_id, question, options, attribute, group, option, count (see ../shared/data/README.md).
One row per (question_id, attribute, group, option); `options` is a JSON array of the substantive options in ordinal
order; `count` is a non-negative number. The strict parsing and validation is transcripts.surveys.read_survey_file
(one reader for the store importer and for evaluation); `read_survey` turns its items into one `SurveyQuestion` per
question_id, each with one normalised `Distribution` per (attribute, group), plus nominal flags and exact positions.

Every error is one line naming the file, the line, the field and the value, e.g.
    survey.csv:7: field 'count': '-3' must be a finite number >= 0; it is negative
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from assembly.errors import AssemblyError

if TYPE_CHECKING:
    from transcripts.surveys import SurveyItem

# transcripts.surveys.COLUMNS, restated: importing transcripts loads the store engine (DuckDB), which the
# evaluation's types and writer do not need; the readers import it when called.
COLUMNS = ("question_id", "question", "options", "attribute", "group", "option", "count")
OVERALL = ("overall", "all")


class SurveyFormatError(AssemblyError):
    """A FORMAT 1 file (or split / metadata file) is malformed; the message names file, line, field and value."""


@dataclass
class Distribution:
    """One (attribute, group)'s answers to one question: raw counts aligned to the question's options."""

    attribute: str
    group: str
    counts: np.ndarray  # float, len K, non-negative, sum > 0

    @property
    def n(self) -> float:
        """The group's number of substantive answers (sum of counts; may be fractional for weighted counts)."""
        return float(self.counts.sum())

    @property
    def probs(self) -> np.ndarray:
        return self.counts / self.counts.sum()


@dataclass
class SurveyQuestion:
    question_id: str
    question: str
    options: list[str]
    distributions: dict[tuple[str, str], Distribution] = field(default_factory=dict)
    nominal: bool = False  # options have no order: use TV only, not R
    positions: list[float] | None = None  # exact ordinal values when known (questions_meta.opinionqa_ordinal)

    @property
    def k(self) -> int:
        return len(self.options)

    def groups(self, attribute: str | None = None) -> list[tuple[str, str]]:
        return [key for key in self.distributions if attribute is None or key[0] == attribute]

    def overall(self) -> Distribution | None:
        return self.distributions.get(OVERALL)


@dataclass
class Survey:
    questions: dict[str, SurveyQuestion]
    path: str = "<memory>"

    def __len__(self) -> int:
        return len(self.questions)

    def __iter__(self):
        return iter(self.questions.values())

    def attributes(self) -> list[str]:
        seen: dict[str, None] = {}
        for q in self.questions.values():
            for attribute, _ in q.distributions:
                seen.setdefault(attribute, None)
        return list(seen)

    def select(self, ids: Iterable[str]) -> "Survey":
        """The questions with these ids, in the given order; unknown ids are an error naming them."""
        ids = list(ids)
        missing = [i for i in ids if i not in self.questions]
        if missing:
            shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            raise SurveyFormatError(f"{self.path}: question_id not in file: {shown}")
        return Survey({i: self.questions[i] for i in ids}, self.path)


def _question(item: SurveyItem, nominal: bool) -> SurveyQuestion:
    """Typed question from a validated transcripts item: counts as float arrays, one per (attribute, group)."""
    q = SurveyQuestion(item.question_id, item.question, item.options, nominal=nominal)
    for key, g in item.groups.items():
        q.distributions[key] = Distribution(g.attribute, g.group, np.array(g.counts, dtype=float))
    return q


def read_survey(
    path: str | Path,
    *,
    nominal_ids: Iterable[str] | None = None,
    positions: dict[str, list[float]] | None = None,
) -> Survey:
    """Read and validate a FORMAT 1 CSV (optionally .gz). Raise SurveyFormatError on the first problem.

    The format checks are transcripts.surveys.read_survey_file's (the one strict reader); this adds what evaluation
    needs on top of it.
    `nominal_ids`: questions whose options have no order (e.g. from questions_meta.csv); they get TV only.
    `positions`: exact ordinal values per question id (must have one value per option), for the paper-exact W1.
    """
    from transcripts.errors import StoreError
    from transcripts.surveys import read_survey_file

    name = str(path)
    try:
        items = read_survey_file(path)
    except StoreError as exc:
        raise SurveyFormatError(str(exc)) from None
    nominal = set(nominal_ids or ())
    questions = {item.question_id: _question(item, item.question_id in nominal) for item in items}
    for qid, q in questions.items():
        if positions and qid in positions:
            pos = [float(x) for x in positions[qid]]
            if len(pos) != q.k:
                raise SurveyFormatError(
                    f"{name}: positions for {qid!r} have {len(pos)} values for {q.k} options"
                )
            q.positions = pos
    return Survey(questions, name)


def write_survey(path: str | Path, questions: Survey | Iterable[SurveyQuestion], *, precision: int = 6) -> Path:
    """Write questions in FORMAT 1 (one row per option, zero counts included). `.gz` paths are gzip-compressed.

    Simulated distributions are written with fractional counts (probability x number of jurors).
    """
    path = Path(path)
    items = list(questions.questions.values()) if isinstance(questions, Survey) else list(questions)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for q in items:
        options_text = json.dumps(q.options, ensure_ascii=False)
        for (attribute, group), dist in q.distributions.items():
            for option, count in zip(q.options, dist.counts):
                value = float(count)
                text = str(int(value)) if value.is_integer() else f"{value:.{precision}g}"
                writer.writerow([q.question_id, q.question, options_text, attribute, group, option, text])
    data = buffer.getvalue().encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


def read_splits(path: str | Path) -> dict[str, list[str]]:
    """A split JSON file ({"train": [...], "validation": [...], ...}): split name -> question ids (lists of text)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SurveyFormatError(f"{path}: split file not found") from None
    except json.JSONDecodeError as exc:
        raise SurveyFormatError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise SurveyFormatError(f"{path}: a split file must be a JSON object of name -> list of question ids")
    return {k: list(v) for k, v in data.items() if isinstance(v, list) and all(isinstance(x, str) for x in v)}


def load_split(path: str | Path, name: str = "validation") -> list[str]:
    """Question ids of one split from a split JSON file."""
    splits = read_splits(path)
    if name not in splits:
        raise SurveyFormatError(
            f"{path}: field {name!r}: no such split (splits here: {', '.join(sorted(splits)) or 'none'})"
        )
    return list(splits[name])


@dataclass
class QuestionsMeta:
    nominal: set[str]
    positions: dict[str, list[float]]


def read_questions_meta(path: str | Path) -> QuestionsMeta:
    """Nominal flags and exact ordinals from an OpinionQA-style questions_meta.csv
    (columns question_id, nominal, and optionally opinionqa_ordinal as a JSON array)."""
    from transcripts.errors import StoreError
    from transcripts.polis import open_text

    path = Path(path)
    nominal: set[str] = set()
    positions: dict[str, list[float]] = {}
    try:
        handle = open_text(path)
    except StoreError as exc:
        raise SurveyFormatError(str(exc)) from None
    with handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "question_id" not in reader.fieldnames or "nominal" not in reader.fieldnames:
            raise SurveyFormatError(f"{path}:1: missing column(s): needs question_id and nominal")
        for row in reader:
            flag = (row.get("nominal") or "").strip().lower()
            if flag not in ("true", "false", "1", "0", ""):
                raise SurveyFormatError(f"{path}:{reader.line_num}: field 'nominal': {row['nominal']!r} is not a boolean")
            if flag in ("true", "1"):
                nominal.add(row["question_id"])
            ordinal = (row.get("opinionqa_ordinal") or "").strip()
            if ordinal:
                try:
                    values = [float(x) for x in json.loads(ordinal)]
                except (json.JSONDecodeError, TypeError, ValueError):
                    raise SurveyFormatError(
                        f"{path}:{reader.line_num}: field 'opinionqa_ordinal': {ordinal!r} is not a JSON array of numbers"
                    ) from None
                positions[row["question_id"]] = values
    return QuestionsMeta(nominal, positions)
