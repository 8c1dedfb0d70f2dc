"""Shared fixtures: a minimal valid question file, and an isolated store/cache per test (no network, no hub)."""

from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tests.scripted_cli import register_scripted  # noqa: E402

register_scripted()  # `scripted:<name>` specs in tests; production has no such backend (tests/scripted_cli.py)

MINIMAL = textwrap.dedent(
    """\
    question: Should the town council ban cars from the market square on Saturdays?
    background: Shops are split; the square is crowded on market days.
    ballot:
      type: single
      options: [Ban cars, Keep access, Ban only in summer]
      rules: [plurality, majority]
    jury:
      size: 6
      stratify: [party, sex]
      seed: 5
    witnesses:
      - name: Ada Planner
        expertise: town planner
        stance: Pedestrian squares raise footfall.
      - name: Bo Trader
        expertise: market trader
        stance: Deliveries need car access.
    procedure:
      rounds: 2
      questioners: 2
      words_per_turn: 30
      option_orders: 3   # scripted choosers have no persona-free prior to divide out: calibration is tested in
      calibration: none  # test_ballots.py, the default procedure end to end in test_embedded_e2e.py
    """
)


@pytest.fixture
def question_file(tmp_path: Path) -> Path:
    path = tmp_path / "question.yaml"
    path.write_text(MINIMAL)
    return path


@pytest.fixture
def ctrl_c():
    """SIGINT raising KeyboardInterrupt, as in a terminal, even when the suite was started with SIGINT ignored (a
    background job of a non-interactive shell): asyncio.run only turns Ctrl-C into cancellation with that handler."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default store must never be the user's real one during tests."""
    monkeypatch.setenv("ASSEMBLY_STORE", str(tmp_path / "default-store.duckdb"))
