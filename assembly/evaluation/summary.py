"""A run's summary: its records aggregated per group, per attribute and per pair (the JSON document described in
docs/fidelity.md), and its simulated distributions as FORMAT 1 questions."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from assembly.evaluation import metrics as M
from assembly.evaluation.fidelity import EvalResult
from assembly.evaluation.survey import Distribution, Survey, SurveyQuestion

METRIC_KEYS = ("R", "TV", "R_sampled", "TV_sampled", "R_ignore_persona", "TV_ignore_persona", "R_no_persona",
               "TV_no_persona", "R_uniform", "TV_uniform", "R_overall", "TV_overall", "R_pre", "TV_pre")


def _mean(rows: Iterable[dict], key: str) -> float | None:
    return M.mean_or_none(r.get(key) for r in rows)


def _se(rows: Iterable[dict], key: str) -> float | None:
    """Standard error of the mean over questions (None with fewer than 2 values)."""
    vals = [r.get(key) for r in rows]
    vals = [float(v) for v in vals if v is not None]
    if len(vals) < 2:
        return None
    return float(np.std(vals, ddof=1) / math.sqrt(len(vals)))


def summarise(result: EvalResult) -> dict[str, Any]:
    """The JSON document of a run (keys documented in docs/fidelity.md)."""
    by_group: dict[tuple[str, str], list[dict]] = {}
    for rec in result.records:
        by_group.setdefault((rec["attribute"], rec["group"]), []).append(rec)
    groups = []
    for (attribute, group), rows in by_group.items():
        n_jurors = sum(r["n_jurors"] for r in rows)
        n_invalid = sum(r["n_invalid"] for r in rows)
        entry = {
            "attribute": attribute,
            "group": group,
            "n_questions": len(rows),
            "n_ordinal": sum(1 for r in rows if not r["nominal"]),
            **{key: _mean(rows, key) for key in METRIC_KEYS},
            "invalid_rate": M.invalid_rate(n_invalid, n_jurors),
            "R_se": _se(rows, "R"),
            "R_sampled_se": _se(rows, "R_sampled"),
        }
        entry["R_gain_over_ignore_persona"] = (
            None if entry["R"] is None or entry["R_ignore_persona"] is None else entry["R"] - entry["R_ignore_persona"]
        )
        groups.append(entry)

    attributes: dict[str, dict[str, Any]] = {}
    for entry in groups:
        attributes.setdefault(entry["attribute"], []).append(entry)  # type: ignore[arg-type]
    per_attribute = {}
    for attribute, entries in attributes.items():
        rows = [r for r in result.records if r["attribute"] == attribute]
        per_attribute[attribute] = {
            "n_groups": len(entries),
            **{key: _mean(entries, key) for key in METRIC_KEYS},
            "invalid_rate": M.invalid_rate(sum(r["n_invalid"] for r in rows), sum(r["n_jurors"] for r in rows)),
        }

    by_pair: dict[tuple[str, str, str], list[dict]] = {}
    for rec in result.pairs:
        by_pair.setdefault((rec["attribute"], rec["group_a"], rec["group_b"]), []).append(rec)
    steer = []
    for (attribute, a, b), rows in by_pair.items():
        sa, sb = _mean(rows, "steer_a"), _mean(rows, "steer_b")
        shift_sim = np.array([r["shift_sim"] for r in rows])
        shift_human = np.array([r["shift_human"] for r in rows])
        agree = [np.sign(s) == np.sign(h) for s, h in zip(shift_sim, shift_human) if abs(h) > 0.05]
        steer.append({
            "attribute": attribute,
            "group_a": a,
            "group_b": b,
            "n_questions": len(rows),
            "steer_a": sa,
            "steer_b": sb,
            "steerability": None if sa is None or sb is None else (sa + sb) / 2,
            "steerability_se": _se([{"s": (r["steer_a"] + r["steer_b"]) / 2} for r in rows], "s"),
            "R_between_sim": _mean(rows, "R_between_sim"),
            "R_between_human": _mean(rows, "R_between_human"),
            "mean_abs_shift_sim": float(np.mean(np.abs(shift_sim))),
            "mean_abs_shift_human": float(np.mean(np.abs(shift_human))),
            "shift_direction_agreement": float(np.mean(agree)) if agree else None,
        })

    overall = None
    if result.overall:
        overall = {
            "n_questions": len(result.overall),
            **{key: _mean(result.overall, key) for key in ("R_ignore_persona", "R_no_persona", "R_uniform",
                                                         "TV_ignore_persona", "TV_no_persona")},
        }

    cfg = result.config
    return {
        "schema": "assembly.eval.survey/1",
        "file": result.file,
        "model": result.model,
        "mode": cfg.mode,
        "seed": cfg.seed,
        "jurors_per_group": cfg.jurors_per_group,
        "population": cfg.population,
        "n_questions": len(result.questions),
        "question_ids": result.questions,
        "attributes": per_attribute,
        "groups": groups,
        "steerability": steer,
        "overall": overall,
        "skipped_groups": result.skipped,
        "option_orders": cfg.option_orders,
        "calibration": cfg.calibration,
        "vote": cfg.vote,
        "calls": result.calls,
        "ballots": result.ballots,
        "calls_per_ballot": round(result.calls / result.ballots, 3) if result.ballots else None,
        "position_bias": result.position_bias,
        "invalid_rate": M.invalid_rate(result.invalid, result.ballots),
        "wall_s": round(result.wall_s, 3),
        "ballots_per_s": round(result.ballots / result.wall_s, 3) if result.wall_s > 0 else None,
    }


def simulated_survey(result: EvalResult, survey: Survey) -> list[SurveyQuestion]:
    """The simulated distributions as FORMAT 1 questions (counts = probability x jurors), for write_survey().

    Panels become their (attribute, group); the baselines become attribute `population` / `no-persona`, group `all`.
    """
    out = []
    n = result.config.jurors_per_group
    for qid in result.questions:
        src = survey.questions[qid]
        q = SurveyQuestion(qid, src.question, list(src.options), nominal=src.nominal)
        for (attribute, group), probs in result.simulated.get(qid, {}).items():
            if probs is None or not math.isfinite(float(np.sum(probs))):
                continue
            q.distributions[(attribute, group)] = Distribution(attribute, group, np.asarray(probs) * n)
        out.append(q)
    return out
