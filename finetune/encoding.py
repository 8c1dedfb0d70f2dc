"""Training examples as the local backend sees them at run time.

Token ids come from `assembly.providers.chat` (`prompt_ids`, `reply_ids`), the one rendering LocalModel also uses, so
a tuned model sees in training what it sees when it votes or speaks in an assembly. tests/test_finetune_train.py
checks them against LocalModel. This module only splits a chat example into its prompt and reply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Messages = Sequence[Mapping[str, Any]]


def split_example(messages: Messages) -> tuple[list[dict[str, str]], str]:
    """(prompt messages, assistant reply) of a chat example whose last message is the assistant's."""
    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    if not msgs or msgs[-1]["role"] != "assistant":
        raise ValueError("an SFT example must end with the assistant's message")
    return msgs[:-1], msgs[-1]["content"]
