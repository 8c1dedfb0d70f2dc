"""The fine-tuning demonstration (issue 6). Not a test: it reads ../shared/data. Results (and the adapters) go to
benchmarks/results/finetune_demo/, which git ignores: an adapter trained on OpinionQA must never be shipped or
published (Pew terms; see ../shared/data/README.md).

    python benchmarks/finetune_demo.py                       # every stage; finished stages are reused
    python benchmarks/finetune_demo.py --stages report --variants DIR...   # rebuild the report from saved results
    ASSEMBLY_SHARED_DATA=/path/to/data python benchmarks/finetune_demo.py --train-minutes 20

Stages:
  store        a store under the results folder: every OpinionQA *train* question of the wave-level split, the real
               deliberations (deliberations/*.jsonl), and --sim-runs simulated assemblies on the embedded model
               (Habermas-bank *train* questions only; reruns add just the missing ones).
  eval_before  `assembly eval survey` (in-process) on the wave-level validation split (whole survey waves held out:
               unseen topics), party and ideology, embedded base model: R, ignore-persona R, no-persona R,
               steerability.
  prepare      `finetune prepare`: survey ballots for every party and ideology group as soft targets with the
               persona-contrast key (options in a seeded order per example unless --keep-option-order), real
               statements and statement votes, simulated turns.
  train        `finetune train`: LoRA on the embedded model, time-boxed (--train-minutes). Uses the GPU when there
               is one; the survey objective is far too slow for a 2-core CPU (see docs/finetune.md).
  eval_after   the same evaluation with --model local:<base>+<adapter>.
  report       report.md + report.json (the before/after table; --variants adds one row per extra training run).

The defaults are the recipe of the reported tuned model (variant C in docs/finetune.md, section 5: 18 simulated
assemblies, LoRA on the top 12 layers, lr 1e-3, no dropout, 6.5 minutes of an H100). The stages are independent:
eval_before, train and eval_after can run on a GPU machine (they need neither DuckDB nor LangGraph) and the rest
where the store lives.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
STAGES = ("store", "eval_before", "prepare", "train", "eval_after", "report")
OPINIONQA_LICENSE = ("none (Pew Research Center terms of use): internal evaluation and internal fine-tuning "
                     "experiments only")
PAIR_GROUPS = ("party=Democrat", "party=Republican", "ideology=Very liberal", "ideology=Very conservative")


def data_root(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("ASSEMBLY_SHARED_DATA")
    return Path(env) if env else (REPO / ".." / "shared" / "data").resolve()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def save(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str), encoding="utf-8")


def habermas_train_questions(data: Path, seed: int) -> list[str]:
    """The Habermas bank's *train* questions in a seeded order: simulated training runs take them from the front,
    and benchmarks/distilled_vs_full.py compares the modes on ood_test questions."""
    rows = [json.loads(line) for line in (data / "questions" / "habermas_questions.jsonl").read_text().splitlines()]
    train = [r["question"] for r in rows if r["split"] == "train"]  # iid_test / ood_test never used here
    random.Random(seed).shuffle(train)
    return train


def small_spec(question: str, *, model: str, jurors: int, seed: int) -> dict:
    return {
        "question": question,
        "ballot": {"type": "yes_no", "options": ["Yes", "No"]},
        "jury": {"size": jurors, "stratify": ["party", "age", "sex"], "seed": seed},
        "procedure": {"rounds": 1, "questions": False, "words_per_turn": 40, "recent_turns": 4},
        "models": {"default": model},
    }


# --- stages -----------------------------------------------------------------------------------------------------


def stage_store(args, data: Path, out: Path) -> dict:
    import assembly
    from transcripts import Store, import_jsonl
    from transcripts.surveys import import_survey

    store_path = out / "store.duckdb"
    store = Store(store_path)
    split = json.loads((data / "opinionqa" / "survey_dev_split_by_wave.json").read_text())
    train_ids = sorted(split["train"])
    n = args.opinionqa_questions or len(train_ids)  # 0: every train question
    chosen = random.Random(args.seed).sample(train_ids, min(n, len(train_ids)))
    assert not set(chosen) & set(split["validation"])
    survey_runs = import_survey(store, data / "opinionqa" / "survey_dev.csv.gz", source="opinionqa",
                                license=OPINIONQA_LICENSE, question_ids=chosen)  # already imported: skipped
    log(f"imported {len(survey_runs)} OpinionQA train questions")
    real = []
    for name in ("remesh.jsonl", "delidata.jsonl"):
        real += import_jsonl(store, data / "deliberations" / name)
    log(f"imported {len(real)} real deliberations")
    done = set(store.sql("select question from runs where source = 'assembly-sim' and status = 'completed'")
               ["question"].to_list())
    questions = habermas_train_questions(data, args.seed)
    assert args.sim_runs <= len(questions)
    sims = []
    for i, question in enumerate(questions[: args.sim_runs]):
        if question in done:  # reruns add only the missing assemblies
            continue
        started = time.perf_counter()
        result = assembly.deliberate(small_spec(question, model="embedded", jurors=6, seed=100 + i),
                                     db=str(store_path), model_options={"threads": args.threads})
        sims.append({"run_id": result.run_id, "question": question, "wall_s": round(time.perf_counter() - started, 1)})
        log(f"simulated assembly {i + 1}/{args.sim_runs} in {sims[-1]['wall_s']} s")
    contents = store.sql("SELECT source, provenance, status, count(*) AS runs FROM runs GROUP BY ALL ORDER BY ALL")
    return {"store": str(store_path), "opinionqa_questions": chosen, "survey_runs": len(survey_runs),
            "real_runs": len(real), "simulated_now": sims, "contents": contents.to_dicts()}


def run_eval(args, data: Path, out: Path, model: str, name: str) -> dict:
    """`assembly eval survey` on the wave-level validation split, in-process (the command's own function)."""
    from rich.console import Console

    from assembly.cli.eval import run_survey_eval

    options = {"dtype": args.eval_dtype, "max_batch": args.eval_batch}
    log(f"{name}: eval survey --model {model} --split-name validation --questions {args.eval_questions} "
        f"--jurors-per-group {args.jurors_per_group} {options}")
    started = time.perf_counter()
    with open(out / f"{name}.log", "w") as errlog:
        summary = run_survey_eval(
            file=data / "opinionqa" / "survey_dev.csv.gz", model=model, attributes=["party", "ideology"], groups=None,
            questions=str(args.eval_questions) if args.eval_questions else None,
            split=data / "opinionqa" / "survey_dev_split_by_wave.json", split_name="validation",
            jurors_per_group=args.jurors_per_group, seed=args.seed, mode="ballot", population="us_adults", meta=None,
            exact_ordinals=False, baselines=True, rounds=1, max_concurrency=0, write_sim=None, db=None,
            details=False, err=Console(file=errlog), progress="lines", model_options=options)
    summary["demo_wall_s"] = round(time.perf_counter() - started, 1)
    return summary


def stage_prepare(args, out: Path) -> dict:
    from finetune.dataset import PrepareOptions, prepare_dataset
    from transcripts import Store

    options = PrepareOptions(
        types=("ballot", "juror_turn"), shuffle_options=not args.keep_option_order,
        validation=0.1, seed=args.seed,
        survey_attributes=("party", "ideology"), survey_groups=PAIR_GROUPS if args.survey_groups == "pairs" else None,
        survey_overall=False, personas_per_group=args.personas_per_group,
        weights={
            # DeliData is a logic puzzle, not a value question: none of it
            "delidata:ballot": 0.0, "delidata:juror_turn": 0.0,
            # Remesh: real persona -> vote on statements, and a few real statements
            "remesh_polarized_issues:ballot": 0.1, "remesh_polarized_issues:juror_turn": 0.05,
            # simulated ballots would only teach the base model its own answers back
            "assembly-sim:ballot": 0.0,
        },
    )
    return prepare_dataset(Store(out / "store.duckdb"), out / "sft", options)


def stage_train(args, out: Path) -> dict:
    from finetune.config import TrainConfig
    from finetune.trainer import train

    config = TrainConfig(
        base_model="embedded", dataset=str(out / "sft"), output_dir=str(out / "train"),
        lora={"r": args.lora_r, "alpha": 2 * args.lora_r, "dropout": args.lora_dropout, "top_layers": args.top_layers or None},
        learning_rate=args.lr, epochs=args.epochs, max_steps=-1, gradient_accumulation=args.grad_accum,
        batch_size=args.batch_size,
        warmup_steps=args.warmup_steps, contrast_weight=args.contrast_weight, max_length=1536, max_group=args.max_group,
        save_steps=args.save_steps, eval_max_items=args.eval_items, max_minutes=args.train_minutes,
        threads=args.threads, seed=args.seed, gradient_checkpointing=False,
    )
    return train(config, progress=sys.stderr.isatty())


def tuned_spec(out: Path, *folders: str) -> str:
    """The tuned model on this machine, from the first of `folders` holding an adapter (the card's own spec names
    the folders of the machine that trained it)."""
    from assembly.providers.embedded import embedded_model_path

    adapter = next(out / f / "adapter" for f in (*folders, "train") if (out / f / "adapter").is_dir())
    return f"local:{embedded_model_path()}+{adapter}"


# --- the report -------------------------------------------------------------------------------------------------


def eval_row(summary: dict) -> dict:
    row = {}
    for attribute in ("party", "ideology"):
        a = summary["attributes"].get(attribute, {})
        row[attribute] = {k: a.get(k) for k in ("R", "R_ignore_persona", "R_no_persona", "R_uniform", "R_overall",
                                                 "TV", "invalid_rate")}
        if a.get("R") is not None and a.get("R_no_persona") is not None:
            row[attribute]["persona_gain_vs_no_persona"] = a["R"] - a["R_no_persona"]
        if a.get("R") is not None and a.get("R_ignore_persona") is not None:
            row[attribute]["persona_gain_vs_ignore_persona"] = a["R"] - a["R_ignore_persona"]
    row["steerability"] = {f"{s['group_a']} / {s['group_b']}": {k: s.get(k) for k in (
        "steerability", "mean_abs_shift_sim", "mean_abs_shift_human", "shift_direction_agreement", "R_between_sim",
        "R_between_human")} for s in summary.get("steerability", [])}
    row["n_questions"] = summary.get("n_questions")
    row["ballots"] = summary.get("ballots")
    row["wall_s"] = summary.get("wall_s")
    return row


def f(x, digits=3, signed=False):
    if x is None:
        return "—"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def variant_lines(args, report: dict) -> list[str]:
    """One row per training variant (a folder holding its card `*train.json` and its `*eval_after.json`)."""
    rows, lines = [], ["Training variants, each evaluated like the tuned model above:", "",
                       "| variant | items seen (steps) | train s | LoRA layers | lr | contrast w | R party | R ideology | "
                       "R persona − R no persona (party) | Dem/Rep mean shift sim | Dem/Rep steerability |",
                       "|---|---|---|---|---|---|---|---|---|---|---|"]
    for folder in args.variants:
        folder = Path(folder)
        card = json.loads(next(folder.glob("*train.json")).read_text())
        row = eval_row(json.loads(next(folder.glob("*eval_after.json")).read_text()))
        hp, tr = card["hyperparameters"], card["training"]
        pair = row["steerability"].get("Democrat / Republican", {})
        rows.append({"variant": folder.name, "steps": tr["steps"], "items": tr["steps"] * hp["gradient_accumulation"],
                     "wall_s": tr["wall_seconds"], "hyperparameters": hp, "eval": row, "device": tr["device"],
                     "machine": card.get("machine")})
        layers = hp["lora"].get("top_layers") or "all"
        lines.append(f"| {folder.name} | {tr['steps'] * hp['gradient_accumulation']} ({tr['steps']}) | "
                     f"{tr['wall_seconds']:.0f} | {layers} | {hp['learning_rate']:g} | {hp['contrast_weight']:g} | "
                     f"{f(row['party']['R'])} | {f(row['ideology']['R'])} | "
                     f"{f(row['party'].get('persona_gain_vs_no_persona'), signed=True)} | "
                     f"{f(pair.get('mean_abs_shift_sim'))} | {f(pair.get('steerability'), signed=True)} |")
    report["variants"] = rows
    return lines + [""]


def stage_report(args, out: Path) -> dict:
    results = {name: json.loads((out / f"{name}.json").read_text()) for name in STAGES[:-1]
               if (out / f"{name}.json").exists()}
    report: dict = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                                "python": platform.python_version()},
                    "settings": vars(args)}
    lines = ["# Fine-tuning demonstration", ""]
    if "eval_before" in results and "eval_after" in results:
        before, after = eval_row(results["eval_before"]), eval_row(results["eval_after"])
        report["eval"] = {"before": before, "after": after}
        lines += [f"Wave-level validation split (unseen survey waves), {before['n_questions']} questions, "
                  f"{args.jurors_per_group} jurors per group, party and ideology groups.", "",
                  "| metric | base | tuned | change |", "|---|---|---|---|"]
        for attribute in ("party", "ideology"):
            for key, label in (("R", "R (persona jurors)"), ("R_ignore_persona", "R ignore-persona (population jury)"),
                               ("R_no_persona", "R no persona"), ("persona_gain_vs_no_persona", "R persona - R no persona"),
                               ("TV", "TV"), ("invalid_rate", "invalid ballots"),
                               ("R_uniform", "human baseline: uniform answer"),
                               ("R_overall", "human baseline: overall distribution for every group")):
                b, a = before[attribute].get(key), after[attribute].get(key)
                lines.append(f"| {attribute}: {label} | {f(b)} | {f(a)} | "
                             f"{f(a - b, signed=True) if a is not None and b is not None else '—'} |")
        for pair, b in before["steerability"].items():
            a = after["steerability"].get(pair, {})
            for key, label in (("steerability", "steerability"), ("mean_abs_shift_sim", "mean |shift| simulated"),
                               ("shift_direction_agreement", "shift direction agrees with humans")):
                lines.append(f"| {pair}: {label} | {f(b.get(key))} | {f(a.get(key))} | "
                             f"{f(a.get(key) - b.get(key), signed=True) if a.get(key) is not None and b.get(key) is not None else '—'} |")
            lines.append(f"| {pair}: mean |shift| humans | {f(b.get('mean_abs_shift_human'))} | "
                         f"{f(a.get('mean_abs_shift_human'))} | |")
        lines.append("")
    if "train" in results:
        card = results["train"]
        tr = card["training"]
        report["train"] = {"steps": tr["steps"], "items": tr["items"], "wall_seconds": tr["wall_seconds"],
                           "train_loss": tr["train_loss"], "eval": card["eval"], "examples": card["data"]["examples"],
                           "real_share": card["data"]["real_share"]}
        lines += [f"Training: {tr['steps']} optimizer steps ({card['hyperparameters']['gradient_accumulation']} items "
                  f"each) in {tr['wall_seconds']:.0f} s on {tr['device']} "
                  f"({', '.join(card.get('machine', {}).get('cuda_devices') or ['CPU'])}); examples per split "
                  f"{json.dumps(card['data']['examples'])}; real share (train) "
                  f"{f((card['data']['real_share'] or {}).get('train'), 2)}.", ""]
        if card["eval"]["base"] and card["eval"]["tuned"]:
            lines += ["| validation items | base | tuned |", "|---|---|---|"]
            for key in sorted(set(card["eval"]["base"]) - {"items"}):
                lines.append(f"| {key} | {f(card['eval']['base'].get(key))} | {f(card['eval']['tuned'].get(key))} |")
            lines.append("")
    if args.variants:
        lines += variant_lines(args, report)
    lines.append(f"Report written on {report['machine']['platform']}, {report['machine']['cpu_count']} CPUs.")
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="shared data folder (default: $ASSEMBLY_SHARED_DATA or ../shared/data)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "finetune_demo"))
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--force", action="store_true", help="redo stages whose results exist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--opinionqa-questions", type=int, default=0,
                        help="OpinionQA train questions imported (0: all of the wave-level train split)")
    parser.add_argument("--sim-runs", type=int, default=18, help="simulated assemblies in the training store")
    parser.add_argument("--survey-groups", choices=("pairs", "all"), default="all",
                        help="survey panels as ballot examples: the steerability pairs, or every party/ideology group")
    parser.add_argument("--personas-per-group", type=int, default=2)
    parser.add_argument("--eval-questions", type=int, default=0, help="validation questions evaluated (0: all)")
    parser.add_argument("--jurors-per-group", type=int, default=3)
    parser.add_argument("--eval-dtype", default="float32", help="weights dtype for the evaluations")
    parser.add_argument("--eval-batch", type=int, default=16, help="prompts per forward pass in the evaluations")
    parser.add_argument("--train-minutes", type=float, default=6.5)
    parser.add_argument("--epochs", type=float, default=4.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--grad-accum", type=int, default=4)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-dropout", type=float, default=0.0)
    parser.add_argument("--top-layers", type=int, default=12, help="adapt only the last N layers (0: all)")
    parser.add_argument("--max-group", type=int, default=16, help="prompts per contrast item")
    parser.add_argument("--contrast-weight", type=float, default=10.0)
    parser.add_argument("--save-steps", type=int, default=200)
    parser.add_argument("--eval-items", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass")
    parser.add_argument("--keep-option-order", action="store_true",
                        help="ablation: ballot examples list the options in the survey's order (no shuffling)")
    parser.add_argument("--variants", nargs="*", default=[],
                        help="report: folders of further training variants (a *train.json card and *eval_after.json)")
    args = parser.parse_args(argv)
    data = data_root(args.data)
    if not (data / "opinionqa" / "survey_dev.csv.gz").is_file():
        raise SystemExit(f"no shared data at {data} (pass --data or set ASSEMBLY_SHARED_DATA)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(args.threads)
    wanted = [s.strip() for s in args.stages.split(",") if s.strip()]
    for stage in STAGES:
        if stage not in wanted:
            continue
        path = out / f"{stage}.json"
        if path.exists() and not args.force and stage != "report":
            log(f"{stage}: reusing {path}")
            continue
        started = time.perf_counter()
        log(f"{stage}: start")
        if stage == "store":
            result = stage_store(args, data, out)
        elif stage == "eval_before":
            result = run_eval(args, data, out, "embedded", "eval_before")
        elif stage == "prepare":
            result = stage_prepare(args, out)
        elif stage == "train":
            result = stage_train(args, out)
        elif stage == "eval_after":
            result = run_eval(args, data, out, tuned_spec(out), "eval_after")
        else:
            result = stage_report(args, out)
        result = {**result, "stage_wall_s": round(time.perf_counter() - started, 1)} if isinstance(result, dict) else result
        save(path, result)
        log(f"{stage}: done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
