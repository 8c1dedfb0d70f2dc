"""Letter scoring of a constrained choice, shared by the backends that do it (torch-free).

The options are listed as "A. ...", "B. ..." under the last user message and the model answers with one letter
(the MMLU/OpinionQA convention): the local model scores each letter's reply by log-likelihood; an OpenAI-compatible
server that returns logprobs gives the letters' log-probabilities from the top_logprobs of one generated token.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from assembly.providers.types import Message

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def with_letter_listing(messages: Sequence[Message], options: Sequence[str]) -> tuple[list[Message], list[str]]:
    """`messages` with the lettered options appended to the last user message (a new user message when there is
    none), and the letter that stands for each option. At most len(LETTERS) options."""
    if len(options) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options can be lettered, got {len(options)}")
    letters = list(LETTERS[: len(options)])
    listing = "\n".join(f"{letter}. {option}" for letter, option in zip(letters, options))
    suffix = f"\n\nOptions:\n{listing}\nAnswer with the letter of your choice only."
    out = list(messages)
    last_user = max((i for i, m in enumerate(out) if m.role == "user"), default=None)
    if last_user is None:
        out.append(Message(role="user", content=suffix.strip()))
    else:
        out[last_user] = Message(role="user", content=out[last_user].content + suffix)
    return out, letters


def letter_logprobs(top: Mapping[str, float], letters: Sequence[str], options: Sequence[str]) -> dict[str, float]:
    """{option: log-probability} from the top log-probabilities of the answer's first token, normalised over the
    options (exp of the values sums to 1).

    Tokens match a letter after stripping whitespace (" A", "A" and "A\\n" are all A); the best of those counts.
    A letter absent from `top` gets the smallest log-probability seen minus log(2): any token outside the top list
    is at most as likely as the least likely one in it, so that is an upper bound, halved to rank it below them.
    ValueError when `top` is empty."""
    if not top:
        raise ValueError("no top log-probabilities to score the letters by")
    best: dict[str, float] = {}
    for token, logprob in top.items():
        key = token.strip()
        if key in letters and math.isfinite(logprob) and (key not in best or logprob > best[key]):
            best[key] = logprob
    finite = [v for v in top.values() if math.isfinite(v)] or [0.0]
    floor = min(finite) - math.log(2)
    scores = [best.get(letter, floor) for letter in letters]
    peak = max(scores)
    norm = peak + math.log(sum(math.exp(s - peak) for s in scores))
    return {option: s - norm for option, s in zip(options, scores)}
