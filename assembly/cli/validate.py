"""`assembly validate question.yaml`: check a file (schema, witness documents, a dry jury draw) without running."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from assembly.cli.console import out, print_json
from assembly.deliberation import draw, resolve_spec


def validate(
    question: Annotated[Path, typer.Argument(help="The question file (YAML).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the normalised spec as JSON.")] = False,
) -> None:
    """Check a question file without running it: schema, witness documents, models and a dry jury draw."""
    spec = resolve_spec(question)
    _, jury = draw(spec)
    if as_json:
        print_json(spec.model_dump(mode="json"))
        return
    out.print(f"[green]ok[/green] {question}: {spec.ballot.type} ballot over {len(spec.ballot.options)} options, "
              f"{spec.jury.size} jurors (representativeness {jury.overall:.3f}), {len(spec.witnesses)} witnesses, "
              f"{spec.procedure.rounds} rounds; rules: {', '.join(spec.ballot.rules)}", highlight=False)
