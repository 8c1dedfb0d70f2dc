"""Token ids for training exactly as the local backend builds them at run time.

A tuned model must see in training what it sees when it votes or speaks in an assembly, so this mirrors
`assembly.providers.local.LocalModel`: the prompt is the chat template with the generation prompt, tokenized
without extra special tokens; a reply is the assistant's whole turn as the template renders it, end-of-turn
marker included (what constrained choice scores). tests/test_finetune_train.py checks both against LocalModel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Messages = Sequence[Mapping[str, Any]]


def _dicts(messages: Messages) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def render(tokenizer, messages: Messages, *, add_generation_prompt: bool = True) -> tuple[str, bool]:
    """The local backend's own rendering (assembly.providers.local.render_chat): training text is run-time text."""
    from assembly.providers.local import render_chat

    return render_chat(tokenizer, messages, add_generation_prompt=add_generation_prompt)


def prompt_ids(tokenizer, messages: Messages) -> list[int]:
    text, templated = render(tokenizer, messages)
    return list(tokenizer(text, add_special_tokens=not templated)["input_ids"])


def reply_ids(tokenizer, messages: Messages, reply: str) -> list[int]:
    """Token ids of `reply` as the assistant's complete turn after `messages`, end-of-turn marker included."""
    prompt, templated = render(tokenizer, messages)
    if templated:
        full, _ = render(tokenizer, [*_dicts(messages), {"role": "assistant", "content": reply}],
                         add_generation_prompt=False)
        if full.startswith(prompt) and reply in full[len(prompt):]:
            tail = full[len(prompt):]
            cut = tail.index(reply) + len(reply)
            text = tail[:cut] + tail[cut:].rstrip()
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if ids:
                return list(ids)
    ids = list(tokenizer((" " if not templated else "") + reply, add_special_tokens=False)["input_ids"])
    eos = tokenizer.eos_token_id
    return ids + ([eos] if eos is not None else [])


def split_example(messages: Messages) -> tuple[list[dict[str, str]], str]:
    """(prompt messages, assistant reply) of a chat example whose last message is the assistant's."""
    msgs = _dicts(messages)
    if not msgs or msgs[-1]["role"] != "assistant":
        raise ValueError("an SFT example must end with the assistant's message")
    return msgs[:-1], msgs[-1]["content"]
