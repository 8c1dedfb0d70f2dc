"""Seeds are recorded with every run: their values are pinned, so a refactor cannot silently change what a recorded
run, an evaluation's panels or a prepared dataset's split reproduce."""

from __future__ import annotations

import re
from pathlib import Path

from assembly import seeds

ROOT = Path(__file__).resolve().parent.parent


def test_seeds_are_pinned():
    assert seeds.seed_for(7, "ballot", "pre", "j1") == 405420493
    assert seeds.seed_for(0, "orders") == 545294318
    assert seeds.seed_for(7, "opening", None, "moderator", 0) == 381003
    assert seeds.unit_for("split", 0, "a question") == 0.8483903817745713
    assert seeds.unit_for(5, "mix") == 0.39358508311421786


def test_seeds_fit_their_ranges_and_every_caller_uses_this_module():
    assert all(0 <= seeds.seed_for(i) < 2**31 for i in range(200))
    assert all(0.0 <= seeds.unit_for(i) < 1.0 for i in range(200))
    from assembly import graph
    from assembly.evaluation import fidelity
    from finetune import dataset

    assert graph.seed_for is seeds.seed_for and fidelity.seed_for is seeds.seed_for
    assert dataset.seed_for is seeds.seed_for and dataset.unit_for is seeds.unit_for


def test_nothing_else_hashes_parts_into_a_seed():
    """Content hashes (request hashes, data hashes) are fine elsewhere; turning a digest into a number is not."""
    into_a_number = re.compile(r"int\.from_bytes\(|int\([^)]*hexdigest\(\)")
    offenders = [str(path.relative_to(ROOT)) for package in ("assembly", "juries", "transcripts", "finetune")
                 for path in (ROOT / package).rglob("*.py")
                 if path.name != "seeds.py" and into_a_number.search(path.read_text(encoding="utf-8"))]
    assert offenders == []
