"""The `assembly` CLI with the scripted test double selectable by spec (`--model scripted:<name>`).

`scripted` is no production backend (assembly.providers.registry): a question file cannot name it. Tests that drive
the CLI register it — in process through conftest.py, in a subprocess by running this file:

    subprocess.run([*SCRIPTED_CLI, "run", "q.yaml", "--model", "scripted:demo"])

`slow:<seconds>` is the same double made slow, each call taking from half to twice that long (by a digest of its
prompt, so calls fanned out together finish one by one), with replies that quote the digest: a test can stop a run
in the middle of a phase, and any prompt that differs shows in the words recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path

SCRIPTED_CLI = [sys.executable, str(Path(__file__).resolve())]


def digest(request) -> str:
    prompt = "\n".join(f"{m.role}: {m.content}" for m in request.messages)
    return hashlib.sha256(prompt.encode()).hexdigest()[:10]


def digest_reply(request) -> str:
    return f"I have weighed point {digest(request)} and I will say so."


class SlowScripted:
    """The `slow:<seconds>` backend (a `from_spec` for register_backend)."""

    @staticmethod
    def from_spec(spec, **options):
        from assembly.providers.scripted import ScriptedModel

        class Slow(ScriptedModel):
            async def generate(self, request):
                await asyncio.sleep(float(spec.model) * (0.5 + int(digest(request), 16) % 4 / 2))
                return await super().generate(request)

        return Slow(digest_reply, name=str(spec))


def register_scripted() -> None:
    from assembly.providers.registry import register_backend

    register_backend("scripted", "assembly.providers.scripted:ScriptedModel")
    register_backend("slow", f"{__name__}:SlowScripted")  # __main__ in a subprocess, tests.scripted_cli in pytest


if __name__ == "__main__":
    register_scripted()
    from assembly.cli.app import main

    main()
