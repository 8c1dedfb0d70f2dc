"""The training objective and its evaluation, on collated batches (finetune.batches).

* lm: mean token cross-entropy over each assistant reply (prompt tokens masked), averaged over the batch's
  sequences; logits are computed only over the replies.
* choice: the model's distribution over a ballot's K options is computed exactly as constrained choice computes it
  at run time (assembly.providers.local: the sum of each option's reply-token log-probabilities, renormalised over
  the options). loss = choice_weight * mean forward KL(target || model) + contrast_weight * mean over pairs of
  members of one contrast group of ((m_model(a) - m_model(b)) - (m_human(a) - m_human(b)))^2, with m the mean answer
  position on 0..1 in the question's own option order. The contrast term rewards a Democrat and a Republican persona
  answering as differently as real Democrats and Republicans do, which a flatter answer shape cannot fake.
  With `calibrated`, the model's distribution is first divided by its answer to the example's neutral prompt and
  renormalised, as neutral calibration does at run time, so the tuned model is trained on what the ballot uses.

Every loss is a mean over the batch's sequences, so gradient accumulation over n batches of b equals one batch of
n*b (tests/test_finetune_batches.py).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from finetune.batches import collate, make_batches
from finetune.config import TrainConfig


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
        return (token_lp * tmask).sum(-1).reshape(g, k)
    # one full sequence per (prompt, option), left padded so every option ends at the last position
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


def _canonical(x: torch.Tensor, canon: torch.Tensor) -> torch.Tensor:
    """Values listed in each prompt's order -> the question's own option order."""
    return torch.zeros_like(x).scatter(1, canon, x)


def representativeness(p: torch.Tensor, q: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """OpinionQA's R = 1 - W1/(K-1) with options at positions 0..K-1 (in the question's order), per row."""
    cdf = (p.cumsum(-1) - q.cumsum(-1)).abs() * valid
    k = valid.sum(-1).clamp(min=2).float()
    return 1 - cdf.sum(-1) / (k - 1)


def choice_loss(scores: torch.Tensor, batch: dict[str, Any], config: TrainConfig) -> tuple[torch.Tensor, dict]:
    valid = batch["option_mask"]
    t = batch["targets"]
    logp = torch.log_softmax(scores.masked_fill(~valid, float("-inf")), dim=-1)
    safe = torch.where(valid, logp, torch.zeros_like(logp))
    kl = (t * (torch.log(t.clamp(min=1e-12)) - safe)).masked_fill(t <= 0, 0.0).sum(-1)  # [G]
    loss = config.choice_weight * kl.mean()
    metrics = {"kl": float(kl.mean().detach()),
               "choice_acc": float((safe.masked_fill(~valid, -1e9).argmax(-1) == t.argmax(-1)).float().mean())}
    canon = batch["canon"]
    p = _canonical(safe.exp() * valid, canon)
    h = _canonical(t, canon)
    v = _canonical(valid.float(), canon)
    n = batch["n_options"].clamp(min=2).float()
    x = (torch.arange(valid.shape[1], device=p.device)[None, :].float() / (n[:, None] - 1)) * v
    m_model, m_human = (p * x).sum(-1), (h * x).sum(-1)
    metrics["r"] = float(representativeness(p.detach(), h, v).mean())
    same = batch["item_of"][:, None] == batch["item_of"][None, :]
    pairs = same & batch["contrast"][:, None] & ~torch.eye(len(m_model), dtype=torch.bool, device=p.device)
    if bool(pairs.any()):
        diff = (m_model[:, None] - m_model[None, :]) - (m_human[:, None] - m_human[None, :])
        contrast = (diff ** 2)[pairs].mean()  # each unordered pair twice: the same mean
        loss = loss + config.contrast_weight * contrast
        metrics["contrast"] = float(contrast.detach())
        # steerability: how much better member a's answer matches its own group than another group of its question
        cdf_p, cdf_h = p.detach().cumsum(-1), h.cumsum(-1)
        cross = 1 - ((cdf_p[:, None, :] - cdf_h[None, :, :]).abs() * v[:, None, :]).sum(-1) / (n[:, None] - 1)
        own = cross.diagonal()
        metrics["steer"] = float((own[:, None] - cross)[pairs].mean())
    return loss, metrics


def lm_loss(model, batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
    ids, mask, reply_mask = batch["input_ids"], batch["attention_mask"], batch["reply_mask"]
    n_reply = reply_mask.shape[1]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=n_reply + 1)
    logits = out.logits[:, :-1, :].float()  # predicts the last n_reply tokens
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, -n_reply:], reduction="none")
    per_sequence = (ce * reply_mask).sum(-1) / reply_mask.sum(-1).clamp(min=1)
    loss = per_sequence.mean()
    return loss, {"lm_loss": float(loss.detach())}


def calibrated_scores(scores: torch.Tensor, prior: torch.Tensor, valid: torch.Tensor,
                      rows: torch.Tensor) -> torch.Tensor:
    """[G, K] log option distributions divided by the neutral prompt's (rows where `rows`; the others as given),
    unnormalised: choice_loss renormalises, as assembly.casting's calibration does."""
    lp = torch.log_softmax(scores.masked_fill(~valid, float("-inf")), dim=-1)
    lq = torch.log_softmax(prior.masked_fill(~valid, float("-inf")), dim=-1)
    divided = torch.where(valid, lp - lq.masked_fill(~valid, 0.0), torch.full_like(lp, float("-inf")))
    return torch.where(rows[:, None], divided, scores)


def batch_loss(model, batch: dict[str, Any], config: TrainConfig, shared: bool = True) -> tuple[torch.Tensor, dict]:
    if batch["kind"] == "lm":
        loss, metrics = lm_loss(model, batch)
        return config.lm_weight * loss, metrics
    return choice_loss(calibrated_option_scores(model, batch, shared=shared), batch, config)


def calibrated_option_scores(model, batch: dict[str, Any], shared: bool = True) -> torch.Tensor:
    """option_scores, divided by the neutral prompts' (each distinct one scored once) where the batch has them."""
    scores = option_scores(model, batch, shared=shared)
    if "prior_prompts" not in batch:
        return scores
    rows, k = batch["prior_rows"], batch["first"].shape[1]
    per_member = batch["rest"].shape[1]
    view = {"prompts": batch["prior_prompts"], "prompt_mask": batch["prior_prompt_mask"], "first": batch["first"][rows],
            "option_mask": batch["option_mask"][rows],
            "rest": batch["rest"].reshape(-1, k, per_member)[rows].reshape(-1, per_member),
            "rest_mask": batch["rest_mask"].reshape(-1, k, per_member)[rows].reshape(-1, per_member)}
    prior = option_scores(model, view, shared=shared)[batch["prior_of"]]
    return calibrated_scores(scores, prior, batch["option_mask"], batch["calibrate"])


def batch_size_of(batch: dict[str, Any]) -> int:
    return int(batch["input_ids"].shape[0] if batch["kind"] == "lm" else batch["prompts"].shape[0])


def to_device(batch: dict[str, Any], device: str) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def evaluate_items(model, items: list[dict[str, Any]], config: TrainConfig, pad_id: int, device: str,
                   shared: bool = True) -> dict[str, float | int]:
    """Validation metrics over items in batches of `config.batch_size`, each weighted by its sequences (lm_loss per
    text example; kl, choice accuracy, R, contrast and steer per ballot)."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = defaultdict(float)
    weights: dict[str, int] = defaultdict(int)
    for batch_items in make_batches(items, config.batch_size, seed=None, max_tokens=config.max_batch_tokens):
        batch = to_device(collate(batch_items, pad_id), device)
        _, metrics = batch_loss(model, batch, config, shared=shared)
        n = batch_size_of(batch)
        for key, value in metrics.items():
            sums[key] += value * n
            weights[key] += n
    if was_training:
        model.train()
    out: dict[str, float | int] = {key: round(sums[key] / weights[key], 5) for key in sums}
    out["items"] = len(items)
    return out
