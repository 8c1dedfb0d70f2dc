"""Casting one private ballot. Ballots never silently default.

A backend that scores options (the local model) answers a constrained choice: the option log-likelihoods give the
juror's distribution, so the ballot is always valid. Ranked ballots follow that distribution (most likely first) and
approval ballots approve every option above chance (p >= 1/K) — documented in the README.
Other backends get structured output: the reply is parsed and validated, re-asked with the error up to
`max_attempts` times, and otherwise recorded as an abstention with its reason.
"""

from __future__ import annotations

import json
import math
import re

from assembly.ballot import Ballot
from assembly.prompts import render_prompt
from assembly.providers.base import Model
from assembly.providers.types import GenerateRequest, Message, ModelError

_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def ballot_schema(ballot_type: str, options: list[str]) -> dict:
    """JSON schema of a structured ballot reply, for backends with native structured output."""
    if ballot_type == "ranked":
        body = {"ranking": {"type": "array", "items": {"type": "string", "enum": options}}}
    elif ballot_type == "approval":
        body = {"approve": {"type": "array", "items": {"type": "string", "enum": options}}}
    else:
        body = {"choice": {"type": "string", "enum": options}}
    key = next(iter(body))
    return {
        "type": "object",
        "properties": {**body, "reason": {"type": "string"}},
        "required": [key, "reason"],
        "additionalProperties": False,
    }


def ballot_messages(
    *, persona: str, question: str, options: list[str], ballot_type: str, phase: str, context: str | None,
    background: str = "", structured: bool
) -> list[Message]:
    """The private ballot prompt: the juror's persona, the question and — after deliberation only — `context`."""
    return [
        Message(role="system", content=render_prompt("juror_system", persona=persona)),
        Message(
            role="user",
            content=render_prompt(
                "ballot",
                question=question,
                background=background,
                context=context,
                phase=phase,
                ballot_type=ballot_type,
                options=options,
                structured=structured,
            ),
        ),
    ]


def _match_option(value: object, options: list[str]) -> str:
    """Accept an option written with different case or surrounding punctuation; reject anything else."""
    if not isinstance(value, str):
        raise ValueError(f"expected an option as text, got {value!r}")
    text = value.strip().strip(".\"'").strip()
    for option in options:
        if text == option or text.lower() == option.lower():
            return option
    raise ValueError(f"{value!r} is not one of the options")


def parse_ballot_reply(text: str, ballot_type: str, options: list[str]) -> tuple[dict, str | None]:
    """Parse a structured reply into ballot fields; ValueError says what is wrong with it."""
    found = _JSON_OBJECT.search(text or "")
    if not found:
        raise ValueError("no JSON object in the reply")
    try:
        data = json.loads(found.group(0))
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ValueError("the JSON is not an object")
    reason = data.get("reason") if isinstance(data.get("reason"), str) else None
    if ballot_type == "ranked":
        ranking = [_match_option(v, options) for v in data.get("ranking") or []]
        if sorted(ranking) != sorted(options):
            raise ValueError("the ranking must list every option exactly once")
        return {"ranking": ranking}, reason
    if ballot_type == "approval":
        approvals = data.get("approve")
        if not isinstance(approvals, list):
            raise ValueError('"approve" must be a list of options')
        return {"approvals": sorted({_match_option(v, options) for v in approvals}, key=options.index)}, reason
    if "choice" not in data:
        raise ValueError('missing "choice"')
    return {"choice": _match_option(data["choice"], options)}, reason


def ballot_from_probabilities(probabilities: dict[str, float], ballot_type: str, options: list[str]) -> dict:
    """Ballot fields from a scored distribution (ties broken by option order)."""
    ordered = sorted(options, key=lambda o: (-probabilities.get(o, 0.0), options.index(o)))
    if ballot_type == "ranked":
        return {"ranking": ordered}
    if ballot_type == "approval":
        floor = 1.0 / len(options)
        return {"approvals": [o for o in options if probabilities.get(o, 0.0) >= floor]}
    return {"choice": ordered[0]}


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
    max_attempts: int = 3,
    temperature: float = 0.7,
) -> Ballot:
    """Ask one juror for a private ballot. Never raises for a bad reply: an invalid one becomes an abstention."""
    tags = {"role": "juror", "participant": juror_id, "phase": f"ballot-{phase}"}
    common = dict(persona=persona, question=question, options=options, ballot_type=ballot_type, phase=phase,
                  context=context, background=background)
    if model.scores_options:
        request = GenerateRequest(messages=ballot_messages(**common, structured=False), choices=list(options),
                                  max_tokens=16, temperature=0.0, seed=seed, tags=tags)
        try:
            response = await model.generate(request)
        except ModelError as exc:
            return Ballot(participant_id=juror_id, phase=phase, type=ballot_type, status="abstain",
                          reason=f"model error: {exc}")
        call_ids = [response.raw["call_id"]] if "call_id" in response.raw else []
        logprobs = response.choice_logprobs or {}
        if set(logprobs) != set(options):
            return Ballot(participant_id=juror_id, phase=phase, type=ballot_type, status="abstain",
                          reason="the backend returned no score for every option", call_ids=call_ids)
        probabilities = {o: math.exp(logprobs[o]) for o in options}
        total = sum(probabilities.values()) or 1.0
        probabilities = {o: p / total for o, p in probabilities.items()}
        return Ballot(participant_id=juror_id, phase=phase, type=ballot_type, probabilities=probabilities,
                      call_ids=call_ids, **ballot_from_probabilities(probabilities, ballot_type, options))

    messages = ballot_messages(**common, structured=True)
    schema = ballot_schema(ballot_type, options)
    call_ids: list[str] = []
    error = "no attempt made"
    for attempt in range(1, max_attempts + 1):
        request = GenerateRequest(messages=messages, json_schema=schema, max_tokens=200, temperature=temperature,
                                  seed=None if seed is None else seed + attempt - 1, tags={**tags, "attempt": attempt})
        try:
            response = await model.generate(request)
        except ModelError as exc:
            error = f"model error: {exc}"
            break
        if "call_id" in response.raw:
            call_ids.append(response.raw["call_id"])
        try:
            fields, reason = parse_ballot_reply(response.text, ballot_type, options)
        except ValueError as exc:
            error = str(exc)
            messages = [*messages, Message(role="assistant", content=response.text),
                        Message(role="user", content=render_prompt("ballot_retry", error=error, options=options))]
            continue
        return Ballot(participant_id=juror_id, phase=phase, type=ballot_type, rationale=reason, attempts=attempt,
                      call_ids=call_ids, **fields)
    return Ballot(participant_id=juror_id, phase=phase, type=ballot_type, status="abstain", attempts=max_attempts,
                  reason=f"no valid ballot after {max_attempts} attempts: {error}", call_ids=call_ids)
