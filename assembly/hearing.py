"""What a participant hears when it speaks or votes: bounded digests of the testimony and of the questions put to
the witnesses, the moderator's latest summary, a round's statements, and each juror's own window of earlier turns.
Everything here keeps prompts bounded however long the record grows.

What happens in plenary (testimony, the witnesses' questioning, the moderator's summaries and invitations) every
juror heard, so it goes in the shared block of their prompts; only the statements of the jurors nearest them are a
juror's own.
"""

from __future__ import annotations

from assembly.graph_state import AssemblyContext, AssemblyState
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


def questions_digest(ctx: AssemblyContext, state: AssemblyState) -> str:
    """Every question put to a witness and its answer, in the order asked, heard by the whole jury in plenary.

    Each exchange is clipped to its share of a fixed budget (twice `testimony_words`, a third for the question), so
    the digest stays bounded however many jurors ask; "" when nobody asked."""
    asked = sorted((state.get("questions") or {}).items(), key=lambda item: item[1].get("seq", 0))
    if not asked:
        return ""
    per_exchange = max(15, 2 * ctx.spec.procedure.testimony_words // len(asked))
    names = ctx.speaker_names()
    lines = []
    for juror_id, qa in asked:
        question = clean_turn(qa["question"], max(5, per_exchange // 3), names)
        answer = clean_turn(qa["answer"], per_exchange - per_exchange // 3, names)
        lines.append(f"{ctx.name_of(juror_id)} asked {ctx.name_of(qa['witness'])}: {question}\n"
                     f"{ctx.name_of(qa['witness'])}: {answer}")
    return "\n".join(lines)


def latest_summary(state: AssemblyState) -> str:
    summaries = state.get("summaries") or []
    return summaries[-1] if summaries else ""


def round_turns(ctx: AssemblyContext, state: AssemblyState, round_: int) -> list[dict]:
    turns = [s for key, s in (state.get("statements") or {}).items() if key.startswith(f"{round_}:")]
    return [{"speaker": ctx.name_of(t["speaker"]), "content": t["content"]}
            for t in sorted(turns, key=lambda t: t["seq"])]


def heard_turns(ctx: AssemblyContext, state: AssemblyState, round_: int, juror_id: str) -> list[dict]:
    """The statements one juror heard from the jurors nearest them before speaking in `round_`, in speaking order.

    From round 2: at most `recent_turns` statements of the previous round, those of the jurors who sat nearest this
    juror in that round's speaking order (circular distance; the juror's own statement is not among them), so no
    fixed set of last speakers sets everyone's agenda and prompts stay bounded. Round 1 has none: what came before
    it (testimony and questions) was heard in plenary and is in the shared block (`questions_digest`).
    """
    keep = ctx.spec.procedure.recent_turns
    if keep == 0 or round_ <= 1:
        return []
    order = state["floor"][str(round_ - 1)]["order"]
    said = {s["speaker"]: s for key, s in (state.get("statements") or {}).items() if key.startswith(f"{round_ - 1}:")}
    centre, n = order.index(juror_id), len(order)
    nearest = sorted(range(n), key=lambda i: (min((i - centre) % n, (centre - i) % n), (i - centre) % n))
    chosen = [i for i in nearest if order[i] in said and order[i] != juror_id][:keep]
    return [{"speaker": ctx.name_of(said[order[i]]["speaker"]), "content": said[order[i]]["content"]}
            for i in sorted(chosen)]
