"""Casting one private ballot. Ballots never silently default.

A backend that scores options (the local model; OpenAI-compatible servers that return logprobs; `assembly serve`)
answers a constrained choice, so every ballot is valid:
  1. the ballot is scored under `option_orders` orders of the options (evenly spaced cyclic shifts, then seeded
     permutations) and the distributions are averaged, so the option listed first gains nothing by its place;
  2. with `calibration="neutral"` each order's distribution is first divided by the model's no-persona, no-context
     prior for the same order (contextual calibration), computed once per question and order;
  3. the vote is drawn from the result (`vote="sample"`) with the juror's common random numbers, or is its mode.
Approval ballots score each option as its own yes/no question ("Would this be acceptable to you?"), all in one
batch, and approve each option with its own probability.
Other backends get structured output in one of the orders (chosen per juror, so order effects average out over the
jury): the reply is parsed and validated, re-asked with the error up to `max_attempts` times, and otherwise
recorded as an abstention with its reason. Each ballot records the method that produced it and the orders used.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from assembly.ballot import Ballot
from assembly.ballot_types import VoteMode, draws_for, kind_of
from assembly.layout import juror_messages, shared_block
from assembly.prompts import render_prompt
from assembly.providers.base import Model
from assembly.providers.types import (
    ChoiceScoringUnavailable,
    GenerateRequest,
    Message,
    ModelError,
)

MAX_OPTION_ORDERS = 24
# Defaults chosen by measurement on OpinionQA's by-wave validation split (docs/fidelity.md): neutral calibration with
# one order scored best at about one call per ballot.
DEFAULT_OPTION_ORDERS = 1
DEFAULT_CALIBRATION = "neutral"
YES_NO = ("Yes", "No")
NEUTRAL_PERSONA = ""  # the calibration prior and the eval's no-persona baseline: no persona at all


def option_orders(k: int, n: int, seed: int = 0) -> list[list[int]]:
    """n orders of k options as index lists, the file's order first.

    n <= k: evenly spaced cyclic shifts, so each option leads at most once and every position is balanced when
    n == k. n > k: all k shifts, then distinct seeded permutations, up to k! orders in all.
    """
    if n < 1:
        raise ValueError(f"option_orders must be at least 1, got {n}")
    shifts = sorted({(j * k) // n for j in range(min(n, k))})
    orders = [[(i + s) % k for i in range(k)] for s in shifts]
    rng = random.Random(seed)
    seen = {tuple(o) for o in orders}
    limit = math.factorial(k) if k <= 8 else n
    while len(orders) < min(n, limit):
        candidate = list(range(k))
        rng.shuffle(candidate)
        if tuple(candidate) not in seen:
            seen.add(tuple(candidate))
            orders.append(candidate)
    return orders


def ballot_schema(ballot_type: str, options: list[str]) -> dict:
    """JSON schema of a structured ballot reply, for backends with native structured output."""
    return kind_of(ballot_type).schema(options)


class BallotPrompt(Protocol):
    """What builds a ballot's prompt, called as `ballot_messages` is."""

    def __call__(self, *, persona: str, question: str, options: list[str], ballot_type: str, phase: str,
                 context: str | None, background: str = "", structured: bool,
                 item: str | None = None) -> list[Message]: ...


def ballot_messages(
    *, persona: str, question: str, options: list[str], ballot_type: str, phase: str, context: str | None,
    background: str = "", structured: bool, item: str | None = None
) -> list[Message]:
    """The private ballot prompt (assembly.layout): the question, background and — after deliberation only —
    `context` are shared by the jury; the persona follows them, then the ballot instruction and the options (whose
    order differs between the option orders of one ballot).

    `item`: one option of an approval ballot asked as its own yes/no question (`options` then lists the answers)."""
    own = render_prompt("ballot", phase=phase, ballot_type=ballot_type, options=options, structured=structured,
                        item=item, intro=True, cue=True)
    return juror_messages(shared_block(question=question, background=background, context=context), persona, own)


def neutral_messages(*, question: str, options: list[str], ballot_type: str, background: str = "",
                     item: str | None = None, prompt: BallotPrompt | None = None) -> list[Message]:
    """The neutral-calibration prior's prompt: the ballot (`prompt`, default `ballot_messages`) with no persona and no
    context, asked as a pre-ballot (for `ballot_messages`, in pre-ballot wording)."""
    return (prompt or ballot_messages)(persona=NEUTRAL_PERSONA, question=question, options=options,
                                       ballot_type=ballot_type, phase="pre", context=None, background=background,
                                       structured=False, item=item)


def parse_ballot_reply(text: str, ballot_type: str, options: list[str]) -> tuple[dict, str | None]:
    """Parse a structured reply into ballot fields; ValueError says what is wrong with it.

    The first JSON object in the text is read with `raw_decode`, so braces in prose after it do not matter."""
    text = text or ""
    decoder = json.JSONDecoder()
    data, error = None, "no JSON object in the reply"
    for start in (i for i, ch in enumerate(text) if ch == "{"):
        try:
            data, _ = decoder.raw_decode(text, start)
            break
        except json.JSONDecodeError as exc:
            error = f"invalid JSON ({exc.msg})"
    if not isinstance(data, dict):
        raise ValueError(error)
    reason = data.get("reason") if isinstance(data.get("reason"), str) else None
    return kind_of(ballot_type).parse(data, options), reason


@dataclass(frozen=True)
class BallotProcedure:
    """How ballots are cast and counted as votes (the question file's `procedure` keys of the same names)."""

    vote: VoteMode = "sample"
    option_orders: int = DEFAULT_OPTION_ORDERS
    calibration: str = DEFAULT_CALIBRATION  # none | neutral
    max_attempts: int = 3
    temperature: float = 0.7


@dataclass
class _Prompt:
    """One scored prompt: the answers in the order shown, and (after scoring) their distribution."""

    item: str | None  # approval: the option asked about; else None
    shown: list[str]
    order: int  # index into the orders used
    distribution: dict[str, float] = field(default_factory=dict)


class NeutralPriors:
    """The model's no-persona, no-context answer per (prompt builder, question, order), computed once and shared by
    all jurors."""

    def __init__(self) -> None:
        self._tasks: dict[tuple, asyncio.Task] = {}

    def get(self, key: tuple, compute) -> asyncio.Future:
        task = self._tasks.get(key)
        if task is None:
            task = self._tasks[key] = asyncio.ensure_future(compute())
        return task


def _prompts(ballot_type: str, options: list[str], orders: list[list[int]], yes_no_orders: int) -> list[_Prompt]:
    if kind_of(ballot_type).itemised:
        answers = [list(YES_NO), list(reversed(YES_NO))][:max(1, min(yes_no_orders, 2))]
        return [_Prompt(item=o, shown=a, order=j) for o in options for j, a in enumerate(answers)]
    return [_Prompt(item=None, shown=[options[i] for i in order], order=j) for j, order in enumerate(orders)]


async def _score(model: Model, prompts: list[_Prompt], messages_for, *, seed: int | None,
                 tags: dict) -> tuple[list[str], str]:
    """Score every prompt in one concurrent batch; fills each prompt's distribution. Returns the call ids and the
    method that scored them ("scored:sum", "scored:top_logprobs", ...)."""
    requests = [
        GenerateRequest(messages=messages_for(p), choices=list(p.shown), max_tokens=16, temperature=0.0, seed=seed,
                        tags={**tags, "order": p.order, **({"item": p.item} if p.item else {})})
        for p in prompts
    ]
    responses = await asyncio.gather(*(model.generate(r) for r in requests))
    call_ids = []
    for p, response in zip(prompts, responses):
        if "call_id" in response.raw:
            call_ids.append(response.raw["call_id"])
        logprobs = response.choice_logprobs or {}
        if set(logprobs) != set(p.shown):
            raise ValueError("the backend returned no score for every option")
        probabilities = {o: math.exp(logprobs[o]) for o in p.shown}
        total = sum(probabilities.values()) or 1.0
        p.distribution = {o: v / total for o, v in probabilities.items()}
    method = next((r.raw.get("choice_method") for r in responses if r.raw.get("choice_method")), None)
    return call_ids, f"scored:{method}" if method else "scored"


def _calibrate(prompts: list[_Prompt], priors: list[_Prompt]) -> None:
    """Divide each prompt's distribution by the neutral prior of the same prompt, then renormalise."""
    for p, prior in zip(prompts, priors):
        ratio = {o: p.distribution[o] / max(prior.distribution.get(o, 0.0), 1e-6) for o in p.shown}
        total = sum(ratio.values()) or 1.0
        p.distribution = {o: v / total for o, v in ratio.items()}


def _average(prompts: list[_Prompt], ballot_type: str, options: list[str]) -> dict[str, float]:
    """The juror's distribution: option probabilities averaged over orders (approval: P(approve) per option)."""
    if kind_of(ballot_type).itemised:
        return {o: sum(p.distribution[YES_NO[0]] for p in prompts if p.item == o) /
                max(1, sum(1 for p in prompts if p.item == o)) for o in options}
    return {o: sum(p.distribution[o] for p in prompts) / len(prompts) for o in options}


def _position_bias(prompts: list[_Prompt], ballot_type: str) -> dict[str, float] | None:
    """Mass on the first-listed answer, against the same answers' mass in the order-averaged distribution."""
    groups: dict[str | None, list[_Prompt]] = {}
    for p in prompts:
        groups.setdefault(p.item, []).append(p)
    if all(len(g) < 2 for g in groups.values()):
        return None
    first, expected = [], []
    for g in groups.values():
        if len(g) < 2:
            continue
        mean = {o: sum(p.distribution[o] for p in g) / len(g) for o in g[0].shown}
        for p in g:
            first.append(p.distribution[p.shown[0]])
            expected.append(mean[p.shown[0]])
    return {"first": sum(first) / len(first), "expected": sum(expected) / len(expected)}


async def cast_ballot(
    model: Model,
    *,
    juror_id: str,
    persona: str,
    question: str,
    options: list[str],
    ballot_type: str = "single",
    phase: str = "pre",
    context: str | None = None,
    background: str = "",
    seed: int | None = None,
    vote_seed: int | None = None,
    procedure: BallotProcedure | None = None,
    priors: NeutralPriors | None = None,
    order_seed: int = 0,
    prompt: BallotPrompt | None = None,
) -> Ballot:
    """Ask one juror for a private ballot. Never raises for a bad reply: an invalid one becomes an abstention.

    `seed` seeds the model calls; `vote_seed` the juror's vote draws (give the same one for the pre- and the
    post-ballot: common random numbers); `order_seed` the option orders beyond the cyclic ones (one per run);
    `prompt` builds the scored prompts and their neutral prior's (default `ballot_messages`; the distilled mode
    passes its own)."""
    procedure = procedure or BallotProcedure()
    prompt = prompt or ballot_messages
    kind = kind_of(ballot_type)
    vote_seed = seed if vote_seed is None else vote_seed
    orders = option_orders(len(options), min(procedure.option_orders, MAX_OPTION_ORDERS), order_seed)
    tags = {"role": "juror", "participant": juror_id, "phase": f"ballot-{phase}"}
    common = dict(question=question, options=options, ballot_type=ballot_type, background=background)

    def abstain(reason: str, **extra) -> Ballot:
        return Ballot(participant_id=juror_id, phase=phase, type=ballot_type, status="abstain", reason=reason, **extra)

    if model.scores_options:
        prompts = _prompts(ballot_type, options, orders, procedure.option_orders)

        def messages_for(who: str, where: str, context_: str | None):
            return lambda p: prompt(**{**common, "options": p.shown}, persona=who, phase=where, context=context_,
                                    structured=False, item=p.item)

        try:
            call_ids, method = await _score(model, prompts, messages_for(persona, phase, context), seed=seed, tags=tags)
            prior_prompts = None
            if procedure.calibration == "neutral":
                async def neutral() -> list[_Prompt]:
                    found = _prompts(ballot_type, options, orders, procedure.option_orders)
                    await _score(model, found, lambda p: neutral_messages(**{**common, "options": p.shown},
                                                                          item=p.item, prompt=prompt), seed=None,
                                 tags={"role": "juror", "participant": "neutral-prior", "phase": "ballot-prior"})
                    return found

                key = (prompt, question, background, tuple(options), ballot_type, tuple(map(tuple, orders)))
                prior_prompts = await (priors or NeutralPriors()).get(key, neutral)
                _calibrate(prompts, prior_prompts)
        except ChoiceScoringUnavailable:
            pass  # the backend turned out not to score after all: structured output below
        except ModelError as exc:
            return abstain(f"model error: {exc}")
        except ValueError as exc:
            return abstain(str(exc))
        else:
            distribution = _average(prompts, ballot_type, options)
            draws = draws_for(vote_seed if vote_seed is not None else 0, len(options))
            detail: dict[str, Any] = {
                "vote": procedure.vote, "draws": [round(u, 6) for u in draws],
                "orders": [p.shown for p in prompts if p.item in (None, options[0])],
                "per_order": [{"item": p.item, "shown": p.shown, "distribution": p.distribution} for p in prompts],
                "calibration": procedure.calibration,
            }
            if prior_prompts is not None:
                detail["prior"] = [p.distribution for p in prior_prompts]
            bias = _position_bias(prompts, ballot_type)
            if bias is not None:
                detail["position"] = bias
            return Ballot(participant_id=juror_id, phase=phase, type=ballot_type, probabilities=distribution,
                          call_ids=call_ids, method=method, detail=detail,
                          **kind.vote(distribution, options, draws, procedure.vote))

    # Structured output: one order per juror, drawn with the juror's vote seed among the cyclic shifts (at least),
    # so order effects average out over the jury at no extra cost.
    rotations = orders if len(orders) > 1 else option_orders(len(options), len(options))
    order = rotations[random.Random(vote_seed).randrange(len(rotations))]
    shown = [options[i] for i in order]
    messages = prompt(**{**common, "options": shown}, persona=persona, phase=phase, context=context,
                      structured=True)
    schema = ballot_schema(ballot_type, shown)
    call_ids: list[str] = []
    error = "no attempt made"
    detail = {"orders": [shown], "vote": "reply"}
    attempt = 0
    for attempt in range(1, procedure.max_attempts + 1):
        request = GenerateRequest(messages=messages, json_schema=schema, max_tokens=200,
                                  temperature=procedure.temperature,
                                  seed=None if seed is None else seed + attempt - 1, tags={**tags, "attempt": attempt})
        try:
            response = await model.generate(request)
        except ModelError as exc:
            return abstain(f"model error: {exc}", attempts=attempt, call_ids=call_ids, method="structured",
                           detail=detail)
        if "call_id" in response.raw:
            call_ids.append(response.raw["call_id"])
        try:
            fields, reason = parse_ballot_reply(response.text, ballot_type, options)
        except ValueError as exc:
            error = str(exc)
            messages = [*messages, Message(role="assistant", content=response.text),
                        Message(role="user", content=render_prompt("ballot_retry", error=error, options=shown))]
            continue
        return Ballot(participant_id=juror_id, phase=phase, type=ballot_type, rationale=reason, attempts=attempt,
                      call_ids=call_ids, method="structured", detail=detail, **fields)
    return abstain(f"no valid ballot after {attempt} attempts: {error}", attempts=attempt, call_ids=call_ids,
                   method="structured", detail=detail)


def position_bias(ballots: Sequence[Ballot]) -> dict[str, float] | None:
    """The option-position diagnostic over many ballots: the mean probability of the first-listed answer, the
    mean the order-averaged distributions give the same answers, and their ratio (1 = no position effect)."""
    found = [b.detail["position"] for b in ballots if b.detail and b.detail.get("position")]
    if not found:
        return None
    first = sum(f["first"] for f in found) / len(found)
    expected = sum(f["expected"] for f in found) / len(found)
    return {"first": round(first, 4), "expected": round(expected, 4),
            "ratio": round(first / expected, 4) if expected > 0 else None, "ballots": len(found)}
