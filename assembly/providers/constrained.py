"""JSON-schema constrained decoding for the local backend (`request.json_schema`, what `assembly serve` makes of
`response_format`): a per-row `JsonConstraint` that, given the tokens the row has generated so far, masks its logits
to the tokens that keep the text a valid prefix of JSON matching the schema. The decoding loop applies it before
sampling, so the answer parses and validates — unless `max_tokens` cuts it short (finish reason "length").

Library: lm-format-enforcer (`lmformatenforcer`, in the `local` extra). It was the first of the candidates
(lm-format-enforcer, llguidance, xgrammar, outlines-core) to install here from PyPI and work with transformers 5.24 /
torch 2.13 on CPU and our own decoding loop: pure Python, two small pure-Python dependencies (interegular, pydantic),
and its core (`TokenEnforcer` over a `JsonSchemaParser`) answers exactly the question a hand-written loop asks —
which token ids may follow this prefix. Its transformers integration module does not import under transformers 5
(it imports `PreTrainedTokenizerBase` from `transformers.tokenization_utils`, which is gone), so the vocabulary table
it needs is built here the same way. It walks a character trie in Python: a few ms per token on a 49k vocabulary,
small next to a CPU forward pass; the compiled libraries would be the next step if masking ever shows up in profiles.

Without the library `available()` is False: a LocalModel then says it cannot honour schemas
(`honours_json_schema`), `assembly serve` answers 400 to `response_format`, and library callers fall back to
validating the text (the engine's generic structured-output path).
"""

from __future__ import annotations

import importlib.util
import threading
import weakref
from collections.abc import Iterable
from typing import Any

import torch

from assembly.providers.types import ModelError

_VOCABULARIES: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def available() -> bool:
    """Whether lm-format-enforcer is installed (checked without importing it)."""
    return importlib.util.find_spec("lmformatenforcer") is not None


def _vocabulary(tokenizer, eos_ids: list[int]):
    """lm-format-enforcer's table of the tokenizer's regular tokens as (id, text, starts a word), built once per
    tokenizer (~1 s for 49k tokens). A token's text is decoded after a one-character token and that character
    dropped, so tokens that begin a word keep the space that decoding gives them mid-text."""
    from lmformatenforcer import TokenEnforcerTokenizerData

    with _LOCK:
        data = _VOCABULARIES.get(tokenizer)
        if data is not None:
            return data
        special = set(tokenizer.all_special_ids)
        size = len(tokenizer)
        anchor = next((i for i in tokenizer.encode("0", add_special_tokens=False) if i not in special), None)
        if anchor is None or len(tokenizer.decode([anchor])) != 1:  # e.g. a word-level vocabulary without "0"
            anchor = next(i for i in range(size) if i not in special and len(tokenizer.decode([i])) == 1)
        regular = []
        for i in range(size):
            if i in special:
                continue
            after = tokenizer.decode([anchor, i])[1:]
            regular.append((i, after, len(after) > len(tokenizer.decode([i]))))

        def decode(ids: list[int]) -> str:
            return tokenizer.decode(ids).rstrip("\ufffd")  # half a UTF-8 character is not text yet

        data = TokenEnforcerTokenizerData(regular, decode, eos_ids, False, size)
        _VOCABULARIES[tokenizer] = data
        return data


class JsonConstraint:
    """The tokens allowed next for one row asked to answer JSON matching `schema` (`{"type": "object"}`: any object).

    Built in the decoding thread. A schema lm-format-enforcer cannot compile is a ModelError with status 400 (the
    request is at fault, not the model)."""

    def __init__(self, tokenizer, schema: dict[str, Any], eos_ids: Iterable[int]):
        from lmformatenforcer import JsonSchemaParser, TokenEnforcer

        self.eos_ids = sorted(eos_ids)
        try:
            parser = JsonSchemaParser(schema)
        except Exception as exc:  # noqa: BLE001 - pydantic or the library's own errors: the schema is at fault
            raise ModelError(f"cannot constrain decoding to this JSON schema: {type(exc).__name__}: {exc}",
                             status=400) from None
        self._enforcer = TokenEnforcer(_vocabulary(tokenizer, self.eos_ids), parser)

    def allowed(self, generated: list[int]) -> list[int]:
        """Token ids that may follow `generated` (the row's tokens so far); the end-of-turn ids once the JSON is
        complete. Never empty: a dead end (which the parser should not reach) may only stop."""
        ids = self._enforcer.get_allowed_tokens(list(generated)).allowed_tokens
        return list(ids) or self.eos_ids

    def mask(self, logits: torch.Tensor, generated: list[int]) -> None:
        """Set every disallowed entry of one row of logits ([V]) to -inf, in place."""
        allowed = torch.tensor([i for i in self.allowed(generated) if i < logits.shape[-1]], dtype=torch.long,
                               device=logits.device)
        keep = logits.index_select(0, allowed)
        logits.fill_(float("-inf"))
        logits.index_copy_(0, allowed, keep)
