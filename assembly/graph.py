"""The assembly as a LangGraph graph.

Phases: private pre-ballot (fanned out) -> moderator opening -> witness testimony (fanned out) -> juror questions
and witness answers (fanned out) -> deliberation rounds (moderator opens the round and gives the floor in a shuffled
order; jurors speak in parallel, each answering the previous round; the moderator summarises) -> private
post-ballot (fanned out) -> aggregation -> verdict and minority report.

Models, the store and the jury live in the runtime context (not in checkpointed state). Fanned-out results merge
into dicts keyed by juror id, so completion order never matters; transcript order is fixed up front by reserving
sequence numbers in speaking order. The next free number is state (`next_seq`), not a counter in the context: a
node re-run after a resume (assembly.resuming) reads the checkpointed value and reserves the numbers it reserved the
first time, so its writes land on the same (run, seq) keys and the store ignores them as already written.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import random
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from assembly.ballot import Ballot
from assembly.ballot_types import kind_of
from assembly.casting import NeutralPriors, cast_ballot
from assembly.config import AssemblySpec
from assembly.counting import tally_phase
from assembly.events import BallotCast, Event, PhaseStarted, Speaking, Tallied, Turn, VerdictReached
from assembly.layout import question_messages, statement_messages
from assembly.prompts import render_prompt
from assembly.providers.base import Model
from assembly.providers.types import GenerateRequest, Message
from assembly.recorder import RunRecorder
from assembly.seeds import seed_for
from assembly.text import clean_turn

MODERATOR_ID = "moderator"


def merge(left: dict | None, right: dict | None) -> dict:
    return {**(left or {}), **(right or {})}


def furthest(left: int | None, right: int | None) -> int:
    return max(left or 0, right or 0)


class AssemblyState(TypedDict, total=False):
    round: int
    ballots: Annotated[dict[str, dict], merge]  # "pre:juror-01" -> Ballot dump
    testimony: Annotated[dict[str, str], merge]  # witness id -> testimony
    questions: Annotated[dict[str, dict], merge]  # juror id -> {witness, question, answer}
    statements: Annotated[dict[str, dict], merge]  # "round:juror id" -> {speaker, content, seq}
    floor: Annotated[dict[str, dict], merge]  # round -> {seed, order}
    summaries: Annotated[list[str], operator.add]
    prompts: Annotated[dict[str, str], merge]  # round -> the moderator's invitation
    tallies: dict[str, list[dict]]  # phase -> tallies
    verdict: dict
    # The first transcript position not yet reserved. A reserving node returns its end; each fanned-out worker
    # returns the end of its own positions, and the furthest of them is the end of the whole reservation.
    next_seq: Annotated[int, furthest]


@dataclass
class Participant:
    id: str
    role: str
    name: str
    persona: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class AssemblyContext:
    """Run-scoped, not checkpointed: the spec, who sits, which model plays each role, the run's recorder."""

    spec: AssemblySpec
    jurors: list[Participant]
    witnesses: list[Participant]
    models: dict[str, Model]  # role -> model (already wrapped for recording)
    recorder: RunRecorder
    run_id: str
    seed: int
    documents: dict[str, str] = field(default_factory=dict)  # witness id -> document text
    priors: NeutralPriors = field(default_factory=NeutralPriors)  # calibration priors, once per run

    def name_of(self, participant_id: str) -> str:
        if participant_id == MODERATOR_ID:
            return "Moderator"
        for p in (*self.jurors, *self.witnesses):
            if p.id == participant_id:
                return p.name
        return participant_id

    def speaker_names(self) -> list[str]:
        """Who may label a turn "<name>:" (a label `clean_turn` strips): every participant and "Moderator"."""
        return ["Moderator", *(p.name for p in (*self.jurors, *self.witnesses))]

    def emit(self, event: Event) -> None:
        self.recorder.record(event)


def free_seq(state: AssemblyState) -> int:
    """The first unreserved transcript position, as of the state this node or route was given."""
    return state.get("next_seq") or 0


def words_to_tokens(words: int) -> int:
    return int(words * 1.6) + 8


async def speak(ctx: AssemblyContext, role: str, speaker_id: str, system: str | None, user: str | list[Message], *,
                phase: str, round_: int | None, seq: int, words: int) -> tuple[str, str | None]:
    """One generated turn, recorded at its reserved position. `user` is the user message, or (with system None)
    the whole prompt laid out by assembly.layout."""
    messages = user if system is None else [Message(role="system", content=system), Message(role="user", content=user)]
    request = GenerateRequest(
        messages=messages,
        max_tokens=words_to_tokens(words),
        temperature=ctx.spec.procedure.temperature,
        seed=seed_for(ctx.seed, phase, round_, speaker_id, seq),
        tags={"role": role, "participant": speaker_id, "phase": phase, "round": round_},
    )
    ctx.emit(Speaking(phase=phase, round=round_, speaker=ctx.name_of(speaker_id)))
    response = await ctx.models[role].generate(request)
    content = clean_turn(response.text, words, ctx.speaker_names())
    call_id = response.raw.get("call_id")
    ctx.emit(Turn(seq=seq, phase=phase, round=round_, speaker_id=speaker_id, speaker=ctx.name_of(speaker_id),
                  content=content, call_id=call_id, tokens=response.usage.output_tokens,
                  duration_s=response.duration_s))
    return content, call_id


def moderator_system(ctx: AssemblyContext) -> str:
    return render_prompt("moderator_system", jury_size=len(ctx.jurors))


def juror(ctx: AssemblyContext, juror_id: str) -> Participant:
    return next(j for j in ctx.jurors if j.id == juror_id)


def testimony_digest(ctx: AssemblyContext, state: AssemblyState) -> str:
    """A bounded digest: the opening of each witness's testimony, so prompts do not grow with the record."""
    per_witness = max(20, ctx.spec.procedure.testimony_words // 2)
    lines = []
    for w in ctx.witnesses:
        text = (state.get("testimony") or {}).get(w.id)
        if text:
            opening = clean_turn(text, per_witness, ctx.speaker_names())
            lines.append(f"{w.name} ({w.extra.get('expertise', 'witness')}): {opening}")
    return "\n".join(lines) or "(no expert testimony)"


def latest_summary(state: AssemblyState) -> str:
    summaries = state.get("summaries") or []
    return summaries[-1] if summaries else ""


def round_turns(ctx: AssemblyContext, state: AssemblyState, round_: int) -> list[dict]:
    turns = [s for key, s in (state.get("statements") or {}).items() if key.startswith(f"{round_}:")]
    return [{"speaker": ctx.name_of(t["speaker"]), "content": t["content"]} for t in sorted(turns, key=lambda t: t["seq"])]


# --- ballots -----------------------------------------------------------------------------------------------------


async def _ballot(payload: dict, runtime: Runtime[AssemblyContext]) -> dict:
    ctx = runtime.context
    spec = ctx.spec
    member = juror(ctx, payload["juror_id"])
    phase = payload["phase"]
    ballot = await cast_ballot(
        ctx.models["juror"],
        juror_id=member.id,
        persona=member.persona,
        question=spec.question,
        options=spec.ballot.options,
        ballot_type=spec.ballot.type,
        phase=phase,
        context=payload.get("context"),
        background=spec.background,
        seed=seed_for(ctx.seed, "ballot", phase, member.id),
        vote_seed=seed_for(ctx.seed, "vote", member.id),  # common random numbers: the same for pre and post
        order_seed=seed_for(ctx.seed, "orders"),
        procedure=spec.procedure.ballot_procedure(),
        priors=ctx.priors,
    )
    ctx.emit(BallotCast(ballot=ballot, speaker=member.name, label=kind_of(ballot.type).label(ballot)))
    return {"ballots": {f"{phase}:{member.id}": ballot.model_dump(mode="json")}}


def route_pre_ballot(state: AssemblyState, runtime: Runtime[AssemblyContext]) -> list[Send]:
    runtime.context.emit(PhaseStarted(phase="ballot-pre"))
    # No context: a pre-ballot sees nothing any other participant said (anti-anchoring).
    return [Send("ballot", {"juror_id": j.id, "phase": "pre"}) for j in runtime.context.jurors]


def route_post_ballot(state: AssemblyState, runtime: Runtime[AssemblyContext]) -> list[Send]:
    ctx = runtime.context
    ctx.emit(PhaseStarted(phase="ballot-post"))
    parts = [f"Expert testimony:\n{testimony_digest(ctx, state)}"]
    if latest_summary(state):
        parts.append(f"The moderator's summary of the deliberation:\n{latest_summary(state)}")
    context = "\n\n".join(parts)
    return [Send("ballot", {"juror_id": j.id, "phase": "post", "context": context}) for j in ctx.jurors]


def join(state: AssemblyState) -> dict:
    """Waits for every task of a fan-out; routing from here runs once, not once per task."""
    return {}


def after_ballot(state: AssemblyState) -> str:
    return "aggregate" if any(k.startswith("post:") for k in state.get("ballots") or {}) else "opening"


# --- opening, testimony, questions -------------------------------------------------------------------------------


async def opening(state: AssemblyState, runtime: Runtime[AssemblyContext]) -> dict:
    ctx = runtime.context
    spec = ctx.spec
    ctx.emit(PhaseStarted(phase="opening"))
    user = render_prompt("moderator_opening", question=spec.question, background=spec.background,
                         witnesses=spec.witnesses, rounds=spec.procedure.rounds, options=spec.ballot.options,
                         words=spec.procedure.words_per_turn)
    seq = free_seq(state)
    await speak(ctx, "moderator", MODERATOR_ID, moderator_system(ctx), user, phase="opening", round_=None,
                seq=seq, words=spec.procedure.words_per_turn)
    return {"next_seq": seq + 1}


def route_testimony(state: AssemblyState, runtime: Runtime[AssemblyContext]):
    ctx = runtime.context
    if not ctx.witnesses:
        return route_questions(state, runtime)
    ctx.emit(PhaseStarted(phase="testimony"))
    first = free_seq(state)
    return [Send("testify", {"witness_id": w.id, "seq": first + i}) for i, w in enumerate(ctx.witnesses)]


async def testify(payload: dict, runtime: Runtime[AssemblyContext]) -> dict:
    ctx = runtime.context
    spec = ctx.spec
    witness = next(w for w in ctx.witnesses if w.id == payload["witness_id"])
    user = render_prompt("testimony", question=spec.question, documents=ctx.documents.get(witness.id, ""),
                         words=spec.procedure.testimony_words)
    content, _ = await speak(ctx, "witness", witness.id, witness.persona, user, phase="testimony", round_=None,
                             seq=payload["seq"], words=spec.procedure.testimony_words)
    return {"testimony": {witness.id: content}, "next_seq": payload["seq"] + 1}


def route_questions(state: AssemblyState, runtime: Runtime[AssemblyContext]):
    ctx = runtime.context
    proc = ctx.spec.procedure
    if not (proc.questions and ctx.witnesses and proc.questioners > 0):
        return route_round(state, runtime)
    ctx.emit(PhaseStarted(phase="questions"))
    rng = random.Random(seed_for(ctx.seed, "questioners"))
    askers = rng.sample(ctx.jurors, min(proc.questioners, len(ctx.jurors)))
    first = free_seq(state)  # two positions per asker: the question and its answer
    sends = []
    for i, member in enumerate(askers):
        witness = ctx.witnesses[i % len(ctx.witnesses)]
        testimony = clean_turn((state.get("testimony") or {}).get(witness.id, ""), proc.testimony_words,
                               ctx.speaker_names())
        sends.append(Send("question", {"juror_id": member.id, "witness_id": witness.id, "seq": first + 2 * i,
                                       "testimony": f"{witness.name}: {testimony}"}))
    return sends


async def question(payload: dict, runtime: Runtime[AssemblyContext]) -> dict:
    ctx = runtime.context
    spec = ctx.spec
    member = juror(ctx, payload["juror_id"])
    witness = next(w for w in ctx.witnesses if w.id == payload["witness_id"])
    messages = question_messages(persona=member.persona, question=spec.question, testimony=payload["testimony"],
                                 witness=witness.name)
    asked, _ = await speak(ctx, "juror", member.id, None, messages, phase="question", round_=None, seq=payload["seq"],
                           words=40)
    user = render_prompt("witness_answer", question=spec.question, juror=member.name, asked=asked,
                         words=spec.procedure.words_per_turn)
    answer, _ = await speak(ctx, "witness", witness.id, witness.persona, user, phase="answer", round_=None,
                            seq=payload["seq"] + 1, words=spec.procedure.words_per_turn)
    return {"questions": {member.id: {"witness": witness.id, "question": asked, "answer": answer,
                                       "seq": payload["seq"]}}, "next_seq": payload["seq"] + 2}


# --- deliberation rounds -----------------------------------------------------------------------------------------


def route_round(state: AssemblyState, runtime: Runtime[AssemblyContext]):
    return "round_open" if runtime.context.spec.procedure.rounds > 0 else route_post_ballot(state, runtime)


async def round_open(state: AssemblyState, runtime: Runtime[AssemblyContext]) -> dict:
    ctx = runtime.context
    spec = ctx.spec
    round_ = (state.get("round") or 0) + 1
    ctx.emit(PhaseStarted(phase="deliberation", round=round_))
    floor_seed = seed_for(ctx.seed, "floor", round_)
    order = [j.id for j in ctx.jurors]
    random.Random(floor_seed).shuffle(order)  # speaking order shuffled per round against order bias; seed logged
    invitation = render_prompt("moderator_round", round=round_, rounds=spec.procedure.rounds,
                               speakers=[ctx.name_of(j) for j in order])
    seq = free_seq(state)
    ctx.emit(Turn(seq=seq, phase="floor", round=round_, speaker_id=MODERATOR_ID, speaker="Moderator",
                  content=invitation))
    return {"round": round_, "floor": {str(round_): {"seed": floor_seed, "order": order}},
            "prompts": {str(round_): invitation}, "next_seq": seq + 1}


def route_speakers(state: AssemblyState, runtime: Runtime[AssemblyContext]) -> list[Send]:
    round_ = state["round"]
    order = state["floor"][str(round_)]["order"]
    first = free_seq(state)
    return [Send("statement", {"juror_id": j, "round": round_, "seq": first + i}) for i, j in enumerate(order)]


def heard_turns(ctx: AssemblyContext, state: AssemblyState, round_: int, juror_id: str) -> list[dict]:
    """The turns one juror heard before speaking in `round_`: at most `recent_turns` of them, in speaking order.

    From round 2, the previous round's statements of the jurors who sat nearest this juror in that round's
    speaking order (circular distance; the juror's own statement is not among them). Before round 1, whole
    question-and-answer exchanges, nearest first around a seeded position in the order they were asked. Each juror
    hears a window of their own, so no fixed set of last speakers sets everyone's agenda, and prompts stay bounded.
    """
    keep = ctx.spec.procedure.recent_turns
    if keep == 0:
        return []
    if round_ > 1:
        order = state["floor"][str(round_ - 1)]["order"]
        said = {s["speaker"]: s for key, s in (state.get("statements") or {}).items()
                if key.startswith(f"{round_ - 1}:")}
        units = [[said[j]] if j in said and j != juror_id else [] for j in order]
        centre = order.index(juror_id)
    else:
        asked = sorted((state.get("questions") or {}).items(), key=lambda item: item[1].get("seq", 0))
        units = [[{"speaker": j, "content": qa["question"]}, {"speaker": qa["witness"], "content": qa["answer"]}]
                 for j, qa in asked]
        if not units:
            return []
        centre = random.Random(seed_for(ctx.seed, "hears", round_, juror_id)).randrange(len(units))
    n = len(units)
    nearest = sorted(range(n), key=lambda i: (min((i - centre) % n, (centre - i) % n), (i - centre) % n))
    chosen, count_ = set(), 0
    for i in nearest:
        if units[i] and count_ + len(units[i]) <= keep:
            chosen.add(i)
            count_ += len(units[i])
    return [{"speaker": ctx.name_of(t["speaker"]), "content": t["content"]}
            for i in sorted(chosen) for t in units[i]]


async def statement(payload: dict, runtime: Runtime[AssemblyContext]) -> dict:
    ctx = runtime.context
    spec = ctx.spec
    state: AssemblyState = payload["state"]
    member = juror(ctx, payload["juror_id"])
    round_ = payload["round"]
    messages = statement_messages(persona=member.persona, question=spec.question, options=spec.ballot.options,
                                  testimony=testimony_digest(ctx, state), summary=latest_summary(state),
                                  heard=heard_turns(ctx, state, round_, member.id),
                                  prompt=state["prompts"][str(round_)], words=spec.procedure.words_per_turn)
    content, _ = await speak(ctx, "juror", member.id, None, messages, phase="deliberation", round_=round_,
                             seq=payload["seq"], words=spec.procedure.words_per_turn)
    return {"statements": {f"{round_}:{member.id}": {"speaker": member.id, "content": content, "seq": payload["seq"]}},
            "next_seq": payload["seq"] + 1}


async def round_summary(state: AssemblyState, runtime: Runtime[AssemblyContext]) -> dict:
    ctx = runtime.context
    spec = ctx.spec
    round_ = state["round"]
    user = render_prompt("moderator_summary", question=spec.question, summary=latest_summary(state), round=round_,
                         turns=round_turns(ctx, state, round_), words=int(spec.procedure.words_per_turn * 1.5))
    seq = free_seq(state)
    summary, _ = await speak(ctx, "moderator", MODERATOR_ID, moderator_system(ctx), user, phase="summary",
                             round_=round_, seq=seq, words=int(spec.procedure.words_per_turn * 1.5))
    return {"summaries": [summary], "next_seq": seq + 1}


def after_summary(state: AssemblyState, runtime: Runtime[AssemblyContext]):
    if state["round"] < runtime.context.spec.procedure.rounds:
        return "round_open"
    return route_post_ballot(state, runtime)


# --- aggregation and verdict -------------------------------------------------------------------------------------


def ballots_of(state: AssemblyState, phase: str) -> list[Ballot]:
    return [Ballot.model_validate(b) for k, b in sorted((state.get("ballots") or {}).items()) if k.startswith(f"{phase}:")]


async def aggregate(state: AssemblyState, runtime: Runtime[AssemblyContext]) -> dict:
    ctx = runtime.context
    spec = ctx.spec
    ctx.emit(PhaseStarted(phase="aggregation"))
    tallies = {phase: tally_phase(ballots_of(state, phase), spec.ballot.options, spec.ballot.rules,
                                  seed=seed_for(ctx.seed, "redraws", phase))
               for phase in ("pre", "post")}
    for phase, phase_tallies in tallies.items():
        ctx.emit(Tallied(phase=phase, tallies=phase_tallies))
    return {"tallies": tallies}


async def verdict(state: AssemblyState, runtime: Runtime[AssemblyContext]) -> dict:
    ctx = runtime.context
    spec = ctx.spec
    ctx.emit(PhaseStarted(phase="verdict"))
    post = state["tallies"]["post"]
    pre = state["tallies"]["pre"]
    main = post[0]  # the first listed rule decides; the others are reported beside it
    words = int(spec.procedure.words_per_turn * 1.5)
    user = render_prompt("verdict", question=spec.question, ballot_type=spec.ballot.type, valid=main["valid"],
                         abstained=main["abstained"], tallies=post, pre_winner=pre[0]["winner"], winner=main["winner"],
                         rule=main["rule"], summary=latest_summary(state) or "(no deliberation rounds)", words=words)
    verdict_seq = free_seq(state)
    kind = kind_of(spec.ballot.type)
    minority = [b for b in ballots_of(state, "post") if b.status == "valid" and not kind.backs(b, main["winner"])]
    jobs = [speak(ctx, "moderator", MODERATOR_ID, moderator_system(ctx), user, phase="verdict", round_=None,
                  seq=verdict_seq, words=words)]
    if minority and main["winner"] is not None:
        ids = {b.participant_id for b in minority}
        said = [{"speaker": ctx.name_of(s["speaker"]), "content": s["content"]}
                for s in sorted((state.get("statements") or {}).values(), key=lambda s: s["seq"])
                if s["speaker"] in ids][-ctx.spec.procedure.recent_turns or None:]
        report_prompt = render_prompt("minority_report", question=spec.question, winner=main["winner"],
                                      minority_count=len(minority),
                                      minority_options=[o for o in spec.ballot.options if o != main["winner"] and any(
                                          kind.backs(b, o) for b in minority)],
                                      turns=said, words=words)
        # The report answers the ballots, not the verdict's wording: both are written at once (one batch).
        jobs.append(speak(ctx, "moderator", MODERATOR_ID, moderator_system(ctx), report_prompt, phase="minority",
                          round_=None, seq=verdict_seq + 1, words=words))
    written = await asyncio.gather(*jobs)
    text = written[0][0]
    report = written[1][0] if len(written) > 1 else None
    ctx.emit(VerdictReached(text=text, minority_report=report, winner=main["winner"], rule=main["rule"]))
    return {"verdict": {"text": text, "minority_report": report, "winner": main["winner"], "rule": main["rule"]},
            "next_seq": verdict_seq + len(jobs)}


# --- the graph ---------------------------------------------------------------------------------------------------


def _with_state(route):
    """Statement workers need the round's shared state (summary, previous turns): pass a snapshot in the Send."""

    def wrapped(state: AssemblyState, runtime: Runtime[AssemblyContext]):
        sends = route(state, runtime)
        return [Send(s.node, {**s.arg, "state": dict(state)}) if s.node == "statement" else s for s in sends]

    return wrapped


def flushed(node):
    """A node that writes its phase's records before it returns, so before LangGraph checkpoints its step: a
    resumed run never finds a checkpointed step whose records were lost."""

    @functools.wraps(node)
    async def wrapped(state, runtime: Runtime[AssemblyContext]):
        update = await node(state, runtime)
        await runtime.context.recorder.flush()
        return update

    return wrapped


def build_graph(checkpointer=None):
    """The compiled assembly graph. Invoke with `context=AssemblyContext(...)`; embed it in another graph as a
    subgraph node that shares this context, or use assembly.as_subgraph() for a self-contained node. Its events
    (assembly.events) come out of LangGraph's custom stream (`stream_mode="custom"`)."""
    builder = StateGraph(AssemblyState, context_schema=AssemblyContext)
    builder.add_node("ballot", flushed(_ballot))
    builder.add_node("ballots_done", join)
    builder.add_node("opening", flushed(opening))
    builder.add_node("testify", flushed(testify))
    builder.add_node("testimony_done", join)
    builder.add_node("question", flushed(question))
    builder.add_node("questions_done", join)
    builder.add_node("round_open", flushed(round_open))
    builder.add_node("statement", flushed(statement))
    builder.add_node("round_summary", flushed(round_summary))
    builder.add_node("aggregate", flushed(aggregate))
    builder.add_node("verdict", flushed(verdict))

    builder.add_conditional_edges(START, route_pre_ballot, ["ballot"])
    builder.add_edge("ballot", "ballots_done")
    builder.add_conditional_edges("ballots_done", after_ballot, ["opening", "aggregate"])
    builder.add_conditional_edges("opening", route_testimony, ["testify", "question", "round_open", "ballot"])
    builder.add_edge("testify", "testimony_done")
    builder.add_conditional_edges("testimony_done", route_questions, ["question", "round_open", "ballot"])
    builder.add_edge("question", "questions_done")
    builder.add_conditional_edges("questions_done", route_round, ["round_open", "ballot"])
    builder.add_conditional_edges("round_open", _with_state(route_speakers), ["statement"])
    builder.add_edge("statement", "round_summary")
    builder.add_conditional_edges("round_summary", after_summary, ["round_open", "ballot"])
    builder.add_edge("aggregate", "verdict")
    builder.add_edge("verdict", END)
    return builder.compile(checkpointer=checkpointer)
