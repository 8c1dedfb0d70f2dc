"""Choosing what to evaluate: a split, a sample or a list of questions, and the attributes asked for."""

from __future__ import annotations

import numpy as np

from assembly.evaluation.survey import Survey, SurveyFormatError


def select_questions(
    survey: Survey,
    *,
    questions: str | None = None,
    split_ids: list[str] | None = None,
    seed: int = 0,
) -> Survey:
    """Restrict a survey to a split (ids not in the file are ignored: a split may cover several files), then to
    `questions`: a number N (a seeded sample of N, kept in file order) or comma-separated ids (an unknown id is an
    error naming it)."""
    chosen = survey
    if split_ids is not None:
        wanted = set(split_ids)
        kept = [qid for qid in survey.questions if qid in wanted]
        if not kept:
            raise SurveyFormatError(f"{survey.path}: no question of the split is in this file")
        chosen = survey.select(kept)
    if questions:
        text = questions.strip()
        if text.isdigit():
            n = int(text)
            if n < 1:
                raise SurveyFormatError(f"--questions {text}: must be at least 1")
            ids = list(chosen.questions)
            if n < len(ids):
                picked = set(np.random.default_rng(seed).choice(len(ids), size=n, replace=False).tolist())
                ids = [qid for i, qid in enumerate(ids) if i in picked]
            chosen = chosen.select(ids)
        else:
            ids = [t.strip() for t in text.split(",") if t.strip()]
            outside = [i for i in ids if i not in chosen.questions]
            if outside:
                where = "the split" if split_ids is not None else "the file"
                raise SurveyFormatError(f"--questions: not in {where}: {', '.join(outside[:5])}")
            chosen = chosen.select(ids)
    return chosen


def check_attributes(survey: Survey, attributes: list[str] | None) -> list[str] | None:
    if attributes is None:
        return None
    present = survey.attributes()
    unknown = [a for a in attributes if a not in present]
    if unknown:
        raise SurveyFormatError(
            f"--attributes: {', '.join(unknown)} not in {survey.path} (attributes there: {', '.join(present)})"
        )
    return attributes
