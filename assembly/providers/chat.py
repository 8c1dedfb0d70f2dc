"""What a local model is shown, as text and token ids — the one rendering shared by the local backend and fine-tuning.

A tuned model must see in training exactly what it sees when it speaks or votes in an assembly, so
`assembly.providers.local.LocalModel` and `finetune` both build prompts and replies here: the prompt is the chat
template with the generation prompt, tokenized without extra special tokens; a reply is the assistant's whole turn
as the template renders it, end-of-turn marker included (what constrained choice scores). Works with any tokenizer
object that behaves like a transformers tokenizer; imports neither torch nor transformers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Messages = Sequence[Any]  # Message objects or {"role", "content"} mappings


def _dicts(messages: Messages) -> list[dict[str, str]]:
    return joined_system([{"role": m["role"], "content": m["content"]} if isinstance(m, Mapping) else
                          {"role": m.role, "content": m.content} for m in messages])


def joined_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Consecutive system messages as one (joined by a blank line). assembly.layout sends a juror's shared block and
    persona as two system messages, so a provider's prompt cache can mark the first; chat templates and
    OpenAI-compatible servers mostly expect a single system turn, and the joined text keeps the shared prefix."""
    out: list[dict[str, str]] = []
    for m in messages:
        if out and m["role"] == "system" and out[-1]["role"] == "system":
            out[-1] = {"role": "system", "content": f"{out[-1]['content']}\n\n{m['content']}"}
        else:
            out.append(dict(m))
    return out


def render_chat(tokenizer, messages, *, add_generation_prompt: bool = True) -> tuple[str, bool]:
    """Chat-templated prompt text, and whether the template was used (else a plain fallback format).

    The one rendering of messages for local models: fine-tuning encodes its examples with it, so a tuned model sees
    at run time exactly the text it was trained on. `messages`: Message objects or {"role", "content"} dicts."""
    dicts = _dicts(messages)
    if getattr(tokenizer, "chat_template", None):
        try:
            text = tokenizer.apply_chat_template(dicts, tokenize=False, add_generation_prompt=add_generation_prompt)
            return text, True
        except Exception:  # noqa: BLE001 - e.g. templates that reject a system role: fold it into the user turn
            if any(m["role"] == "system" for m in dicts):
                system = "\n\n".join(m["content"] for m in dicts if m["role"] == "system")
                rest = [m for m in dicts if m["role"] != "system"] or [{"role": "user", "content": ""}]
                rest[0] = {**rest[0], "content": f"{system}\n\n{rest[0]['content']}"}
                text = tokenizer.apply_chat_template(rest, tokenize=False, add_generation_prompt=add_generation_prompt)
                return text, True
            raise
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    text = "".join(f"{names[m['role']]}: {m['content']}\n\n" for m in dicts)
    if add_generation_prompt:
        text += "Assistant:"
    return text, False


def prompt_ids(tokenizer, messages: Messages) -> list[int]:
    """Token ids of the prompt: the rendered messages with the generation prompt (no truncation)."""
    text, templated = render_chat(tokenizer, messages)
    return list(tokenizer(text, add_special_tokens=not templated)["input_ids"])


def reply_ids(tokenizer, messages: Messages, reply: str) -> list[int]:
    """Token ids of `reply` as the assistant's complete turn after `messages`, end-of-turn marker included."""
    prompt, templated = render_chat(tokenizer, messages)
    if templated:
        full, _ = render_chat(tokenizer, [*_dicts(messages), {"role": "assistant", "content": reply}],
                              add_generation_prompt=False)
        if full.startswith(prompt) and reply in full[len(prompt):]:
            tail = full[len(prompt):]
            cut = tail.index(reply) + len(reply)
            # keep the end-of-turn marker after the reply, drop trailing newlines/whitespace
            text = tail[:cut] + tail[cut:].rstrip()
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if ids:
                return list(ids)
    ids = list(tokenizer((" " if not templated else "") + reply, add_special_tokens=False)["input_ids"])
    eos = tokenizer.eos_token_id
    return ids + ([eos] if eos is not None else [])
