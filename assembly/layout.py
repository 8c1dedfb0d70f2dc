"""How a juror's prompt is laid out: what every juror of a phase shares comes first, what is the juror's own last.

The first system message is a fixed preamble followed by the phase's shared block (question, background, options,
testimony digest, the questions put to the witnesses, the moderator's latest summary and the question the moderator
puts to the round); a second system message says who the juror is (their persona); the user message holds what only
that juror heard (the statements of the jurors nearest them) and the instruction. Local chat templates and OpenAI-
compatible servers see the two system messages joined (assembly.providers.chat.joined_system); the Anthropic backend
sends them as two blocks and marks the first for caching. So the prompts of one phase share a long common prefix,
which the local backend prefills once per batch and which vLLM's automatic prefix caching and OpenAI's and
Anthropic's prompt caching reuse (the Anthropic backend marks the system block `cache_control`). Witness and
moderator prompts were already laid out this way: their system message is the participant's own and shared by all
their calls.

`PROMPT_LAYOUT` is recorded with every run (`runs.versions.prompt_layout`) and in adapter cards; a local model
loading an adapter tuned on another layout logs a warning. Layout 1 (runs recorded without the field): the persona
first, in the system message, and everything else after it. Layout 2: as 3, but the moderator's question was in the
user message and, before round 1, each juror heard a window of their own of the witness exchanges (`recent_turns`
turns) instead of all of them in the shared block. Why the persona sits in the system message, after the shared
block, and not in the user message: on the embedded model that placement measured R 0.769 against 0.801 here
(docs/fidelity.md, "Prompt layout").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from assembly.prompts import render_prompt
from assembly.providers.types import Message

PROMPT_LAYOUT = 3

log = logging.getLogger(__name__)


def juror_messages(shared: str, persona: str, own: str, *, preamble: bool = True) -> list[Message]:
    """Every juror call: the preamble and shared block (`preamble=False`: `shared` brings its own), the persona
    (none for the calibration prior), then what is the juror's own in this call."""
    first = render_prompt("juror_system", shared=shared) if preamble else shared
    messages = [Message(role="system", content=first)]
    if persona:
        messages.append(Message(role="system", content=render_prompt("juror_persona", persona=persona)))
    return [*messages, Message(role="user", content=own)]


def shared_block(*, question: str, background: str = "", options: Sequence[str] = (), testimony: str = "",
                 exchanges: str = "", summary: str = "", context: str | None = None, prompt: str = "") -> str:
    return render_prompt("juror_shared", question=question, background=background, options=list(options),
                         testimony=testimony, exchanges=exchanges, summary=summary, context=context, prompt=prompt)


def statement_messages(*, persona: str, question: str, options: Sequence[str], testimony: str, summary: str,
                       heard: Sequence[dict], prompt: str, words: int, exchanges: str = "") -> list[Message]:
    """A juror's deliberation turn: `prompt` is the moderator's question to the round and `exchanges` the questions
    put to the witnesses (both heard by the whole jury); `heard` is the window of turns this juror heard
    ({speaker, content})."""
    shared = shared_block(question=question, options=options, testimony=testimony, exchanges=exchanges,
                          summary=summary, prompt=prompt)
    own = render_prompt("juror_statement", heard=list(heard), words=words)
    return juror_messages(shared, persona, own)


def question_messages(*, persona: str, question: str, testimony: str, witness: str) -> list[Message]:
    """A juror's question to a witness; jurors questioning the same witness share the testimony."""
    return juror_messages(shared_block(question=question, testimony=testimony), persona,
                          render_prompt("juror_question", witness=witness))


def adapter_layout(adapter: Path) -> int:
    """The prompt layout an adapter was tuned on, from its card (1: a card from before layouts were numbered)."""
    try:
        card = json.loads((adapter / "card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 1
    return int(card.get("prompt_layout", 1)) if isinstance(card, dict) else 1


def warn_on_other_layout(model: str, adapter: Path) -> bool:
    """Log a warning when `adapter` was tuned on prompts laid out differently from today's; True if it was."""
    layout = adapter_layout(adapter)
    if layout == PROMPT_LAYOUT:
        return False
    log.warning("model %s: adapter %s was tuned on prompt layout %d, but assembly now lays prompts out as layout %d "
                "(shared block and the moderator's question first, persona after them); expect it to follow personas "
                "less well until retuned",
                model, adapter, layout, PROMPT_LAYOUT)
    return True


def without_persona(messages: Sequence[dict]) -> list[dict]:
    """The same juror call with no persona (the layout's second system message): the no-persona baseline that
    fine-tuning measures the persona effect against."""
    if len(messages) >= 3 and messages[0]["role"] == messages[1]["role"] == "system":
        return [messages[0], *messages[2:]]
    return list(messages)
