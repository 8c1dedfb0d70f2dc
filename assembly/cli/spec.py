"""`assembly spec RUN [-o clause.md|.yaml|.json]`: the clause an AI specification can cite for a completed run or
study; `assembly spec diff A B`: what changed between two clauses on the same question (ids or clause files)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from assembly.cli.console import out
from assembly.cli.store import DbOption, _store
from assembly.errors import AssemblyError

USAGE = "assembly spec RUN [-o FILE] | assembly spec diff A B [-o FILE]"


def spec(
    targets: Annotated[list[str], typer.Argument(
        metavar="RUN | diff A B",
        help="A run (id, unique prefix or 'latest') or a study id; or `diff A B`, where A and B are runs, studies or "
             "clause files (.yaml, .json).")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write here instead of printing Markdown: "
                                                                      ".md, .yaml or .json (by the suffix).")] = None,
    question: Annotated[str | None, typer.Option(help="For a study of several questions: the question's key.")] = None,
    db: DbOption = None,
) -> None:
    """Write a specification clause: the question, the decision, its support, the minority view and its provenance."""
    from assembly.clauses import clause_for, diff_clauses, format_of, render

    fmt = format_of(output) if output is not None else "md"
    if len(targets) == 1 and targets[0] != "diff":
        store = _store(db)
        try:
            item = clause_for(store, targets[0], question=question)
        finally:
            store.close()
    elif len(targets) == 3 and targets[0] == "diff":
        item = diff_clauses(*_clauses(targets[1:], db, question))
    else:
        raise AssemblyError(f"assembly spec: expected RUN or diff A B, got {' '.join(targets)!r} (usage: {USAGE})")
    text = render(item, fmt)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise AssemblyError(f"{output}: cannot write the clause ({exc.strerror or exc})") from None
    out.print(str(output), highlight=False)


def _clauses(names: list[str], db, question: str | None):
    """Each of A and B: a clause file (an existing file, or a name ending in .yaml, .json, ...), else a run or study
    in the store."""
    from assembly.clauses import clauses_for

    return clauses_for(names, lambda: _store(db), question=question)
