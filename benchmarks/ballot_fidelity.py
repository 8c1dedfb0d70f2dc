"""Does order averaging or calibration make the embedded model's ballots carry opinion? One run, several procedures.

    .venv/bin/python benchmarks/ballot_fidelity.py [--questions 24] [--jurors-per-group 2] [--threads 2] \
        [--configs 1:none,3:none,3:neutral,1:neutral] [--out benchmarks/results/ballot_fidelity.json]

Scores the same seeded panels on the same by-wave validation questions of ../shared/data/opinionqa (survey waves no
training example comes from) under each ballot procedure `orders:calibration`, through the eval's own code path
(`assembly.cli.eval.run_survey_eval`, one loaded model for all), and reports per procedure: R (pooled
probabilities) and R of the sampled tallies by attribute, the uniform-answer baseline, steerability and the
Democrat/Republican R between simulated groups, the option-position diagnostic, and the cost in model calls.
OpinionQA is for internal evaluation only: read by path, never copied.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from host import machine

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "opinionqa"


def row(name: str, summary: dict, wall: float) -> dict:
    attributes = summary["attributes"]
    steer = {f"{s['group_a']}/{s['group_b']}": s for s in summary["steerability"]}
    dem_rep = steer.get("Democrat/Republican", {})
    return {
        "procedure": name,
        "R": {a: v.get("R") for a, v in attributes.items()},
        "R_sampled": {a: v.get("R_sampled") for a, v in attributes.items()},
        "R_uniform": {a: v.get("R_uniform") for a, v in attributes.items()},
        "R_no_persona": (summary.get("overall") or {}).get("R_no_persona"),
        "steerability": {k: s.get("steerability") for k, s in steer.items()},
        "R_between_sim_dem_rep": dem_rep.get("R_between_sim"),
        "R_between_human_dem_rep": dem_rep.get("R_between_human"),
        "position_bias": summary.get("position_bias"),
        "calls": summary["calls"],
        "ballots": summary["ballots"],
        "calls_per_ballot": summary.get("calls_per_ballot"),
        "wall_s": round(wall, 1),
    }


def paired(records: dict[str, list[dict]], base: str) -> dict[str, dict]:
    """Mean paired difference in R against the first procedure over the same (question, group) records, with its
    standard error: the panels and questions are the same, so this is far less noisy than comparing means."""
    import numpy as np

    key = lambda r: (r["question_id"], r["attribute"], r["group"])  # noqa: E731
    reference = {key(r): r["R"] for r in records[base] if r.get("R") is not None}
    out = {}
    for name, rows in records.items():
        diffs = np.array([r["R"] - reference[key(r)] for r in rows if r.get("R") is not None and key(r) in reference])
        if name != base and len(diffs) > 1:
            out[name] = {"mean": round(float(diffs.mean()), 4),
                         "se": round(float(diffs.std(ddof=1) / np.sqrt(len(diffs))), 4), "n": int(len(diffs))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--jurors-per-group", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--configs", default="1:none,3:none,3:neutral,1:neutral")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ballot_fidelity.json"))
    args = parser.parse_args()

    from rich.console import Console

    from assembly.cli.eval import run_survey_eval
    from assembly.providers.registry import load_model

    model = load_model("embedded", threads=args.threads)
    err = Console(stderr=True)
    rows, records = [], {}
    for config in args.configs.split(","):
        orders, calibration = config.split(":")
        started = time.perf_counter()
        summary = run_survey_eval(
            file=DATA / "survey_dev.csv.gz", model="embedded", attributes=["party", "ideology"], groups=None,
            questions=str(args.questions), split=DATA / "survey_dev_split_by_wave.json", split_name="validation",
            jurors_per_group=args.jurors_per_group, seed=args.seed, mode="ballot", population="us_adults", meta=None,
            exact_ordinals=False, baselines=True, rounds=1, max_concurrency=0, write_sim=None, db=None,
            details=True, err=err, progress="none", model_obj=model, option_orders=int(orders),
            calibration=calibration, vote="sample")
        name = f"orders={orders}, calibration={calibration}"
        records[name] = summary["records"]
        rows.append(row(name, summary, time.perf_counter() - started))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    report = {"machine": machine(), "questions": args.questions, "jurors_per_group": args.jurors_per_group,
              "split": "survey_dev_split_by_wave.json: validation", "rows": rows,
              "paired_R_difference_vs_first": paired(records, next(iter(records)))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
