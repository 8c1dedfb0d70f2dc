"""Can tuning teach the embedded model sub-group opinions that transfer to unseen survey waves? (issue 13, item 3)

OpinionQA's by-wave split (../shared/data/opinionqa: whole survey waves held out; Pew terms: internal experiments
only, nothing trained here is kept or shipped). Train questions are a seeded sample of the train waves; validation
questions a seeded sample of the validation waves. Each question becomes one survey ballot per party and ideology
group (a juror seated from the population frame given the group, the group's answer distribution as soft target,
the options in a seeded order per example), and the groups of one question and attribute form a contrast item.

Variants (each a LoRA run on the same data, learning curves per epoch in its card):
  kl           forward KL on the option distribution (SubPOP's objective), options shuffled per example
  kl+contrast  the same plus the persona-contrast term (weight 10)
  kl-fixed     KL with the options in the survey's own order (the ablation of option-order randomisation)

Reported per epoch on the validation questions (the trainer's own scoring: one shuffled order per example, no
calibration): R with the persona, R without it, the persona effect, steerability (R against the juror's own group
minus R against another group of the same question), and per group R and the Democrat–Republican contrast
(R between the two simulated groups against R between the two human groups).

    python benchmarks/survey_tuning.py --train-questions 150 --valid-questions 60 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "opinionqa"
OUT = ROOT / "benchmarks" / "results" / "survey_tuning"
LICENSE = "none (Pew Research Center terms of use): internal evaluation and internal fine-tuning experiments only"
VARIANTS = {
    "kl": {"contrast_weight": 0.0, "shuffle": True},
    "kl+contrast": {"contrast_weight": 10.0, "shuffle": True},
    "kl-fixed": {"contrast_weight": 0.0, "shuffle": False},
}


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def prepare(args, shuffle: bool) -> Path:
    from finetune.dataset import PrepareOptions, prepare_dataset
    from transcripts import Store
    from transcripts.surveys import import_survey

    folder = OUT / f"sft-{'shuffled' if shuffle else 'fixed'}"
    if (folder / "manifest.json").exists():
        return folder
    split = json.loads((DATA / "survey_dev_split_by_wave.json").read_text())
    rng = random.Random(args.seed)
    train = rng.sample(sorted(split["train"]), args.train_questions)
    valid = rng.sample(sorted(split["validation"]), args.valid_questions)
    store = Store(OUT / "store.duckdb")
    try:
        import_survey(store, DATA / "survey_dev.csv.gz", source="opinionqa", license=LICENSE,
                      question_ids=train + valid)
        manifest = prepare_dataset(store, folder, PrepareOptions(
            types=("ballot",), seed=args.seed, survey_attributes=("party", "ideology"), survey_overall=False,
            shuffle_options=shuffle, splits={**{q: "train" for q in train}, **{q: "validation" for q in valid}},
            exclude_questions=()))
    finally:
        store.close()
    log(f"prepared {folder.name}: {manifest['examples']}")
    return folder


def group_metrics(model, tokenizer, examples: list[dict], config, device: str = "cpu") -> dict:
    """Per (attribute, group) R, and per question the Democrat-Republican distance, simulated vs human."""
    import torch

    from finetune.batches import build_items, collate, make_batches
    from finetune.objective import _canonical, option_scores, representativeness

    items = build_items(examples, tokenizer, config)
    members = []
    model.eval()
    with torch.no_grad():
        for batch_items in make_batches(items, config.batch_size, seed=None, max_tokens=config.max_batch_tokens):
            batch = collate(batch_items, tokenizer.pad_token_id or 0)
            scores = option_scores(model, batch)
            valid = batch["option_mask"]
            p = torch.softmax(scores.masked_fill(~valid, float("-inf")), -1) * valid
            members += [(_canonical(p[i:i + 1], batch["canon"][i:i + 1])[0],
                         _canonical(batch["targets"][i:i + 1], batch["canon"][i:i + 1])[0],
                         _canonical(valid[i:i + 1].float(), batch["canon"][i:i + 1])[0])
                        for i in range(p.shape[0])]
    by_item = [m for item in items for m in item["members"]]
    labelled = [(e["question_id"], e["target"].get("attribute"), e["target"].get("group"))
                for e in examples if e.get("target")]
    assert len(labelled) == len(members) == len(by_item)
    per_group: dict[str, list[float]] = defaultdict(list)
    pairs: dict[str, dict] = defaultdict(dict)
    for (qid, attribute, group), (p, h, v) in zip(labelled, members):
        per_group[f"{attribute}={group}"].append(float(representativeness(p[None], h[None], v[None])[0]))
        if attribute == "party" and group in ("Democrat", "Republican"):
            pairs[qid][group] = (p, h, v)
    between_sim, between_human = [], []
    for groups in pairs.values():
        if len(groups) == 2:
            (pd, hd, v), (pr, hr, _) = groups["Democrat"], groups["Republican"]
            between_sim.append(float(representativeness(pd[None], pr[None], v[None])[0]))
            between_human.append(float(representativeness(hd[None], hr[None], v[None])[0]))
    mean = lambda xs: round(sum(xs) / len(xs), 4) if xs else None  # noqa: E731
    return {"r_by_group": {g: mean(v) for g, v in sorted(per_group.items())},
            "dem_rep_r_between_sim": mean(between_sim), "dem_rep_r_between_human": mean(between_human),
            "dem_rep_questions": len(between_sim)}


def run_variant(args, name: str) -> dict:
    from finetune.config import TrainConfig
    from finetune.dataset import read_examples
    from finetune.trainer import load_model, train

    setting = VARIANTS[name]
    folder = prepare(args, setting["shuffle"])
    config = TrainConfig(base_model="embedded", dataset=str(folder), output_dir=str(OUT / name), epochs=args.epochs,
                         batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens,
                         gradient_accumulation=args.grad_accum, learning_rate=args.lr,
                         lm_weight=0.0, contrast_weight=setting["contrast_weight"], max_group=16,
                         lora={"r": 8, "alpha": 32, "dropout": 0.05, "top_layers": args.top_layers or None},
                         eval_max_items=args.eval_items, threads=args.threads, save_steps=100_000, resume=False,
                         seed=args.seed, max_minutes=args.max_minutes)
    log(f"{name}: training")
    card = train(config, progress=False)
    valid = read_examples(folder, "validation")
    model, tokenizer, _, _ = load_model(config.with_overrides(base_model=card["model_spec"]), "cpu")
    with model.disable_adapter():
        base = group_metrics(model, tokenizer, valid, config)
    tuned = group_metrics(model, tokenizer, valid, config)
    result = {"variant": name, "curves": card["curves"], "eval": card["eval"], "training": card["training"],
              "groups": {"base": base, "tuned": tuned}, "examples": card["data"]["examples"]}
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
    log(f"{name}: {json.dumps({'base': card['eval']['base'], 'tuned': card['eval']['tuned']})}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", choices=list(VARIANTS))
    parser.add_argument("--train-questions", type=int, default=150)
    parser.add_argument("--valid-questions", type=int, default=60)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--max-batch-tokens", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--top-layers", type=int, default=4, help="adapt only the last N layers (0: all)")
    parser.add_argument("--eval-items", type=int, default=10_000)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from host import machine

    results = [run_variant(args, name) for name in (args.variant or list(VARIANTS))]
    summary = {"machine": machine(), "settings": vars(args), "variants": results}
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
