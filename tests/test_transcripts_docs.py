"""docs/store.md stays true: its schema section matches a live store, and its example SQL runs. Plus the package's
import boundary."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from transcripts import Store
from transcripts.docs import fresh_schema_markdown, generated_section
from transcripts.samples import write_run

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "store.md"
SQL_BLOCKS = re.findall(r"```sql\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_schema_section_is_generated_from_the_live_schema():
    assert generated_section(DOC) == fresh_schema_markdown(), "run: python -m transcripts.docs docs/store.md"


def test_generated_schema_lists_every_table_view_and_column():
    text = fresh_schema_markdown()
    for name in ["runs", "participants", "participant_attributes", "turns", "ballots", "tallies", "verdicts",
                 "llm_calls", "schema_migrations", "transcript", "ballot_changes", "opinion_shift",
                 "opinion_shift_by_group", "call_costs", "speaking_share", "run_overview", "studies", "study_draws",
                 "study_win_rates", "study_shifts", "study_group_shifts"]:
        assert f"#### `{name}`" in text
    assert "| request_hash | VARCHAR | not null |" in text
    assert "`(status IN ('running', 'completed', 'failed', 'interrupted'))`" in text


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("docs") / "s.duckdb")
    for seed in range(3):
        write_run(store, seed=seed)
    return store


def test_the_doc_has_examples():
    assert len(SQL_BLOCKS) >= 8


@pytest.mark.parametrize("query", SQL_BLOCKS, ids=[f"example{i}" for i in range(len(SQL_BLOCKS))])
def test_example_sql_runs(sample, query):
    result = sample.sql(query)
    assert result.width > 0


def test_transcripts_imports_nothing_from_the_rest_of_the_project():
    forbidden = {"assembly", "juries", "finetune"}
    for path in (ROOT / "transcripts").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
    code = ("import sys, transcripts, transcripts.report, transcripts.docs, transcripts.samples;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('assembly', 'juries', 'finetune', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
