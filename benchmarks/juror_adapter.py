"""A juror adapter for the embedded model from free data only (issue 13, item 4): does it make the statements a new
user sees better, by a fixed rule (assembly.evaluation.statements: on the question, in the juror's own voice, no
assistant talk, not degenerate)?

Data (never OpinionQA): Remesh "Polarized Issues" dialogues (CC BY 4.0; real people's statements answering a
moderator, with their demographics as personas) and simulated statements from full runs on Habermas *train*
questions (benchmarks/distilled_vs_full.py --stage train-data writes them), kept only where they pass the rule
(rejection sampling: the adapter learns the model's own good turns). Measured on held-out questions (the bank's
ood_test split) in full-mode studies with the same seeds for the base and the tuned model.

    python benchmarks/juror_adapter.py --stage data --stage prepare --stage train --stage measure
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assembly.evaluation.statements import check_statement, rates  # noqa: E402
from host import machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
OUT = RESULTS / "juror_adapter"
SIM_STORE = RESULTS / "distilled_vs_full.duckdb"
BANK = DATA / "questions" / "habermas_questions.jsonl"
REMESH = "remesh_polarized_issues"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def stage_data(args) -> dict:
    from transcripts import Store, import_jsonl
    from transcripts.transfer import add_run_tables, run_tables

    store = Store(OUT / "store.duckdb")
    real = import_jsonl(store, DATA / "deliberations" / "remesh.jsonl")
    source = Store(SIM_STORE)
    state = json.loads(SIM_STORE.with_suffix(".json").read_text())
    ids = source.sql("SELECT id FROM runs WHERE study_id = ? AND status = 'completed'",
                     [state["train_data"]["study_id"]])["id"].to_list()
    have = set(store.sql("SELECT id FROM runs")["id"].to_list())
    copied = [add_run_tables(store, run_tables(source, rid)) for rid in ids if rid not in have]
    source.close()
    store.close()
    return {"remesh_runs": len(real), "simulated_runs": len(ids), "copied": len(copied)}


def passes(example: dict) -> bool:
    """Simulated turns are kept only when they pass the rule; real people's are kept as they are."""
    if example["provenance"] == "imported-real":
        return True
    marker = "The question before the jury:\n"
    system = next((m["content"] for m in example["messages"] if marker in m["content"]), "")
    question = system.split(marker, 1)[1].split("\n\n", 1)[0] if system else example["messages"][-2]["content"]
    return check_statement(example["messages"][-1]["content"], question).ok


def stage_prepare(args) -> dict:
    from finetune.dataset import PrepareOptions, prepare_dataset
    from transcripts import Store

    store = Store(OUT / "store.duckdb")
    try:
        return prepare_dataset(store, OUT / "sft", PrepareOptions(
            types=("juror_turn",), sources=(REMESH, "assembly-sim"), validation=0.1, seed=args.seed,
            max_per_run=args.per_run, keep=passes))
    finally:
        store.close()


def stage_train(args) -> dict:
    from finetune.config import TrainConfig
    from finetune.trainer import train

    config = TrainConfig(base_model="embedded", dataset=str(OUT / "sft"), output_dir=str(OUT / "train"),
                         epochs=args.epochs, batch_size=8, gradient_accumulation=2, learning_rate=args.lr,
                         choice_weight=0.0, contrast_weight=0.0, lora={"r": 16, "alpha": 32, "top_layers": 12},
                         max_length=1024, threads=args.threads, eval_max_items=48, save_steps=10_000,
                         resume=False, seed=args.seed)
    card = train(config, progress=False)
    return {"model_spec": card["model_spec"], "training": card["training"], "eval": card["eval"],
            "curves": card["curves"], "data": card["data"]["examples"]}


async def measure(args, label: str, model) -> dict:
    from assembly.study.runner import arun_study
    from transcripts import Store

    template = OUT / "template.yaml"
    template.write_text(f"jury: {{size: {args.jurors}, stratify: [party, ideology, age], seed: {args.seed}}}\n"
                        "procedure: {rounds: 1, words_per_turn: 40, recent_turns: 3}\n")
    result = await arun_study([str(BANK)], db=OUT / "measure.duckdb", concurrency=args.concurrency, models=model,
                              settings={"draws": args.draws, "template": str(template), "split": "ood_test",
                                        "limit": args.limit, "seed": args.seed})
    store = Store(OUT / "measure.duckdb")
    try:
        rows = store.sql(
            "SELECT r.question, r.options, t.content FROM runs r JOIN turns t ON t.run_id = r.id "
            "WHERE r.study_id = ? AND t.phase = 'deliberation'", [result.study_id])
        checks = [check_statement(r["content"], r["question"], json.loads(r["options"]) if isinstance(
            r["options"], str) else (r["options"] or [])) for r in rows.iter_rows(named=True)]
    finally:
        store.close()
    found = {"label": label, "study_id": result.study_id, "runs": result.summary.completed, **rates(checks)}
    log(json.dumps(found))
    return found


async def stage_measure(args, state: dict) -> dict:
    from assembly.providers.local import EmbeddedModel
    from assembly.providers.registry import load_model

    base = EmbeddedModel(threads=args.threads, max_batch=64)
    try:
        before = await measure(args, "base", base)
    finally:
        await base.aclose()
    tuned = load_model(state["train"]["model_spec"], threads=args.threads, max_batch=64)
    try:
        after = await measure(args, "tuned", tuned)
    finally:
        await tuned.aclose()
    return {"base": before, "tuned": after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage", action="append", choices=["data", "prepare", "train", "measure"], required=True)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--per-run", type=int, default=60)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--jurors", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=15)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "state.json"
    state = json.loads(path.read_text()) if path.exists() else {}
    state["machine"] = machine()
    for stage in args.stage:
        log(f"stage {stage}")
        if stage == "data":
            state["data"] = stage_data(args)
        elif stage == "prepare":
            manifest = stage_prepare(args)
            state["prepare"] = {"examples": manifest["examples"], "sources": manifest["sources"]}
        elif stage == "train":
            state["train"] = stage_train(args)
        else:
            state["measure"] = asyncio.run(stage_measure(args, state))
        path.write_text(json.dumps(state, indent=2, default=str))
    print(json.dumps({k: state.get(k) for k in ("data", "prepare", "measure")}, indent=2, default=str))


if __name__ == "__main__":
    main()
