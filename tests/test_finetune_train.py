"""`finetune train` on a tiny random Llama with a tokenizer trained in memory (no hub, no network):
prepare -> train a few steps (loss decreases) -> save -> reload base+adapter -> generate and score options;
resume from a checkpoint; the training objective scores options exactly as the local backend does at run time.
"""

from __future__ import annotations

import asyncio
import json
import math
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("tokenizers")

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assembly.layout import PROMPT_LAYOUT  # noqa: E402
from tests.fakes import build_tiny_llama  # noqa: E402
from tests.test_finetune_prepare import build_store  # noqa: E402

def tiny_model(folder, texts):
    return build_tiny_llama(folder, texts, max_positions=2048)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store with simulated, real and survey runs; a small prepared dataset; a tiny model that knows its words."""
    from finetune.dataset import PrepareOptions, prepare_dataset, read_examples

    tmp = tmp_path_factory.mktemp("train")
    store = build_store(tmp)
    prepare_dataset(store, tmp / "sft", PrepareOptions(validation=0.34, seed=1, max_per_run=3))
    texts = []
    for split in ("train", "validation"):
        for e in read_examples(tmp / "sft", split):
            texts += [m["content"] for m in e["messages"]]
            if e.get("target"):
                texts += e["target"]["choices"]
    torch.set_num_threads(1)
    return {"tmp": tmp, "dataset": tmp / "sft", "model": tiny_model(tmp / "tiny", texts)}


def config(world, name, **changes):
    from finetune.config import TrainConfig

    base = dict(base_model=f"local:{world['model']}", dataset=str(world["dataset"]),
                output_dir=str(world["tmp"] / name), max_steps=4, gradient_accumulation=1, learning_rate=1e-2,
                save_steps=2, eval_max_items=6, max_length=512, threads=1, bf16=False, lora={"r": 8, "alpha": 16,
                                                                                  "dropout": 0.0})
    base.update(changes)
    return TrainConfig.model_validate(base)


def test_encoding_matches_the_local_backend(world):
    from assembly.providers.chat import prompt_ids, reply_ids
    from assembly.providers.local import LocalModel
    from assembly.providers.types import Message
    from finetune.dataset import read_examples
    from finetune.encoding import split_example

    local = LocalModel(world["model"], dtype="float32").load()
    for e in read_examples(world["dataset"], "train")[:12]:
        prompt, reply = split_example(e["messages"])
        messages = [Message(**m) for m in prompt]
        assert prompt_ids(local.tokenizer, prompt) == local._prompt_ids(messages)[0]
        assert reply_ids(local.tokenizer, prompt, reply) == local._reply_ids(messages, reply)


def test_objective_scores_options_like_constrained_choice(world):
    """log-softmax of the trainer's option scores == the local backend's choice_logprobs, both scoring paths."""
    from assembly.providers.local import LocalModel
    from assembly.providers.types import GenerateRequest, Message
    from finetune.config import TrainConfig
    from finetune.dataset import read_examples
    from finetune.batches import build_items, collate
    from finetune.objective import option_scores

    local = LocalModel(world["model"], dtype="float32").load()
    examples = [e for e in read_examples(world["dataset"], "train") if e.get("contrast")][:3]
    assert examples
    items = [i for i in build_items(examples, local.tokenizer, TrainConfig()) if i["kind"] == "choice"]
    batch = collate([items[0]], local.tokenizer.pad_token_id)
    model = local.hf_model
    with torch.no_grad():
        shared = torch.log_softmax(option_scores(model, batch, shared=True), dim=-1)
        full = torch.log_softmax(option_scores(model, batch, shared=False), dim=-1)
    assert torch.allclose(shared, full, atol=1e-4)
    members = [e for e in examples if e["contrast"] == items[0]["id"]]
    for g, example in enumerate(members):
        request = GenerateRequest(messages=[Message(**m) for m in example["messages"][:-1]],
                                  choices=example["target"]["choices"])
        got = asyncio.run(local.generate(request)).choice_logprobs
        for k, option in enumerate(example["target"]["choices"]):
            assert shared[g, k].item() == pytest.approx(got[option], abs=1e-4)


def test_train_save_reload_generate_and_score(world):
    from assembly.providers import GenerateRequest, Message, load_model
    from finetune.dataset import read_examples
    from finetune.batches import build_items
    from finetune.objective import evaluate_items
    from finetune.trainer import load_model as load_trainable, train

    small = world["tmp"] / "small"
    if not small.exists():  # a few examples, each seen several times: the loss on them must fall
        from finetune.dataset import PrepareOptions, prepare_dataset
        from transcripts import Store

        prepare_dataset(Store(world["tmp"] / "store.duckdb"), small,
                        PrepareOptions(validation=0.34, seed=1, max_per_run=3, max_examples=6,
                                       types=("ballot", "juror_turn")))
    cfg = config(world, "run", max_steps=18, dataset=str(small))
    card = train(cfg, progress=False)
    adapter = world["tmp"] / "run" / "adapter"
    assert (adapter / "adapter_config.json").exists() and (adapter / "card.json").exists()
    assert card["training"]["steps"] == 18 and card["model_spec"] == f"local:{world['model']}+{adapter}"
    assert card["base_model"]["path"] == str(world["model"])
    assert card["data"]["sources"]["testsurvey"]["sha256"] and card["data"]["real_share"]["train"] is not None
    assert card["data"]["mix_options"]["distilled_prompt"] == "ballot"  # the prompt distilled examples are in
    assert card["shippable"] is False and "testsurvey" in card["restrictions"][0]
    assert card["hyperparameters"]["lora"]["r"] == 8 and card["machine"]["torch"]
    assert card["prompt_layout"] == PROMPT_LAYOUT  # a local model warns when it loads an adapter of another layout
    assert card["eval"]["base"]["items"] == card["eval"]["tuned"]["items"] > 0
    assert (world["tmp"] / "run" / "CARD.md").read_text().startswith("# LoRA adapter card")

    # the loss went down on what it trained on: the same items, adapter off vs on
    model, tokenizer, _, _ = load_trainable(cfg.with_overrides(base_model=f"local:{world['model']}+{adapter}"), "cpu")
    items = build_items(read_examples(small, "train"), tokenizer, cfg)
    with model.disable_adapter():
        before = evaluate_items(model, items, cfg, tokenizer.pad_token_id, "cpu")
    after = evaluate_items(model, items, cfg, tokenizer.pad_token_id, "cpu")
    assert after["lm_loss"] < before["lm_loss"]
    assert after["kl"] < before["kl"]

    # the tuned model runs through the ordinary local backend: local:<base>+<adapter>
    tuned = load_model(card["model_spec"], dtype="float32", threads=1)
    system = Message(role="system", content="You are a member of a citizens' jury.")

    async def run():
        try:
            return await asyncio.gather(
                tuned.generate(GenerateRequest(messages=[system, Message(role="user", content="Should the library "
                                                                                                "open on Sundays?")],
                                               max_tokens=6, seed=1)),
                tuned.generate(GenerateRequest(messages=[system, Message(role="user", content="Yes or No?")],
                                               choices=["Yes", "No"])))
        finally:
            await tuned.aclose()

    text, vote = asyncio.run(run())
    assert text.text.strip() and text.usage.output_tokens >= 1
    assert vote.choice in ("Yes", "No")
    assert sum(float(torch.tensor(v).exp()) for v in vote.choice_logprobs.values()) == pytest.approx(1.0)


def test_resume_from_last_checkpoint(world):
    from finetune.trainer import last_checkpoint, train

    first = train(config(world, "resume", max_steps=4), progress=False)
    folder = world["tmp"] / "resume" / "checkpoints"
    assert first["training"]["resumed_from"] is None
    assert last_checkpoint(folder).endswith("checkpoint-4")
    state = json.loads((folder / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    logged = []
    second = train(config(world, "resume", max_steps=6), progress=False, on_log=logged.append)
    assert second["training"]["resumed_from"].endswith("checkpoint-4")
    assert second["training"]["steps"] == 6
    assert [e["step"] for e in logged if "loss" in e] == [5, 6]  # only the new steps ran
    assert last_checkpoint(folder).endswith("checkpoint-6")
    fresh = train(config(world, "resume", max_steps=2, resume=False, output_dir=str(world["tmp"] / "fresh")),
                  progress=False)
    assert fresh["training"]["resumed_from"] is None and fresh["training"]["steps"] == 2


def test_train_config_yaml_and_cli_errors(world, tmp_path):
    import typer
    from typer.testing import CliRunner

    from finetune import cli
    from finetune.config import ConfigError, load_config

    good = tmp_path / "train.yaml"
    good.write_text(f"base_model: local:{world['model']}\ndataset: {world['dataset']}\nmax_steps: 1\n"
                    f"output_dir: {tmp_path / 'out'}\nlora: {{r: 4, top_layers: 1}}\ngradient_accumulation: 1\n"
                    "eval_max_items: 2\nmax_length: 512\n")
    cfg = load_config(good)
    assert cfg.lora.r == 4 and cfg.lora.peft_config(2).layers_to_transform == [1]
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora: {rank: 4}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: lora.rank: unknown key; expected one of r, alpha"):
        load_config(bad)
    bad.write_text("learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"learning_rat: unknown key \(did you mean 'learning_rate'\?\)"):
        load_config(bad)
    bad.write_text("learning_rate: -1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(bad)
    bad.write_text("lora: [oops\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+, column \d+: malformed YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="missing.yaml: file not found"):
        load_config(tmp_path / "missing.yaml")

    app = typer.Typer()
    app.command("prepare")(cli.prepare)
    app.command("train")(cli.train)
    result = CliRunner().invoke(app, ["train", "--config", str(good), "--json"])
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)
    assert card["training"]["steps"] == 1 and card["hyperparameters"]["lora"]["top_layers"] == 1
    missing = CliRunner().invoke(app, ["train", "--config", str(good), "--dataset", str(tmp_path / "nothing")])
    assert isinstance(missing.exception, cli.FinetuneCliError) and "manifest.json" in str(missing.exception)


def test_training_needs_no_store_engine():
    """A prepared folder is all training reads: the trainer runs where DuckDB is not installed (e.g. a GPU box)."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['duckdb'] = None; import finetune.trainer, finetune.dataset; "
            "print('transcripts' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def _subset(world, name, keep):
    """A dataset folder holding the training examples `keep` picks (the world's manifest, no validation)."""
    import shutil

    from finetune.dataset import read_examples

    folder = world["tmp"] / name
    folder.mkdir(exist_ok=True)
    shutil.copy(world["dataset"] / "manifest.json", folder / "manifest.json")
    chosen = keep(read_examples(world["dataset"], "train"))
    (folder / "train.jsonl").write_text("".join(json.dumps(e) + "\n" for e in chosen))
    (folder / "validation.jsonl").write_text("")
    return folder, chosen


def _adapter_weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter" / "adapter_model.safetensors"))


def test_gradient_accumulation_of_two_half_batches_equals_one_batch(world):
    """One optimizer step: 2 accumulated batches of 2 ballots == 1 batch of the same 4 ballots."""
    from finetune.trainer import train

    def four_singles(examples):
        ballots = [dict(e, contrast=None) for e in examples if e.get("target")][:4]
        assert len(ballots) == 4
        return ballots

    data, _ = _subset(world, "ga-data", four_singles)
    # plain SGD: Adam's first step is lr * sign(gradient), which would hide a wrongly scaled gradient
    common = dict(dataset=str(data), max_steps=1, eval_max_items=0, learning_rate=5.0, warmup_ratio=0.0,
                  save_steps=100, optimizer="sgd", max_grad_norm=1e9)
    one = train(config(world, "ga1", batch_size=4, gradient_accumulation=1, **common), progress=False)
    two = train(config(world, "ga2", batch_size=2, gradient_accumulation=2, **common), progress=False)
    train(config(world, "ga-half", batch_size=2, gradient_accumulation=1, **common), progress=False)
    assert one["training"]["steps"] == two["training"]["steps"] == 1
    a, b, c = (_adapter_weights(world["tmp"] / n) for n in ("ga1", "ga2", "ga-half"))
    moved = [k for k in a if "lora_B" in k and a[k].abs().max() > 0]
    assert moved  # the step changed the adapter
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    # and the comparison can fail: one batch of half the data is a different step
    assert any(not torch.allclose(a[k], c[k], atol=1e-6) for k in moved)


def test_batched_losses_equal_one_at_a_time(world):
    """Left padding, positions and masks: a batch's lm loss and KL equal the means of the items scored alone."""
    from assembly.providers.local import LocalModel
    from finetune.batches import build_items, collate, make_batches
    from finetune.config import TrainConfig
    from finetune.dataset import read_examples
    from finetune.objective import batch_loss

    local = LocalModel(world["model"], dtype="float32").load()
    cfg = TrainConfig(max_length=512)
    items = build_items(read_examples(world["dataset"], "train"), local.tokenizer, cfg)
    pad = local.tokenizer.pad_token_id
    for kind, metric in (("lm", "lm_loss"), ("choice", "kl")):
        chosen = [i for i in items if i["kind"] == kind and (kind == "lm" or not i["contrast"])][:4]
        assert len(chosen) >= 2
        lengths = {len(i["prompt"]) for i in chosen} if kind == "lm" else {len(i["members"][0]["prompt"]) for i in chosen}
        assert len(lengths) > 1  # the batch really pads
        with torch.no_grad():
            _, together = batch_loss(local.hf_model, collate(chosen, pad), cfg)
            alone = [batch_loss(local.hf_model, collate([i], pad), cfg)[1][metric] for i in chosen]
        assert together[metric] == pytest.approx(sum(alone) / len(alone), abs=1e-4)
    batches = make_batches(items, 3, seed=1)
    assert sorted(id(i) for b in batches for i in b) == sorted(id(i) for i in items)  # every item, once
    assert all(len({i["kind"] for i in b}) == 1 for b in batches)
    for b in batches:  # a contrast group is never split, and only a group larger than the batch stands alone
        if b[0]["kind"] == "choice":
            assert sum(len(i["members"]) for i in b) <= 3 or len(b) == 1
    from finetune.batches import item_tokens

    capped = make_batches(items, 100, seed=1, max_tokens=400)  # the token budget bounds a batch's memory
    assert all(sum(item_tokens(i) for i in b) <= 400 or len(b) == 1 for b in capped)
    assert len(capped) > len(make_batches(items, 100, seed=1))


def test_canonical_order_keeps_r_and_the_contrast_term_order_free():
    """Options listed in another order (target.order) give the same R, contrast and steer as the question's order."""
    from finetune.config import TrainConfig
    from finetune.objective import choice_loss

    human = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    model = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    base = {"option_mask": torch.ones(2, 3, dtype=torch.bool), "n_options": torch.tensor([3, 3]),
            "item_of": torch.tensor([0, 0]), "contrast": torch.tensor([True, True])}
    plain = choice_loss(model.log(), {**base, "targets": human, "canon": torch.tensor([[0, 1, 2], [0, 1, 2]])},
                        TrainConfig())[1]
    order = torch.tensor([[2, 0, 1], [1, 2, 0]])  # listed option j is the question's option order[j]
    listed = lambda x: torch.stack([x[g][order[g]] for g in range(2)])  # noqa: E731
    shuffled = choice_loss(listed(model).log(), {**base, "targets": listed(human), "canon": order},
                           TrainConfig())[1]
    for key in ("kl", "r", "contrast", "steer"):
        assert shuffled[key] == pytest.approx(plain[key], abs=1e-5), key
    assert plain["steer"] > 0  # each member's answer is nearer its own group's than the other's
    wrong = choice_loss(listed(model).log(), {**base, "targets": listed(human),
                                              "canon": torch.tensor([[0, 1, 2], [0, 1, 2]])}, TrainConfig())[1]
    assert wrong["r"] != pytest.approx(plain["r"], abs=1e-3)  # ignoring the order would measure the wrong thing


def test_learning_curves_per_epoch_in_the_card(world):
    from finetune.trainer import train

    card = train(config(world, "curves", max_steps=-1, epochs=2, batch_size=8, eval_max_items=8), progress=False)
    curves = card["curves"]
    assert [round(c["epoch"]) for c in curves] == [1, 2]
    for c in curves:
        assert {"r", "kl", "r_no_persona", "persona_effect", "train_kl"} <= set(c)
        assert c["persona_effect"] == pytest.approx(c["r"] - c["r_no_persona"], abs=1e-4)
    assert card["training"]["examples_per_second"] > 0 and card["training"]["epochs_run"] == pytest.approx(2.0)
    assert "## Learning curves" in (world["tmp"] / "curves" / "CARD.md").read_text()


def test_calibrated_scores_divide_by_the_neutral_answer_and_renormalise():
    """KL on p/q renormalised (rows flagged), on p alone (rows not), over the valid options only."""
    from finetune.config import TrainConfig
    from finetune.objective import calibrated_scores, choice_loss

    p = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.4, 0.0]])
    q = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.8, 0.0]])
    t = torch.tensor([[0.2, 0.3, 0.5], [0.5, 0.5, 0.0]])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    batch = {"option_mask": valid, "targets": t, "canon": torch.tensor([[0, 1, 2], [0, 1, 2]]),
             "n_options": torch.tensor([3, 2]), "item_of": torch.tensor([0, 1]), "contrast": torch.tensor([False, False])}
    scores = (p + 1e-9).log() + 3.0  # unnormalised, as option scores are
    prior = (q + 1e-9).log() - 1.0

    def kl(target, model):
        keep = target > 0
        return float((target[keep] * (target[keep].log() - model[keep].log())).sum())

    for rows, row0 in ((torch.tensor([True, False]), (p[0] / q[0]) / (p[0] / q[0]).sum()),
                       (torch.tensor([False, False]), p[0])):
        got = choice_loss(calibrated_scores(scores, prior, valid, rows), batch, TrainConfig())[1]["kl"]
        assert got == pytest.approx((kl(t[0], row0) + kl(t[1, :2], p[1, :2])) / 2, abs=1e-5)


def test_calibrated_training_scores_what_a_calibrated_ballot_uses(world):
    """With `calibrated`, a member's distribution is the local backend's answer to its prompt divided by its answer to
    the example's neutral prompt (target.prior_messages), renormalised: what neutral calibration computes."""
    from assembly.providers.local import LocalModel
    from assembly.providers.types import GenerateRequest, Message
    from finetune.batches import build_items, collate
    from finetune.config import TrainConfig
    from finetune.dataset import read_examples
    from finetune.objective import batch_loss, calibrated_option_scores

    local = LocalModel(world["model"], dtype="float32").load()
    examples = [e for e in read_examples(world["dataset"], "train") if e.get("target")][:3]
    assert examples
    for e in examples:  # a neutral prompt of its own: the same ballot, with the persona message left out
        e["target"]["prior_messages"] = [m for m in e["messages"][:-1] if "Who you are" not in m["content"]]
    twin = json.loads(json.dumps(examples[0]))  # another juror of the same ballot: the same neutral prompt
    twin["id"] += ":twin"
    persona = next(m for m in twin["messages"] if "Who you are" in m["content"])
    persona["content"] += " " + persona["content"]
    examples.append(twin)
    pad = local.tokenizer.pad_token_id
    plain = collate(build_items(examples, local.tokenizer, TrainConfig()), pad)
    assert "prior_prompts" not in plain
    batch = collate(build_items(examples, local.tokenizer, TrainConfig(calibrated=True)), pad)
    assert bool(batch["calibrate"].all()) and not torch.equal(batch["prior_prompts"], batch["prompts"])
    distinct = {tuple(m["prior"]) for i in build_items(examples, local.tokenizer, TrainConfig(calibrated=True))
                for m in i["members"]}
    assert batch["prior_prompts"].shape[0] == len(distinct) < len(examples)  # each neutral prompt scored once
    with torch.no_grad():
        got = torch.softmax(calibrated_option_scores(local.hf_model, batch), dim=-1)
        kl = batch_loss(local.hf_model, batch, TrainConfig(calibrated=True))[1]["kl"]  # the loss uses them
    t = batch["targets"]
    assert kl == pytest.approx(float((t * (t.clamp(min=1e-12).log() - got.clamp(min=1e-12).log())).sum(-1).mean()),
                               abs=1e-4)
    by_prompt = {tuple(build_items([e], local.tokenizer, TrainConfig())[0]["members"][0]["prompt"]): e
                 for e in examples}
    for g in range(got.shape[0]):
        example = by_prompt[tuple(batch["prompts"][g][batch["prompt_mask"][g].bool()].tolist())]
        choices = example["target"]["choices"]

        def answer(messages):
            request = GenerateRequest(messages=[Message(**m) for m in messages], choices=choices)
            return {o: math.exp(v) for o, v in asyncio.run(local.generate(request)).choice_logprobs.items()}

        p, q = answer(example["messages"][:-1]), answer(example["target"]["prior_messages"])
        ratio = {o: p[o] / q[o] for o in choices}
        for k, option in enumerate(choices):
            assert got[g, k].item() == pytest.approx(ratio[option] / sum(ratio.values()), abs=1e-4)
