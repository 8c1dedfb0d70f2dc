"""`--db`: record an evaluation in the transcripts store like any run, with provenance "eval".

One run per question (a run has one question): its participants are the seated jurors (with their attributes,
persona and panel), its ballots are their private ballots (phase "pre"; each with its method and detail: orders
shown, per-order distributions, vote draws), its llm_calls every model call (through
`assembly.recorder.RecordingModel`). The run's summary holds the question's fidelity records. The question's run
records through the run lifecycle's recorder, which buffers its events and writes them in one short transaction
when the question ends, so a long evaluation neither pays one transaction per call nor holds the store's lock while
the model computes.

Each question's run has the lifecycle of every other mode (`assembly.run_lifecycle`): `completed` with its records,
`interrupted` by Ctrl-C or a cancelled task, or `failed` with the reason, keeping what was recorded before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from assembly.ballot import Ballot
from assembly.evaluation.config import EvalConfig
from assembly.evaluation.fidelity import EvalHooks
from assembly.evaluation.panels import Juror
from assembly.evaluation.survey import Survey, SurveyQuestion
from assembly.events import BallotCast
from assembly.run_lifecycle import RunLifecycle, run_lifecycle


class EvalRecorder(EvalHooks):
    def __init__(self, store, *, survey: Survey, config: EvalConfig, model_name: str, store_path: str):
        self.store = store
        self.survey = survey
        self.config = config
        self.model_name = model_name
        self.store_path = store_path
        self.run_ids: dict[str, str] = {}
        self._current: RunLifecycle | None = None  # the question in progress

    @classmethod
    def open(cls, path: str | Path, *, survey: Survey, config: EvalConfig, model) -> "EvalRecorder":
        from transcripts import Store

        return cls(Store(path), survey=survey, config=config, model_name=getattr(model, "name", str(model)),
                   store_path=str(path))

    # -- hooks ------------------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def question(self, question: SurveyQuestion, seated: dict[str, list[Juror]], model) -> AsyncIterator[Any]:
        from assembly.recorder import RecordingModel

        run_id = self._begin(question)
        async with run_lifecycle(self.store, run_id, close_store=False) as lifecycle:
            self.store.add_participants(run_id, [
                {"id": j.id, "role": "juror", "name": j.id, "persona": j.persona or None, "attributes": j.attributes,
                 "extra": {"panel": label, "persona_seed": j.seed, "model": self.model_name}}
                for label, jurors in seated.items() for j in jurors
            ])
            self._current = lifecycle
            try:
                yield RecordingModel(model, lifecycle.recorder)
            finally:  # however the question ends, the lifecycle writes what was recorded
                self._current = None

    def _begin(self, question: SurveyQuestion) -> str:
        from assembly.deliberation import versions

        spec = {
            "eval": "survey",
            "file": self.survey.path,
            "question_id": question.question_id,
            "options": list(question.options),
            "model": self.model_name,
            "mode": self.config.mode,
            "jurors_per_group": self.config.jurors_per_group,
            "population": self.config.population,
            "attributes": self.config.attributes,
            "option_orders": self.config.option_orders,
            "calibration": self.config.calibration,
            "vote": self.config.vote,
        }
        run_id = self.store.begin_run(question=question.question, spec=spec, seed=self.config.seed,
                                      provenance="eval", versions=versions(), options=list(question.options),
                                      external_id=question.question_id, source=Path(self.survey.path).name)
        self.run_ids[question.question_id] = run_id
        return run_id

    def on_ballot(self, question: SurveyQuestion, panel: str, juror: Juror | None, ballot: Ballot) -> None:
        if self.config.mode == "assembly" and juror is None:
            return  # the mini-assembly recorded its own run and ballots
        self._current.recorder.record(BallotCast(ballot=ballot, speaker=ballot.participant_id))

    async def end_question(self, question: SurveyQuestion, records: list[dict[str, Any]]) -> None:
        await self._current.complete({"fidelity": records})

    def assembly_db(self) -> str | None:
        return self.store_path

    # -- end of the evaluation --------------------------------------------------------------------------------------

    def finish(self, result, summary: dict[str, Any]) -> list[str]:
        """Store the whole evaluation's summary on every question's run; return the run ids."""
        slim = {k: v for k, v in summary.items() if k not in ("records", "pairs", "question_ids")}
        for run_id in self.run_ids.values():
            self.store.update_summary(run_id, {"evaluation": slim})
        self.close()
        return list(self.run_ids.values())

    def close(self) -> None:
        self.store.close()
