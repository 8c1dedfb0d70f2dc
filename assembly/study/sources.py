"""What a study asks: question files, a plain list of them, or a question bank in the Habermas format.

Sources, told apart by their suffix:
  * `Q.yaml` / `Q.yml` — one question file (assembly.config);
  * `LIST.txt` — one question file per line (relative to the list's folder; blank lines and `#` comments skipped);
  * `BANK.jsonl` — one question per line: `{"id", "question", "split", "affirming_statement", "negating_statement",
    "topic"}` (shared/data/README.md). Each line becomes a yes/no ballot whose two options are the affirming and
    the negating statement (Yes / No when the line has no such pair), on the settings of `--template`, a YAML file
    of question-file keys (jury, procedure, models, witnesses, ...; its question, background and ballot are
    replaced), or the question file's defaults.
Every question gets a key, unique in the study, that its runs carry (`runs.study_question`): a question file's
resolved path, or a bank line's id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assembly.config import AssemblySpec, apply_overrides, load_spec, parse_spec, read_yaml
from assembly.errors import SpecError

QUESTION_SUFFIXES = (".yaml", ".yml")
LIST_SUFFIX = ".txt"
BANK_SUFFIX = ".jsonl"
REPLACED_BY_BANK = ("question", "background", "ballot", "title")  # template keys a bank line supplies itself


@dataclass(frozen=True)
class StudyQuestion:
    key: str  # unique within the study; what its runs record as runs.study_question
    spec: AssemblySpec  # with the study's overrides applied; jury.seed is the base its draws' seeds derive from
    source: str  # where it came from, for messages: a path, or "bank.jsonl:12"


def load_questions(paths: Sequence[str | Path], *, template: str | Path | None = None, split: str | None = None,
                   limit: int | None = None, overrides: dict[str, Any] | None = None) -> list[StudyQuestion]:
    """The questions of every source, in order. One-line SpecError naming the file (and line) on bad input."""
    if not paths:
        raise SpecError("a study needs at least one question file, list (.txt) or bank (.jsonl)")
    if limit is not None and limit < 1:
        raise SpecError(f"--limit {limit}: must be at least 1")
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    settings = _template(template)
    questions: list[StudyQuestion] = []
    for path in map(Path, paths):
        suffix = path.suffix.lower()
        if suffix in QUESTION_SUFFIXES:
            questions.append(_question_file(path, given))
        elif suffix == LIST_SUFFIX:
            questions.extend(_question_file(p, given) for p in _listed(path))
        elif suffix == BANK_SUFFIX:
            questions.extend(_bank(path, settings, given, split, template))
        else:
            raise SpecError(f"{path}: unknown question source {suffix or '(no suffix)'!r}; expected a question file "
                            f"(.yaml), a list of them (.txt) or a question bank (.jsonl)")
        if split is not None and suffix != BANK_SUFFIX:
            raise SpecError(f"--split {split!r} applies to question banks (.jsonl), not to {path}")
    seen: dict[str, str] = {}
    for q in questions:
        if q.key in seen:
            raise SpecError(f"{q.source}: question {q.key!r} is already in the study (from {seen[q.key]})")
        seen[q.key] = q.source
    if limit is not None:
        questions = questions[:limit]
    if not questions:
        where = f" in split {split!r}" if split else ""
        raise SpecError(f"{', '.join(map(str, paths))}: no questions{where}")
    return questions


def source_paths(paths: Sequence[str | Path]) -> list[str]:
    """The sources as recorded on the study (resolved), so a resume can tell whether it was given the same ones."""
    return [str(Path(p).resolve()) for p in paths]


def _question_file(path: Path, overrides: dict[str, Any]) -> StudyQuestion:
    spec = load_spec(path)
    return StudyQuestion(key=str(path.resolve()), spec=apply_overrides(spec, **overrides) if overrides else spec,
                         source=str(path))


def _listed(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the list of question files ({exc})") from None
    found = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        listed = Path(text) if Path(text).is_absolute() else path.parent / text
        if listed.suffix.lower() not in QUESTION_SUFFIXES:
            raise SpecError(f"{path}:{number}: {text!r} is not a question file (.yaml)")
        if not listed.is_file():
            raise SpecError(f"{path}:{number}: file not found: {text}")
        found.append(listed)
    return found


def _template(template: str | Path | None) -> dict[str, Any]:
    if template is None:
        return {}
    data = read_yaml(template)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{template}: expected a mapping of question-file keys (jury, procedure, models, ...)")
    return {k: v for k, v in data.items() if k not in REPLACED_BY_BANK}


def _bank(path: Path, settings: dict[str, Any], overrides: dict[str, Any], split: str | None,
          template: str | Path | None) -> list[StudyQuestion]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the question bank ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a UTF-8 text file") from None
    base_dir = Path(template).parent if template is not None else path.parent
    questions = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise SpecError(f"{where}: expected a JSON object, got {type(record).__name__}")
        question = record.get("question")
        if not isinstance(question, str) or not question.strip():
            raise SpecError(f"{where}: no question (the line needs a non-empty \"question\")")
        if split is not None and record.get("split") != split:
            continue
        key = record.get("id") if isinstance(record.get("id"), str) and record["id"].strip() else f"line-{number}"
        data = {**settings, "question": question.strip(), "title": key,
                "ballot": {"type": "yes_no", "options": _statements(record)}}
        spec = parse_spec(data, where, base_dir)
        questions.append(StudyQuestion(key=key, spec=apply_overrides(spec, **overrides) if overrides else spec,
                                       source=where))
    return questions


def _statements(record: dict[str, Any]) -> list[str]:
    """The ballot's options: the affirming and the negating statement, or Yes / No without a distinct pair."""
    pair = [record.get("affirming_statement"), record.get("negating_statement")]
    if all(isinstance(s, str) and s.strip() for s in pair) and pair[0].strip() != pair[1].strip():
        return [s.strip() for s in pair]
    return ["Yes", "No"]
