"""Trimming what a model wrote: the one word clipper (graph turns, the distilled record, fine-tuning replies) and the
speaker-label stripper. Plain text in, plain text out; no model, no torch."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Labels a model prefixes a turn with that name a seat, not a person: "Juror 3:", "Moderator:", "Participant 2:".
_SEAT_LABEL = re.compile(r"(?:juror|participant|speaker)\s*#?\s*\d+|moderator", re.IGNORECASE)
# A leading "Label:" (optionally in markdown bold) and the space after it.
_LEADING_LABEL = re.compile(r"^\s*(\*\*)?(?P<label>[^\s:*][^:\n*]{0,59}?)\s*(?:\*\*\s*:|:\s*\*\*|:)[ \t]*")


def strip_speaker(text: str, names: Iterable[str] = ()) -> str:
    """`text` without a leading speaker label: "Maria Lopez: I think…" -> "I think…".

    Only a label that names a speaker is removed: one of `names` (a participant's full name or first name, any
    case) or a seat label ("Juror 3", "Moderator"). A turn that opens with "Cost: …" or "Answer: …" keeps it."""
    match = _LEADING_LABEL.match(text or "")
    if not match:
        return text or ""
    label = " ".join(match["label"].split())
    known = {n.casefold() for name in names if name for n in (" ".join(name.split()), name.split()[0])}
    if label.casefold() in known or _SEAT_LABEL.fullmatch(label):
        return text[match.end():]
    return text


def clip_words(text: str, words: int, *, one_line: bool = False) -> str:
    """At most `words` words, cut at a sentence end when one is in the second half, else ending in "…".

    Text within the limit is returned as it is (`one_line`: its whitespace collapsed to single spaces first, as the
    line-based distilled record needs). A sentence ends at ". ", "? " or "! ", or where the clipped text ends in one
    of ".?!" — not at a decimal point ("3.5") inside a word."""
    text = (text or "").strip()
    if one_line:
        text = " ".join(text.split())
    tokens = text.split()
    if len(tokens) <= words:
        return text
    clipped = " ".join(tokens[:words])
    if clipped.endswith((".", "?", "!")):
        return clipped
    end = max(clipped.rfind(". "), clipped.rfind("? "), clipped.rfind("! "))
    return clipped[: end + 1] if end > len(clipped) // 2 else clipped + "…"


def clean_turn(text: str, words: int, speakers: Iterable[str] = ()) -> str:
    """A generated turn as recorded: no speaker label (see `strip_speaker`), no wrapping quotes, about `words` words."""
    text = strip_speaker((text or "").strip(), speakers).strip().strip('"').strip()
    return clip_words(text, words)
