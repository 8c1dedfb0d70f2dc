"""Synthetic assemblies of realistic shape, for tests, docs and benchmarks (no model, no data files)."""

from __future__ import annotations

import hashlib
import random
from typing import Any

from transcripts.store import Store

OPTIONS = ["Yes", "No", "Unsure"]
PARTIES = ["Democrat", "Republican", "Independent"]
AGES = ["18-29", "30-49", "50-64", "65+"]


def participants(n_jurors: int = 12, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    people = [
        {"id": "moderator", "role": "moderator", "name": "Moderator", "persona": None, "attributes": {}},
        {"id": "witness-1", "role": "witness", "name": "Dr. Rivera", "persona": "A transport economist.",
         "attributes": {}},
    ]
    for i in range(1, n_jurors + 1):
        party, age = rng.choice(PARTIES), rng.choice(AGES)
        people.append({
            "id": f"juror-{i:02d}", "role": "juror", "name": f"Juror {i}",
            "persona": f"A {age} year old {party} voter.",
            "attributes": {"party": party, "age": age, "sex": rng.choice(["Male", "Female"])},
        })
    return people


def write_run(store: Store, *, seed: int = 0, n_jurors: int = 12, rounds: int = 3, finish: bool = True,
              question: str = "Should the city introduce a congestion charge?") -> str:
    """Write one complete simulated assembly through the engine's write API; return its run id."""
    rng = random.Random(seed)
    run_id = store.begin_run(question=question, spec={"options": OPTIONS, "jurors": n_jurors, "rounds": rounds},
                             seed=seed, provenance="simulated", versions={"transcripts": "test"})
    people = participants(n_jurors, seed)
    store.add_participants(run_id, people)
    jurors = [p["id"] for p in people if p["role"] == "juror"]
    seq = 0

    def call(role: str, who: str, phase: str, text: str) -> str:
        prompt = f"[{phase}] {who}: speak."
        return store.add_llm_call(
            run_id, model="scripted:test", role=role, participant_id=who, phase=phase,
            request_hash=hashlib.sha256(f"{run_id}{prompt}{seq}".encode()).hexdigest()[:16],
            messages=[{"role": "system", "content": f"You are {who}."}, {"role": "user", "content": prompt}],
            params={"temperature": 0.7}, response=text, input_tokens=40, output_tokens=len(text.split()),
            duration_s=0.05, attempts=1, seed=seed, cost_usd=0.0001,
        )

    def say(who: str, role: str, phase: str, rnd: int | None, text: str) -> None:
        nonlocal seq
        call_id = call(role, who, phase, text)
        store.add_turn(run_id, seq=seq, phase=phase, round=rnd, speaker_id=who, content=text, call_id=call_id)
        seq += 1

    pre = {j: rng.choice(OPTIONS) for j in jurors}
    for j in jurors:
        store.add_ballot(run_id, participant_id=j, phase="pre", ballot_type="single", status="valid",
                         choice=pre[j], rationale=f"{j} leans {pre[j]}.", attempts=1)
    say("moderator", "moderator", "opening", None, "Welcome. Today we consider the congestion charge.")
    say("witness-1", "witness", "testimony", None, "Charges cut traffic by a fifth in comparable cities.")
    for rnd in range(1, rounds + 1):
        say("moderator", "moderator", "deliberation", rnd, f"Round {rnd}: who would like to speak?")
        for j in rng.sample(jurors, k=min(len(jurors), 4)):
            say(j, "juror", "deliberation", rnd, f"I think the charge is {rng.choice(['fair', 'unfair', 'unclear'])}.")
    post = {j: (pre[j] if rng.random() < 0.7 else rng.choice(OPTIONS)) for j in jurors}
    for j in jurors:
        store.add_ballot(run_id, participant_id=j, phase="post", ballot_type="single", status="valid",
                         choice=post[j], rationale=f"After discussion {j} chose {post[j]}.", attempts=1)
    counts = {o: sum(1 for v in post.values() if v == o) for o in OPTIONS}
    winner = max(OPTIONS, key=lambda o: (counts[o], -OPTIONS.index(o)))
    store.add_tally(run_id, phase="post", rule="plurality", winner=winner, winners=[winner], scores=counts,
                    rounds=None, tie_break=None, valid=len(jurors), abstained=0,
                    explain=f"{winner} has the most first choices.",
                    expected={o: counts[o] * 0.9 + 0.1 * len(jurors) / len(OPTIONS) for o in OPTIONS},
                    win_probability={o: 0.8 if o == winner else round(0.2 / (len(OPTIONS) - 1), 4) for o in OPTIONS},
                    stability=0.8, redraws=1000)
    store.add_verdict(run_id, text=f"The jury recommends: {winner}.", minority_report="Some jurors disagreed.",
                      winner=winner, rule="plurality")
    if finish:
        store.finish_run(run_id, status="completed", summary={"winner": winner})
    return run_id
