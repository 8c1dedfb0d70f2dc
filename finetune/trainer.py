"""`assembly finetune train`: LoRA (peft) on a prepared dataset, with transformers' Trainer and our own objective.

Why not TRL's SFTTrainer: two thirds of the signal here are ballots whose target is a distribution over options
(a survey sub-group's answers, a simulated juror's post-ballot) and pairs of groups whose answers should differ. That
needs a loss over groups of sequences (finetune.objective), which SFTTrainer's one-target-sequence-per-example design
does not express. (Its assistant-only loss also needs `{% generation %}` markers in the chat template, which
SmolLM2's template lacks.) transformers' Trainer still gives us checkpoints and resume, gradient accumulation, bf16,
the cosine schedule, gradient checkpointing and multi-GPU through accelerate.

The data loader yields whole batches (finetune.batches.make_batches: about `batch_size` sequences of one kind each),
so `per_device_train_batch_size` is 1 batch and an optimizer step sees `gradient_accumulation` batches. After every
epoch the validation items are scored with and without the persona (`EpochEval`): the learning curves in the card.
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
from pathlib import Path
from typing import Any

import torch

from finetune.batches import TrainError, build_items, collate, make_batches
from finetune.config import TrainConfig
from finetune.dataset import read_examples, read_manifest
from finetune.objective import batch_loss, evaluate_items

__all__ = ["TrainError", "evaluate_items", "last_checkpoint", "load_model", "train"]


class BatchDataset(torch.utils.data.Dataset):
    """The training batches, one per index (the Trainer shuffles their order every epoch)."""

    def __init__(self, batches: list[list[dict[str, Any]]]):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> list[dict[str, Any]]:
        return self.batches[index]


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
    """auto: bf16 mixed precision on GPUs that support it and on CPUs with native bf16 (as the local backend)."""
    if config.bf16 == "auto":
        if device == "cpu":
            from assembly.providers.hardware import cpu_has_fast_bf16

            return cpu_has_fast_bf16()
        return device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(config.bf16)


def use_checkpointing(config: TrainConfig, device: str) -> bool:
    if config.gradient_checkpointing == "auto":
        return device.startswith("cuda")
    return bool(config.gradient_checkpointing)


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
            self.epoch_parts: dict[str, list[float]] = defaultdict(list)  # read and cleared by EpochEval

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, metrics = batch_loss(model, inputs, self.objective, shared=self.shared_prompt)
            for key, value in metrics.items():
                self._parts[key].append(value)
                self.epoch_parts[key].append(value)
            return (loss, None) if return_outputs else loss

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs:
                for key, values in self._parts.items():
                    if values:
                        logs[key] = round(sum(values) / len(values), 5)
                self._parts.clear()
            super().log(logs, start_time)

    return AssemblyTrainer


def _epoch_eval_class():
    from transformers import TrainerCallback

    class EpochEval(TrainerCallback):
        """After each epoch: the epoch's mean training metrics, and the validation items scored with the persona
        and without it (persona effect = R with - R without)."""

        def __init__(self, evaluate: Callable[[Any], dict[str, Any]], curves: list[dict]):
            self.evaluate, self.curves = evaluate, curves
            self.trainer = None

        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            parts = self.trainer.epoch_parts if self.trainer is not None else {}
            entry = {"epoch": round(state.epoch or 0, 3), "step": state.global_step,
                     **{f"train_{k}": round(sum(v) / len(v), 5) for k, v in parts.items() if v}}
            parts.clear() if parts else None
            entry.update(self.evaluate(model))
            self.curves.append(entry)

    return EpochEval


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
    valid_examples = rng.sample(valid_examples, min(len(valid_examples), config.eval_max_items))
    valid_items = build_items(valid_examples, tokenizer, config)
    no_persona = build_items(valid_examples, tokenizer, config, persona=False)
    batches = make_batches(items, config.batch_size, seed=config.seed, max_tokens=config.max_batch_tokens)
    pad_id = tokenizer.pad_token_id or 0
    checkpointing = use_checkpointing(config, device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # a cached prompt pass needs use_cache (off under gradient checkpointing) and two forwards per step (not DDP)
    shared = config.shared_prompt and not checkpointing and world == 1

    if device != "cpu":
        model.to(device)
    before = None
    if valid_items:
        with model.disable_adapter():
            before = epoch_metrics(model, valid_items, no_persona, config, pad_id, device, shared)

    try:
        args = TrainingArguments(
            output_dir=str(checkpoints),
            per_device_train_batch_size=1,  # one prepared batch (make_batches)
            gradient_accumulation_steps=config.gradient_accumulation,
            learning_rate=config.learning_rate,
            num_train_epochs=config.epochs,
            max_steps=config.max_steps,
            warmup_steps=config.warmup_steps or config.warmup_ratio,  # a float below 1: a share of the steps
            weight_decay=config.weight_decay,
            max_grad_norm=config.max_grad_norm,
            lr_scheduler_type=config.lr_scheduler,
            optim=config.optimizer,
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
    except ValueError as exc:  # e.g. an unknown optimizer name
        raise TrainError(f"training arguments: {str(exc).splitlines()[0]}") from None
    history: list[dict] = []
    curves: list[dict] = []

    def evaluate_epoch(current) -> dict[str, Any]:
        return epoch_metrics(current, valid_items, no_persona, config, pad_id, device, shared)

    epoch_eval = _epoch_eval_class()(evaluate_epoch, curves) if valid_items and config.eval_every_epoch else None
    trainer_cls = _make_trainer_class()
    trainer = trainer_cls(
        model=model, args=args, train_dataset=BatchDataset(batches),
        data_collator=lambda features: collate(features[0], pad_id),
        callbacks=_callbacks(config, progress, history, on_log) + ([epoch_eval] if epoch_eval else []),
        objective=config, shared_prompt=shared,
    )
    if epoch_eval is not None:
        epoch_eval.trainer = trainer
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints every log dict on stdout, which belongs to --json
    resume_from = last_checkpoint(checkpoints) if config.resume else None
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    wall = time.perf_counter() - started
    after = epoch_metrics(model, valid_items, no_persona, config, pad_id, device, shared) if valid_items else None
    adapter_dir = output / "adapter"
    model.save_pretrained(str(adapter_dir))

    from finetune.card import write_card

    card = write_card(
        output=output, adapter_dir=adapter_dir, config=config, manifest=manifest, dataset_dir=dataset_dir,
        base_path=base_path, base_adapter=base_adapter, device=device, bf16=use_bf16(config, device),
        items=len(items), valid_items=len(valid_items), steps=trainer.state.global_step,
        resumed_from=resume_from, wall_s=wall, train_loss=result.training_loss, history=history,
        before=before, after=after, trainable=_trainable(model), shared_prompt=shared, curves=curves,
        throughput=throughput(items, batches, trainer.state, wall),
    )
    return card


def epoch_metrics(model, items, no_persona, config, pad_id, device, shared) -> dict[str, Any]:
    """Validation metrics with the persona, R without it, and the persona effect (R with - R without)."""
    found = evaluate_items(model, items, config, pad_id, device, shared)
    if no_persona:
        bare = evaluate_items(model, no_persona, config, pad_id, device, shared)
        if "r" in bare and "r" in found:
            found["r_no_persona"] = bare["r"]
            found["persona_effect"] = round(found["r"] - bare["r"], 5)
    return found


def throughput(items, batches, state, wall: float) -> dict[str, Any]:
    """Training examples (sequences) per second over the steps run; the wall time includes the per-epoch
    validation (benchmarks/finetune_throughput.py turns it off)."""
    per_epoch = sum(len(i["members"]) if i["kind"] == "choice" else 1 for i in items)
    epochs = state.epoch or 0.0
    seen = per_epoch * epochs
    return {"examples_per_epoch": per_epoch, "batches_per_epoch": len(batches), "epochs_run": round(epochs, 3),
            "examples_per_second": round(seen / wall, 3) if wall > 0 else None}


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

