"""The HTML report rendered by headless Chromium: assert on the rendered page and keep a screenshot."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from assembly import deliberate
from assembly.providers.scripted import ScriptedModel

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; scripts/setup --dev installs it (Debian packages chromium)")
        pytest.skip("chromium not installed (scripts/setup --dev installs it)")
    return CHROMIUM


def render(chromium: str, page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    return subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def test_report_renders_in_chromium(chromium, question_file, tmp_path):
    db = tmp_path / "store.duckdb"
    result = deliberate(question_file, models=ScriptedModel(choose=lambda r: "Keep access"), db=db)
    page = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "assembly", "report", result.run_id, "-o", str(page), "--db", str(db)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

    dom = render(chromium, page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "Should the town council ban cars from the market square" in html
    assert html.count("<svg") >= 2  # composition and ballot-movement charts were drawn
    assert result.verdict.winner == "Keep access" and "Keep access" in html and "Verdict" in html
    for juror in result.jurors:
        assert juror.name in html  # speaking share and transcript name every juror
    assert "http://" not in html.replace("http://www.w3.org", "")  # self-contained: nothing fetched from outside

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    png = render(chromium, page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2400")
    assert png.returncode == 0, png.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a real page, not a blank frame


def test_study_report_renders_in_chromium(chromium, question_file, tmp_path):
    from assembly.study.runner import run_study

    db = tmp_path / "store.duckdb"
    result = run_study([question_file], db=db, settings={"draws": 3, "rounds": 1},
                       models=ScriptedModel(choose=lambda r: "Keep access"))
    page = tmp_path / "study.html"
    proc = subprocess.run([sys.executable, "-m", "assembly", "report", "--study", result.study_id, "-o", str(page),
                           "--db", str(db)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

    dom = render(chromium, page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "Should the town council ban cars from the market square" in html
    assert html.count("<svg") >= 3  # win probabilities, shift per option, shift per group
    assert "Probability of winning" in html and "Shift by group" in html and "95% interval" in html
    assert result.study_id in html and html.count("completed") >= 3  # every draw listed with its run
    assert "http://" not in html.replace("http://www.w3.org", "")

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "study_report.png"
    png = render(chromium, page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2400")
    assert png.returncode == 0, png.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
