"""A juror adapter for the embedded model from free data only (issue 13, item 4), measured before and after.

Data: the Remesh "Polarized Issues" dialogues (CC BY 4.0): real US adults, with their demographics, answering open
prompts on value questions in their own words, imported from ../shared/data/deliberations/remesh.jsonl and turned
into `juror_turn` examples with the run-time juror prompt (assembly.layout: the persona from the participant's
attributes, the dialogue's question, the prompt they answered). Answers under 8 words are dropped (`keep`); nothing
else is filtered, and never by the rule that is measured. OpinionQA is not used. `--delidata` adds the DeliData chats
(Apache-2.0; a logic puzzle, so in-voice group chat, off any policy topic).

Measure: full-mode studies of `--limit` questions of the Habermas bank's `--split` (default ood_test) x `--draws`
juries, on the embedded model and on the tuned adapter (same seeds, so the same juries), and the fixed statement rule
(assembly.evaluation.statements) over every juror deliberation statement: on topic, in the juror's own voice,
readable, and all three.

Stages (each reads what the earlier ones wrote beside `--db`):
  data    import the deliberations and prepare the examples
  train   train the LoRA adapter (top layers, bf16 where the CPU has it)
  base    the studies on the embedded model
  tuned   the same studies on the adapter
  report  the table (also printed after every stage)

    python benchmarks/juror_adapter.py --stage data --stage train --stage base --stage tuned
    python benchmarks/juror_adapter.py --stage data --stage train --max-examples 32 --max-minutes 1 \
        --stage base --stage tuned --limit 1 --draws 1 --jurors 3    # a quick check that it runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assembly.evaluation.statements import check_statement, summarize_checks  # noqa: E402
from assembly.providers.local import EmbeddedModel  # noqa: E402
from assembly.providers.registry import load_model  # noqa: E402
from distilled_vs_full import BANK, RESULTS, log, study  # noqa: E402
from host import machine  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "deliberations"


def long_enough(example: dict) -> bool:
    return len(example["messages"][-1]["content"].split()) >= 8


def prepare(args) -> dict:
    from finetune.dataset import PrepareOptions, prepare_dataset
    from transcripts import Store
    from transcripts.interchange import import_jsonl

    store = Store(args.db)
    try:
        files = [DATA / "remesh.jsonl"] + ([DATA / "delidata.jsonl"] if args.delidata else [])
        imported = {f.name: len(import_jsonl(store, f)) for f in files}
        manifest = prepare_dataset(store, folder(args), PrepareOptions(
            types=("juror_turn",), provenances=("imported-real",), validation=0.1, seed=args.seed,
            max_per_run=args.max_per_run, max_examples=args.max_examples, words=args.words, keep=long_enough))
    finally:
        store.close()
    log(f"data: imported {imported}; {manifest['examples']} examples")
    return {"imported": imported, "examples": manifest["examples"], "sources": manifest.get("sources")}


def folder(args) -> Path:
    return Path(args.db).with_suffix(".sft")


def train_adapter(args) -> dict:
    from finetune.config import TrainConfig
    from finetune.trainer import train

    config = TrainConfig(base_model="embedded", dataset=str(folder(args)),
                         output_dir=str(folder(args).with_suffix(".adapter")), epochs=args.epochs, batch_size=8,
                         gradient_accumulation=2, learning_rate=args.lr, lm_weight=1.0, choice_weight=0.0,
                         contrast_weight=0.0, lora={"r": 8, "alpha": 32, "top_layers": args.top_layers or None},
                         threads=args.threads, eval_max_items=32, save_steps=10_000, resume=False,
                         max_minutes=args.max_minutes)
    card = train(config, progress=False)
    return {"model_spec": card["model_spec"], "training": card["training"], "curves": card.get("curves"),
            "eval": card.get("eval")}


def judged(store, study_id: str) -> dict:
    """The statement rule over a study's juror deliberation statements: shares overall, and per question."""
    rows = store.sql(
        "SELECT r.study_question AS q, r.question, r.options, t.content FROM runs r JOIN turns t ON t.run_id = r.id "
        "JOIN participants p ON p.run_id = r.id AND p.id = t.speaker_id WHERE r.study_id = ? "
        "AND r.status = 'completed' AND t.phase = 'deliberation' AND p.role = 'juror'", [study_id])
    checks, by_question = [], {}
    for r in rows.iter_rows(named=True):
        options = r["options"] if isinstance(r["options"], list) else json.loads(r["options"] or "[]")
        c = check_statement(r["content"], r["question"], options)
        checks.append(c)
        by_question.setdefault(r["q"], []).append(c)
    return {**summarize_checks(checks), "questions": {q: summarize_checks(cs)["ok"] for q, cs in by_question.items()}}


def report(args, state: dict) -> None:
    from transcripts import Store

    store = Store(args.db)
    try:
        for arm in ("base", "tuned"):
            if arm in state:
                state[f"judged_{arm}"] = judged(store, state[arm]["study_id"])
    finally:
        store.close()
    arms = [a for a in ("base", "tuned") if f"judged_{a}" in state]
    if not arms:
        return
    print("\n| model | statements | on topic | own voice | readable | all three |")
    print("|---|---|---|---|---|---|")
    for arm in arms:
        j = state[f"judged_{arm}"]
        print(f"| {arm} | {j['statements']} | {j['on_topic']:.0%} | {j['own_voice']:.0%} | {j['readable']:.0%} | "
              f"{j['ok']:.0%} |")


async def main_async(args) -> dict:
    state_path = Path(args.db).with_suffix(".json")
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    state["machine"] = machine()
    state["settings"] = {k: str(v) for k, v in vars(args).items() if k != "stage"}
    for stage in args.stage:
        if stage == "data":
            state["data"] = prepare(args)
        elif stage == "train":
            state["adapter"] = train_adapter(args)
        elif stage in ("base", "tuned"):
            model = EmbeddedModel(threads=args.threads, max_batch=args.max_batch) if stage == "base" else \
                load_model(state["adapter"]["model_spec"], threads=args.threads, max_batch=args.max_batch)
            try:
                state[stage] = await study(args, stage, args.split, args.limit, args.draws, "full", model)
            finally:
                await model.aclose()
        state_path.write_text(json.dumps(state, indent=2, default=str))
        report(args, state)
    state_path.write_text(json.dumps(state, indent=2, default=str))
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage", action="append", choices=["data", "train", "base", "tuned", "report"],
                        required=True)
    parser.add_argument("--db", default=str(RESULTS / "juror_adapter.duckdb"))
    parser.add_argument("--bank", default=str(BANK))
    parser.add_argument("--split", default="ood_test")
    parser.add_argument("--limit", type=int, default=6)
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--jurors", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--words", type=int, default=40)
    parser.add_argument("--delidata", action="store_true", help="add the DeliData chats to the training data")
    parser.add_argument("--max-per-run", type=int, default=400, help="examples per dialogue")
    parser.add_argument("--max-examples", type=int, default=1000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--top-layers", type=int, default=4, help="adapt only the last N layers (0: all)")
    parser.add_argument("--max-minutes", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
