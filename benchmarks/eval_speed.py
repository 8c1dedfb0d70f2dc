"""Speed of the fidelity evaluation on a local model (default: the embedded SmolLM2-135M).

1. Jurors scored per second: N jurors' private ballots on one question, fired concurrently so the local backend
   batches them (a warm-up batch first; load time reported separately).
2. Wall time of the evaluation the issue names: 50 questions of the OpinionQA validation split, party + ideology,
   10 jurors per group (+ the ignore-persona and no-persona baselines). `--eval-questions K` runs only K of the 50
   and extrapolates linearly (every question costs the same number of ballots), for machines where the full run
   takes hours.

Data is read from the shared folder, never copied: --data, else $ASSEMBLY_SHARED_DATA, else ../shared/data next to
the repository. Results print as JSON and are written to benchmarks/results/eval_speed.json (git-ignored).

    python benchmarks/eval_speed.py --dtype float32 --eval-questions 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import numpy as np
from host import machine

REPO = Path(__file__).resolve().parents[1]


def shared_data(arg: str | None) -> Path:
    path = Path(arg or os.environ.get("ASSEMBLY_SHARED_DATA") or REPO.parent / "shared" / "data")
    if not (path / "opinionqa" / "survey_dev.csv.gz").is_file():
        raise SystemExit(f"no opinionqa/survey_dev.csv.gz under {path}: pass --data or set ASSEMBLY_SHARED_DATA")
    return path


async def jurors_per_second(model, survey, n: int, seed: int) -> dict:
    from assembly.casting import cast_ballot
    from juries import load_population, render_persona

    q = next(iter(survey))
    frame = load_population("us_adults")
    records = frame.sample(n, np.random.default_rng(seed))
    personas = [render_persona(r, seed + i).text for i, r in enumerate(records)]

    async def cast(batch):
        return await asyncio.gather(*(cast_ballot(model, juror_id=f"j{i}", persona=p, question=q.question,
                                                  options=q.options, seed=i) for i, p in enumerate(batch)))

    started = time.perf_counter()
    await cast(personas[:2])  # warm-up (loads the weights)
    warm = time.perf_counter() - started
    stats_before = dict(getattr(model, "stats", {}))
    started = time.perf_counter()
    ballots = await cast(personas)
    elapsed = time.perf_counter() - started
    stats = {k: v - stats_before.get(k, 0) for k, v in dict(getattr(model, "stats", {})).items()
             if isinstance(v, (int, float)) and k != "max_batch_seen"}
    return {"question_id": q.question_id, "jurors": n, "seconds": round(elapsed, 2),
            "jurors_per_s": round(n / elapsed, 3), "warmup_and_load_s": round(warm, 2),
            "valid": sum(b.status == "valid" for b in ballots), "backend_stats": stats}


async def evaluation(model, survey, args) -> dict:
    from assembly.evaluation.config import EvalConfig
    from assembly.evaluation.fidelity import evaluate_survey
    from assembly.evaluation.selection import select_questions
    from assembly.evaluation.summary import summarise
    from assembly.evaluation.survey import load_split

    split = load_split(args.data / "opinionqa" / args.split, "validation")
    fifty = select_questions(survey, split_ids=split, questions=str(args.questions), seed=args.seed)
    run_ids = list(fifty.questions)[: args.eval_questions or len(fifty)]
    config = EvalConfig(jurors_per_group=args.jurors_per_group, seed=args.seed, attributes=["party", "ideology"])
    result = await evaluate_survey(fifty.select(run_ids), model, config,
                                   progress=lambda i, n, qid: print(f"  {i}/{n} {qid}", flush=True))
    summary = summarise(result)
    per_question = result.wall_s / len(run_ids)
    return {
        "questions_planned": len(fifty), "questions_run": len(run_ids), "jurors_per_group": args.jurors_per_group,
        "ballots": summary["ballots"], "calls": summary["calls"], "wall_s": round(result.wall_s, 1),
        "s_per_question": round(per_question, 1),
        "wall_s_50_questions": round(per_question * len(fifty), 1),
        "extrapolated": len(run_ids) < len(fifty), "ballots_per_s": summary["ballots_per_s"],
        "mean_R": {a: v["R"] for a, v in summary["attributes"].items()},
    }


async def main_async(args) -> dict:
    from assembly.evaluation.survey import read_questions_meta, read_survey
    from assembly.providers import load_model

    meta = read_questions_meta(args.data / "opinionqa" / "questions_meta.csv")
    survey = read_survey(args.data / "opinionqa" / "survey_dev.csv.gz", nominal_ids=meta.nominal)
    options = {k: v for k, v in (("dtype", args.dtype), ("max_batch", args.max_batch)) if v is not None}
    model = load_model(args.model, **options)
    out = {"model": args.model, "model_options": options, "machine": machine()}
    try:
        out["throughput"] = await jurors_per_second(model, survey, args.jurors, args.seed)
        print(json.dumps(out["throughput"]), flush=True)
        if args.eval_questions != 0:
            out["evaluation"] = await evaluation(model, survey, args)
    finally:
        await model.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="shared data folder (default $ASSEMBLY_SHARED_DATA or ../shared/data)")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--dtype", help="local backends: auto, float32, bfloat16")
    parser.add_argument("--max-batch", type=int)
    parser.add_argument("--jurors", type=int, default=32, help="jurors in the throughput test")
    parser.add_argument("--questions", type=int, default=50)
    parser.add_argument("--eval-questions", type=int, default=None,
                        help="run only this many of the questions and extrapolate (0: skip the evaluation)")
    parser.add_argument("--jurors-per-group", type=int, default=10)
    parser.add_argument("--split", default="survey_dev_split.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "eval_speed.json"))
    args = parser.parse_args()
    args.data = shared_data(args.data)
    result = asyncio.run(main_async(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
