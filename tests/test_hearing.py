"""What a juror hears: the witness exchanges, heard in plenary, stay bounded however many jurors ask."""

from __future__ import annotations

from types import SimpleNamespace

from assembly.hearing import questions_digest


def context(testimony_words: int):
    names = {"w1": "Dr Lee", **{f"j{i}": f"Juror {i}" for i in range(12)}}
    return SimpleNamespace(spec=SimpleNamespace(procedure=SimpleNamespace(testimony_words=testimony_words)),
                           name_of=names.__getitem__, speaker_names=lambda: list(names.values()))


def test_the_questions_digest_keeps_every_exchange_in_order_within_a_fixed_budget():
    long = " ".join(f"word{i}" for i in range(200))
    state = {"questions": {f"j{i}": {"question": f"q{i} {long}", "answer": f"a{i} {long}", "witness": "w1",
                                     "seq": 100 - i} for i in range(12)}}
    for asked in (1, 4, 12):
        some = {k: v for k, v in list(state["questions"].items())[:asked]}
        digest = questions_digest(context(150), {"questions": some})
        lines = digest.splitlines()
        assert len(lines) == 2 * asked  # one question line and one answer line per exchange
        spoken = sum(len(line.split(":", 1)[1].split()) for line in lines)
        assert spoken <= max(2 * 150, 15 * asked) + 2 * asked  # the budget (clip_words may end on a mark)
        seqs = [int(line.split("asked Dr Lee: q")[1].split()[0]) for line in lines[::2]]
        assert seqs == sorted(seqs, reverse=True)  # in the order asked (seq), not by juror id
        assert all(line.startswith("Dr Lee: a") for line in lines[1::2])
    assert questions_digest(context(150), {"questions": {}}) == ""
