"""`assembly run question.yaml`: run an assembly with a live view on stderr and a summary (or JSON) on stdout."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from assembly.cli.console import err, out, print_json
from assembly.result import AssemblyResult


class LiveView:
    """Phase, who is speaking, the last turn and tokens/s — redrawn as graph events arrive."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.phase = "starting"
        self.speaker = ""
        self.last = ""
        self.tokens = 0
        self.turns = 0
        self.ballots = 0
        self.started = time.perf_counter()
        self.live = Live(self.render(), console=err, refresh_per_second=4, transient=True) if enabled else None

    def render(self) -> Panel:
        elapsed = max(time.perf_counter() - self.started, 1e-6)
        body = Text()
        body.append(f"phase: {self.phase}\n", style="bold")
        body.append(f"speaking: {self.speaker}\n")
        body.append(f"turns {self.turns} · ballots {self.ballots} · {self.tokens / elapsed:.1f} tok/s · "
                    f"{elapsed:.0f}s\n")
        body.append(self.last[:300], style="dim")
        return Panel(body, title="assembly", border_style="cyan")

    def __call__(self, event: dict) -> None:
        kind = event.get("kind")
        if kind == "phase":
            self.phase = event["phase"] + (f" (round {event['round']})" if event.get("round") else "")
            if not self.enabled:
                err.print(f"· {self.phase}", highlight=False, markup=False)
        elif kind == "speaking":
            self.speaker = event.get("speaker", "")
        elif kind == "turn":
            self.turns += 1
            self.tokens += event.get("tokens") or 0
            self.last = f"{event.get('speaker')}: {event.get('content', '')}"
        elif kind == "ballot":
            self.ballots += 1
        if self.live is not None:
            self.live.update(self.render())

    def __enter__(self):
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)


def print_summary(result: AssemblyResult) -> None:
    out.print(Panel(result.verdict.text or "(no verdict)", title=f"Verdict — {result.verdict.winner or 'no winner'}"
                    f" ({result.verdict.rule})", border_style="green"))
    if result.verdict.minority_report:
        out.print(Panel(result.verdict.minority_report, title="Minority report", border_style="yellow"))
    tallies = Table(title="Post-ballot tallies: realised, and expected from the jurors' distributions")
    tallies.add_column("rule")
    tallies.add_column("winner")
    tallies.add_column("realised")
    tallies.add_column("expected")
    tallies.add_column("P(win)")
    tallies.add_column("stability", justify="right")
    tallies.add_column("tie-break")
    for t in result.tallies:
        scores = ", ".join(f"{k} {v:g}" for k, v in t["scores"].items())
        expected = ", ".join(f"{k} {v:.1f}" for k, v in (t.get("expected") or {}).items())
        wins = ", ".join(f"{k} {v:.2f}" for k, v in (t.get("win_probability") or {}).items())
        stability = "" if t.get("stability") is None else f"{t['stability']:.2f}"
        tallies.add_row(t["rule"], str(t["winner"]), scores, expected, wins, stability, t.get("tie_break") or "")
    out.print(tallies)
    if result.mode == "distilled":
        counts = ", ".join(f"{o} {n}" for o, n in result.post_counts.items())
        out.print(f"predicted post-deliberation votes: {counts}", highlight=False)
    else:
        print_shift(result)
    print_footer(result)


def print_shift(result: AssemblyResult) -> None:
    shift = Table(title="Pre → post ballot")
    shift.add_column("option")
    shift.add_column("pre", justify="right")
    shift.add_column("post", justify="right")
    shift.add_column("shift", justify="right")
    for option in result.options:
        shift.add_row(option, str(result.pre_counts[option]), str(result.post_counts[option]),
                      f"{result.shift[option]:+d}")
    out.print(shift)
    out.print(f"{result.changed} of {len(result.jurors)} jurors changed their vote · abstentions pre "
              f"{result.abstentions['pre']}, post {result.abstentions['post']}", highlight=False)


def print_footer(result: AssemblyResult) -> None:
    if result.stability is not None:
        redraws = (result.tallies[0].get("redraws") or 0) if result.tallies else 0
        out.print(f"verdict stability: {result.verdict.winner or 'no winner'} wins again in "
                  f"{result.stability:.0%} of {redraws} redraws of the jurors' votes", highlight=False)
    if result.position_bias:
        pb = result.position_bias
        out.print(f"option position: first-listed answers got {pb['first']:.3f} of the probability, "
                  f"{pb['expected']:.3f} once averaged over orders (ratio {pb['ratio']})", highlight=False)
    rep = ", ".join(f"{a} {v:.3f}" for a, v in result.representativeness.items())
    out.print(f"representativeness: {rep} (overall {result.representativeness_overall:.3f})", highlight=False)
    u = result.usage
    cached = f" · {u.cached_input_tokens} of {u.input_tokens} prompt tokens cached" if u.cached_input_tokens else ""
    out.print(f"{u.calls} model calls · {u.output_tokens} tokens out{cached} · {u.wall_seconds:.1f}s · "
              f"{u.tokens_per_second:.1f} tok/s · run {result.run_id} in {result.store}", highlight=False)


def run(
    question: Annotated[Path | None, typer.Argument(help="The question file (YAML); with --resume, optional (checked "
                                                          "against the run's recorded spec).")] = None,
    model: Annotated[str | None, typer.Option(help="Model spec replacing the file's models.default, e.g. embedded, "
                                                     "openai:gpt-4.1-mini, local:<folder>[+<adapter>]; roles the file "
                                                     "gives their own model (models.juror, ...) keep it. With --mode "
                                                     "distilled: the juror model.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override jury.seed (the run's seed).")] = None,
    db: Annotated[Path | None, typer.Option(help="DuckDB store to record into (default: see `assembly transcripts path`).")] = None,
    jurors: Annotated[int | None, typer.Option(help="Override jury.size.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Override procedure.rounds.")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads for local models.")] = None,
    replay: Annotated[str | None, typer.Option(help="Re-run a recorded run from its recorded model calls (no model).")] = None,
    resume: Annotated[str | None, typer.Option(help="Finish an interrupted run (id, unique prefix or 'latest') from its "
                                                    "last checkpoint, with its recorded spec and seed.")] = None,
    mode: Annotated[str, typer.Option(help="full: the multi-agent graph; distilled: every juror's post-deliberation "
                                           "ballot predicted in one scoring pass, best on a model tuned for it "
                                           "(docs/finetune.md).")] = "full",
    seat: Annotated[str | None, typer.Option(help="Take this juror's seat yourself (e.g. juror-03): read what the "
                                                  "juror hears, type their statements, cast their ballots.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Run an assembly: draw the jury, hear witnesses, deliberate, vote, write the verdict; record everything."""
    from assembly.deliberation import deliberate
    from assembly.errors import SpecError

    if mode not in ("full", "distilled"):
        raise SpecError(f"--mode {mode!r}: expected 'full' or 'distilled'")
    if resume is not None:
        given = {"--model": model, "--seed": seed, "--jurors": jurors, "--rounds": rounds, "--replay": replay,
                 "--mode": None if mode == "full" else mode, "--seat": seat}
        clash = next((flag for flag, value in given.items() if value is not None), None)
        if clash:
            raise SpecError(f"--resume continues a run with its recorded spec; drop {clash}")
        from assembly.resuming import resume as resume_run

        with LiveView(enabled=err.is_terminal) as view:
            result = resume_run(resume, db=db, question=question, on_event=view,
                                model_options={"threads": threads} if threads is not None else None)
        show(result, as_json)
        return
    if question is None:
        raise SpecError("give a question file (or --resume RUN to finish an interrupted run)")
    if seat is not None and (replay is not None or mode != "full"):
        raise SpecError(f"--seat puts a person in a live deliberation; drop {'--replay' if replay else '--mode'}")
    if mode == "distilled":
        if replay is not None or rounds is not None:
            raise SpecError(f"--mode distilled simulates no rounds and makes no generation to replay; drop "
                            f"{'--replay' if replay is not None else '--rounds'}")
        from assembly.distilled import distill

        with LiveView(enabled=err.is_terminal) as view:
            result = distill(question, model=model, seed=seed, db=db, jurors=jurors, on_event=view,
                             model_options={"threads": threads} if threads is not None else None)
        show(result, as_json)
        return
    kwargs = {}
    if threads is not None:
        kwargs["model_options"] = {"threads": threads}
    if replay is not None:
        from assembly.recorded_models import replay_arguments

        kwargs.update(replay_arguments(replay, db))
    if seat is not None:
        kwargs["seat"] = seat
    # A person in a seat types on this terminal: phases as plain lines, not a live panel redrawn over their prompt.
    with LiveView(enabled=err.is_terminal and seat is None) as view:
        result = deliberate(question, model=model, seed=seed, db=db, jurors=jurors, rounds=rounds, on_event=view,
                            **kwargs)
    show(result, as_json)


def show(result: AssemblyResult, as_json: bool) -> None:
    if as_json:
        print_json(result.model_dump(mode="json"))
    else:
        print_summary(result)
