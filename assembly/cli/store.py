"""Store commands: `assembly sql`, `assembly report`, and
`assembly transcripts list|show|export|import|import-polis|import-survey|backup|path`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from assembly.cli.console import out, print_json
from assembly.errors import AssemblyError

DbOption = Annotated[Path | None, typer.Option("--db", help="The store (default: `assembly transcripts path`).")]


def _store(db: Path | None):
    from transcripts import Store, StoreError, default_store_path

    path = Path(db) if db else default_store_path()
    if not path.exists():
        raise StoreError(f"no store at {path} (run an assembly first, or pass --db)")
    return Store(str(path))


def _writable_store(db: Path | None):
    """The store to import into, created when it does not exist yet."""
    from transcripts import Store, default_store_path

    return Store(str(db or default_store_path()))


def _print_frame(frame, fmt: str) -> None:
    if fmt == "json":
        print_json(frame.to_dicts())
    elif fmt == "csv":
        sys.stdout.write(frame.write_csv())
    else:
        table = Table(show_lines=False)
        for i, column in enumerate(frame.columns):
            table.add_column(column, overflow="fold", no_wrap=i == 0)
        for row in frame.iter_rows():
            table.add_row(*("" if v is None else str(v) for v in row))
        out.print(table)
        out.print(f"{frame.height} row{'s' if frame.height != 1 else ''}", style="dim", highlight=False)


def sql(
    query: Annotated[str, typer.Argument(help="SQL to run against the store (views: transcript, ballot_changes, "
                                              "opinion_shift, call_costs, ...).")],
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Rows as a JSON array.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Rows as CSV.")] = False,
    write: Annotated[bool, typer.Option("--write", help="Allow statements that modify the store.")] = False,
) -> None:
    """Query the store with SQL. Read-only unless --write."""
    store = _store(db)
    try:
        frame = store.sql(query, write=write)
    finally:
        store.close()
    _print_frame(frame, "json" if as_json else "csv" if as_csv else "table")


def list_runs(
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One line per run: id, status, provenance, question, winner, counts and cost."""
    from transcripts import frames

    store = _store(db)
    try:
        frame = frames.overview(store)
    finally:
        store.close()
    if not as_json:  # a terminal-sized selection; --json has every column
        wanted = [c for c in ("run_id", "status", "provenance", "started_at", "question", "winner", "turns", "ballots")
                  if c in frame.columns]
        frame = frame.select(wanted)
        if "question" in frame.columns:
            frame = frame.with_columns(frame["question"].str.slice(0, 60).alias("question"))
    _print_frame(frame, "json" if as_json else "table")


def show(
    run_id: Annotated[str, typer.Argument(help="A run id, a unique prefix of one, or 'latest'.")],
    db: DbOption = None,
) -> None:
    """The deliberation as readable text."""
    from transcripts import render_show

    store = _store(db)
    try:
        text = render_show(store, store.resolve_run(run_id))
    finally:
        store.close()
    sys.stdout.write(text.rstrip() + "\n")


def export(
    run_id: Annotated[str, typer.Argument(help="A run id, a unique prefix of one, or 'latest'.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="File (jsonl, md) or folder (parquet).")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl | parquet | md")] = "jsonl",
    db: DbOption = None,
) -> None:
    """Export a run: deliberation JSONL (the interchange format), parquet tables, or markdown."""
    from transcripts import export_run

    store = _store(db)
    try:
        written = export_run(store, store.resolve_run(run_id), fmt, output)
    finally:
        store.close()
    out.print(str(written), highlight=False)


def import_(
    path: Annotated[Path, typer.Argument(help="A deliberation JSONL file (FORMAT 2).")],
    db: DbOption = None,
) -> None:
    """Import real deliberations (provenance imported-real); a bad record aborts the whole file."""
    from transcripts import Store, default_store_path, import_jsonl

    store = Store(str(db or default_store_path()))
    try:
        run_ids = import_jsonl(store, path)
    finally:
        store.close()
    out.print(f"imported {len(run_ids)} deliberation{'s' if len(run_ids) != 1 else ''} from {path}", highlight=False)


def import_polis(
    folders: Annotated[list[Path], typer.Argument(help="Polis export folders (comments.csv, votes.csv, "
                                                  "participants-votes.csv, summary.csv; plain or .gz).")],
    db: Annotated[Path | None, typer.Option(help="The store to write (default: the default store).")] = None,
    source: Annotated[str, typer.Option(help="Source name recorded on the runs.")] = "polis",
    license: Annotated[str, typer.Option(help="Licence recorded on the runs.")] = "CC BY 4.0",
    include_rejected: Annotated[bool, typer.Option(help="Also import comments the moderators rejected.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the new run ids as JSON.")] = False,
) -> None:
    """Import Polis conversation exports (one run per conversation, provenance imported-real)."""
    from transcripts.polis import import_polis as run_import

    store = _writable_store(db)
    ids = {}
    try:
        for folder in folders:
            ids[str(folder)] = run_import(store, folder, source=source, license=license,
                                          include_rejected=include_rejected)
    finally:
        store.close()
    if json_out:
        print_json(ids)
        return
    for folder, run_id in ids.items():
        out.print(f"{folder}: " + (f"run {run_id}" if run_id else "already imported (skipped)"), highlight=False)


def import_survey(
    file: Annotated[Path, typer.Argument(help="Survey distributions in FORMAT 1 (CSV, optionally .gz).")],
    source: Annotated[str, typer.Option(help="Source name recorded on the runs, e.g. opinionqa.")],
    db: Annotated[Path | None, typer.Option(help="The store to write (default: the default store).")] = None,
    license: Annotated[str | None, typer.Option(help="Licence recorded on the runs.")] = None,
    split: Annotated[Path | None, typer.Option(help="Split file (JSON: split name -> question ids).")] = None,
    split_name: Annotated[str, typer.Option(help="Which split of --split to import.")] = "train",
    json_out: Annotated[bool, typer.Option("--json", help="Print the new run ids as JSON.")] = False,
) -> None:
    """Import a survey-distribution CSV: one run per question, one distribution ballot per (attribute, group)."""
    from transcripts.surveys import import_survey as run_import

    ids_filter = None
    if split is not None:
        try:
            data = json.loads(split.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise AssemblyError(f"{split}: cannot read the split file ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get(split_name), list):
            raise AssemblyError(f"{split}: no split named {split_name!r}")
        ids_filter = data[split_name]
    store = _writable_store(db)
    try:
        ids = run_import(store, file, source=source, license=license, question_ids=ids_filter)
    finally:
        store.close()
    if json_out:
        print_json({"runs": ids})
        return
    out.print(f"{file}: {len(ids)} questions imported as runs (source {source})", highlight=False)


def backup(
    target: Annotated[Path, typer.Argument(help="The file to write: a copy of the store that opens on its own.")],
    db: DbOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace TARGET when it exists.")] = False,
) -> None:
    """Copy the store, consistently (checkpointed, then copied while no one can write); prints the copy's rows."""
    store = _store(db)
    try:
        counts = store.backup(target, overwrite=force)
    finally:
        store.close()
    out.print(f"{target}: " + ", ".join(f"{n} {table}" for table, n in counts.items()), highlight=False)


def path(db: DbOption = None) -> None:
    """Print where the store is (set ASSEMBLY_STORE or pass --db to use another)."""
    from transcripts import default_store_path

    out.print(str(db or default_store_path()), highlight=False)


def report(
    run_id: Annotated[str | None, typer.Argument(help="A run id, a unique prefix of one, or 'latest'.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="The HTML file to write.")] = Path("report.html"),
    study: Annotated[str | None, typer.Option(help="Report on study STUDY (an id, a prefix or 'latest') "
                                                   "instead of a run.")] = None,
    db: DbOption = None,
) -> None:
    """Write one self-contained HTML page about a run (jury, ballots, tallies, verdict, transcript) or, with
    --study, about a study (win probabilities with intervals, shares and shifts over its draws)."""
    from transcripts.report import write_report
    from transcripts.study_report import write_study_report

    if (run_id is None) == (study is None):
        raise AssemblyError("assembly report: name a run (RUN) or a study (--study STUDY), not both or neither")
    store = _store(db)
    try:
        if study is not None:
            written = write_study_report(store, store.resolve_study(study), output)
        else:
            written = write_report(store, store.resolve_run(run_id), output)
    finally:
        store.close()
    out.print(str(written), highlight=False)


transcripts = typer.Typer(help="Browse, export and import recorded deliberations.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("sql")(sql)
    app.command("report")(report)
    transcripts.command("list")(list_runs)
    transcripts.command("show")(show)
    transcripts.command("export")(export)
    transcripts.command("import")(import_)
    transcripts.command("import-polis")(import_polis)
    transcripts.command("import-survey")(import_survey)
    transcripts.command("backup")(backup)
    transcripts.command("path")(path)
    app.add_typer(transcripts, name="transcripts")
