"""`assembly finetune prepare|train`: learn from recorded deliberations, real and simulated. Progress and errors on
stderr, results (or --json) on stdout. docs/finetune.md.

The engine never imports this package: these commands join the `assembly` CLI through the `assembly.commands` entry
point (pyproject.toml), which `assembly.cli.app` loads, the way `llm` plugins add commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from assembly.cli.console import err, out, print_json
from assembly.errors import AssemblyError


ALIGNMENT = "Deliberative alignment (--type deliberative-alignment)"  # the help panel of its options


class FinetuneCliError(AssemblyError):
    """A one-line error for the finetune commands."""


def _store(db: Optional[Path]):
    from transcripts import Store, StoreError

    try:
        return Store(db) if db is not None else Store()
    except StoreError as exc:
        raise FinetuneCliError(str(exc)) from None


def _csv(text: Optional[str]) -> Optional[list[str]]:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def _weights(values: Optional[list[str]]) -> dict[str, float]:
    weights = {}
    for value in values or []:
        source, sep, fraction = value.partition("=")
        try:
            weights[source.strip()] = float(fraction)
        except ValueError:
            sep = ""
        if not sep or not source.strip():
            raise FinetuneCliError(f"--weight {value!r}: expected KEY=FRACTION (SOURCE=FRACTION, e.g. delidata=0.2)")
    return weights


def prepare(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for train/validation/test JSONL, split.json "
                                          "and manifest.json.")] = Path(".assembly/sft"),
    db: Annotated[Optional[Path], typer.Option(help="The store to read (default: the default store).")] = None,
    real: Annotated[Optional[float], typer.Option(
        min=0.0, max=1.0, help="Share of imported-real examples in the train split, e.g. 0.5 (default: as found).")
    ] = None,
    types: Annotated[Optional[str], typer.Option(
        "--types", "--type",
        help="Comma-separated example types: juror_turn,ballot,moderator_turn,witness_turn,distilled_ballot; or "
             "deliberative-alignment (from --clause files, not the store's runs).")] = None,
    sources: Annotated[Optional[str], typer.Option(help="Only these sources (comma-separated).")] = None,
    weight: Annotated[Optional[list[str]], typer.Option(
        help="KEY=FRACTION: keep this fraction of the examples of a source, a type or source:type (repeatable), "
             "e.g. delidata=0.2 or delidata:ballot=0.")] = None,
    validation: Annotated[float, typer.Option(help="Fraction of questions held out for validation.")] = 0.1,
    test: Annotated[float, typer.Option(help="Fraction of questions held out for test.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed for the split, sampling and personas.")] = 0,
    survey_attributes: Annotated[str, typer.Option(
        help="Survey attributes to use (comma-separated, or 'all').")] = "party,ideology",
    survey_groups: Annotated[Optional[str], typer.Option(
        help="Only these survey panels, e.g. 'party=Democrat,party=Republican' (default: every group).")] = None,
    personas_per_group: Annotated[int, typer.Option(min=1, help="Jurors seated per survey (attribute, group).")] = 1,
    max_per_run: Annotated[int, typer.Option(min=1, help="Examples per run and type (sampled).")] = 40,
    shuffle_options: Annotated[bool, typer.Option(help="List a ballot example's options in a seeded order of its "
                                                       "own, so no position prior is learned.")] = True,
    distilled_prompt: Annotated[str, typer.Option(
        help="The distilled prompt distilled_ballot examples are written in: ballot, compact or brief (a question "
             "file's procedure.distilled_prompt, which the tuned model will be run with).")] = "ballot",
    include_distilled: Annotated[bool, typer.Option(
        help="Also read runs made by --mode distilled; their ballots, asked in another distilled prompt, teach "
             "distilled_ballot examples in --distilled-prompt what that prompt answered.")] = False,
    max_examples: Annotated[Optional[int], typer.Option(min=1, help="Cap on train examples.")] = None,
    split_file: Annotated[Optional[Path], typer.Option(
        help="Fixed splits: JSON {split: [question ids or texts]} (e.g. OpinionQA's by-wave split); other questions "
             "take the seeded split.")] = None,
    exclude_questions: Annotated[Optional[Path], typer.Option(
        help="Questions never used: JSONL with 'question' (+ 'split': rows not 'train' are excluded) or text lines.")
    ] = None,
    provenance: Annotated[str, typer.Option(
        help="Run provenances to read (comma-separated).")] = "simulated,imported-real",
    clause: Annotated[Optional[list[str]], typer.Option(
        help="A clause file (`assembly spec RUN -o clause.yaml`), or a run or study id in the store (repeatable).",
        rich_help_panel=ALIGNMENT)] = None,
    model: Annotated[str, typer.Option(help="The model writing candidates.", rich_help_panel=ALIGNMENT)] = "embedded",
    judge: Annotated[Optional[str], typer.Option(help="The model grading them against the clause (default: --model).",
                                                 rich_help_panel=ALIGNMENT)] = None,
    candidates: Annotated[int, typer.Option(help="Candidates per request (best-of-N).", rich_help_panel=ALIGNMENT)
                          ] = 4,
    scenarios: Annotated[int, typer.Option(help="User requests per clause.", rich_help_panel=ALIGNMENT)] = 2,
    max_tokens: Annotated[int, typer.Option(help="Tokens per candidate.", rich_help_panel=ALIGNMENT)] = 200,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON on stdout.")] = False,
) -> None:
    """Build a chat-format SFT dataset from the store, split by question and deliberation (or, with --type
    deliberative-alignment, from specification clauses: finetune/alignment.py)."""
    if (types or "").strip() == "deliberative-alignment":
        return _prepare_alignment(out_dir, db, clause, model, judge, candidates, scenarios, max_tokens, seed, json_out)
    if clause:
        raise FinetuneCliError("--clause goes with --type deliberative-alignment")
    from finetune.config import EXAMPLE_TYPES
    from finetune.dataset import (
        PrepareError,
        PrepareOptions,
        prepare_dataset,
        read_question_list,
        read_split_file,
    )
    from transcripts import StoreError

    try:
        options = PrepareOptions(
            types=tuple(_csv(types) or EXAMPLE_TYPES), real=real, validation=validation, test=test, seed=seed,
            provenances=tuple(_csv(provenance) or ()), sources=tuple(_csv(sources)) if sources else None,
            weights=_weights(weight),
            survey_attributes=None if survey_attributes.strip() == "all" else tuple(_csv(survey_attributes) or ()),
            survey_groups=tuple(_csv(survey_groups)) if survey_groups else None,
            personas_per_group=personas_per_group, max_per_run=max_per_run, max_examples=max_examples,
            shuffle_options=shuffle_options, distilled_prompt=distilled_prompt, include_distilled=include_distilled,
            exclude_questions=read_question_list(exclude_questions) if exclude_questions else (),
            splits=read_split_file(split_file) if split_file else {},
        )
        store = _store(db)
        with err.status("reading the store and building examples…"):
            manifest = prepare_dataset(store, out_dir, options)
    except (PrepareError, StoreError) as exc:
        raise FinetuneCliError(str(exc)) from None
    if json_out:
        print_json(manifest)
        return
    out.print(f"dataset written to [bold]{out_dir}[/]")
    for split, counts in manifest["examples"].items():
        share = manifest["real_share"].get(split)
        out.print(f"  {split}: {sum(counts.values())} examples {json.dumps(counts)}; real share "
                  f"{'—' if share is None else f'{share:.2f}'}", highlight=False)
    for name, s in manifest["sources"].items():
        flag = "  [red](restricted licence: internal use only)[/]" if s["restricted"] else ""
        out.print(f"  source {name}: {s['examples']} examples from {s['runs']} runs{flag}", highlight=False)


def _prepare_alignment(out_dir: Path, db: Optional[Path], clauses: Optional[list[str]], model: str,
                       judge: Optional[str], candidates: int, scenarios: int, max_tokens: int, seed: int,
                       json_out: bool) -> None:
    """`prepare --type deliberative-alignment`: clauses -> best-of-N graded SFT examples (finetune/alignment.py)."""
    from assembly.cli.store import _store as existing_store
    from finetune.alignment import EXAMPLE_TYPE, AlignmentOptions, prepare_alignment

    options = AlignmentOptions(clauses=tuple(clauses or ()), model=model, judge=judge, candidates=candidates,
                               scenarios=scenarios, seed=seed, max_tokens=max_tokens)
    options.check()  # before the status line: a bad option is one line, with no model loaded
    with err.status(f"writing {candidates} candidates per request with {model} and grading them…"):
        manifest = prepare_alignment(out_dir, options, open_store=lambda: existing_store(db))
    if json_out:
        print_json(manifest)
        return
    scores = manifest["scores"]
    out.print(f"deliberative-alignment data written to [bold]{out_dir}[/]: "
              f"{manifest['examples']['train'][EXAMPLE_TYPE]} examples from {len(manifest['clauses'])} clauses; "
              f"{manifest['candidates']['total']} candidates graded by {manifest['models']['judge']['name']} "
              f"(mean grade {scores['all_mean']}, chosen {scores['chosen_mean']})", highlight=False)
    if "embedded" in (model, options.judge_spec):
        err.print("[yellow]note:[/] on the embedded 135M model this is a plumbing demonstration: its candidates and "
                  "grades show the pipeline works, not that they are good", highlight=False)


def train(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Training config (YAML).")] = None,
    dataset: Annotated[Optional[Path], typer.Option(help="Prepared dataset folder.")] = None,
    base_model: Annotated[Optional[str], typer.Option(
        "--base-model", "-m", help="Base model spec: embedded, local:<folder>, local:<folder>+<adapter>.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output folder (adapter, card, "
                                                   "checkpoints).")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Optimizer steps (overrides epochs).")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Passes over the training items.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Sequences per forward pass.")] = None,
    max_batch_tokens: Annotated[Optional[int], typer.Option(help="Tokens per forward pass (bounds memory).")] = None,
    learning_rate: Annotated[Optional[float], typer.Option("--lr", help="Learning rate.")] = None,
    lora_r: Annotated[Optional[int], typer.Option(help="LoRA rank.")] = None,
    top_layers: Annotated[Optional[int], typer.Option(help="Adapt only the last N layers.")] = None,
    contrast_weight: Annotated[Optional[float], typer.Option(help="Weight of the persona-contrast term.")] = None,
    max_minutes: Annotated[Optional[float], typer.Option(help="Stop (and save) after this much training time.")
                           ] = None,
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads.")] = None,
    resume: Annotated[Optional[bool], typer.Option("--resume/--no-resume",
                                                   help="Continue from the last checkpoint (default: yes).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the card as JSON on stdout.")] = False,
) -> None:
    """Train a LoRA adapter on a prepared dataset; write the adapter and its card."""
    from finetune.config import ConfigError, TrainConfig, load_config
    from finetune.dataset import PrepareError

    try:
        base = load_config(config) if config is not None else TrainConfig()
        cfg = base.with_overrides(
            dataset=str(dataset) if dataset else None, base_model=base_model,
            output_dir=str(output) if output else None, max_steps=max_steps, epochs=epochs, batch_size=batch_size,
            max_batch_tokens=max_batch_tokens, learning_rate=learning_rate, contrast_weight=contrast_weight, max_minutes=max_minutes, threads=threads,
            resume=resume, lora={"r": lora_r, "top_layers": top_layers},
        )
    except ConfigError as exc:
        raise FinetuneCliError(str(exc)) from None
    try:
        from finetune.trainer import TrainError, train as run_training
    except ImportError as exc:
        raise FinetuneCliError(f"training needs the finetune extra ({exc.name} is missing): "
                               "pip install 'assembly-sim[finetune]'") from None
    try:
        card = run_training(cfg, progress=not json_out)
    except (TrainError, PrepareError) as exc:
        raise FinetuneCliError(str(exc)) from None
    if json_out:
        print_json(card)
        return
    tr = card["training"]
    out.print(f"adapter written to [bold]{card['adapter']}[/] ({tr['steps']} steps, {tr['wall_seconds']} s on "
              f"{tr['device']})", highlight=False)
    out.print(f"use it with: --model {card['model_spec']}", highlight=False, markup=False)
    ev = card["eval"]
    if ev["base"] and ev["tuned"]:
        for key in sorted(set(ev["base"]) & set(ev["tuned"]) - {"items"}):
            out.print(f"  validation {key}: {ev['base'][key]} -> {ev['tuned'][key]}", highlight=False)
    if not card["shippable"]:
        err.print("[yellow]note:[/] " + " ".join(card["restrictions"]), highlight=False)


def register(app: typer.Typer) -> None:
    """The `assembly.commands` entry point: add `assembly finetune prepare|train` to the CLI."""
    finetune_app = typer.Typer(help="Learn from recorded deliberations: build SFT data, train LoRA adapters.",
                               no_args_is_help=True)
    finetune_app.command("prepare")(prepare)
    finetune_app.command("train")(train)
    app.add_typer(finetune_app, name="finetune")
