"""Seeds are recorded with every run: their values are pinned, so a refactor cannot silently change what a recorded
run, an evaluation's panels or a prepared dataset's split reproduce."""

from __future__ import annotations

from assembly import seeds


def test_engine_seeds_are_pinned():
    assert seeds.seed_for(7, "ballot", "pre", "j1") == 405420493
    assert seeds.seed_for(0, "orders") == 545294318
    assert seeds.seed_for(7, "opening", None, "moderator", 0) == 381003


def test_eval_seeds_are_pinned():
    assert seeds.stable_seed(0, "population") == 1795874053
    assert seeds.stable_seed(3, "Q1", "j2") == 286196416


def test_finetune_integers_are_pinned():
    assert seeds.stable_int("split", 0, "a question") == 14442512855579654540
    assert seeds.stable_int(5, "mix") == 16894085911888276497
    assert seeds.stable_unit("split", 0, "a question") == 0.7829301907084644


def test_seeds_fit_their_ranges_and_every_caller_uses_this_module():
    assert all(0 <= seeds.seed_for(i) < 2**31 and 0 <= seeds.stable_seed(i) < 2**31 for i in range(200))
    assert all(0.0 <= seeds.stable_unit(i) < 1.0 for i in range(200))
    from assembly import graph
    from assembly.evaluation import fidelity
    from finetune import dataset

    assert graph.seed_for is seeds.seed_for and fidelity.stable_seed is seeds.stable_seed
    assert dataset.stable_int is seeds.stable_int and dataset.stable_unit is seeds.stable_unit
