"""A fixed rule for what a new user sees in a transcript: is a juror's statement on the question, in the juror's own
voice, and readable? No model judges it, so the same text always gets the same verdict and a before/after comparison
of two models (e.g. an adapter, benchmarks/juror_adapter.py) measures the models, not a judge.

- on topic: the statement shares a content word (four letters or more, not a stopword; compared on its first five
  letters, so "taxes" meets "taxation") with the question or one of the options;
- own voice: it speaks in the first person (I, my, we, ...) and has none of the assistant's or narrator's phrases
  ("as an AI", "here is my statement", "the juror", "Sure,", ...);
- readable: at least 8 words, at most a third of its word trigrams repeated, and not just the question read back
  (at least three content words the question does not have).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

STOPWORDS = frozenset("""
about above after again against also although always another because been before being below between both
cannot could does doing down during each either enough even ever every from further have having here hers herself
himself into itself just least less like make many might more most much must myself neither never none only other
ought ours ourselves over same shall should since some such than that their theirs them themselves then there these
they this those though through thus together under until upon very well were what when where whether which while
whom whose will with within without would your yours yourself yourselves really think things thing people someone
something anything everything yes okay
""".split())

# The assistant talking about the task, or a narrator talking about the juror: not a juror speaking.
OFF_VOICE = re.compile(
    r"\b(as an ai|an ai\b|language model|as an assistant|i am an assistant|i cannot (?:provide|answer|help|give)"
    r"|i can't (?:provide|answer|help|give)|here(?:'s| is) (?:a|an|my) (?:statement|response|answer|reply)"
    r"|the juror|this juror|the persona|as a juror,? i (?:would|will) (?:say|write)|statement:|response:)",
    re.IGNORECASE)
OPENERS = re.compile(r"^\s*(sure|certainly|of course|absolutely)\b[,!.]", re.IGNORECASE)
FIRST_PERSON = re.compile(r"\b(i|i'm|i've|i'd|i'll|me|my|mine|we|we're|our|ours|us)\b", re.IGNORECASE)
WORD = re.compile(r"[a-z][a-z'-]*", re.IGNORECASE)


@dataclass(frozen=True)
class StatementCheck:
    on_topic: bool
    own_voice: bool
    readable: bool

    @property
    def ok(self) -> bool:
        return self.on_topic and self.own_voice and self.readable


def content_stems(text: str) -> set[str]:
    return {w[:5] for w in (m.group().lower().strip("'-") for m in WORD.finditer(text))
            if len(w) >= 4 and w not in STOPWORDS}


def check_statement(text: str, question: str, options: Sequence[str] = ()) -> StatementCheck:
    words = [w.lower() for w in WORD.findall(text)]
    stems = content_stems(text)
    asked = content_stems(question)
    topic = asked | content_stems(" ".join(options))
    trigrams = list(zip(words, words[1:], words[2:]))
    repeated = 1 - len(set(trigrams)) / len(trigrams) if trigrams else 0.0
    return StatementCheck(
        on_topic=bool(stems & topic),
        own_voice=bool(FIRST_PERSON.search(text)) and not OFF_VOICE.search(text) and not OPENERS.search(text),
        readable=len(words) >= 8 and repeated <= 1 / 3 and len(stems - asked) >= 3,
    )


def summarize_checks(checks: Iterable[StatementCheck]) -> dict[str, float | int]:
    """Shares of statements passing each part of the rule, and all of it."""
    checks = list(checks)
    n = len(checks)

    def share(part: str) -> float:
        return round(sum(getattr(c, part) for c in checks) / n, 4) if n else 0.0

    return {"statements": n, "on_topic": share("on_topic"), "own_voice": share("own_voice"),
            "readable": share("readable"), "ok": share("ok")}
