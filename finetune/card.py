"""The adapter's card: what it was trained from and how, and what it scored — JSON for machines, Markdown for people.

Written to `output_dir/card.json` + `output_dir/CARD.md` and copied into the adapter folder (`card.json`,
`README.md`), so the adapter never travels without it. A dataset with a restricted source (e.g. OpinionQA: internal
evaluation only) marks the card `shippable: false` with the reason.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from assembly.layout import PROMPT_LAYOUT
from finetune.config import TrainConfig


def _sha_file(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_card(*, output: Path, adapter_dir: Path, config: TrainConfig, manifest: dict[str, Any], dataset_dir: Path,
               base_path: str, base_adapter: str | None, device: str, bf16: bool, items: int, valid_items: int,
               steps: int, resumed_from: str | None, wall_s: float, train_loss: float | None, history: list[dict],
               before: dict | None, after: dict | None, trainable: dict[str, int], shared_prompt: bool,
               curves: list[dict] | None = None, throughput: dict | None = None) -> dict[str, Any]:
    from finetune.trainer import finite, machine, now

    restricted = manifest.get("restricted_sources") or []
    card = {
        "schema": "assembly.finetune.card/1",
        "created": now(),
        "adapter": str(adapter_dir),
        "model_spec": f"local:{base_path}+{adapter_dir}",
        "base_model": {"spec": config.base_model, "path": base_path, "adapter": base_adapter,
                       "config_sha256": _sha_file(Path(base_path) / "config.json"),
                       "weights_sha256": _sha_file(Path(base_path) / "model.safetensors")},
        "data": {
            "dataset": str(dataset_dir),
            "files": manifest.get("files"),
            "examples": manifest.get("examples"),
            "real_share": manifest.get("real_share"),
            "provenance": manifest.get("provenance"),
            "sources": manifest.get("sources"),
            "mix_options": {k: manifest.get("options", {}).get(k) for k in ("real", "weights", "types", "seed",
                                                                            "validation", "test",
                                                                            "distilled_prompt")},
        },
        "hyperparameters": config.model_dump(mode="json"),
        "training": {"device": device, "bf16": bf16, "shared_prompt": shared_prompt, "items": items,
                     "steps": steps, "resumed_from": resumed_from, "wall_seconds": round(wall_s, 1),
                     "train_loss": finite(train_loss), **trainable, **(throughput or {})},
        "eval": {"validation_items": valid_items, "base": before, "tuned": after},
        "curves": curves or [],  # per epoch: mean train metrics, validation metrics with and without the persona
        "history": history[-200:],
        "machine": machine(),
        "prompt_layout": PROMPT_LAYOUT,  # the layout its prompts were built in (assembly.layout)
        "shippable": not restricted,
        "restrictions": [f"trained on {name}, whose licence allows internal use only: do not ship or publish this "
                         "adapter" for name in restricted],
    }
    text = json.dumps(card, indent=2, ensure_ascii=False, default=str)
    output.mkdir(parents=True, exist_ok=True)
    (output / "card.json").write_text(text, encoding="utf-8")
    markdown = render_markdown(card)
    (output / "CARD.md").write_text(markdown, encoding="utf-8")
    if adapter_dir.is_dir():
        (adapter_dir / "card.json").write_text(text, encoding="utf-8")
        (adapter_dir / "README.md").write_text(markdown, encoding="utf-8")
    return card


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "—" if value is None else str(value)


def render_markdown(card: dict[str, Any]) -> str:
    lines = ["# LoRA adapter card", "", f"Use it as `--model {card['model_spec']}`.", ""]
    if not card["shippable"]:
        lines += ["> **Not for release.** " + " ".join(card["restrictions"]), ""]
    base = card["base_model"]
    lines += ["## Base model", "", f"- spec: `{base['spec']}` ({base['path']})",
              f"- weights sha256: `{base['weights_sha256']}`", ""]
    data = card["data"]
    lines += ["## Data", "", f"- dataset: `{data['dataset']}`; real share (train): "
              f"{_fmt((data.get('real_share') or {}).get('train'))}", "",
              "| source | provenance | licence | runs | examples | sha256 |", "|---|---|---|---|---|---|"]
    for name, s in (data.get("sources") or {}).items():
        lines.append(f"| {name} | {', '.join(s['provenance'])} | {', '.join(s['license']) or '—'} | {s['runs']} | "
                     f"{s['examples']} | `{s['sha256'][:16]}…` |")
    lines += ["", "Examples per split and type: `" + json.dumps(data.get("examples")) + "`", ""]
    hp = card["hyperparameters"]
    lines += ["## Hyperparameters", "", f"- LoRA: `{json.dumps(hp['lora'])}`",
              f"- learning rate {hp['learning_rate']} ({hp.get('lr_scheduler', 'linear')}), "
              f"batch {hp.get('batch_size', 1)}, "
              f"gradient accumulation {hp['gradient_accumulation']}, "
              f"max steps {hp['max_steps']}, epochs {hp['epochs']}, max minutes {hp['max_minutes']}",
              f"- objective weights: lm {hp['lm_weight']}, choice {hp['choice_weight']}, contrast "
              f"{hp['contrast_weight']}", ""]
    tr = card["training"]
    rate = f"; {tr['examples_per_second']} examples/s" if tr.get("examples_per_second") else ""
    lines += ["## Training", "", f"- {tr['steps']} steps over {tr['items']} items{rate} in {tr['wall_seconds']} s on "
              f"{tr['device']} (bf16 {tr['bf16']}); trainable parameters {tr['trainable_parameters']:,} of "
              f"{tr['total_parameters']:,}; final train loss {_fmt(tr['train_loss'])}"
              + (f"; resumed from {tr['resumed_from']}" if tr["resumed_from"] else ""), ""]
    ev = card["eval"]
    if ev["base"] or ev["tuned"]:
        keys = sorted(set(ev["base"] or {}) | set(ev["tuned"] or {}))
        lines += ["## Validation (held-out questions and deliberations)", "", "| metric | base | tuned |",
                  "|---|---|---|"]
        for key in keys:
            lines.append(f"| {key} | {_fmt((ev['base'] or {}).get(key))} | {_fmt((ev['tuned'] or {}).get(key))} |")
        lines.append("")
    curves = card.get("curves") or []
    if curves:
        keys = [k for k in ("train_kl", "train_lm_loss", "kl", "r", "r_no_persona", "persona_effect", "steer",
                            "lm_loss") if any(k in c for c in curves)]
        lines += ["## Learning curves (per epoch; validation unless marked train)", "",
                  "| epoch | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for c in curves:
            lines.append(f"| {c['epoch']} | " + " | ".join(_fmt(c.get(k)) for k in keys) + " |")
        lines.append("")
    m = card["machine"]
    lines += ["## Machine", "", f"{m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']} "
              f"({m['torch_threads']} threads)" + (f", GPUs: {', '.join(m['cuda_devices'])}" if m.get("cuda_devices")
                                                  else ""), ""]
    return "\n".join(lines)
