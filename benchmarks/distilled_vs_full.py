"""The distilled mode against full multi-agent runs, on Habermas question-bank questions (issue 13), as studies.

For each of the first `--limit` questions of the bank's `--split` (default: 5 of ood_test), `--draws` juries in the
full mode and the same juries (same seeds) in the distilled mode. Reported per question and pooled: tokens per
assembly in each mode (prompt tokens, prompt tokens actually computed, output tokens), the pooled post-ballot vote
shares of the two modes and the total variation between them (target <= 0.1), and the share of unreadable ballots
(abstentions) in the distilled mode (target 0%).

Stages (each reads what the earlier ones wrote into `--db`, so they can run on different days):
  full        the full-mode study of the test questions
  distilled   the distilled-mode study of the same questions on `--distilled-model` (default: the embedded model)
  train-data  full-mode studies of `--train-limit` questions of the train split (the distilled adapter's data;
              again with another `--seed` for more juries on the same questions: `train` uses every full run)
  teacher-data  one distilled-mode draw of each of `--teacher-limit` train-split questions, spread over the bank's
              topics, in the `ballot` prompt on the untuned model: the teacher for another prompt (context
              distillation; `train` then also learns, in `--distilled-prompt`, the answers those runs recorded)
  train       prepare `distilled_ballot` examples from the train-split full runs (and the latest teacher-data study's
              runs) and train a LoRA adapter on them
  tuned       the distilled-mode study of the test questions on the tuned adapter
  ablate-questions  whether held-out gains come from more questions or more examples: adapters trained as `train`
              does on half the train questions with all their examples, and on every train question with the
              examples sampled down to that count (same validation questions, epochs, learning rate)
  export-full  add the full study's completed questions (pooled results) to `--full-reference`, a small JSON file:
              the other stages compare with it where the full runs' store is not, and `full` then runs only
              the questions it lacks
  report      the table (also printed after every stage)

    python benchmarks/distilled_vs_full.py --stage full --stage distilled --stage report
    python benchmarks/distilled_vs_full.py --draws 2 --limit 1 --jurors 4 --stage full --stage distilled  # quick
    python benchmarks/distilled_vs_full.py --stage tuned --calibration none  # the tuned model, uncalibrated
    python benchmarks/distilled_vs_full.py --distilled-prompt compact --calibrated --epochs 1 \
        --stage distilled --stage train --stage tuned  # the compact prompt, untuned and tuned on it
    python benchmarks/distilled_vs_full.py --jurors 12 --rounds 2 --words 60 --distilled-prompt brief \
        --full-reference benchmarks/reference/distilled_vs_full.defaults.json --stage full --stage export-full \
        --stage distilled  # at the study defaults, adding to (and comparing with) the committed full-mode results
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assembly.distilled import PROMPTS  # noqa: E402
from assembly.providers.local import EmbeddedModel  # noqa: E402
from assembly.providers.registry import load_model  # noqa: E402
from assembly.study.runner import arun_study  # noqa: E402
from host import machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BANK = ROOT.parent / "shared" / "data" / "questions" / "habermas_questions.jsonl"
RESULTS = ROOT / "benchmarks" / "results"
VALIDATION = 0.1  # share of train-split questions held out for the adapter's validation


def template(args, prompt: str | None = None) -> Path:
    path = Path(args.db).with_suffix(".template.yaml")
    path.write_text(yaml.safe_dump({
        "jury": {"size": args.jurors, "stratify": ["party", "ideology", "age"], "seed": args.seed},
        "procedure": {"rounds": args.rounds, "words_per_turn": args.words, "recent_turns": 3,
                      "calibration": args.calibration, "distilled_prompt": prompt or args.distilled_prompt},
        "ballot": {"rules": ["plurality", "majority"]},
    }))
    return path


async def study(args, label: str, split: str, limit: int, draws: int, mode: str, model,
                prompt: str | None = None) -> dict:
    started = time.perf_counter()
    result = await arun_study([str(args.bank)], db=args.db, concurrency=args.concurrency, models=model,
                              settings={"draws": draws, "template": str(template(args, prompt)), "split": split,
                                        "limit": limit, "mode": mode, "seed": args.seed})
    wall = time.perf_counter() - started
    entry = {"label": label, "study_id": result.study_id, "mode": mode, "split": split, "draws": draws,
             "questions": limit, "completed": result.summary.completed, "failed": result.failed,
             "wall_s": round(wall, 1), "failures": result.failures}
    log(f"{label}: {entry}")
    return entry


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def pooled(store, study_id: str) -> dict:
    """Per question of a study: pooled post-ballot vote shares, abstentions and tokens per run."""
    rows = store.sql(
        "SELECT r.study_question AS q, r.question AS text, r.id AS run_id, b.choice, b.status FROM runs r "
        "JOIN ballots b ON b.run_id = r.id WHERE r.study_id = ? AND r.status = 'completed' AND b.phase = 'post' "
        "AND b.target IS NULL", [study_id])
    usage = store.sql(
        "SELECT r.study_question AS q, r.id AS run_id, sum(c.input_tokens)::BIGINT AS inp, "
        "sum(coalesce(c.cached_input_tokens, 0))::BIGINT AS cached, sum(c.output_tokens)::BIGINT AS out, "
        "count(*) AS calls FROM runs r JOIN llm_calls c ON c.run_id = r.id WHERE r.study_id = ? "
        "AND r.status = 'completed' AND c.error IS NULL GROUP BY 1, 2", [study_id])
    out: dict[str, dict] = {}
    for r in rows.iter_rows(named=True):
        q = out.setdefault(r["q"], {"votes": {}, "ballots": 0, "abstained": 0, "runs": set()})
        q["question"] = r["text"]
        q["runs"].add(r["run_id"])
        q["ballots"] += 1
        if r["status"] != "valid":
            q["abstained"] += 1
        elif r["choice"]:
            q["votes"][r["choice"]] = q["votes"].get(r["choice"], 0) + 1
    for u in usage.iter_rows(named=True):
        q = out.setdefault(u["q"], {"votes": {}, "ballots": 0, "abstained": 0, "runs": set()})
        q.setdefault("usage", []).append(u)
    for q in out.values():
        total = sum(q["votes"].values())
        q["shares"] = {o: n / total for o, n in q["votes"].items()} if total else {}
        used = q.pop("usage", [])
        n = max(len(q["runs"]), 1)
        q["tokens_per_run"] = {"prompt": sum(u["inp"] for u in used) / n,
                               "computed_prompt": sum(u["inp"] - u["cached"] for u in used) / n,
                               "output": sum(u["out"] for u in used) / n, "calls": sum(u["calls"] for u in used) / n}
        q["runs"] = len(q["runs"])
    return out


def tv(a: dict, b: dict) -> float:
    return 0.5 * sum(abs(a.get(o, 0.0) - b.get(o, 0.0)) for o in set(a) | set(b))


def compare(full: dict, other: dict) -> dict:
    """The distilled (or tuned) study's pooled results against the full mode's, per question and on average."""
    rows = []
    for q in full:
        if q not in other:
            continue
        f, d = full[q], other[q]
        rows.append({"question": q, "runs": [f["runs"], d["runs"]], "full_shares": f["shares"],
                     "distilled_shares": d["shares"], "tv": round(tv(f["shares"], d["shares"]), 4),
                     "distilled_unreadable": d["abstained"] / max(d["ballots"], 1),
                     "full_abstained": f["abstained"] / max(f["ballots"], 1),
                     "tokens_full": f["tokens_per_run"], "tokens_distilled": d["tokens_per_run"]})

    def mean(key, sub):
        return sum(r[key][sub] for r in rows) / max(len(rows), 1)

    total = {k: mean("tokens_full", k) for k in ("prompt", "computed_prompt", "output", "calls")}
    dist = {k: mean("tokens_distilled", k) for k in ("prompt", "computed_prompt", "output", "calls")}
    return {
        "questions": rows,
        "mean_tv": round(sum(r["tv"] for r in rows) / max(len(rows), 1), 4),
        "max_tv": max((r["tv"] for r in rows), default=None),
        "unreadable": max((r["distilled_unreadable"] for r in rows), default=None),
        "tokens_full": total, "tokens_distilled": dist,
        "ratio_all_tokens": round((total["prompt"] + total["output"]) / max(dist["prompt"] + dist["output"], 1), 2),
        "ratio_computed_tokens": round((total["computed_prompt"] + total["output"]) /
                                       max(dist["computed_prompt"] + dist["output"], 1), 2),
    }


def report(args, state: dict) -> None:
    from transcripts import Store

    store = Store(args.db)
    try:
        full = full_results(store, args, state)
        for key in ("distilled", "tuned"):
            if full is not None and key in state:
                state[f"compare_{key}"] = compare(full, pooled(store, state[key]["study_id"]))
    finally:
        store.close()
    for key in ("compare_distilled", "compare_tuned"):
        c = state.get(key)
        if not c:
            continue
        print(f"\n## full vs {key.removeprefix('compare_')}\n")
        print("| question | full post shares | distilled post shares | TV | unreadable |")
        print("|---|---|---|---|---|")
        for r in c["questions"]:
            fs = ", ".join(f"{o[:28]} {v:.2f}" for o, v in sorted(r["full_shares"].items()))
            ds = ", ".join(f"{o[:28]} {v:.2f}" for o, v in sorted(r["distilled_shares"].items()))
            print(f"| {r['question']} | {fs} | {ds} | {r['tv']:.3f} | {r['distilled_unreadable']:.0%} |")
        tf, td = c["tokens_full"], c["tokens_distilled"]
        print(f"\nmean TV {c['mean_tv']}, max {c['max_tv']}; tokens per assembly: full {tf['prompt']:.0f} prompt "
              f"({tf['computed_prompt']:.0f} computed) + {tf['output']:.0f} out in {tf['calls']:.1f} calls; distilled "
              f"{td['prompt']:.0f} prompt ({td['computed_prompt']:.0f} computed) + {td['output']:.0f} out in "
              f"{td['calls']:.1f} calls; ratio {c['ratio_all_tokens']}x (all tokens), {c['ratio_computed_tokens']}x "
              "(computed)")


async def main_async(args) -> dict:
    state_path = Path(args.db).with_suffix(".json")
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    state["machine"] = machine()
    state["settings"] = {k: str(v) for k, v in vars(args).items() if k != "stage"}
    model = None
    try:
        for stage in args.stage:
            if stage in ("full", "distilled", "train-data", "teacher-data") and model is None:
                model = EmbeddedModel(threads=args.threads, max_batch=args.max_batch)
            if stage == "full":
                remaining = argparse.Namespace(**{**vars(args), "bank": str(remaining_bank(args))})
                state["full"] = await study(remaining, "full", args.split, args.limit, args.draws, "full", model)
            elif stage == "distilled":
                chosen = model if args.distilled_model == "embedded" else load_model(args.distilled_model)
                state["distilled"] = await study(args, "distilled", args.split, args.limit, args.draws, "distilled",
                                                 chosen)
            elif stage == "train-data":
                if "train_data" in state:
                    state.setdefault("earlier_train_data", []).append(state["train_data"])
                state["train_data"] = await study(args, "train-data", "train", args.train_limit, args.train_draws,
                                                  "full", model)
            elif stage == "teacher-data":
                teachers = argparse.Namespace(**{**vars(args), "bank": str(teacher_bank(args))})
                state["teacher_data"] = await study(teachers, "teacher-data", "train", args.teacher_limit, 1,
                                                    "distilled", model, prompt="ballot")
            elif stage == "train":
                state["adapter"] = train_adapter(args, state)
            elif stage == "ablate-questions":
                state["question_ablation"] = ablate_questions(args, state)
            elif stage == "export-full":
                export_full(args, state)
            elif stage == "tuned":
                trained_on = state["adapter"].get("distilled_prompt", "ballot")
                if trained_on != args.distilled_prompt:
                    raise SystemExit(f"the adapter was trained on the {trained_on} distilled prompt; run --stage "
                                     f"tuned with --distilled-prompt {trained_on}, or --stage train first")
                tuned = load_model(state["adapter"]["model_spec"], threads=args.threads, max_batch=args.max_batch)
                try:
                    state["tuned"] = await study(args, "tuned", args.split, args.limit, args.draws, "distilled", tuned)
                finally:
                    await tuned.aclose()
            state_path.write_text(json.dumps(state, indent=2, default=str))
            report(args, state)
    finally:
        if model is not None:
            await model.aclose()
    state_path.write_text(json.dumps(state, indent=2, default=str))
    return state


def teacher_bank(args) -> Path:
    """`--teacher-limit` train-split questions of the bank taken round-robin over its topics (the bank lists its
    questions topic by topic, so its first ones span few topics: docs/finetune.md §6, turn 13), written beside the
    store. Topics are ordered as strings, as they may be numbers or labels."""
    questions = [json.loads(line) for line in Path(args.bank).read_text(encoding="utf-8").splitlines() if line.strip()]
    by_topic: dict = {}
    for q in questions:
        if q.get("split") == "train":
            by_topic.setdefault(q.get("topic"), []).append(q)
    topics = sorted(by_topic, key=str)
    picked = [by_topic[t][i] for i in range(max(map(len, by_topic.values()), default=0)) for t in topics
              if i < len(by_topic[t])][:args.teacher_limit]
    path = Path(args.db).with_suffix(".teacher_bank.jsonl")
    path.write_text("".join(json.dumps(q) + "\n" for q in picked), encoding="utf-8")
    return path


def train_adapter(args, state: dict, folder: Path | None = None, exclude: tuple[str, ...] = (),
                  max_examples: int | None = None, teachers: bool = True) -> dict:
    """Prepare distilled_ballot examples from the train-split runs (less the test questions and `exclude`, at most
    `max_examples` train examples) into `folder` and train an adapter on them beside it; with `teachers`, the
    latest teacher-data study's distilled runs teach too (no other distilled run: not the tuned or test studies)."""
    from finetune.config import TrainConfig
    from finetune.dataset import PrepareOptions, prepare_dataset
    from finetune.trainer import train
    from transcripts import Store

    folder = folder or Path(args.db).with_suffix(".sft")
    store = Store(args.db)
    try:
        teacher = state.get("teacher_data", {}).get("study_id") if teachers else None
        others = set(store.sql("SELECT id FROM runs WHERE summary->>'$.mode' = 'distilled' AND study_id IS DISTINCT "
                               "FROM ?", [teacher])["id"].to_list())
        manifest = prepare_dataset(store, folder, PrepareOptions(
            types=("distilled_ballot",), validation=VALIDATION, seed=args.seed, max_per_run=args.jurors,
            exclude_questions=test_questions(store, args, state) + exclude, max_examples=max_examples,
            distilled_prompt=args.distilled_prompt, include_distilled=teacher is not None,
            keep=lambda example: example["run_id"] not in others))
    finally:
        store.close()
    log(f"train: {manifest['examples']} examples from {sum(v['runs'] for v in manifest['sources'].values())} runs")
    config = TrainConfig(base_model="embedded", dataset=str(folder), output_dir=str(folder.with_suffix(".adapter")),
                         epochs=args.epochs, batch_size=16, gradient_accumulation=1, learning_rate=args.lr,
                         lm_weight=0.0, contrast_weight=0.0, calibrated=args.calibrated,
                         lora={"r": 8, "alpha": 32, "top_layers": args.top_layers or None},
                         threads=args.threads, eval_max_items=256, save_steps=10_000, resume=False)
    card = train(config, progress=False)
    return {"model_spec": card["model_spec"], "training": card["training"], "curves": card["curves"],
            "eval": card["eval"], "examples": manifest["examples"], "distilled_prompt": args.distilled_prompt}


def test_questions(store, args, state: dict) -> tuple[str, ...]:
    full = full_results(store, args, state)
    if full is None:
        raise SystemExit("train: no full-mode study of the test questions in --db, and no --full-reference")
    return tuple(sorted({q["question"] for q in full.values() if q.get("question")}))


# What a reference's full runs must share with this invocation for its juries to be the same draws (the question
# count may differ: comparisons are per question).
REFERENCE_SETTINGS = ("split", "draws", "jurors", "rounds", "words", "calibration", "seed")


def load_reference(args) -> dict:
    """`--full-reference`'s full-mode results per question ({} without one, or before it is written)."""
    if not args.full_reference or not Path(args.full_reference).exists():
        return {}
    path = Path(args.full_reference)
    try:
        reference = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--full-reference {path}: cannot read it ({exc})") from None
    settings = reference.get("settings", {})
    for key in REFERENCE_SETTINGS:
        if str(settings.get(key)) != str(getattr(args, key)):
            raise SystemExit(f"--full-reference {path}: its full runs had {key} {settings.get(key)!r}, this run "
                             f"asks {getattr(args, key)!r}; pass the same --{key.replace('_', '-')}")
    return reference["questions"]


def full_results(store, args, state: dict) -> dict | None:
    """The full mode's pooled results per test question: `--full-reference`'s (written by `--stage export-full`,
    so that later stages can run where the full runs' store is not), and this store's full study, which wins."""
    found = {**load_reference(args), **(pooled(store, state["full"]["study_id"]) if "full" in state else {})}
    return found or None


def remaining_bank(args) -> Path:
    """The bank for the full stage: the first `--limit` questions of `--split` that `--full-reference` does not
    already hold (all of them without one), written beside the store; draw seeds depend on the question and the
    draw, not on its place in the bank, so these runs are the draws a single study would have made."""
    done = load_reference(args)
    lines = [line for line in Path(args.bank).read_text(encoding="utf-8").splitlines() if line.strip()]
    picked = [line for line in lines if json.loads(line).get("split") == args.split][:args.limit]
    kept = [line for line in picked if json.loads(line).get("id") not in done]
    if not kept:
        raise SystemExit(f"full: --full-reference {args.full_reference} already holds all {len(picked)} questions")
    path = Path(args.db).with_suffix(".full_bank.jsonl")
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return path


def export_full(args, state: dict) -> Path:
    """Add the full study's questions whose draws all completed to `--full-reference` (pooled results, with the
    settings and the machine they ran on)."""
    from transcripts import Store

    if "full" not in state or not args.full_reference:
        raise SystemExit("export-full: needs a full-mode study in --db (--stage full) and a --full-reference path")
    store = Store(args.db)
    try:
        found = pooled(store, state["full"]["study_id"])
    finally:
        store.close()
    complete = {q: r for q, r in found.items() if r["runs"] == args.draws}
    if len(complete) < len(found):
        log(f"export-full: left out {sorted(set(found) - set(complete))}: fewer than {args.draws} completed draws")
    load_reference(args)  # an earlier reference must be of the same settings
    path = Path(args.full_reference)
    earlier = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    questions = {**earlier.get("questions", {}), **complete}
    studies = [*earlier.get("studies", []), {"study_id": state["full"]["study_id"], "questions": sorted(complete),
                                             "machine": state["machine"]}]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": {key: getattr(args, key) for key in REFERENCE_SETTINGS},
                                "bank": Path(args.bank).name, "studies": studies, "questions": questions},
                               indent=1, default=str) + "\n", encoding="utf-8")
    log(f"export-full: {len(questions)} questions in {path}")
    return path


def ablate_questions(args, state: dict) -> dict:
    """Half the train questions with all their examples, against every train question sampled down to as many
    examples. The validation questions are the same in both (the split is a hash of each question)."""
    import random

    from finetune.dataset import assign_split
    from finetune.examples import question_key
    from transcripts import Store

    store = Store(args.db)
    try:
        asked = sorted(set(store.sql("SELECT question FROM runs WHERE study_id = ?",
                                     [state["train_data"]["study_id"]])["question"].to_list()))
    finally:
        store.close()
    trained = [q for q in asked if assign_split(question_key(q), args.seed, VALIDATION, 0.0) == "train"]
    dropped = tuple(random.Random(args.seed).sample(trained, len(trained) // 2))
    base = Path(args.db).with_suffix("")
    few = train_adapter(args, state, base.with_name(base.name + ".half-questions.sft"), exclude=dropped,
                        teachers=False)
    count = few["examples"]["train"]["distilled_ballot"]
    many = train_adapter(args, state, base.with_name(base.name + ".all-questions-sampled.sft"), max_examples=count,
                         teachers=False)
    result = {"train_questions": len(trained), "half": len(trained) - len(dropped), "examples": count,
              "half_questions": few, "all_questions_sampled": many}
    for label, entry in (("half the questions", few), ("all questions, sampled", many)):
        log(f"{label}: {entry['examples']} -> eval {entry['eval']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage", action="append", required=True,
                        choices=["full", "distilled", "train-data", "teacher-data", "train", "tuned",
                                 "ablate-questions", "export-full", "report"])
    parser.add_argument("--db", default=str(RESULTS / "distilled_vs_full.duckdb"))
    parser.add_argument("--bank", default=str(BANK))
    parser.add_argument("--split", default="ood_test")
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--train-limit", type=int, default=12)
    parser.add_argument("--train-draws", type=int, default=4)
    parser.add_argument("--teacher-limit", type=int, default=200,
                        help="teacher-data: train-split questions (round-robin over topics) asked once each in the "
                             "distilled mode's ballot prompt")
    parser.add_argument("--jurors", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--words", type=int, default=40)
    parser.add_argument("--calibration", default="neutral", choices=["neutral", "none"],
                        help="the ballot procedure's calibration (the full-mode runs recorded so far used neutral)")
    parser.add_argument("--distilled-prompt", default="ballot", choices=PROMPTS,
                        help="the distilled mode's prompt (procedure.distilled_prompt), and the one train writes "
                             "its examples in")
    parser.add_argument("--calibrated", action="store_true",
                        help="train: the loss on the calibrated distribution, as the tuned model's ballots use it")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--top-layers", type=int, default=4, help="adapt only the last N layers (0: all)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--distilled-model", default="embedded")
    parser.add_argument("--full-reference",
                        help="export-full: where to write the full study's pooled results; later stages compare "
                             "with that file when --db holds no full study")
    args = parser.parse_args()
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
