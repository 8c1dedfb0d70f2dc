"""What a participant hears when it speaks or votes: a bounded digest of the testimony, the moderator's latest
summary, a round's statements, and each juror's own window of earlier turns. Everything here keeps prompts bounded
however long the record grows.
"""

from __future__ import annotations

import random

from assembly.graph_state import AssemblyContext, AssemblyState
from assembly.seeds import seed_for
from assembly.text import clean_turn


def testimony_digest(ctx: AssemblyContext, state: AssemblyState) -> str:
    """A bounded digest: the opening of each witness's testimony, so prompts do not grow with the record."""
    per_witness = max(20, ctx.spec.procedure.testimony_words // 2)
    lines = []
    for w in ctx.witnesses:
        text = (state.get("testimony") or {}).get(w.id)
        if text:
            opening = clean_turn(text, per_witness, ctx.speaker_names())
            lines.append(f"{w.name} ({w.extra.get('expertise', 'witness')}): {opening}")
    return "\n".join(lines) or "(no expert testimony)"


def latest_summary(state: AssemblyState) -> str:
    summaries = state.get("summaries") or []
    return summaries[-1] if summaries else ""


def round_turns(ctx: AssemblyContext, state: AssemblyState, round_: int) -> list[dict]:
    turns = [s for key, s in (state.get("statements") or {}).items() if key.startswith(f"{round_}:")]
    return [{"speaker": ctx.name_of(t["speaker"]), "content": t["content"]} for t in sorted(turns, key=lambda t: t["seq"])]


def heard_turns(ctx: AssemblyContext, state: AssemblyState, round_: int, juror_id: str) -> list[dict]:
    """The turns one juror heard before speaking in `round_`: at most `recent_turns` of them, in speaking order.

    From round 2, the previous round's statements of the jurors who sat nearest this juror in that round's
    speaking order (circular distance; the juror's own statement is not among them). Before round 1, whole
    question-and-answer exchanges, nearest first around a seeded position in the order they were asked. Each juror
    hears a window of their own, so no fixed set of last speakers sets everyone's agenda, and prompts stay bounded.
    """
    keep = ctx.spec.procedure.recent_turns
    if keep == 0:
        return []
    if round_ > 1:
        order = state["floor"][str(round_ - 1)]["order"]
        said = {s["speaker"]: s for key, s in (state.get("statements") or {}).items()
                if key.startswith(f"{round_ - 1}:")}
        units = [[said[j]] if j in said and j != juror_id else [] for j in order]
        centre = order.index(juror_id)
    else:
        asked = sorted((state.get("questions") or {}).items(), key=lambda item: item[1].get("seq", 0))
        units = [[{"speaker": j, "content": qa["question"]}, {"speaker": qa["witness"], "content": qa["answer"]}]
                 for j, qa in asked]
        if not units:
            return []
        centre = random.Random(seed_for(ctx.seed, "hears", round_, juror_id)).randrange(len(units))
    n = len(units)
    nearest = sorted(range(n), key=lambda i: (min((i - centre) % n, (centre - i) % n), (i - centre) % n))
    chosen, count_ = set(), 0
    for i in nearest:
        if units[i] and count_ + len(units[i]) <= keep:
            chosen.add(i)
            count_ += len(units[i])
    return [{"speaker": ctx.name_of(t["speaker"]), "content": t["content"]}
            for i in sorted(chosen) for t in units[i]]
