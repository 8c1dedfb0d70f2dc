"""`assembly finetune train`: LoRA (peft) on a prepared dataset, with transformers' Trainer and our own objective.

Why not TRL's SFTTrainer: two thirds of the signal here are ballots whose target is a distribution over options
(a survey sub-group's answers) and pairs of groups whose answers should differ. That needs a loss over groups of
sequences — the model's distribution over the K options, computed exactly as constrained choice computes it at run
time (assembly.providers.local: sum of the reply tokens' log-probabilities, renormalised over the options) — which
SFTTrainer's one-target-sequence-per-example design does not express. (Its assistant-only loss also needs
`{% generation %}` markers in the chat template, which SmolLM2's template lacks.) transformers' Trainer still gives
us checkpoints and resume, gradient accumulation, bf16, gradient checkpointing and multi-GPU through accelerate.

Training items (one per step of the data loader; `gradient_accumulation` of them per optimizer step):
* an "lm" item: one text example (juror / moderator / witness turn, whole assembly, or a structured ballot);
  loss = mean token cross-entropy over the assistant reply (prompt tokens masked), logits computed only there.
* a "choice" item: the ballot examples sharing a `contrast` key (groups answering the same question), or one ballot
  alone. The prompts run once with a KV cache (`shared_prompt`); every option is scored over that cache, as the
  local backend does. loss = choice_weight * mean KL(target || model) + contrast_weight * mean over pairs of
  ((m_model(a) - m_model(b)) - (m_human(a) - m_human(b)))^2, with m the mean answer position on 0..1. The contrast
  term rewards the model when a Democrat and a Republican persona answer as differently as real Democrats and
  Republicans do (and in the same direction), which a flatter answer shape cannot fake.
"""

from __future__ import annotations

import math
import os
import platform
import random
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path
from typing import Any

import torch

from assembly.providers.chat import prompt_ids, reply_ids
from finetune.config import TrainConfig
from finetune.dataset import read_examples, read_manifest
from finetune.encoding import split_example

IGNORE = -100


class TrainError(ValueError):
    """Training cannot start (bad base model, empty dataset); the message is one line."""


# --- the base model --------------------------------------------------------------------------------------------


def resolve_base(spec: str) -> tuple[str, str | None]:
    """(model folder or hub id, adapter folder or None) for a base-model spec: `embedded`, `local:<folder>`,
    `local:<folder>+<adapter>`, or a plain folder."""
    from assembly.providers.registry import parse_model_spec

    if spec == "embedded":
        from assembly.providers.embedded import embedded_model_path

        return str(embedded_model_path()), None
    if ":" in spec and not Path(spec).exists():
        parsed = parse_model_spec(spec)
        if parsed.provider == "embedded":
            return resolve_base("embedded")
        if parsed.provider != "local":
            raise TrainError(f"base model {spec!r}: only local models can be fine-tuned (embedded or local:<folder>)")
        return parsed.model, parsed.adapter
    return spec, None


def pick_device(config: TrainConfig) -> str:
    if config.device != "auto":
        return config.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(config: TrainConfig, device: str):
    """Base model + tokenizer, wrapped in a trainable LoRA adapter (a new one, or the spec's adapter)."""
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, adapter = resolve_base(config.base_model)
    bf16 = use_bf16(config, device)
    dtype = torch.bfloat16 if bf16 else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as exc:
        raise TrainError(f"base model {config.base_model}: cannot load {path}: {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    n_layers = getattr(model.config, "num_hidden_layers", None)
    if adapter:
        model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
    else:
        model = get_peft_model(model, config.lora.peft_config(n_layers))
    if use_checkpointing(config, device):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model, tokenizer, path, adapter


def use_bf16(config: TrainConfig, device: str) -> bool:
    if config.bf16 == "auto":
        return device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(config.bf16)


def use_checkpointing(config: TrainConfig, device: str) -> bool:
    if config.gradient_checkpointing == "auto":
        return device.startswith("cuda")
    return bool(config.gradient_checkpointing)


# --- items -----------------------------------------------------------------------------------------------------


def _lm_item(tokenizer, example: dict, max_length: int) -> dict[str, Any]:
    prompt_messages, reply = split_example(example["messages"])
    prompt = prompt_ids(tokenizer, prompt_messages)
    answer = reply_ids(tokenizer, prompt_messages, reply)
    if len(answer) > max_length - 16:
        answer = answer[: max_length - 16]
    room = max_length - len(answer)
    if len(prompt) > room:
        prompt = prompt[-room:]  # like the local backend: a prompt too long keeps its end
    return {"kind": "lm", "input_ids": prompt + answer, "n_prompt": len(prompt), "id": example["id"]}


def _choice_member(tokenizer, example: dict, max_length: int) -> dict[str, Any]:
    prompt_messages, _ = split_example(example["messages"])
    choices = example["target"]["choices"]
    dist = [float(x) for x in example["target"]["distribution"]]
    total = sum(dist)
    if len(choices) < 2 or len(dist) != len(choices) or not total > 0:
        raise TrainError(f"example {example['id']}: target needs >= 2 choices and a distribution over them")
    options = [reply_ids(tokenizer, prompt_messages, c) for c in choices]
    prompt = prompt_ids(tokenizer, prompt_messages)
    room = max_length - max(len(o) for o in options)
    if len(prompt) > room:
        prompt = prompt[-max(room, 1):]
    group = example["target"].get("group") or example["id"]
    return {"prompt": prompt, "options": options, "target": [d / total for d in dist], "group": group}


def build_items(examples: list[dict], tokenizer, config: TrainConfig) -> list[dict[str, Any]]:
    """Token-id items: one "lm" item per text example, one "choice" item per contrast group (split at max_group)."""
    items: list[dict[str, Any]] = []
    groups: dict[str, list[dict]] = defaultdict(list)
    for example in examples:
        if config.types is not None and example["type"] not in config.types:
            continue
        target = example.get("target")
        if target and target.get("choices"):
            if config.choice_weight == 0 and config.contrast_weight == 0:
                continue
            key = example.get("contrast") or f"single:{example['id']}"
            groups[key].append(_choice_member(tokenizer, example, config.max_length))
        else:
            if config.lm_weight == 0:
                continue
            items.append(_lm_item(tokenizer, example, config.max_length))
    for key, members in groups.items():
        for start in range(0, len(members), config.max_group):
            chunk = members[start:start + config.max_group]
            items.append({"kind": "choice", "members": chunk, "contrast": not key.startswith("single:"), "id": key})
    return items


class ItemDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[dict[str, Any]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


def collate(features: list[dict[str, Any]], pad_id: int = 0) -> dict[str, Any]:
    """One item per batch (items are already groups): lists of ids -> padded tensors."""
    item = features[0]
    if item["kind"] == "lm":
        ids = torch.tensor([item["input_ids"]], dtype=torch.long)
        return {"kind": "lm", "input_ids": ids, "n_prompt": torch.tensor(item["n_prompt"])}
    members = item["members"]
    g = len(members)
    k = max(len(m["options"]) for m in members)
    width = max(len(m["prompt"]) for m in members)
    prompts = torch.full((g, width), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((g, width), dtype=torch.long)
    for i, m in enumerate(members):
        prompts[i, width - len(m["prompt"]):] = torch.tensor(m["prompt"])
        prompt_mask[i, width - len(m["prompt"]):] = 1
    first = torch.zeros((g, k), dtype=torch.long)
    option_mask = torch.zeros((g, k), dtype=torch.bool)
    targets = torch.zeros((g, k), dtype=torch.float)
    n_options = torch.zeros(g, dtype=torch.long)
    rest_width = max(max(len(o) for o in m["options"]) for m in members) - 1
    rest = torch.full((g * k, max(rest_width, 0)), pad_id, dtype=torch.long)
    rest_mask = torch.zeros((g * k, max(rest_width, 0)), dtype=torch.long)
    for i, m in enumerate(members):
        n_options[i] = len(m["options"])
        for j, option in enumerate(m["options"]):
            first[i, j] = option[0]
            option_mask[i, j] = True
            targets[i, j] = m["target"][j]
            tail = option[1:]
            if tail:
                rest[i * k + j, : len(tail)] = torch.tensor(tail)
                rest_mask[i * k + j, : len(tail)] = 1
    groups = {name: n for n, name in enumerate(dict.fromkeys(m["group"] for m in members))}
    return {
        "kind": "choice", "prompts": prompts, "prompt_mask": prompt_mask, "first": first, "rest": rest,
        "rest_mask": rest_mask, "option_mask": option_mask, "targets": targets, "n_options": n_options,
        "group_ids": torch.tensor([groups[m["group"]] for m in members]),
        "contrast": torch.tensor(bool(item["contrast"])),
    }


# --- the objective ---------------------------------------------------------------------------------------------


def _option_sequences(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """[G*K, L] option tokens (first + rest) right-padded, with their mask."""
    g, k = batch["first"].shape
    first = batch["first"].reshape(g * k, 1)
    tokens = torch.cat([first, batch["rest"]], dim=1)
    valid = batch["option_mask"].reshape(g * k, 1).long()
    mask = torch.cat([valid, batch["rest_mask"]], dim=1)
    return tokens, mask


def option_scores(model, batch: dict[str, Any], shared: bool = True) -> torch.Tensor:
    """[G, K] log P(option k's whole reply | prompt g), summed over its tokens (the local backend's "sum")."""
    prompts, mask = batch["prompts"], batch["prompt_mask"]
    g, k = batch["first"].shape
    tokens, tmask = _option_sequences(batch)  # [G*K, L]
    length = tokens.shape[1]
    if shared:
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=prompts, attention_mask=mask, position_ids=positions, use_cache=True,
                    logits_to_keep=1)
        first_lp = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1).repeat_interleave(k, dim=0)  # [G*K, V]
        lp_first = first_lp.gather(1, tokens[:, :1])  # [G*K, 1]
        if length == 1:
            token_lp = lp_first
        else:
            cache = out.past_key_values
            cache.batch_repeat_interleave(k)
            inp = tokens[:, :-1]  # feed tokens 0..L-2, predict 1..L-1
            full_mask = torch.cat([mask.repeat_interleave(k, dim=0), tmask[:, :-1]], dim=1)
            start = mask.sum(-1, keepdim=True).repeat_interleave(k, dim=0)
            pos = start + torch.arange(length - 1, device=tokens.device)[None, :]
            out2 = model(input_ids=inp, attention_mask=full_mask, position_ids=pos, past_key_values=cache)
            lp = torch.log_softmax(out2.logits.float(), dim=-1)
            lp_rest = lp.gather(2, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)  # [G*K, L-1]
            token_lp = torch.cat([lp_first, lp_rest], dim=1)
    else:  # one full sequence per (prompt, option), left padded so every option ends at the last position
        rows, row_mask = [], []
        lens = tmask.sum(-1)
        width = prompts.shape[1] + length
        for r in range(g * k):
            p = prompts[r // k][mask[r // k].bool()]
            o = tokens[r][: int(lens[r])]
            seq = torch.cat([p, o])
            pad = width - seq.shape[0]
            rows.append(torch.cat([torch.zeros(pad, dtype=seq.dtype, device=seq.device), seq]))
            row_mask.append(torch.cat([torch.zeros(pad, dtype=torch.long, device=seq.device),
                                       torch.ones(seq.shape[0], dtype=torch.long, device=seq.device)]))
        ids, am = torch.stack(rows), torch.stack(row_mask)
        positions = (am.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=am, position_ids=positions, logits_to_keep=length + 1)
        lp = torch.log_softmax(out.logits[:, :-1, :].float(), dim=-1)  # predicts the last `length` tokens
        aligned = torch.zeros_like(tokens)
        amask = torch.zeros_like(tmask)
        for r in range(g * k):
            n = int(lens[r])
            if n:
                aligned[r, length - n:] = tokens[r, :n]
                amask[r, length - n:] = 1
        token_lp = lp.gather(2, aligned.unsqueeze(-1)).squeeze(-1) * amask
        return token_lp.sum(-1).reshape(g, k)
    return (token_lp * tmask).sum(-1).reshape(g, k)


def choice_loss(scores: torch.Tensor, batch: dict[str, Any], config: TrainConfig) -> tuple[torch.Tensor, dict]:
    valid = batch["option_mask"]
    targets = batch["targets"]
    logp = torch.log_softmax(scores.masked_fill(~valid, float("-inf")), dim=-1)
    safe = torch.where(valid, logp, torch.zeros_like(logp))
    t = targets
    kl = (t * (torch.log(t.clamp(min=1e-12)) - safe)).masked_fill(t <= 0, 0.0).sum(-1)  # [G]
    loss = config.choice_weight * kl.mean()
    metrics = {"kl": float(kl.mean().detach()),
               "choice_acc": float((safe.masked_fill(~valid, -1e9).argmax(-1) == t.argmax(-1)).float().mean())}
    p = safe.exp() * valid
    n = batch["n_options"].clamp(min=2).float()
    x = (torch.arange(valid.shape[1], device=p.device)[None, :].float() / (n[:, None] - 1)) * valid
    m_model = (p * x).sum(-1)
    m_human = (t * x).sum(-1)
    metrics["r"] = float(representativeness(p.detach(), t, valid).mean())
    if bool(batch["contrast"]) and p.shape[0] > 1:
        terms = []
        for a, b in combinations(range(p.shape[0]), 2):
            terms.append(((m_model[a] - m_model[b]) - (m_human[a] - m_human[b])) ** 2)
        contrast = torch.stack(terms).mean()
        loss = loss + config.contrast_weight * contrast
        metrics["contrast"] = float(contrast.detach())
    return loss, metrics


def representativeness(p: torch.Tensor, q: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """OpinionQA's R = 1 - W1/(K-1) with options at positions 0..K-1, per row."""
    cdf = (p.cumsum(-1) - q.cumsum(-1)).abs() * valid
    k = valid.sum(-1).clamp(min=2).float()
    return 1 - cdf.sum(-1) / (k - 1)


def lm_loss(model, batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
    ids = batch["input_ids"]
    n_prompt = int(batch["n_prompt"])
    n_reply = ids.shape[1] - n_prompt
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=n_reply + 1)
    logits = out.logits[:, :-1, :].float()  # positions n_prompt-1 .. L-2 predict the reply tokens
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, n_prompt:].reshape(-1))
    return loss, {"lm_loss": float(loss.detach())}


def item_loss(model, batch: dict[str, Any], config: TrainConfig, shared: bool = True) -> tuple[torch.Tensor, dict]:
    if batch["kind"] == "lm":
        loss, metrics = lm_loss(model, batch)
        return config.lm_weight * loss, metrics
    scores = option_scores(model, batch, shared=shared)
    return choice_loss(scores, batch, config)


@torch.no_grad()
def evaluate_items(model, items: list[dict[str, Any]], config: TrainConfig, pad_id: int, device: str,
                   shared: bool = True) -> dict[str, float | int]:
    """Mean validation metrics over items (lm_loss per text item; kl, choice accuracy, R, contrast per choice item)."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for item in items:
        batch = _to_device(collate([item], pad_id), device)
        _, metrics = item_loss(model, batch, config, shared=shared)
        for key, value in metrics.items():
            sums[key] += value
            counts[key] += 1
    if was_training:
        model.train()
    out: dict[str, float | int] = {key: round(sums[key] / counts[key], 5) for key in sums}
    out["items"] = len(items)
    return out


def _to_device(batch: dict[str, Any], device: str) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# --- the Trainer -----------------------------------------------------------------------------------------------


def _make_trainer_class():
    from transformers import Trainer

    class AssemblyTrainer(Trainer):
        """Trainer with the objective above; logs the objective's parts beside the loss."""

        loss_is_scaled_for_ga = False  # our loss is a per-item mean: let Trainer divide by the accumulation steps

        def __init__(self, *args, objective: TrainConfig, shared_prompt: bool, **kwargs):
            super().__init__(*args, **kwargs)
            self.objective = objective
            self.shared_prompt = shared_prompt
            self._parts: dict[str, list[float]] = defaultdict(list)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, metrics = item_loss(model, inputs, self.objective, shared=self.shared_prompt)
            for key, value in metrics.items():
                self._parts[key].append(value)
            return (loss, None) if return_outputs else loss

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs:
                for key, values in self._parts.items():
                    if values:
                        logs[key] = round(sum(values) / len(values), 5)
                self._parts.clear()
            super().log(logs, start_time)

    return AssemblyTrainer


def _callbacks(config: TrainConfig, progress: bool, history: list[dict], on_log: Callable[[dict], None] | None):
    from transformers import TrainerCallback

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                entry = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
                history.append(entry)
                if on_log is not None:
                    on_log(entry)

    class TimeLimit(TrainerCallback):
        def __init__(self, minutes: float):
            self.limit = minutes * 60
            self.started = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self.started is not None and time.perf_counter() - self.started >= self.limit:
                control.should_training_stop = True
                control.should_save = True

    class RichProgress(TrainerCallback):
        def __init__(self):
            self.bar = None
            self.task = None

        def on_train_begin(self, args, state, control, **kwargs):
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            from rich.progress import TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.description}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                console=Console(stderr=True))
            self.task = self.bar.add_task("", total=state.max_steps, completed=state.global_step)
            self.bar.start()

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is not None and logs and "loss" in logs:
                parts = [f"loss {logs['loss']:.4f}"] + [f"{k} {logs[k]:.3f}" for k in ("lm_loss", "kl", "contrast")
                                                        if k in logs]
                self.bar.update(self.task, description="  ".join(parts))

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.stop()
                self.bar = None

    callbacks = [Record()]
    if config.max_minutes:
        callbacks.append(TimeLimit(config.max_minutes))
    if progress:
        callbacks.append(RichProgress())
    return callbacks


def last_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def train(config: TrainConfig, *, progress: bool = True, on_log: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train a LoRA adapter as configured; write `output_dir/adapter` and the card; return the card."""
    from transformers import TrainingArguments, set_seed

    dataset_dir = Path(config.dataset)
    manifest = read_manifest(dataset_dir)
    train_examples = read_examples(dataset_dir, "train")
    valid_examples = read_examples(dataset_dir, "validation")
    if not train_examples:
        raise TrainError(f"{dataset_dir}: no training examples (train.jsonl is missing or empty)")
    if config.threads:
        torch.set_num_threads(config.threads)
    set_seed(config.seed)
    device = pick_device(config)
    output = Path(config.output_dir)
    checkpoints = output / "checkpoints"
    output.mkdir(parents=True, exist_ok=True)
    (output / "config.json").write_text(config.model_dump_json(indent=2), encoding="utf-8")

    model, tokenizer, base_path, base_adapter = load_model(config, device)
    items = build_items(train_examples, tokenizer, config)
    if not items:
        raise TrainError(f"{dataset_dir}: no training items for types {config.types}")
    rng = random.Random(config.seed)
    valid_items = build_items(valid_examples, tokenizer, config)
    valid_items = rng.sample(valid_items, min(len(valid_items), config.eval_max_items)) if valid_items else []
    pad_id = tokenizer.pad_token_id or 0
    checkpointing = use_checkpointing(config, device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # a cached prompt pass needs use_cache (off under gradient checkpointing) and two forwards per step (not DDP)
    shared = config.shared_prompt and not checkpointing and world == 1

    if device != "cpu":
        model.to(device)
    before = evaluate_adapter_off(model, valid_items, config, pad_id, device, shared) if valid_items else None

    args = TrainingArguments(
        output_dir=str(checkpoints),
        per_device_train_batch_size=1,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        lr_scheduler_type="linear",
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        bf16=use_bf16(config, device),
        use_cpu=device == "cpu",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )
    history: list[dict] = []
    trainer_cls = _make_trainer_class()
    trainer = trainer_cls(
        model=model, args=args, train_dataset=ItemDataset(items),
        data_collator=lambda features: collate(features, pad_id),
        callbacks=_callbacks(config, progress, history, on_log), objective=config, shared_prompt=shared,
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints every log dict on stdout, which belongs to --json
    resume_from = last_checkpoint(checkpoints) if config.resume else None
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    wall = time.perf_counter() - started
    after = evaluate_items(model, valid_items, config, pad_id, device, shared) if valid_items else None
    adapter_dir = output / "adapter"
    model.save_pretrained(str(adapter_dir))

    from finetune.card import write_card

    card = write_card(
        output=output, adapter_dir=adapter_dir, config=config, manifest=manifest, dataset_dir=dataset_dir,
        base_path=base_path, base_adapter=base_adapter, device=device, bf16=use_bf16(config, device),
        items=len(items), valid_items=len(valid_items), steps=trainer.state.global_step,
        resumed_from=resume_from, wall_s=wall, train_loss=result.training_loss, history=history,
        before=before, after=after, trainable=_trainable(model), shared_prompt=shared,
    )
    return card


def evaluate_adapter_off(model, items, config, pad_id, device, shared) -> dict[str, Any]:
    """The base model's numbers: the same evaluation with the adapter disabled."""
    with model.disable_adapter():
        return evaluate_items(model, items, config, pad_id, device, shared)


def _trainable(model) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_parameters": int(trainable), "total_parameters": int(total)}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count(), "torch": torch.__version__,
                            "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    try:
        import transformers
        import peft

        info["transformers"] = transformers.__version__
        info["peft"] = peft.__version__
    except ImportError:  # pragma: no cover
        pass
    return info


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value

