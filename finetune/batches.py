"""Training examples -> token-id items -> batches -> padded tensors.

* An "lm" item is one text example: prompt ids and reply ids (the loss is on the reply).
* A "choice" item is a group of ballot examples sharing a `contrast` key (groups answering the same question) or one
  ballot alone; each member holds its prompt ids, every option's reply ids and the target distribution, and the
  place of each listed option in the question's own order (`canon`: examples list options in shuffled orders).

`make_batches` packs items of one kind into batches of about `batch_size` sequences (choice: members, never splitting
a contrast group; lm: sequences grouped by length inside seeded mega-chunks, so little compute goes to padding).
`collate` turns one batch into left-padded tensors: every sequence ends at the last position, so a forward pass
computes logits only where the loss needs them (`logits_to_keep`).
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import torch

from assembly.layout import without_persona
from assembly.providers.chat import prompt_ids, reply_ids
from finetune.config import TrainConfig
from finetune.encoding import split_example

LENGTH_CHUNK = 16  # lm batches per mega-chunk sorted by length (as transformers' group_by_length)


class TrainError(ValueError):
    """Training cannot start (bad base model, empty dataset); the message is one line."""


def lm_item(tokenizer, example: dict, max_length: int) -> dict[str, Any]:
    prompt_messages, reply = split_example(example["messages"])
    prompt = prompt_ids(tokenizer, prompt_messages)
    answer = reply_ids(tokenizer, prompt_messages, reply)
    if len(answer) > max_length - 16:
        answer = answer[: max_length - 16]
    room = max_length - len(answer)
    if len(prompt) > room:
        prompt = prompt[-room:]  # like the local backend: a prompt too long keeps its end
    return {"kind": "lm", "prompt": prompt, "reply": answer, "id": example["id"]}


def _fit(prompt: list[int], options: list[list[int]], max_length: int) -> list[int]:
    room = max_length - max(len(o) for o in options)
    return prompt[-max(room, 1):] if len(prompt) > room else prompt


def choice_member(tokenizer, example: dict, max_length: int, persona: bool = True,
                  calibrated: bool = False) -> dict[str, Any]:
    """`calibrated`: also the token ids of the example's neutral prompt (target.prior_messages), when it has one."""
    prompt_messages, _ = split_example(example["messages"])
    if not persona:
        prompt_messages = without_persona(prompt_messages)
    target = example["target"]
    choices = target["choices"]
    dist = [float(x) for x in target["distribution"]]
    total = sum(dist)
    if len(choices) < 2 or len(dist) != len(choices) or not total > 0:
        raise TrainError(f"example {example['id']}: target needs >= 2 choices and a distribution over them")
    canon = list(target.get("order") or range(len(choices)))
    if sorted(canon) != list(range(len(choices))):
        raise TrainError(f"example {example['id']}: target.order must list each option's index once")
    options = [reply_ids(tokenizer, prompt_messages, c) for c in choices]
    member = {"prompt": _fit(prompt_ids(tokenizer, prompt_messages), options, max_length), "options": options,
              "target": [d / total for d in dist], "canon": canon, "group": target.get("group") or example["id"]}
    if calibrated and target.get("prior_messages"):
        prior = target["prior_messages"]
        if [reply_ids(tokenizer, prior, c) for c in choices] != options:
            raise TrainError(f"example {example['id']}: its options tokenize differently after the neutral prompt")
        member["prior"] = _fit(prompt_ids(tokenizer, prior), options, max_length)
    return member


def build_items(examples: list[dict], tokenizer, config: TrainConfig, *, persona: bool = True) -> list[dict[str, Any]]:
    """Token-id items: one "lm" item per text example, one "choice" item per contrast group (split at max_group).
    `persona=False`: the ballot prompts without the persona (the no-persona baseline; text examples left out)."""
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
            groups[key].append(choice_member(tokenizer, example, config.max_length, persona, config.calibrated))
        elif persona and config.lm_weight > 0:
            items.append(lm_item(tokenizer, example, config.max_length))
    for key, members in groups.items():
        for start in range(0, len(members), config.max_group):
            chunk = members[start:start + config.max_group]
            items.append({"kind": "choice", "members": chunk, "contrast": not key.startswith("single:"), "id": key})
    return items


def item_tokens(item: dict[str, Any]) -> int:
    """Tokens one item puts through the model: prompts, and (choice) every option's reply after each prompt."""
    if item["kind"] == "lm":
        return len(item["prompt"]) + len(item["reply"])
    return sum(len(m["prompt"]) + sum(len(o) for o in m["options"]) for m in item["members"])


def make_batches(items: list[dict[str, Any]], batch_size: int, seed: int | None = 0,
                 max_tokens: int | None = None) -> list[list[dict[str, Any]]]:
    """Items packed into batches of one kind, at most `batch_size` sequences and `max_tokens` tokens each (an item
    larger than either stands alone). `seed=None`: keep the items' order (evaluation); else shuffle with it (the
    Trainer then shuffles the batches every epoch)."""
    rng = random.Random(seed)
    lm = [i for i in items if i["kind"] == "lm"]
    choice = [i for i in items if i["kind"] == "choice"]
    if seed is not None:
        rng.shuffle(lm)
        rng.shuffle(choice)
    batches: list[list[dict[str, Any]]] = []
    chunk = batch_size * LENGTH_CHUNK
    for start in range(0, len(lm), chunk):
        part = lm[start:start + chunk]
        if seed is not None:
            part.sort(key=item_tokens)
        batches += _pack(part, batch_size, max_tokens)
    batches += _pack(choice, batch_size, max_tokens)
    if seed is not None:
        rng.shuffle(batches)
    return batches


def _pack(items: list[dict[str, Any]], batch_size: int, max_tokens: int | None) -> list[list[dict[str, Any]]]:
    """Consecutive items into batches under both limits (sequences: 1 per lm item, its members per choice item)."""
    batches: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = tokens = 0
    for item in items:
        n = len(item["members"]) if item["kind"] == "choice" else 1
        t = item_tokens(item)
        if current and (size + n > batch_size or (max_tokens is not None and tokens + t > max_tokens)):
            batches.append(current)
            current, size, tokens = [], 0, 0
        current.append(item)
        size, tokens = size + n, tokens + t
    if current:
        batches.append(current)
    return batches


def collate(items: list[dict[str, Any]], pad_id: int = 0) -> dict[str, Any]:
    """One batch (items of one kind) -> left-padded tensors."""
    if items[0]["kind"] == "lm":
        return _collate_lm(items, pad_id)
    return _collate_choice(items, pad_id)


def _collate_lm(items: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    rows = [i["prompt"] + i["reply"] for i in items]
    width = max(len(r) for r in rows)
    reply = max(len(i["reply"]) for i in items)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    reply_mask = torch.zeros((len(rows), reply), dtype=torch.bool)
    for r, (row, item) in enumerate(zip(rows, items)):
        ids[r, width - len(row):] = torch.tensor(row)
        mask[r, width - len(row):] = 1
        reply_mask[r, reply - len(item["reply"]):] = True
    return {"kind": "lm", "input_ids": ids, "attention_mask": mask, "reply_mask": reply_mask}


def _collate_choice(items: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    members = [m for item in items for m in item["members"]]
    g = len(members)
    k = max(len(m["options"]) for m in members)
    prompts, prompt_mask = _left_padded([m["prompt"] for m in members], pad_id)
    first = torch.zeros((g, k), dtype=torch.long)
    option_mask = torch.zeros((g, k), dtype=torch.bool)
    targets = torch.zeros((g, k), dtype=torch.float)
    canon = torch.arange(k).repeat(g, 1)
    n_options = torch.zeros(g, dtype=torch.long)
    rest_width = max(max(len(o) for o in m["options"]) for m in members) - 1
    rest = torch.full((g * k, max(rest_width, 0)), pad_id, dtype=torch.long)
    rest_mask = torch.zeros((g * k, max(rest_width, 0)), dtype=torch.long)
    for i, m in enumerate(members):
        n_options[i] = len(m["options"])
        canon[i, : len(m["canon"])] = torch.tensor(m["canon"])
        for j, option in enumerate(m["options"]):
            first[i, j] = option[0]
            option_mask[i, j] = True
            targets[i, j] = m["target"][j]
            tail = option[1:]
            if tail:
                rest[i * k + j, : len(tail)] = torch.tensor(tail)
                rest_mask[i * k + j, : len(tail)] = 1
    item_of = torch.tensor([n for n, item in enumerate(items) for _ in item["members"]])
    contrast = torch.tensor([bool(item["contrast"]) for item in items])
    batch = {
        "kind": "choice", "prompts": prompts, "prompt_mask": prompt_mask, "first": first, "rest": rest,
        "rest_mask": rest_mask, "option_mask": option_mask, "targets": targets, "n_options": n_options,
        "canon": canon, "item_of": item_of, "contrast": contrast[item_of],
    }
    if any("prior" in m for m in members):
        # Each distinct neutral prompt once (a question's jurors in one option order share it), scored with the
        # options of the first member that has it (the same listed options: choice_member checks their tokens);
        # members without one point at row 0 and are left uncalibrated.
        rows: dict[tuple[int, ...], int] = {}
        for i, m in enumerate(members):
            if "prior" in m:
                rows.setdefault(tuple(m["prior"]), i)
        order = list(rows)
        batch["prior_prompts"], batch["prior_prompt_mask"] = _left_padded([list(r) for r in order], pad_id)
        batch["prior_rows"] = torch.tensor(list(rows.values()))
        batch["prior_of"] = torch.tensor([order.index(tuple(m["prior"])) if "prior" in m else 0 for m in members])
        batch["calibrate"] = torch.tensor(["prior" in m for m in members])
    return batch


def _left_padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return ids, mask
