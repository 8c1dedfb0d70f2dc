"""What of a partly decoded answer may be streamed: text that later tokens cannot change.

The local backend's answer is `decode(tokens)`, cut at the first stop string, stripped. While it is being decoded,
the end of the text is not settled: a byte-level token may hold half a UTF-8 character (decoded as U+FFFD until the
rest arrives), the last characters may be the start of a stop string (which would be cut), and trailing whitespace
is stripped from a finished answer. `stable_text` holds those back, so what a stream sends is always a prefix of
the final answer and the deltas add up to it.
"""

from __future__ import annotations


def _held_for_stop(text: str, stop: list[str]) -> int:
    """How many trailing characters of `text` could be the beginning of a stop string."""
    held = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), held, -1):
            if text.endswith(s[:k]):
                held = k
                break
    return held


def stable_text(text: str, stop: list[str] | None = None) -> str:
    """The beginning of the final answer that `text` (the decode of the tokens so far) already settles."""
    stop = [s for s in stop or () if s]
    cuts = [text.find(s) for s in stop if s in text]
    if cuts:  # the answer ends at the first stop string
        return text[: min(cuts)].strip()
    text = text.rstrip("\ufffd")
    return text[: len(text) - _held_for_stop(text, stop)].strip()
