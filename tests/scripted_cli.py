"""The `assembly` CLI with the scripted test double selectable by spec (`--model scripted:<name>`).

`scripted` is no production backend (assembly.providers.registry): a question file cannot name it. Tests that drive
the CLI register it — in process through conftest.py, in a subprocess by running this file:

    subprocess.run([*SCRIPTED_CLI, "run", "q.yaml", "--model", "scripted:demo"])
"""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPTED_CLI = [sys.executable, str(Path(__file__).resolve())]


def register_scripted() -> None:
    from assembly.providers.registry import register_backend

    register_backend("scripted", "assembly.providers.scripted:ScriptedModel")


if __name__ == "__main__":
    register_scripted()
    from assembly.cli.app import main

    main()
