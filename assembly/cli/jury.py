"""`assembly jury sample question.yaml`: preview the jury a file would seat."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from assembly.cli.console import out, print_json
from assembly.deliberation import draw, resolve_spec


def sample(
    question: Annotated[Path, typer.Argument(help="The question file (YAML).")],
    seed: Annotated[int | None, typer.Option(help="Override jury.seed.")] = None,
    jurors: Annotated[int | None, typer.Option(help="Override jury.size.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Draw the jury (seeded, stratified) and show who sits, with the draw's representativeness."""
    spec = resolve_spec(question, seed=seed, jurors=jurors)
    population, jury = draw(spec)
    if as_json:
        print_json({
            "seed": spec.jury.seed,
            "representativeness": jury.representativeness,
            "overall": jury.overall,
            "jurors": [{"id": j.id, "name": j.persona.name, "attributes": j.attributes, "persona": j.persona.text}
                       for j in jury.jurors],
        })
        return
    attributes = population.attributes
    table = Table(title=f"Jury of {len(jury.jurors)} (seed {spec.jury.seed})")
    table.add_column("id")
    table.add_column("name")
    for attribute in attributes:
        table.add_column(attribute)
    for j in jury.jurors:
        table.add_row(j.id, j.persona.name, *(j.attributes.get(a, "") for a in attributes))
    out.print(table)
    scores = ", ".join(f"{a} {v:.3f}" for a, v in jury.representativeness.items() if a in spec.jury.stratify)
    out.print(f"representativeness (1 − TV per stratified attribute): {scores}; overall {jury.overall:.3f}",
              highlight=False)
