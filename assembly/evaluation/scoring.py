"""Scoring one question: the jurors' ballots reduced to a distribution per panel (Cast), then the records that
compare them with the human distributions (metrics.py) and the baselines: one per (attribute, group), one against
everyone (`overall`), one per opposed pair (steerability)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assembly.ballot import Ballot
from assembly.evaluation import metrics as M
from assembly.evaluation.config import EvalConfig
from assembly.evaluation.panels import panel_key
from assembly.evaluation.survey import Distribution, SurveyQuestion


@dataclass
class Cast:
    """The jurors' ballots on one question for one panel, reduced to a distribution."""

    probs: np.ndarray | None  # the mean of the jurors' distributions; None when no ballot was valid
    n_jurors: int
    n_invalid: int
    ballots: list[Ballot] = field(default_factory=list)
    votes: np.ndarray | None = None  # the tally of the jurors' votes, as shares; None when no ballot was valid


def _distribution(ballot: Ballot, options: list[str]) -> np.ndarray | None:
    """A valid ballot's distribution over the options: its probabilities where scored, else one-hot on its vote."""
    if ballot.status != "valid":
        return None
    if ballot.probabilities:
        row = np.array([ballot.probabilities.get(o, 0.0) for o in options], dtype=float)
        return row / row.sum() if row.sum() > 0 else None
    if ballot.choice in options:
        return np.eye(len(options))[options.index(ballot.choice)]
    return None


def reduce_ballots(ballots: list[Ballot], options: list[str]) -> Cast:
    """The jurors' valid ballots two ways: the mean of their distributions (probabilities where scored, else one
    vote each), and the tally of their votes (each choice counts one; a scored ballot's choice is already a draw
    from its distribution, so the tally carries the sampling noise an assembly's count has)."""
    rows, votes, invalid = [], np.zeros(len(options)), 0
    for ballot in ballots:
        row = _distribution(ballot, options)
        if row is None:
            invalid += 1
            continue
        rows.append(row)
        if ballot.choice in options:
            votes[options.index(ballot.choice)] += 1
    probs = np.mean(rows, axis=0) if rows else None
    return Cast(probs, len(ballots), invalid, ballots, votes / votes.sum() if votes.sum() > 0 else None)


def _positions(q: SurveyQuestion, config: EvalConfig):
    return q.positions if config.exact_positions and q.positions else None


def _r(p, q_, question: SurveyQuestion, config: EvalConfig) -> float | None:
    if question.nominal or p is None or q_ is None:
        return None
    return M.representativeness(p, q_, _positions(question, config))


def _tv(p, q_) -> float | None:
    if p is None or q_ is None:
        return None
    return M.total_variation(p, q_)


def _reference_overall(q: SurveyQuestion, attribute: str) -> np.ndarray:
    """The 'overall' human distribution: the file's overall row, else the attribute's groups pooled."""
    overall = q.overall()
    if overall is not None:
        return overall.probs
    pooled = sum(d.counts for (a, _), d in q.distributions.items() if a == attribute)
    return pooled / pooled.sum()


def question_records(q: SurveyQuestion, casts: dict[str, Cast], config: EvalConfig,
                      pre_casts: dict[str, Cast] | None = None) -> list[dict[str, Any]]:
    out = []
    population = casts.get("population")
    no_persona = casts.get("no-persona")
    for label, cast in casts.items():
        if label in ("population", "no-persona"):
            continue
        key = panel_key(label)
        human: Distribution = q.distributions[key]
        h = human.probs
        overall = _reference_overall(q, key[0])
        sim = cast.probs
        pop = population.probs if population else None
        nop = no_persona.probs if no_persona else None
        out.append({
            "question_id": q.question_id,
            "attribute": key[0],
            "group": key[1],
            "k": q.k,
            "nominal": q.nominal,
            "n_human": human.n,
            "human": h.tolist(),
            "simulated": None if sim is None else sim.tolist(),
            "sampled": None if cast.votes is None else cast.votes.tolist(),
            "R": _r(sim, h, q, config),
            "TV": _tv(sim, h),
            "R_sampled": _r(cast.votes, h, q, config),
            "TV_sampled": _tv(cast.votes, h),
            "R_ignore_persona": _r(pop, h, q, config),
            "TV_ignore_persona": _tv(pop, h),
            "R_no_persona": _r(nop, h, q, config),
            "TV_no_persona": _tv(nop, h),
            "R_uniform": _r(M.uniform(q.k), h, q, config),
            "TV_uniform": _tv(M.uniform(q.k), h),
            "R_overall": _r(overall, h, q, config),
            "TV_overall": _tv(overall, h),
            "n_jurors": cast.n_jurors,
            "n_invalid": cast.n_invalid,
        })
        pre = (pre_casts or {}).get(label)
        if pre is not None:  # mode "assembly": the same jury's ballots before deliberation
            out[-1].update({"simulated_pre": None if pre.probs is None else pre.probs.tolist(),
                            "R_pre": _r(pre.probs, h, q, config), "TV_pre": _tv(pre.probs, h)})
    return out


def overall_records(q: SurveyQuestion, casts: dict[str, Cast], config: EvalConfig) -> list[dict[str, Any]]:
    overall = q.overall()
    if overall is None:
        return []
    h = overall.probs
    pop = casts.get("population")
    nop = casts.get("no-persona")
    return [{
        "question_id": q.question_id,
        "nominal": q.nominal,
        "R_ignore_persona": _r(pop.probs if pop else None, h, q, config),
        "R_no_persona": _r(nop.probs if nop else None, h, q, config),
        "R_uniform": _r(M.uniform(q.k), h, q, config),
        "TV_ignore_persona": _tv(pop.probs if pop else None, h),
        "TV_no_persona": _tv(nop.probs if nop else None, h),
    }]


def pair_records(q: SurveyQuestion, casts: dict[str, Cast], config: EvalConfig) -> list[dict[str, Any]]:
    out = []
    if q.nominal:
        return out
    pos = _positions(q, config)
    for attribute, a, b in config.pairs:
        la, lb = f"{attribute}={a}", f"{attribute}={b}"
        if la not in casts or lb not in casts:
            continue
        sa, sb = casts[la].probs, casts[lb].probs
        ha, hb = q.distributions[(attribute, a)].probs, q.distributions[(attribute, b)].probs
        if sa is None or sb is None:
            continue
        out.append({
            "question_id": q.question_id,
            "attribute": attribute,
            "group_a": a,
            "group_b": b,
            "steer_a": M.steerability(sa, ha, hb, pos),
            "steer_b": M.steerability(sb, hb, ha, pos),
            "R_between_sim": M.representativeness(sa, sb, pos),
            "R_between_human": M.representativeness(ha, hb, pos),
            # signed shift of the mean position, B minus A, in units of the scale (K-1): does the model move the
            # right way, and by how much compared with the real groups?
            "shift_sim": _mean_shift(sa, sb),
            "shift_human": _mean_shift(ha, hb),
        })
    return out


def _mean_shift(p: np.ndarray, q: np.ndarray) -> float:
    k = len(p)
    x = np.arange(k) / (k - 1)
    return float(np.dot(q, x) - np.dot(p, x))
