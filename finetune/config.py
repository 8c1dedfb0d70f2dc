"""Training configuration: one object beside its trainer, LoRA settings in one place, loadable from YAML.

    base_model: embedded              # any local spec: embedded, local:<folder>, local:<folder>+<adapter>
    dataset: .assembly/sft            # a folder written by `assembly finetune prepare`
    output_dir: .assembly/finetune/my-run
    lora: {r: 16, alpha: 32, dropout: 0.05, top_layers: 8}
    learning_rate: 2.0e-4
    max_steps: 200
    gradient_accumulation: 8
    contrast_weight: 1.0

Unknown keys are rejected (with a "did you mean"), and errors name the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assembly.config import format_validation_error, read_yaml
from assembly.errors import AssemblyError

EXAMPLE_TYPES = ("juror_turn", "ballot", "moderator_turn", "witness_turn", "distilled_ballot")
LLAMA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class ConfigError(AssemblyError):
    """A training configuration is invalid; the message names the file and the field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSettings(Strict):
    """Every LoRA setting, here and nowhere else."""

    r: int = Field(16, ge=1, le=512)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: list(LLAMA_MODULES))
    # Adapt only the last N decoder layers (None: all). On a CPU this is the big saving: backpropagation stops at the
    # lowest adapted layer, so top_layers=8 of 30 costs about half of full-depth LoRA per step.
    top_layers: int | None = Field(None, ge=1)

    def peft_config(self, n_layers: int | None):
        from peft import LoraConfig

        layers = None
        if self.top_layers is not None and n_layers:
            layers = list(range(max(0, n_layers - self.top_layers), n_layers))
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), layers_to_transform=layers,
                          task_type="CAUSAL_LM", bias="none")


class TrainConfig(Strict):
    base_model: str = "embedded"
    dataset: str = ".assembly/sft"
    output_dir: str = ".assembly/finetune/run"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    types: list[Literal["juror_turn", "ballot", "moderator_turn", "witness_turn", "distilled_ballot",
                        "deliberative_alignment"]] | None = None

    learning_rate: float = Field(2e-4, gt=0)
    epochs: float = Field(3.0, gt=0)
    max_steps: int = -1  # > 0 overrides epochs
    # sequences per forward pass (ballot prompts or text examples; a contrast group is never split across batches)
    batch_size: int = Field(16, ge=1)
    # tokens per forward pass (prompts + options): bounds memory; a batch's activations are kept for the backward
    # pass, about 1-1.5 MB per token for the embedded model in fp32 (docs/finetune.md)
    max_batch_tokens: int | None = Field(2048, ge=16)
    gradient_accumulation: int = Field(2, ge=1)  # batches per optimizer step
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    optimizer: str = "adamw_torch"  # any transformers `optim` name (e.g. sgd, adamw_torch_fused, adafactor)
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(2048, ge=16)  # tokens per sequence; longer prompts lose their beginning
    max_group: int = Field(8, ge=1)  # prompts per contrast item (larger groups are split)

    # The objective: lm_weight x token cross-entropy on text replies; choice_weight x KL(target || model) over the
    # options of ballot examples (the model's option distribution as constrained choice computes it at run time);
    # contrast_weight x squared error between the model's and the humans' difference in mean answer position for
    # every pair of groups answering the same question (rewards persona contrast, not a flatter answer).
    lm_weight: float = Field(1.0, ge=0)
    choice_weight: float = Field(1.0, ge=0)
    contrast_weight: float = Field(1.0, ge=0)
    # Train what run time computes under neutral calibration (assembly.casting): the model's option distribution
    # divided by its own answer to the neutral prompt (no persona, no context) that the example carries
    # (target.prior_messages; distilled_ballot examples), gradients through both; examples without one keep
    # the plain distribution.
    calibrated: bool = False
    shared_prompt: bool = True  # score options over one cached prompt pass (off under gradient checkpointing)

    seed: int = 0
    device: str = "auto"  # auto: cuda when available, else cpu
    bf16: bool | Literal["auto"] = "auto"  # auto: on GPUs that support it and CPUs with native bf16
    gradient_checkpointing: bool | Literal["auto"] = "auto"  # auto: on GPU
    threads: int | None = Field(None, ge=1)
    save_steps: int = Field(50, ge=1)
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(1, ge=1)
    eval_max_items: int = Field(64, ge=0)  # validation examples scored before, after and per epoch (0: skip)
    eval_every_epoch: bool = True  # learning curves: validation metrics with and without the persona per epoch
    max_minutes: float | None = Field(None, gt=0)  # stop (and save) after this much training time
    resume: bool = True  # continue from the last checkpoint in output_dir/checkpoints when there is one

    def with_overrides(self, **overrides) -> "TrainConfig":
        data = self.model_dump()
        lora = overrides.pop("lora", None) or {}
        for key, value in overrides.items():
            if value is not None:
                data[key] = value
        data["lora"].update({k: v for k, v in lora.items() if v is not None})
        return parse_config(data, "overrides")


def parse_config(data: object, source: str = "<config>") -> TrainConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc, TrainConfig)) from None


def load_config(path: str | Path) -> TrainConfig:
    return parse_config(read_yaml(path, ConfigError), str(path))
