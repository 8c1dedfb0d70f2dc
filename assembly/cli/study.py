"""`assembly study Q.yaml --draws N`: N independent juries of a question (or of every question of a bank or a list),
run side by side through one loaded backend; a progress bar on stderr, the summary (or `--json`) on stdout.
`--rank uncertainty` ranks the questions by how unsettled their verdict is instead (assembly.study.ranking), for the
new study and any recorded one named by `--study` — or, without question files, for recorded studies alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from assembly.cli.console import err, out, print_json
from assembly.study.limits import DEFAULT_CONCURRENCY, MAX_CONCURRENCY, MAX_DRAWS


def _interval(low: float | None, high: float | None, fmt: str = "{:.2f}") -> str:
    return "" if low is None or high is None else f"[{fmt.format(low)}, {fmt.format(high)}]"


def _estimate(e: dict, signed: bool = False) -> str:
    if e["mean"] is None:
        return "—"
    fmt = "{:+.2f}" if signed else "{:.2f}"
    return f"{fmt.format(e['mean'])} {_interval(e['low'], e['high'], fmt)}".strip()


def print_summary(result) -> None:
    summary = result.summary.model_dump(mode="json")
    questions = summary["questions"]
    if len(questions) == 1:
        _print_question(questions[0])
    else:
        table = Table(title=f"{len(questions)} questions, {summary['draws']} draws each")
        for name in ("question", "draws", "modal winner", "won (across draws)", "stability within", "shift"):
            table.add_column(name, overflow="fold")
        for q in questions:
            shift = ", ".join(f"{s['option'][:24]} {_estimate(s['shift'], True)}" for s in q["shares"])
            a = q["modal_agreement"]
            won = "" if a["share"] is None else f"{a['share']:.2f} {_interval(a['low'], a['high'])}"
            table.add_row(q["question"][:80], f"{q['completed']}/{q['draws']}", q["modal_winner"] or "—", won,
                          _estimate(q["stability_within"]), shift)
        out.print(table)
    out.print(f"intervals: win rates — {summary['methods']['win_rates']}; means — {summary['methods']['means']}",
              style="dim", highlight=False)
    skipped = f" ({result.skipped} already done)" if result.skipped else ""
    out.print(f"study {result.study_id} · {summary['completed']} of {summary['runs']} runs completed{skipped} · "
              f"{result.store}", highlight=False)


def _print_question(q: dict) -> None:
    out.print(f"[bold]{q['question']}[/bold] — {q['completed']} of {q['draws']} draws completed", highlight=False)
    wins = Table(title="Who wins after deliberation, over draws (95% Wilson interval)")
    for name, justify in (("rule", "left"), ("option", "left"), ("wins", "right"), ("P(win)", "right"),
                          ("95% interval", "left")):
        wins.add_column(name, justify=justify)
    for w in q["win_rates"]:
        wins.add_row(w["rule"], w["option"], f"{w['k']}/{w['n']}", "—" if w["share"] is None else f"{w['share']:.2f}",
                     _interval(w["low"], w["high"]))
    out.print(wins)
    shares = Table(title="Vote shares over draws: mean [95% bootstrap interval]")
    for name in ("option", "pre", "post", "shift"):
        shares.add_column(name)
    for s in q["shares"]:
        shares.add_row(s["option"], _estimate(s["pre"]), _estimate(s["post"]), _estimate(s["shift"], True))
    out.print(shares)
    if q["group_shifts"]:
        groups = Table(title="Shift by group: mean post − pre share [95% bootstrap interval]")
        for name in ("attribute", "group", "option", "shift", "draws"):
            groups.add_column(name)
        for g in q["group_shifts"]:
            groups.add_row(g["attribute"], g["group"], g["option"], _estimate(g, True), str(g["n"]))
        out.print(groups)
    agree, within = q["modal_agreement"], q["stability_within"]
    if q["modal_winner"] is not None:
        out.print(f"across draws: {q['modal_winner']} wins {agree['k']} of {agree['n']} draws "
                  f"({agree['share']:.2f} {_interval(agree['low'], agree['high'])}) under {q['rules'][0]}",
                  highlight=False)
    if within["mean"] is not None:
        out.print(f"within draws: a draw's winner wins again in {_estimate(within)} of redraws of its jurors' votes "
                  "(mean verdict stability)", highlight=False)


def _resolve_studies(db: Path | None, named: list[str]) -> list[str]:
    """Full ids of the studies `named` (ids, unique prefixes or 'latest')."""
    from assembly.cli.store import _store

    store = _store(db)
    try:
        return [store.resolve_study(name) for name in named]
    finally:
        store.close()


def _rank(db: Path | str | None, study_ids: list[str], by: str):
    """The questions of the studies `study_ids` ranked `by` (assembly.study.ranking)."""
    from assembly.cli.store import _store
    from assembly.study.ranking import rank_studies

    store = _store(Path(db) if db else None)
    try:
        return rank_studies(store, study_ids, by)
    finally:
        store.close()


def print_ranking(ranking, output: Path | None, as_json: bool) -> None:
    """The ranked list (assembly.study.ranking.Ranking): a table (or --json) on stdout, and the file -o names
    (written whole or not at all)."""
    if output is not None:
        from assembly.study.ranking import ranking_format, render_ranking
        from transcripts.exports import write_text

        write_text(output, render_ranking(ranking, ranking_format(output)))
    if as_json:
        print_json(ranking.dump())
    else:
        several = any(len(q.variants) > 1 for q in ranking.questions)
        table = Table(title=f"Questions by {ranking.by}: where a real assembly would teach the most "
                            f"({len(ranking.studies)} {'study' if len(ranking.studies) == 1 else 'studies'})")
        winner = "winners P(win)" if several else "winner P(win)"
        for name in ("#", "question", "draws", winner, "within", "between", "TV", ranking.by):
            table.add_column(name, overflow="fold", justify="right" if name in ("#", "draws") else "left")

        def num(x: float | None) -> str:
            return "—" if x is None else f"{x:.2f}"

        for q in ranking.questions:
            winners = " | ".join(f"{v.winner} {v.win.get(v.winner, 0):.2f}" if v.winner else "—"
                                 for v in q.variants)
            table.add_row(str(q.rank), q.question[:80], str(q.draws), winners, num(q.within), num(q.between),
                          num(q.total_variation), num(q.uncertainty))
        out.print(table)
        out.print("normalised win-probability entropy over draws (within), Jensen–Shannon divergence between "
                  "studies or variants (between), mean total variation between them (TV)", style="dim",
                  highlight=False)
    if output is not None:
        err.print(f"ranking written to {output}", highlight=False, markup=False)


class StudyProgress:
    """A bar with ETA on a terminal; one line per finished run otherwise."""

    def __init__(self):
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("eta"), TimeRemainingColumn(), console=err, transient=True) \
            if err.is_terminal else None
        self.task = None

    def __call__(self, p) -> None:
        if p.last is None:
            done = f" ({p.skipped} already done)" if p.skipped else ""
            if self.bar is not None:
                self.task = self.bar.add_task(f"study: {p.to_run} runs{done}", total=p.to_run)
            else:
                err.print(f"study: {p.to_run} runs to make{done}", highlight=False, markup=False)
            return
        d = p.last
        what = f"{d.job.slot.question.source} draw {d.job.slot.draw}"
        line = f"{what}: {d.status}" + (f" ({d.winner})" if d.winner else "") + (f" — {d.error}" if d.error else "")
        if self.bar is not None:
            self.bar.update(self.task, advance=1)
            if d.error:
                self.bar.console.print(line, highlight=False, markup=False)
        else:
            err.print(f"· [{p.finished}/{p.to_run}] {line}", highlight=False, markup=False)

    def __enter__(self):
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)


def study(
    sources: Annotated[list[Path] | None, typer.Argument(
        help="Question files (.yaml), lists of them (.txt, one path a line) or question banks (.jsonl, the Habermas "
             "format). Leave them out to rank recorded studies only (--rank uncertainty --study STUDY).")] = None,
    draws: Annotated[int | None, typer.Option(help=f"Juries per question (1..{MAX_DRAWS}; default 20).")] = None,
    concurrency: Annotated[int, typer.Option(help=f"Draws run at once, sharing the backend's batches "
                                                  f"(1..{MAX_CONCURRENCY}; per worker with --executor ray).")]
    = DEFAULT_CONCURRENCY,
    model: Annotated[str | None, typer.Option(help="Model spec replacing each question's models.default.")] = None,
    seed: Annotated[int | None, typer.Option(help="Base seed replacing jury.seed; draw d runs with a seed derived "
                                                  "from it.")] = None,
    jurors: Annotated[int | None, typer.Option(help="Override jury.size.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Override procedure.rounds.")] = None,
    mode: Annotated[str | None, typer.Option(help="full (default): the multi-agent graph per draw; distilled: each "
                                                  "draw's post-deliberation ballots in one scoring pass.")] = None,
    template: Annotated[Path | None, typer.Option(help="Bank questions: a YAML file of question-file settings "
                                                       "(jury, procedure, models, ...).")] = None,
    split: Annotated[str | None, typer.Option(help="Bank questions: only this split (train, iid_test, ...).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N questions.")] = None,
    db: Annotated[Path | None, typer.Option(help="The store (default: see `assembly transcripts path`).")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads for local models.")] = None,
    executor: Annotated[str, typer.Option(help="local: one process; ray: Ray actors (RAY_ADDRESS, see README).")]
    = "local",
    workers: Annotated[int, typer.Option(help="Ray actors, each with the models loaded once.")] = 2,
    resume: Annotated[str | None, typer.Option(help="Continue study STUDY (an id, a prefix or 'latest'): finished "
                                                    "runs are kept, the others run again.")] = None,
    rank: Annotated[str | None, typer.Option(help="Rank the questions instead of summarising them: 'uncertainty' "
                                                  "(how unsettled the verdict is over draws and between studies).")]
    = None,
    ranked: Annotated[list[str] | None, typer.Option(
        "--study", help="With --rank: a recorded study (id, prefix or 'latest') to rank with the others, e.g. the "
                        "same bank under another model or procedure (repeatable).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="With --rank: also write the ranked list "
                                                                      "here (.csv or .json).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Run N independent juries per question and report win probabilities, vote shares and shifts with intervals."""
    from assembly.errors import AssemblyError
    from assembly.study.runner import run_study

    if rank is None and (ranked or output is not None):
        raise AssemblyError("assembly study: --study and -o go with --rank uncertainty")
    if rank is not None:  # checked before any draw runs
        from assembly.study.ranking import check_ranking, ranking_format

        check_ranking(rank)
        if output is not None:
            ranking_format(output)
    if not sources and (rank is None or not ranked):
        raise AssemblyError("assembly study: name question files, lists or banks to study, or rank recorded "
                            "studies with --rank uncertainty --study STUDY")
    others = _resolve_studies(db, ranked) if ranked else []  # before any draw runs: 'latest' is the last one made
    if not sources:
        print_ranking(_rank(db, others, rank), output, as_json)
        return

    settings = {"draws": draws, "seed": seed, "model": model, "jurors": jurors, "rounds": rounds, "mode": mode,
                "template": None if template is None else str(template.resolve()), "split": split, "limit": limit}
    with StudyProgress() as progress:
        result = run_study(sources, db=db, resume=resume, settings=settings, concurrency=concurrency,
                           executor=executor, workers=workers,
                           model_options={"threads": threads} if threads is not None else None, on_progress=progress)
    if rank is not None:
        print_ranking(_rank(result.store, [result.study_id, *others], rank), output, as_json)
    elif as_json:
        print_json(result.model_dump(mode="json"))
    else:
        print_summary(result)
    if result.status != "completed":
        first = f" (first: {result.failures[0]})" if result.failures else ""
        raise AssemblyError(f"study {result.study_id}: {result.reason}{first}")
