"""The HTML report: one self-contained page with the run's question, charts, tallies, verdict and transcript."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from transcripts import Store, StoreError
from transcripts.report import render_report, write_report
from transcripts.samples import write_run

POPULATION = {"party": {"Democrat": 0.33, "Republican": 0.29, "Independent": 0.38},
              "age": {"18-29": 0.2, "30-49": 0.33, "50-64": 0.25, "65+": 0.22}}


class Balance(HTMLParser):
    VOID = {"meta", "br", "img", "input", "link", "hr", "rect"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors = [], []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("report") / "s.duckdb")
    run_id = write_run(store, seed=5)
    store.add_tally(run_id, phase="post", rule="borda", winner="No", winners=["No", "Yes"], scores={"No": 20, "Yes": 20},
                    tie_break="random (seed 5)", valid=12, abstained=0, explain="Borda count.")
    store.add_turn(run_id, seq=99, phase="closing", round=None, speaker_id="juror-01",
                   content="I <b>insist</b> & <script>alert('x')</script>")
    store.update_summary(run_id, {"population": POPULATION})
    return store, run_id


def test_the_page_has_every_section(run, tmp_path):
    store, run_id = run
    path = write_report(store, run_id, tmp_path)
    assert path == tmp_path / f"{run_id}.html"
    html = path.read_text()
    for section in ["verdict", "composition", "ballots", "tallies", "speaking", "costs", "transcript"]:
        assert f'<section id="{section}">' in html
    assert "<h1>Should the city introduce a congestion charge?</h1>" in html
    assert "The jury recommends" in html and "Some jurors disagreed." in html
    assert "plurality" in html and "borda" in html and "(tied: No, Yes)" in html and "random (seed 5)" in html
    turns = store.sql("select content from turns where run_id = ? and seq < 99", [run_id])["content"].to_list()
    assert all(t in html for t in turns)  # the full transcript
    assert html.index("opening") < html.index("testimony") < html.index("deliberation, round 3")
    assert "Dr. Rivera" in html and "Juror 12" in html
    # expected tallies and the verdict's stability under redraws of the votes
    assert '<p id="stability">' in html and "wins again in 80% of 1000 redraws" in html


def test_it_is_self_contained(run):
    html = render_report(*run)
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert not re.search(r"url\(", html)


def test_text_is_escaped(run):
    html = render_report(*run)
    assert "I &lt;b&gt;insist&lt;/b&gt; &amp; &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html


def test_charts_are_valid_svg(run):
    html = render_report(*run)
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    titles = [ET.fromstring(svg).find("{http://www.w3.org/2000/svg}title").text for svg in svgs]
    assert titles == ["party", "age", "Support by option (single ballots, share of valid ballots)",
                      "Who moved where", "If the jurors' votes were drawn again (plurality, 1000 redraws)",
                      "Share of all words spoken"]
    checker = Balance()
    checker.feed(html)
    assert checker.errors == [] and checker.stack == []


def test_composition_compares_jury_with_population(run):
    store, run_id = run
    html = render_report(store, run_id)
    party_chart = re.findall(r"<svg.*?</svg>", html, flags=re.S)[0]
    jury = store.sql("select value, count(*) / 12 share from participant_attributes where run_id = ? "
                     "and attribute = 'party' group by value", [run_id]).rows()
    for value, share in jury:
        assert f"jury: {100 * share:.0f}%" in party_chart
    assert "population: 33%" in party_chart and "population: 29%" in party_chart
    # an explicit population replaces the stored one
    only_sex = render_report(store, run_id, population={"sex": {"Male": 0.49, "Female": 0.51}})
    assert "<title>sex</title>" in only_sex and "<title>party</title>" not in only_sex


def test_without_population_the_jury_alone_is_shown(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    run_id = write_run(store, seed=2)
    html = render_report(store, run_id)
    assert "No population marginals were given" in html
    assert "<title>party</title>" in html and "population:" not in html


def test_a_run_in_progress_and_an_unknown_run(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    run_id = store.begin_run(question="Just started?", spec={})
    html = render_report(store, run_id)
    assert "running" in html and "No turns recorded." in html and '<section id="verdict">' not in html
    with pytest.raises(StoreError, match="no run"):
        write_report(store, "01NOPE", tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()
