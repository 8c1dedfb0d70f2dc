"""Two clauses on one question compared: the decision, the support per option, and what differs in how each was
made (models, population, jury, procedure, versions, dates)."""

from __future__ import annotations

from typing import Any

from assembly.clauses.model import Change, Clause, ClauseDiff, OptionDelta
from assembly.errors import AssemblyError

# Provenance that always differs between two clauses and says nothing about how they differ.
_IDENTITY = {"run_id", "study_id", "runs", "started_at"}


def question_key(text: str) -> str:
    """Questions compare by their words: case and spacing do not make another question."""
    return " ".join(text.split()).casefold()


def _same_question(a: str, b: str) -> bool:
    return question_key(a) == question_key(b)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping of dotted paths (e.g. procedure.rounds) to values."""
    if isinstance(value, dict):
        found: dict[str, Any] = {}
        for key, item in value.items():
            found.update(flatten(item, f"{prefix}{key}."))
        return found
    return {prefix.rstrip("."): value}


def _provenance(clause: Clause) -> dict[str, Any]:
    data = clause.provenance.model_dump(mode="json", exclude=_IDENTITY)
    data["models"] = {m.pop("role"): {k: v for k, v in m.items() if k != "calls"} for m in data["models"]}
    return flatten(data)


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def diff_clauses(a: Clause, b: Clause) -> ClauseDiff:
    """What changed from clause `a` to clause `b`; AssemblyError when they answer different questions."""
    if not _same_question(a.question, b.question):
        raise AssemblyError(f"{a.label} and {b.label} answer different questions "
                            f"({a.question[:60]!r} vs {b.question[:60]!r}); a diff compares clauses on one question")
    decision = [Change(field=name, a=x, b=y) for name, x, y in (
        ("winner", a.decision.winner, b.decision.winner), ("rule", a.decision.rule, b.decision.rule),
        ("pre_winner", a.decision.pre_winner, b.decision.pre_winner),
        ("stability", a.support.stability, b.support.stability), ("basis", a.support.basis, b.support.basis),
        ("minority", a.minority.jurors if a.minority else None, b.minority.jurors if b.minority else None),
    ) if x != y]
    left = {o.option: o for o in a.support.options}
    right = {o.option: o for o in b.support.options}
    support = []
    for option in [*left, *(o for o in right if o not in left)]:
        x, y = left.get(option), right.get(option)
        values = {f"{side}_{name}": getattr(o, name) if o else None
                  for side, o in (("a", x), ("b", y)) for name in ("post_share", "pre_share", "win_probability")}
        support.append(OptionDelta(
            option=option, **values,
            post_share_delta=_delta(values["a_post_share"], values["b_post_share"]),
            pre_share_delta=_delta(values["a_pre_share"], values["b_pre_share"]),
            win_probability_delta=_delta(values["a_win_probability"], values["b_win_probability"])))
    pa, pb = _provenance(a), _provenance(b)
    provenance = [Change(field=k, a=pa.get(k), b=pb.get(k)) for k in dict.fromkeys([*pa, *pb])
                  if pa.get(k) != pb.get(k)]
    return ClauseDiff(question=a.question, a=a.label, b=b.label, decision_changed=a.decision.winner != b.decision.winner,
                      decision=decision, support=support, provenance=provenance)
