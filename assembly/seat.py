"""A person in a juror's seat (`assembly run Q.yaml --seat juror-03`): they read what that juror's model would be
given, type the juror's statements and questions, and cast the juror's private ballots; every other seat stays
simulated.

`HumanSeat` wraps the juror model. A request tagged with the seated juror (`tags["participant"]`) is answered by the
person; every other request goes to the wrapped model unchanged. So the graph, the recorder and the ballot
arithmetic need no special case: the person's answers are recorded as model calls whose model is "human", and their
scored ballots carry a one-hot `choice_logprobs` (log 1 for their pick, far below for the rest), so the vote drawn
from that distribution is exactly their choice under every option order, calibration prior and draw. A ranked
ballot spaces the options' log-probabilities so widely apart that neither calibration nor the Plackett–Luce noise can
reorder them. One ballot asks the person once, however many option orders (or approval items) it is scored in.

What the person reads goes to stderr (stdout keeps the run's result); what they type comes from stdin, a pipe or a
terminal. The menus below are terminal UI, not prompts: no model ever reads them.
"""

from __future__ import annotations

import asyncio
import re
import sys
import threading
import time
from collections.abc import Sequence
from typing import TextIO

from rich.console import Console
from rich.rule import Rule
from rich.text import Text

from assembly.errors import AssemblyError, SpecError
from assembly.prompts import render_prompt
from assembly.providers.base import Model
from assembly.providers.wrappers import ModelWrapper
from assembly.providers.types import GenerateRequest, GenerateResponse, Usage

HUMAN = "human"  # llm_calls.model of the person's answers; participants.extra.provenance of their seat
UNCHOSEN = -1e4  # log-probability of an option the person did not pick: exp() of it is exactly 0.0
RANK_GAP_MAX = 60.0  # log-probability between ranks: beyond calibration (< 14) plus Gumbel noise (< 31)
LOG_FLOOR = -700.0  # exp() of anything lower underflows to 0, which would erase the order of the last ranks


class SeatLeft(AssemblyError):
    """The person's input ended. Not a ModelError: a ballot must not become an abstention for it; the run fails."""


def check_seat(juror_id: str, juror_ids: Sequence[str]) -> None:
    """A seat must be one of the drawn jury's: a one-line SpecError before anything is written."""
    if juror_id not in juror_ids:
        shown = ", ".join(juror_ids[:3]) + (f", …, {juror_ids[-1]}" if len(juror_ids) > 3 else "")
        raise SpecError(f"--seat {juror_id!r}: no such juror in the drawn jury ({shown})")


def rank_logprobs(ranking: Sequence[str]) -> dict[str, float]:
    """Log-probabilities that keep `ranking` as the order of any draw from them (first: log 1)."""
    gap = min(RANK_GAP_MAX, -LOG_FLOOR / max(1, len(ranking) - 1))
    return {option: -gap * i for i, option in enumerate(ranking)}


class Terminal:
    """Where the person reads (a rich console on stderr) and types (stdin). Reads run in a daemon thread, so the
    simulated seats keep working while the person thinks and Ctrl-C never waits for a pending read."""

    def __init__(self, stdin: TextIO | None = None, console: Console | None = None):
        self.stdin = stdin or sys.stdin
        self.console = console or Console(stderr=True, soft_wrap=True, highlight=False)

    def show(self, title: str, text: str) -> None:
        self.console.print(Rule(title, style="cyan"))
        self.console.print(Text(text.strip()))

    def say(self, text: str) -> None:
        self.console.print(Text(text))

    async def ask(self, prompt: str) -> str:
        self.console.print(Text(prompt, style="bold"), end=" ")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str | None] = loop.create_future()

        def read() -> None:
            line: str | None
            try:
                if self.stdin is sys.stdin and self.stdin.isatty():
                    line = input()  # line editing on a terminal
                else:
                    line = self.stdin.readline() or None  # "" only at the end of the input
            except (EOFError, OSError, ValueError):
                line = None
            try:
                loop.call_soon_threadsafe(lambda: answer.done() or answer.set_result(line))
            except RuntimeError:  # the run ended (Ctrl-C, a failure) while the person was typing
                pass

        threading.Thread(target=read, name="seat-input", daemon=True).start()
        line = await answer
        if line is None:
            self.console.print()  # end the prompt's line
            raise SeatLeft("the input ended")
        return line.rstrip("\r\n")


class HumanSeat(ModelWrapper):
    """The juror model, except for the seat of `juror_id`, which a person takes (see the module docstring)."""

    def __init__(self, inner: Model, juror_id: str, *, ballot_type: str, options: Sequence[str],
                 terminal: Terminal | None = None):
        super().__init__(inner)  # name, capabilities and token counts stay the juror model's (and its hashes)
        self.seat = juror_id
        self.ballot_type = ballot_type
        self.options = list(options)
        self.terminal = terminal or Terminal()
        self._turn = asyncio.Lock()  # one question to the person at a time
        self._ballots: dict[str, object] = {}  # ballot phase -> the person's answer, for each order and item

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        if request.tags.get("participant") != self.seat:
            return await self.inner.generate(request)
        async with self._turn:
            started = time.perf_counter()
            try:
                if request.choices:
                    text, choice, logprobs = await self._scored(request)
                elif request.json_schema:
                    text, choice, logprobs = await self._structured(request), None, None
                else:
                    text, choice, logprobs = await self._speak(request), None, None
            except SeatLeft as exc:
                raise SeatLeft(f"--seat {self.seat}: the person in this seat stopped answering ({exc})") from None
        return GenerateResponse(text=text, model=HUMAN, choice=choice, choice_logprobs=logprobs,
                                usage=Usage(output_tokens=len(text.split())), finish_reason="stop",
                                duration_s=round(time.perf_counter() - started, 3))

    async def aclose(self) -> None:
        """The wrapped model belongs to the pool that loaded it."""

    # -- what the person reads ------------------------------------------------------------------------------------

    def _show_prompt(self, request: GenerateRequest, *, with_own: bool) -> None:
        """The juror's prompt, readable: what the jury shares, who the juror is, what they heard and are asked."""
        preamble = render_prompt("juror_system", shared="").strip()
        systems = [m.content for m in request.messages if m.role == "system"]
        if systems:
            shared = systems[0].removeprefix(preamble)
            self.terminal.show("What the whole jury shares", shared)
        for persona in systems[1:]:
            self.terminal.show(f"Whose seat you are in ({self.seat})", persona)
        users = [m.content for m in request.messages if m.role == "user"]
        if with_own and users:
            self.terminal.show("What you heard, and what you are asked", users[-1])

    # -- ballots ----------------------------------------------------------------------------------------------------

    def _phase(self, request: GenerateRequest) -> str:
        phase = str(request.tags.get("phase") or "ballot")
        return phase.removeprefix("ballot-")

    async def _ballot(self, request: GenerateRequest) -> object:
        """The person's answer to this ballot: asked once, reused for every order and item it is scored in."""
        phase = self._phase(request)
        if phase in self._ballots:
            return self._ballots[phase]
        self._show_prompt(request, with_own=False)
        when = "before anyone has spoken" if phase == "pre" else "after the deliberation"
        self.terminal.show(f"Your private ballot ({when})", "\n".join(
            f"{i}. {option}" for i, option in enumerate(self.options, start=1)))
        if self.ballot_type == "ranked":
            answer: object = await self._numbers("Rank every option: their numbers, most preferred first "
                                                 "(e.g. 2 1 3):", exact=True)
        elif self.ballot_type == "approval":
            answer = await self._numbers("The numbers of every option you find acceptable (0 for none):",
                                         exact=False)
        else:
            answer = (await self._numbers("The number of your choice:", exact=False, one=True))[0]
        self._ballots[phase] = answer
        return answer

    async def _numbers(self, prompt: str, *, exact: bool, one: bool = False) -> list[str]:
        """Options by number, asked again until the answer reads: one, all in an order (exact), or any set."""
        k = len(self.options)
        while True:
            line = await self.terminal.ask(prompt)
            numbers = [int(n) for n in re.findall(r"\d+", line)]
            if not one and not exact and numbers == [0]:
                return []
            if numbers and all(1 <= n <= k for n in numbers) and len(set(numbers)) == len(numbers) and (
                    (one and len(numbers) == 1) or (exact and len(numbers) == k) or (not one and not exact)):
                return [self.options[n - 1] for n in numbers]
            need = "one number" if one else f"each of 1..{k} once" if exact else f"numbers from 1 to {k}, or 0"
            self.terminal.say(f"Please type {need}.")

    async def _scored(self, request: GenerateRequest) -> tuple[str, str, dict[str, float]]:
        answer = await self._ballot(request)
        choices = list(request.choices or [])
        item = request.tags.get("item")
        if item is not None:  # approval: one yes/no question per option
            picked = "Yes" if item in answer else "No"  # type: ignore[operator]
            logprobs = {c: 0.0 if c == picked else UNCHOSEN for c in choices}
        elif self.ballot_type == "ranked":
            logprobs = rank_logprobs([o for o in answer if o in choices])  # type: ignore[union-attr]
        else:
            logprobs = {c: 0.0 if c == answer else UNCHOSEN for c in choices}
        choice = max(choices, key=lambda c: logprobs.get(c, UNCHOSEN))
        return choice, choice, logprobs

    async def _structured(self, request: GenerateRequest) -> str:
        """A structured ballot reply (backends without option scores): the JSON the ballot's schema asks for."""
        import json

        answer = await self._ballot(request)
        key = next(iter((request.json_schema or {}).get("properties") or {"choice": None}))
        return json.dumps({key: answer}, ensure_ascii=False)

    # -- statements and questions -----------------------------------------------------------------------------------

    async def _speak(self, request: GenerateRequest) -> str:
        self._show_prompt(request, with_own=True)
        what = "Your question" if request.tags.get("phase") == "question" else "Your statement"
        while True:
            text = (await self.terminal.ask(f"{what} (one line):")).strip()
            if text:
                return text
            self.terminal.say("Please say something (one line, then Enter).")
