"""A study's plan: which assemblies it runs (one per question and draw), their seeds, and a digest of the whole.

Draw d of a question runs with seed `seed_for(base, "draw", d)`, where base is the question's `jury.seed` (after
`--seed`): each draw seats another jury and deliberates with other random numbers, and the draws reproduce. The
same draw number gives the same seed for every question of a bank whose questions share a base seed, so draw d
seats the same jury on each question (a paired design: comparisons between questions are not blurred by jury-to-
jury variation).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from assembly.seeds import seed_for
from assembly.study.sources import StudyQuestion


@dataclass(frozen=True)
class Slot:
    """One draw of one question: one assembly of the study."""

    question: StudyQuestion
    draw: int  # 1..draws
    seed: int


@dataclass(frozen=True)
class StudyRun:
    """What a study's run records about itself (runs.study_id / study_question / study_draw), and its id, chosen
    before it starts so a re-run can be linked to the run it supersedes even when it fails."""

    study_id: str
    question: str
    draw: int
    run_id: str

    def store_fields(self) -> dict[str, str | int]:
        """The keywords of `Store.begin_run` that record it."""
        return {"run_id": self.run_id, "study_id": self.study_id, "study_question": self.question,
                "study_draw": self.draw}


def draw_seed(base: int, draw: int) -> int:
    return seed_for(base, "draw", draw)


def slots(questions: Sequence[StudyQuestion], draws: int) -> list[Slot]:
    """Question by question, so the draws of one question run side by side and share the backend's batches."""
    return [Slot(q, d, draw_seed(q.spec.jury.seed, d)) for q in questions for d in range(1, draws + 1)]


def digest(questions: Sequence[StudyQuestion], draws: int) -> str:
    """sha256 over every question's key and spec and the number of draws: a resume must plan the same study."""
    plan = {"draws": draws, "questions": [[q.key, q.spec.model_dump(mode="json")] for q in questions]}
    return hashlib.sha256(json.dumps(plan, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
