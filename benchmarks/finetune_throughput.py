"""Trainer throughput: training examples per second for one epoch of survey ballots (the KL objective), before and
after batching, on this machine. Not a test: it reads ../shared/data/opinionqa (internal use only; nothing trained
here is kept).

    python benchmarks/finetune_throughput.py prepare                      # the dataset (once)
    python benchmarks/finetune_throughput.py run --batch-size 16          # this checkout's trainer
    python benchmarks/finetune_throughput.py run --batch-size 1           # one sequence per pass
    git worktree add /tmp/before 79a20f5 && \\
      PYTHONPATH=/tmp/before python benchmarks/finetune_throughput.py run --label before   # the trainer before batching

`run` trains one epoch of the prepared survey ballots (every party and ideology group of each question, one contrast
item per question and attribute) and prints examples/s with the machine. The trainer before batching took one item
(one contrast group) per data-loader step; its TrainConfig has no batch_size, so `--label before` leaves it out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
FOLDER = ROOT / "benchmarks" / "results" / "throughput_sft"
LICENSE = "none (Pew Research Center terms of use): internal evaluation and internal fine-tuning experiments only"


def prepare(args) -> None:
    from finetune.dataset import PrepareOptions, prepare_dataset
    from transcripts import Store
    from transcripts.surveys import import_survey

    split = json.loads((DATA / "opinionqa" / "survey_dev_split_by_wave.json").read_text())
    chosen = random.Random(args.seed).sample(sorted(split["train"]), args.questions)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "s.duckdb")
        import_survey(store, DATA / "opinionqa" / "survey_dev.csv.gz", source="opinionqa", license=LICENSE,
                      question_ids=chosen)
        manifest = prepare_dataset(store, FOLDER, PrepareOptions(
            types=("ballot",), validation=0.0, seed=args.seed, survey_attributes=("party", "ideology"),
            survey_overall=False))
        store.close()
    print(json.dumps(manifest["examples"]))


def run(args) -> None:
    import torch

    from finetune.config import TrainConfig
    from finetune.trainer import train
    from host import machine

    lines = (FOLDER / "train.jsonl").read_text().splitlines()[: args.examples]  # whole questions first: file order
    examples = len(lines)
    data = Path(tempfile.mkdtemp(prefix="throughput-data-"))
    (data / "train.jsonl").write_text("\n".join(lines) + "\n")
    (data / "manifest.json").write_text((FOLDER / "manifest.json").read_text())
    settings = dict(base_model="embedded", dataset=str(data), epochs=1.0, max_steps=-1, learning_rate=2e-4,
                    gradient_accumulation=args.grad_accum, eval_max_items=0, save_steps=100_000, resume=False,
                    threads=args.threads, lora={"r": 8, "alpha": 32}, max_group=16, lm_weight=0.0,
                    batch_size=args.batch_size, eval_every_epoch=False, bf16=args.bf16,
                    max_batch_tokens=args.max_batch_tokens)
    if args.top_layers:
        settings["lora"]["top_layers"] = args.top_layers
    known = set(TrainConfig.model_fields)
    settings = {k: v for k, v in settings.items() if k in known}  # the trainer before batching has fewer settings
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(**settings, output_dir=tmp)
        torch.manual_seed(0)
        started = time.perf_counter()
        card = train(config, progress=False)
        wall = time.perf_counter() - started
    tr = card["training"]
    result = {"label": args.label, "batch_size": settings.get("batch_size", "1 item"), "examples": examples,
              "top_layers": args.top_layers, "max_batch_tokens": settings.get("max_batch_tokens"),
              "steps": tr["steps"], "train_wall_s": tr["wall_seconds"], "total_wall_s": round(wall, 1),
              "examples_per_second": round(examples / tr["wall_seconds"], 2), "device": tr["device"],
              "bf16": tr["bf16"], "machine": machine()}
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["prepare", "run"])
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--label", default="after")
    parser.add_argument("--examples", type=int, default=48, help="the first N training examples (one epoch)")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (default: fp32, as before)")
    parser.add_argument("--top-layers", type=int, default=0)
    parser.add_argument("--max-batch-tokens", type=int, default=2048)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    prepare(args) if args.what == "prepare" else run(args)


if __name__ == "__main__":
    main()
