"""A fixed rule for what a juror's statement should be: on the question, in the juror's own voice, not the model
talking about itself, and not degenerate. Used to measure a juror model before and after tuning
(benchmarks/juror_adapter.py) and to filter simulated statements used as training data.

Deliberately simple and transparent (word overlap, first-person words, a list of assistant phrases, repeated
n-grams): the point is a number that cannot move unless the statements do, not a judge model's opinion.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers him
his how i if in into is it its itself just me more most my no nor not now of off on once only or other our ours out
over own same she should so some such than that the their theirs them then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you your yours yes
think people really thing things way make made much many well good like want know get going
""".split())
FIRST_PERSON = re.compile(r"\b(i|i'm|i've|i'd|i'll|me|my|mine|myself|we|our|us)\b", re.IGNORECASE)
ASSISTANT_TALK = re.compile(
    r"\b(as an ai|language model|as an assistant|i am an ai|i'm an ai|i cannot (?:provide|help)|i can't (?:provide|"
    r"help)|as a juror,? i (?:must|will) remain|here is (?:a|my) (?:statement|response)|sure[,!] here|"
    r"in this (?:role|simulation)|the user)\b", re.IGNORECASE)
MIN_WORDS = 8
STEM = 5  # words compared by their first letters: "taxes" ~ "taxation", "schools" ~ "school"


def _stems(text: str) -> set[str]:
    return {w[:STEM] for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 4 and w not in STOPWORDS}


def _repeats(words: list[str], n: int = 4) -> int:
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return max(grams.values(), default=0)


@dataclass(frozen=True)
class StatementCheck:
    on_topic: bool  # shares a content word with the question or an option
    own_voice: bool  # speaks in the first person
    assistant_talk: bool  # the model talking as an assistant or about the task, not as the juror
    degenerate: bool  # too short, or one 4-word phrase three times or more
    ok: bool  # on topic, own voice, no assistant talk, not degenerate


def check_statement(text: str, question: str, options: Sequence[str] = ()) -> StatementCheck:
    words = re.findall(r"[\w']+", (text or "").lower())
    topic = _stems(" ".join([question, *options]))
    on_topic = bool(_stems(text or "") & topic)
    own_voice = bool(FIRST_PERSON.search(text or ""))
    assistant = bool(ASSISTANT_TALK.search(text or ""))
    degenerate = len(words) < MIN_WORDS or _repeats(words) >= 3
    return StatementCheck(on_topic, own_voice, assistant, degenerate,
                          on_topic and own_voice and not assistant and not degenerate)


def rates(checks: Sequence[StatementCheck]) -> dict[str, float | int]:
    """The share of statements passing each part of the rule, and all of it."""
    n = len(checks)
    if not n:
        return {"statements": 0}
    return {"statements": n, **{k: round(sum(getattr(c, k) for c in checks) / n, 4)
                                for k in ("on_topic", "own_voice", "assistant_talk", "degenerate", "ok")}}
