"""`assembly eval survey FILE.csv`: score how well simulated sub-groups answer like the real ones (docs/fidelity.md)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from assembly.casting import MAX_OPTION_ORDERS
from assembly.config import DEFAULT_CALIBRATION, DEFAULT_OPTION_ORDERS
from assembly.errors import AssemblyError

MODES = ("ballot", "assembly")


def _split_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def survey(
    file: Annotated[Path, typer.Argument(help="Survey distributions in FORMAT 1 (CSV, optionally .gz).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model spec for the jurors.")] = "embedded",
    attributes: Annotated[Optional[str], typer.Option(
        "--attributes", "-a", help="Comma-separated attributes to evaluate, e.g. party,ideology (default: all).")
    ] = None,
    groups: Annotated[Optional[str], typer.Option(
        help="Comma-separated group labels to keep within those attributes, e.g. 'Democrat,Republican'.")] = None,
    questions: Annotated[Optional[str], typer.Option(
        "--questions", "-q", help="A number N (seeded sample of N questions) or comma-separated question ids.")] = None,
    split: Annotated[Optional[Path], typer.Option(help="Split file (JSON: split name -> question ids).")] = None,
    split_name: Annotated[str, typer.Option(help="Which split of --split to evaluate.")] = "validation",
    jurors_per_group: Annotated[int, typer.Option(
        "--jurors-per-group", "-n", min=1, help="Simulated jurors seated per (attribute, group).")] = 10,
    seed: Annotated[int, typer.Option(help="Seed for the question sample, juror draws, personas and ballots.")] = 0,
    mode: Annotated[str, typer.Option(
        help="ballot: one private ballot per juror; assembly: a mini-assembly per (question, group), post ballots.")
    ] = "ballot",
    population: Annotated[str, typer.Option(help="Population frame the jurors are drawn from.")] = "us_adults",
    meta: Annotated[Optional[Path], typer.Option(
        help="questions_meta.csv with nominal flags / exact ordinals (default: questions_meta.csv beside FILE, "
             "if present).")] = None,
    exact_ordinals: Annotated[bool, typer.Option(
        help="Use the exact ordinal values from --meta for W1 instead of positions 0..K-1.")] = False,
    baselines: Annotated[bool, typer.Option(
        help="Also run the model baselines: jurors from the whole population, and a prompt without persona.")] = True,
    rounds: Annotated[int, typer.Option(min=0, help="--mode assembly: deliberation rounds.")] = 1,
    max_concurrency: Annotated[int, typer.Option(
        min=0, help="Cap on model calls in flight (0: all calls of a question at once).")] = 0,
    option_orders: Annotated[int, typer.Option(
        help=f"Scoring backends: score each ballot under N orders of the options (1..{MAX_OPTION_ORDERS}) and "
             "average, so the option listed first gains nothing by its place (N model calls per ballot).")
    ] = DEFAULT_OPTION_ORDERS,
    calibration: Annotated[str, typer.Option(
        help="none | neutral: divide each juror's distribution by the model's no-persona prior for the question.")
    ] = DEFAULT_CALIBRATION,
    vote: Annotated[str, typer.Option(
        help="sample | mode: a juror's vote (scored into R_sampled) is a draw from their distribution, or its mode.")
    ] = "sample",
    dtype: Annotated[Optional[str], typer.Option(
        help="Local/embedded models: weights dtype (auto, float32, bfloat16). On CPUs without native bf16, float32 "
             "scores several times faster.")] = None,
    max_batch: Annotated[Optional[int], typer.Option(
        min=1, help="Local/embedded models: most prompts per forward pass.")] = None,
    write_sim: Annotated[Optional[Path], typer.Option(
        help="Write the simulated distributions to this FORMAT 1 CSV.")] = None,
    db: Annotated[Optional[Path], typer.Option(
        help="Record every ballot and model call in this store (provenance 'eval').")] = None,
    details: Annotated[bool, typer.Option(help="--json: include one record per (question, group).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")] = False,
) -> None:
    """Score how well simulated sub-groups answer like the real ones (R, TV, baselines, steerability)."""
    err = Console(stderr=True)
    try:
        summary = run_survey_eval(
            file=file, model=model, attributes=_split_list(attributes), groups=_split_list(groups),
            questions=questions, split=split, split_name=split_name, jurors_per_group=jurors_per_group, seed=seed,
            mode=mode, population=population, meta=meta, exact_ordinals=exact_ordinals, baselines=baselines,
            rounds=rounds, max_concurrency=max_concurrency, write_sim=write_sim, db=db, details=details, err=err,
            option_orders=option_orders, calibration=calibration, vote=vote,
            model_options={k: v for k, v in (("dtype", dtype), ("max_batch", max_batch)) if v is not None},
            progress="bar" if sys.stderr.isatty() else "lines",
        )
    except AssemblyError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(getattr(exc, "exit_code", 2)) from None
    except (ValueError, FileNotFoundError) as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if json_out:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        from assembly.evaluation.report import render

        render(summary, Console())


def run_survey_eval(*, file, model, attributes, groups, questions, split, split_name, jurors_per_group, seed, mode,
                    population, meta, exact_ordinals, baselines, rounds, max_concurrency, write_sim, db, details, err,
                    progress, model_options=None, model_obj=None, option_orders=DEFAULT_OPTION_ORDERS,
                    calibration=DEFAULT_CALIBRATION, vote="sample") -> dict:
    """The whole `assembly eval survey` command as a function (benchmarks call it in-process); returns the summary."""
    from assembly.evaluation.config import EvalConfig
    from assembly.evaluation.selection import check_attributes, select_questions
    from assembly.evaluation.survey import load_split, read_questions_meta, read_survey, write_survey

    if mode not in MODES:
        raise AssemblyError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    # built before the file is read, so a bad flag fails at once (EvalConfig's ValueError names it)
    config = EvalConfig(
        jurors_per_group=jurors_per_group, seed=seed, attributes=attributes, groups=groups, mode=mode,
        population=population,
        ignore_persona=baselines, no_persona=baselines, exact_positions=exact_ordinals,
        max_concurrency=max_concurrency, assembly_rounds=rounds,
        option_orders=option_orders, calibration=calibration, vote=vote,
    )
    meta_path = meta if meta is not None else file.parent / "questions_meta.csv"
    qmeta = read_questions_meta(meta_path) if (meta is not None or meta_path.is_file()) else None
    data = read_survey(file, nominal_ids=qmeta.nominal if qmeta else None,
                       positions=qmeta.positions if qmeta else None)
    split_ids = load_split(split, split_name) if split is not None else None
    chosen = select_questions(data, questions=questions, split_ids=split_ids, seed=seed)
    check_attributes(chosen, attributes)
    summary = asyncio.run(_evaluate(chosen, model, config, db=db, err=err, progress=progress, model_obj=model_obj,
                                    details=details, model_options=model_options or {}))
    if write_sim is not None:
        write_survey(write_sim, summary.pop("_simulated"))
        err.print(f"simulated distributions written to {write_sim}")
    summary.pop("_simulated", None)
    return summary


def pool_options(model_spec: str, options: dict) -> dict:
    """Backend options (dtype, max_batch) only reach the local backends, which understand them."""
    from assembly.providers import parse_model_spec

    if not options:
        return {}
    provider = parse_model_spec(model_spec).provider
    if provider not in ("embedded", "local"):
        raise AssemblyError(f"--dtype / --max-batch apply to local and embedded models, not {model_spec!r}")
    return options


async def _evaluate(survey, model_spec, config, *, db, err, progress, model_obj, details, model_options) -> dict:
    from assembly.evaluation.fidelity import evaluate_survey
    from assembly.evaluation.summary import simulated_survey, summarise
    from assembly.providers import ModelPool

    pool = ModelPool(**pool_options(model_spec, model_options)) if model_obj is None else ModelPool()
    model = model_obj if model_obj is not None else pool.get(model_spec)
    recorder = None
    try:
        if db is not None:
            from assembly.evaluation.store import EvalRecorder

            recorder = EvalRecorder.open(db, survey=survey, config=config, model=model)
        bar = _progress(err, len(survey)) if progress == "bar" else None
        started = time.perf_counter()

        def report(i: int, n: int, qid: str) -> None:
            if bar:
                bar[0].update(bar[1], completed=i, description=qid)
            elif progress == "lines":
                err.print(f"[{i}/{n}] {qid} ({time.perf_counter() - started:.0f} s)", highlight=False)

        try:
            result = await evaluate_survey(survey, model, config, hooks=recorder, progress=report)
        finally:
            if bar:
                bar[0].stop()
        summary = summarise(result)
        if details:
            summary["records"] = result.records
            summary["pairs"] = result.pairs
        if recorder is not None:
            summary["run_ids"] = recorder.finish(result, summary)
        summary["_simulated"] = simulated_survey(result, survey)
        return summary
    finally:  # each question's run was finished by its own lifecycle (evaluation/store.py), however it ended
        if recorder is not None:
            recorder.close()
        await pool.aclose()


def _progress(err: Console, total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=err, transient=True)
    task = bar.add_task("questions", total=total)
    bar.start()
    return bar, task
