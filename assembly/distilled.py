"""The distilled mode: a mini-public's outcome predicted in one batched scoring pass, recorded like any run.

Instead of simulating testimony and rounds of talk, every juror casts the post-deliberation ballot directly, with
what the jury would have been told — the witnesses' briefs (`distilled_context`) — as its context, in one of three
prompts (`procedure.distilled_prompt`), all with what the jury shares first and who the juror is after it
(assembly.layout):
  - `ballot` (the default): the full mode's own ballot prompt (assembly.casting), prose persona and all, so an untuned
    model answers as it would in a full run's post-ballot;
  - `compact` (prompts/distilled_ballot.j2): a short preamble, no empty testimony heading, and the juror's
    attributes stated plainly (`juries.plain_persona`, as SubPOP states a respondent's demographics) instead of the
    prose persona, then the options — fewer tokens, for a model tuned on it;
  - `brief` (prompts/distilled_brief.j2): the options move into the shared part too, and the attributes are one
    line of values, so per juror a backend computes only that line and the answer cue — the fewest tokens, again
    for a model tuned on it.
The backend scores the options, so each juror's answer is a distribution and no ballot can be unreadable; with
`calibration: neutral` it is calibrated by the same builder's prompt with no persona and no context
(`distilled_prior_messages`; for `ballot`, the full mode's prior, in pre-ballot wording); votes are drawn from it
with the same common random numbers as in the full mode, tallied under the question file's rules, and the verdict
is written from the tally (`prompts/distilled_verdict.j2`), with no generation at all. What each prompt costs and
how close each comes to the full mode, untuned and tuned: docs/finetune.md §6.

A model tuned for it predicts what the juror's ballot would have been after a full deliberation: `finetune prepare
--types distilled_ballot` builds the training examples from the post-ballot distributions recorded by simulated full
runs (soft targets) and from real deliberations' post-deliberation votes, in exactly the prompt it will be run with
(`--distilled-prompt`), with its calibration prior's (`TrainConfig.calibrated`); with `--include-distilled`, also
from distilled runs asked in another prompt (a `ballot` run teaching `brief` what it answered: context
distillation). Untuned, the mode is the model's informed first opinion of each juror.

A distilled run is an ordinary run in the store (`summary.mode = "distilled"`, ballots in phase "post", no pre-ballot
and no turns but the verdict), made with the same run lifecycle as the full mode's (`assembly.deliberation.conduct`'s
statuses: `completed`, `failed` with its reason, `interrupted`). Nothing here imports torch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

from assembly.ballot import Ballot
from assembly.ballot_types import kind_of
from assembly.casting import (
    BallotPrompt,
    NeutralPriors,
    ballot_messages,
    cast_ballot,
    neutral_messages,
    position_bias,
)
from assembly.config import AssemblySpec, DistilledPrompt
from assembly.errors import AssemblyError
from assembly.layout import juror_messages
from assembly.prompts import render_prompt
from assembly.providers.base import Model
from assembly.providers.types import Message, ModelError
from assembly.result import AssemblyResult, JurorSummary, Verdict
from assembly.seeds import seed_for
from assembly.text import clip_words
from juries import plain_persona

MODE = "distilled"
PROMPTS: tuple[str, ...] = get_args(DistilledPrompt)  # procedure.distilled_prompt
PHASE = "post"
MODEL_ERROR = "model error: "  # how cast_ballot words an abstention after a model error
BRIEF_WORDS = 60  # per witness: the context stays a short, shared prefix of every juror's prompt


class DistilledUnavailable(AssemblyError):
    """The juror model cannot score options, so a distilled ballot would have to be parsed from text."""


def distilled_context(witnesses: Sequence[Mapping[str, Any]], prompt: str = "ballot") -> str:
    """What the jury would have heard, as the ballot's context: one line per witness (name, expertise, stance and
    the opening of the brief). `witnesses` are the question file's witness entries; `prompt` the distilled prompt
    it is for (compact and brief: empty without witnesses, as their templates add the heading)."""
    lines = []
    for w in witnesses:
        line = f"{w.get('name')} ({w.get('expertise')})"
        said = " ".join(str(w[k]) for k in ("stance", "brief") if w.get(k))
        if said:
            line += f": {clip_words(said, BRIEF_WORDS, one_line=True)}"
        lines.append(line)
    if prompt != "ballot":
        return "\n".join(f"- {line}" for line in lines)
    return "Expert testimony:\n" + ("\n".join(lines) if lines else "(no expert testimony)")


def compact_ballot_messages(*, persona: str, question: str, options: list[str], ballot_type: str,
                            phase: str = PHASE, context: str | None = None, background: str = "",
                            structured: bool = False, item: str | None = None) -> list[Message]:
    """The compact distilled prompt (prompts/distilled_ballot.j2), called as `assembly.casting.ballot_messages`
    is: `persona` the juror's attributes stated plainly, `context` the testimony lines. The calibration prior asks
    it with no persona and no context; `phase` and `structured` are accepted for that call's sake, as the distilled
    ballot is always the scored post-ballot."""
    shared = render_prompt("distilled_ballot", question=question, background=background, testimony=context or "")
    own = render_prompt("ballot", phase=phase, ballot_type=ballot_type, options=options, structured=structured,
                        item=item, intro=False, cue=True)
    return juror_messages(shared, persona, own, preamble=False)


def brief_ballot_messages(*, persona: str, question: str, options: list[str], ballot_type: str,
                          phase: str = PHASE, context: str | None = None, background: str = "",
                          structured: bool = False, item: str | None = None) -> list[Message]:
    """The brief distilled prompt (prompts/distilled_brief.j2), called as `compact_ballot_messages` is: the
    question, testimony lines and ballot first, then the juror's attributes, then only the answer cue."""
    ballot = render_prompt("ballot", phase=phase, ballot_type=ballot_type, options=options, structured=structured,
                           item=item, intro=False, cue=False)
    shared = render_prompt("distilled_brief", part="shared", question=question, background=background,
                           testimony=context or "", ballot=ballot)
    return juror_messages(shared, persona, render_prompt("distilled_brief", part="cue"), preamble=False)


BUILDERS: dict[str, BallotPrompt] = {"ballot": ballot_messages, "compact": compact_ballot_messages,
                                     "brief": brief_ballot_messages}


def ballot_prompt(prompt: str) -> BallotPrompt:
    """The ballot prompt builder of a distilled prompt (`procedure.distilled_prompt`)."""
    _check(prompt)
    return BUILDERS[prompt]


def juror_description(prompt: str, *, persona: str, attributes: Mapping[str, str]) -> str:
    """Who the juror is, as a distilled prompt says it: the prose persona (ballot) or the attributes (compact: a
    line each; brief: one line)."""
    _check(prompt)
    return persona if prompt == "ballot" else plain_persona(attributes, labels=prompt == "compact")


def _check(prompt: str) -> None:
    if prompt not in PROMPTS:
        raise ValueError(f"distilled prompt {prompt!r}: expected one of {', '.join(PROMPTS)}")


def distilled_ballot_messages(*, persona: str, attributes: Mapping[str, str], question: str, options: list[str],
                              ballot_type: str, witnesses: Sequence[Mapping[str, Any]], background: str = "",
                              prompt: str = "ballot", item: str | None = None) -> list[Message]:
    """The prompt a distilled ballot is scored on, and a distilled_ballot training example is written in."""
    return ballot_prompt(prompt)(
        persona=juror_description(prompt, persona=persona, attributes=attributes), question=question,
        options=options, ballot_type=ballot_type, phase=PHASE, context=distilled_context(witnesses, prompt),
        background=background, structured=False, item=item)


def distilled_prior_messages(*, question: str, options: list[str], ballot_type: str, background: str = "",
                             prompt: str = "ballot", item: str | None = None) -> list[Message]:
    """The calibration prior's prompt for a distilled ballot: the same builder with no persona and no context (for
    `ballot`, the full mode's prior: pre-ballot wording)."""
    return neutral_messages(question=question, options=options, ballot_type=ballot_type, background=background,
                            item=item, prompt=ballot_prompt(prompt))


def verdict_text(spec: AssemblySpec, tallies: list[dict], ballots: Sequence[Ballot]) -> Verdict:
    """The verdict and minority report, written from the tally (no model call)."""
    main = tallies[0]
    kind = kind_of(spec.ballot.type)
    minority = [b for b in ballots if b.status == "valid" and main["winner"] is not None
                and not kind.backs(b, main["winner"])]
    others = {o: sum(kind.backs(b, o) for b in minority) for o in spec.ballot.options if o != main["winner"]}
    text = render_prompt("distilled_verdict", part="verdict", question=spec.question, main=main, jurors=len(ballots))
    report = render_prompt("distilled_verdict", part="minority", minority=len(minority),
                           others={o: n for o, n in others.items() if n}) if minority else None
    return Verdict(text=text.strip(), minority_report=report.strip() if report else None, winner=main["winner"],
                   rule=main["rule"])


async def adistill(
    spec: str | Path | dict | AssemblySpec,
    *,
    model: str | None = None,
    seed: int | None = None,
    jurors: int | None = None,
    db: str | Path | None = None,
    models: Model | dict[str, Model] | None = None,
    on_event: Callable[[dict], None] | None = None,
    model_options: dict[str, Any] | None = None,
    study=None,
) -> AssemblyResult:
    """Run one distilled assembly and record it; the arguments mean what they mean for
    `assembly.deliberation.adeliberate` (only the juror model is used). Raises DistilledUnavailable before anything
    is recorded when the juror model cannot score options."""
    from assembly.counting import choice_counts, tally_phase
    from assembly.events import BallotCast, PhaseStarted, Tallied, Turn, VerdictReached
    from assembly.deliberation import (
        ROLES,
        _models_by_role,
        draw,
        resolve_spec,
        versions,
    )
    from assembly.graph_state import MODERATOR_ID
    from assembly.providers.registry import ModelPool
    from assembly.recorder import RecordingModel, usage_of
    from assembly.run_lifecycle import run_lifecycle
    from transcripts import Store, default_store_path

    config_path = str(Path(spec).resolve()) if isinstance(spec, (str, Path)) else None
    spec = resolve_spec(spec, model=model, seed=seed, jurors=jurors)
    population, jury = draw(spec)
    pool = ModelPool(**(model_options or {}))
    store_path = str(db or spec.store or default_store_path())
    try:
        juror_model = _models_by_role(spec, pool, models)["juror"]
        if not juror_model.scores_options:
            raise DistilledUnavailable(
                f"--mode distilled: the juror model {juror_model.name} cannot score options; use a local, embedded, "
                f"`assembly serve` or OpenAI-compatible model that returns logprobs")
        store = Store(store_path)
    except BaseException:
        await pool.aclose()
        raise
    run_id = store.begin_run(question=spec.question, spec=spec.model_dump(mode="json"), seed=spec.jury.seed,
                             provenance="simulated", versions=versions(), options=spec.ballot.options,
                             source="assembly-sim", config_path=config_path,
                             **(study.store_fields() if study is not None else {}))
    started = time.perf_counter()
    publish = (lambda event: on_event(event.as_dict())) if on_event is not None else None
    async with run_lifecycle(store, run_id, pool=pool, publish=publish) as lifecycle:
        emit = lifecycle.recorder.record
        recorder = RecordingModel(juror_model, lifecycle.recorder)
        store.add_participants(run_id, [
            {"id": MODERATOR_ID, "role": "moderator", "name": "Moderator", "persona": None, "attributes": {},
             "extra": {"model": "(none: the verdict is written from the tally)", "mode": MODE}},
            *({"id": j.id, "role": "juror", "name": j.persona.name, "persona": j.persona.text,
               "attributes": dict(j.attributes), "extra": {"model": recorder.name, "mode": MODE}}
              for j in jury.jurors),
        ])
        emit(PhaseStarted(phase=f"ballot-{PHASE}"))
        form = spec.procedure.distilled_prompt
        context = distilled_context([w.model_dump() for w in spec.witnesses], form)
        priors = NeutralPriors()
        ballots = await asyncio.gather(*(cast_ballot(
            recorder, juror_id=j.id, persona=juror_description(form, persona=j.persona.text, attributes=j.attributes),
            question=spec.question, options=spec.ballot.options,
            ballot_type=spec.ballot.type, phase=PHASE, context=context, background=spec.background,
            seed=seed_for(spec.jury.seed, "ballot", PHASE, j.id),
            vote_seed=seed_for(spec.jury.seed, "vote", j.id),  # the full mode's common random numbers
            order_seed=seed_for(spec.jury.seed, "orders"), procedure=spec.procedure.ballot_procedure(),
            priors=priors, prompt=ballot_prompt(form)) for j in jury.jurors))
        kind = kind_of(spec.ballot.type)
        for j, ballot in zip(jury.jurors, ballots):
            if ballot.status != "valid":  # a scoring backend that failed: never a silent default
                if ballot.reason.startswith(MODEL_ERROR):  # recorded as the full mode records a model error
                    raise ModelError(ballot.reason.removeprefix(MODEL_ERROR))
                raise AssemblyError(f"run {run_id} failed: {j.id}'s distilled ballot: {ballot.reason}")
            emit(BallotCast(ballot=ballot, speaker=j.persona.name))
        emit(PhaseStarted(phase="aggregation"))
        tallies = tally_phase(ballots, spec.ballot.options, spec.ballot.rules,
                              seed=seed_for(spec.jury.seed, "redraws", PHASE))
        emit(Tallied(phase=PHASE, tallies=tallies))
        verdict = verdict_text(spec, tallies, ballots)
        emit(Turn(seq=0, phase="verdict", round=None, speaker_id=MODERATOR_ID, speaker="Moderator",
                  content=verdict.text))
        if verdict.minority_report:
            emit(Turn(seq=1, phase="minority", round=None, speaker_id=MODERATOR_ID, speaker="Moderator",
                      content=verdict.minority_report))
        emit(VerdictReached(text=verdict.text, minority_report=verdict.minority_report, winner=verdict.winner,
                            rule=verdict.rule))
        usage = usage_of([recorder], time.perf_counter() - started)
        result = AssemblyResult(
            run_id=run_id, store=store_path, status="completed", mode=MODE, question=spec.question,
            options=spec.ballot.options, ballot_type=spec.ballot.type, seed=spec.jury.seed,
            jurors=[JurorSummary(id=j.id, name=j.persona.name, attributes=dict(j.attributes), post=kind.label(b))
                    for j, b in zip(jury.jurors, ballots)],
            representativeness=jury.representativeness, representativeness_overall=jury.overall,
            pre_counts={}, post_counts=choice_counts(ballots, spec.ballot.options), shift={}, changed=0,
            abstentions={"post": 0},
            tallies=tallies, pre_tallies=[], stability=tallies[0].get("stability"),
            position_bias=position_bias(ballots), verdict=verdict, usage=usage,
            models={role: recorder.name if role == "juror" else "(none)" for role in ROLES},
        )
        await lifecycle.complete_with(result, population, spec.jury.stratify)
    return result


def distill(spec: str | Path | dict | AssemblySpec, **kwargs) -> AssemblyResult:
    """Synchronous `adistill`."""
    return asyncio.run(adistill(spec, **kwargs))
