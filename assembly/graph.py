"""The assembly as a LangGraph graph.

Phases: private pre-ballot (fanned out) -> moderator opening -> witness testimony (fanned out) -> juror questions
and witness answers (fanned out) -> deliberation rounds (moderator opens the round and gives the floor in a shuffled
order; jurors speak in parallel, each answering the previous round; the moderator summarises) -> private
post-ballot (fanned out) -> aggregation -> verdict and minority report.

This module holds the node bodies and the wiring; the state and runtime context are in assembly.graph_state, what
each participant hears in assembly.hearing. Transcript order is fixed up front by reserving sequence numbers in
speaking order. The next free number is state (`next_seq`), not a counter in the context: a node re-run after a
resume (assembly.resuming) reads the checkpointed value and reserves the numbers it reserved the first time, so its
writes land on the same (run, seq) keys and the store ignores them as already written.
"""

from __future__ import annotations

import asyncio
import functools
import random

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from assembly.ballot import Ballot
from assembly.ballot_types import kind_of
from assembly.casting import cast_ballot
from assembly.counting import tally_phase
from assembly.events import BallotCast, PhaseStarted, Speaking, Tallied, Turn, VerdictReached
from assembly.graph_state import MODERATOR_ID, AssemblyContext, AssemblyState, Participant, free_seq
from assembly.hearing import heard_turns, latest_summary, questions_digest, round_turns, testimony_digest
from assembly.layout import question_messages, statement_messages
from assembly.prompts import render_prompt
from assembly.providers.types import GenerateRequest, Message
from assembly.seeds import seed_for
from assembly.text import clean_turn

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
    ctx.emit(BallotCast(ballot=ballot, speaker=member.name))
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


async def statement(payload: dict, runtime: Runtime[AssemblyContext]) -> dict:
    ctx = runtime.context
    spec = ctx.spec
    state: AssemblyState = payload["state"]
    member = juror(ctx, payload["juror_id"])
    round_ = payload["round"]
    messages = statement_messages(persona=member.persona, question=spec.question, options=spec.ballot.options,
                                  testimony=testimony_digest(ctx, state), exchanges=questions_digest(ctx, state),
                                  summary=latest_summary(state), heard=heard_turns(ctx, state, round_, member.id),
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
