"""`assembly finetune prepare --type deliberative-alignment`: specification clauses -> chat SFT examples in which the
clause's question comes up inside an ordinary user request, and the assistant first reasons with the clause (quoted
with its provenance id) and then answers — the recipe of deliberative alignment (Guan et al. 2024), with clauses an
assembly decided as the specification.

For each clause, `scenarios` user requests are rendered from the templates in assembly/prompts/alignment_request.j2
(which scenarios, and which option a user leans to, drawn with the seed). The generator model sees the clause in its
system prompt (alignment_generator.j2) and writes `candidates` completions per request (seeded, sampled); each
becomes "Reasoning: the relevant clause is <quote with id> … Answer: …" (alignment_completion.j2). The judge model
grades every candidate against the clause on a 1–5 scale (alignment_judge.j2): by constrained choice over the five
digits where the backend scores options (the score is the expected grade under its distribution), else by reading a
digit from its reply (re-asked up to `JUDGE_ATTEMPTS` times). The best-graded candidate of each request (best-of-N;
ties go to the first) becomes the training example — *without* the clause in its prompt (alignment_system.j2 only
says the specification exists), so a tuned model learns to recall the clause rather than read it.

Output, in the folder `finetune train --dataset` reads:
    train.jsonl       the chosen examples, in the format of finetune/dataset.py (type "deliberative_alignment")
    candidates.jsonl  every candidate of every request with its grade, grade distribution and whether it was chosen
    manifest.json     counts, sources, files and hashes (as finetune.dataset writes them), clauses, models, scores
Every input is checked before a model is loaded, and the files are written only once everything is generated and
graded (each to a temporary file, then renamed; the manifest last), so a bad input leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from assembly.clauses import Clause
from assembly.errors import AssemblyError, SpecError
from assembly.prompts import render_prompt
from assembly.providers.base import Model
from assembly.providers.registry import ModelPool, parse_model_spec
from assembly.providers.types import (
    ChoiceScoringUnavailable,
    GenerateRequest,
    Message,
    ModelError,
)
from assembly.seeds import seed_for
from assembly.text import clip_words
from finetune.dataset import PrepareOptions, _sha, question_key, summarize

TYPE = "deliberative-alignment"  # the --type value
EXAMPLE_TYPE = "deliberative_alignment"  # the examples' "type" field (snake case, like the other example types)
SCENARIOS = ("advice", "draft", "argument", "assistant", "meeting")  # the branches of alignment_request.j2
GRADES = ("1", "2", "3", "4", "5")
JUDGE_ATTEMPTS = 3
STATEMENT_WORDS = 60  # the verdict statement as quoted in a clause
REASONING_WORDS, ANSWER_WORDS = 90, 160
_ANSWER = re.compile(r"\banswer\s*:\s*", re.IGNORECASE)
_REASONING = re.compile(r"^\s*reasoning\s*:\s*", re.IGNORECASE)
_GRADE = re.compile(r"[1-5]")


class AlignmentError(AssemblyError):
    """Bad options, clauses or models for deliberative-alignment data; the message is one line."""


@dataclass(frozen=True)
class AlignmentOptions:
    clauses: tuple[str, ...]  # clause files (.yaml, .json) or runs / studies in the store
    model: str = "embedded"  # writes the candidates
    judge: str | None = None  # grades them (None: the generator itself)
    candidates: int = 4  # per request (best-of-N)
    scenarios: int = 2  # requests per clause
    seed: int = 0
    temperature: float = 0.8
    max_tokens: int = 200

    @property
    def judge_spec(self) -> str:
        return self.judge or self.model

    def check(self) -> None:
        if not self.clauses:
            raise AlignmentError(f"--type {TYPE} needs at least one --clause (a clause file, or a run or study id)")
        if self.candidates < 1:
            raise AlignmentError(f"--candidates {self.candidates}: must be at least 1")
        if not 1 <= self.scenarios <= len(SCENARIOS):
            raise AlignmentError(f"--scenarios {self.scenarios}: must be between 1 and {len(SCENARIOS)} "
                                 f"({', '.join(SCENARIOS)})")
        if self.max_tokens < 16:
            raise AlignmentError(f"--max-tokens {self.max_tokens}: must be at least 16")
        for flag, spec in (("--model", self.model), ("--judge", self.judge_spec)):
            try:
                parse_model_spec(spec)
            except SpecError as exc:
                raise AlignmentError(f"{flag}: {exc}") from None


@dataclass
class Request:
    """One user request built from one clause: what the generator and the judge are asked about."""

    clause: Clause
    source: str  # the --clause value it came from
    index: int  # its number among the clause's requests
    scenario: str
    text: str
    quote: str  # the clause as quoted (alignment_clause.j2)

    @property
    def id(self) -> str:
        return f"{self.clause.label.replace(' ', ':')}:{EXAMPLE_TYPE}:{self.index}"


@dataclass
class Candidate:
    request: Request
    number: int
    seed: int
    reply: str  # the generator's text as it came
    reasoning: str
    answer: str
    completion: str
    model: str  # what the backend said answered
    score: float | None = None  # the expected grade (constrained choice) or the grade read from the reply
    distribution: dict[str, float] | None = None
    method: str | None = None  # scored[:<backend's choice method>] | reply | none
    judge_reply: str | None = None
    judge_model: str | None = None
    chosen: bool = False


# --- clauses and requests -------------------------------------------------------------------------------------------


def load_clauses(names: Sequence[str], open_store: Callable[[], Any]) -> list[Clause]:
    """The clauses named (files or store targets: assembly.clauses.clauses_for), each with a decision to cite."""
    from assembly.clauses import clauses_for

    found = clauses_for(names, open_store)
    seen: dict[str, str] = {}
    for name, clause in zip(names, found):
        if not clause.decision.winner:
            raise AlignmentError(f"{name}: {clause.label} reached no decision (no winner): there is nothing to "
                                 "reason with")
        if clause.label in seen:  # its examples would share ids
            raise AlignmentError(f"{name}: {clause.label} is already given (as {seen[clause.label]})")
        seen[clause.label] = name
    return found


def quote(clause: Clause) -> str:
    """The clause as the generator, the completion and the judge quote it: id, question, decision, support, minority."""
    d, s = clause.decision, clause.support
    winner = next((o for o in s.options if o.option == d.winner), None)
    return render_prompt(
        "alignment_clause", label=clause.label, question=clause.question, basis=s.basis, draws=s.draws,
        jurors=clause.provenance.jury_size or (clause.minority.of if clause.minority else "several people"),
        winner=d.winner, share=winner.post_share if winner else None,
        win_probability=winner.win_probability if winner else None,
        statement=clip_words(d.statement, STATEMENT_WORDS, one_line=True),
        minority=clause.minority if clause.minority and clause.minority.jurors else None)


def build_requests(clauses: Sequence[Clause], sources: Sequence[str], options: AlignmentOptions) -> list[Request]:
    """`options.scenarios` distinct scenarios per clause and the option each user leans to, drawn with the seed."""
    requests = []
    for clause, source in zip(clauses, sources):
        rng = random.Random(seed_for(options.seed, "alignment-scenarios", clause.label))
        text = quote(clause)
        for index, scenario in enumerate(rng.sample(SCENARIOS, options.scenarios)):
            body = render_prompt("alignment_request", scenario=scenario, question=clause.question,
                                 options=clause.options, lean=rng.choice(clause.options))
            requests.append(Request(clause, source, index, scenario, body, text))
    return requests


# --- generating and grading -----------------------------------------------------------------------------------------


def split_reply(text: str) -> tuple[str, str]:
    """(reasoning, answer) from "Reasoning: … Answer: …"; without an "Answer:" the whole reply is the answer."""
    text = (text or "").strip()
    match = _ANSWER.search(text)
    if match is None:
        return "", clip_words(_REASONING.sub("", text), ANSWER_WORDS)
    reasoning = _REASONING.sub("", text[:match.start()]).strip()
    return clip_words(reasoning, REASONING_WORDS), clip_words(text[match.end():], ANSWER_WORDS)


def _seed(options: AlignmentOptions, request: Request, number: int) -> int:
    return seed_for(options.seed, "alignment-candidate", request.clause.label, request.index, number)


async def generate(model: Model, requests: Sequence[Request], options: AlignmentOptions) -> list[Candidate]:
    """`options.candidates` sampled completions per request, all in one batch."""
    calls = [(r, k, _seed(options, r, k)) for r in requests for k in range(options.candidates)]
    asks = [GenerateRequest(messages=[Message(role="system", content=render_prompt("alignment_generator",
                                                                                   clause=r.quote)),
                                      Message(role="user", content=r.text)],
                            max_tokens=options.max_tokens, temperature=options.temperature, seed=seed,
                            tags={"role": "alignment-generator", "request": r.id, "candidate": k})
            for r, k, seed in calls]
    try:
        responses = await model.generate_many(asks)
    except ModelError as exc:
        raise AlignmentError(f"--model {model.name}: {exc}") from None
    out = []
    for (r, k, seed), response in zip(calls, responses):
        reasoning, answer = split_reply(response.text)
        completion = render_prompt("alignment_completion", clause=r.quote, reasoning=reasoning, answer=answer)
        out.append(Candidate(r, k, seed, response.text, reasoning, answer, completion, response.model))
    return out


def _judge_messages(c: Candidate) -> list[Message]:
    return [Message(role="user", content=render_prompt("alignment_judge", clause=c.request.quote,
                                                       request=c.request.text, reply=c.completion))]


async def grade(judge: Model, candidates: Sequence[Candidate]) -> None:
    """Fill every candidate's grade: the expected grade under the judge's scored distribution over 1–5, or (a
    backend that cannot score options) the digit its reply starts with, re-asked when there is none."""
    if judge.scores_options:
        try:
            await _grade_scored(judge, candidates)
            return
        except ChoiceScoringUnavailable:  # the backend turned out not to score after all: read grades from replies
            for c in candidates:
                c.score = c.distribution = c.method = None
    await _grade_replies(judge, candidates)


async def _grade_scored(judge: Model, candidates: Sequence[Candidate]) -> None:
    asks = [GenerateRequest(messages=_judge_messages(c), choices=list(GRADES), max_tokens=4, temperature=0.0,
                            tags={"role": "alignment-judge", "request": c.request.id, "candidate": c.number})
            for c in candidates]
    try:
        responses = await judge.generate_many(asks)
    except ChoiceScoringUnavailable:
        raise
    except ModelError as exc:
        raise AlignmentError(f"--judge {judge.name}: {exc}") from None
    for c, response in zip(candidates, responses):
        logprobs = response.choice_logprobs or {}
        if set(logprobs) != set(GRADES):
            raise ChoiceScoringUnavailable("the judge returned no score for every grade")
        weights = {g: math.exp(logprobs[g]) for g in GRADES}
        total = sum(weights.values()) or 1.0
        c.distribution = {g: w / total for g, w in weights.items()}
        c.score = sum(int(g) * p for g, p in c.distribution.items())
        method = response.raw.get("choice_method")
        c.method = f"scored:{method}" if method else "scored"
        c.judge_reply, c.judge_model = response.choice, response.model


async def _grade_replies(judge: Model, candidates: Sequence[Candidate]) -> None:
    threads = {id(c): _judge_messages(c) for c in candidates}
    pending = list(candidates)
    for attempt in range(1, JUDGE_ATTEMPTS + 1):
        asks = [GenerateRequest(messages=threads[id(c)], max_tokens=8, temperature=0.0 if attempt == 1 else 0.7,
                                seed=seed_for("alignment-judge", c.seed, attempt),
                                tags={"role": "alignment-judge", "request": c.request.id, "candidate": c.number,
                                      "attempt": attempt})
                for c in pending]
        try:
            responses = await judge.generate_many(asks)
        except ModelError as exc:
            raise AlignmentError(f"--judge {judge.name}: {exc}") from None
        still = []
        for c, response in zip(pending, responses):
            found = _GRADE.search(response.text or "")
            c.judge_reply, c.judge_model = response.text, response.model
            if found:
                c.score, c.method = float(found.group()), "reply"
                continue
            threads[id(c)] = [*threads[id(c)], Message(role="assistant", content=response.text or ""),
                              Message(role="user", content=render_prompt("alignment_judge_retry",
                                                                         error="no digit from 1 to 5 in it"))]
            still.append(c)
        pending = still
        if not pending:
            return
    for c in pending:
        c.method = "none"  # never graded: never chosen while a graded candidate exists


def choose(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The best-graded candidate of each request (ties: the first); marks it chosen."""
    best: dict[str, Candidate] = {}
    for c in candidates:
        held = best.get(c.request.id)
        if held is None or (c.score if c.score is not None else -1) > (held.score if held.score is not None else -1):
            best[c.request.id] = c
    for c in best.values():
        c.chosen = True
    return list(best.values())


# --- records and files ----------------------------------------------------------------------------------------------


def example(c: Candidate, generator: str, judge: str) -> dict[str, Any]:
    """The chosen candidate as an SFT example, shaped like finetune/dataset.py's (so `finetune train` reads it)."""
    clause, p = c.request.clause, c.request.clause.provenance
    key = question_key(clause.question)
    return {
        "id": c.request.id,
        "type": EXAMPLE_TYPE,
        "messages": [{"role": "system", "content": render_prompt("alignment_system")},
                     {"role": "user", "content": c.request.text},
                     {"role": "assistant", "content": c.completion}],
        "target": None,
        "contrast": None,
        "source": "assembly-sim",
        "provenance": "simulated",
        "license": None,
        "run_id": p.run_id or clause.decision.statement_run,
        "deliberation_id": clause.label,
        "question_id": f"q-{hashlib.sha1(key.encode()).hexdigest()[:12]}",
        "question_key": key,
        "split": "train",
        "clause": clause.label,
        "scenario": c.request.scenario,
        "candidate": c.number,
        "score": c.score,
        "generator": generator,
        "judge": judge,
    }


def candidate_record(c: Candidate) -> dict[str, Any]:
    return {"example_id": c.request.id, "clause": c.request.clause.label, "clause_source": c.request.source,
            "scenario": c.request.scenario, "request": c.request.text, "candidate": c.number, "seed": c.seed,
            "reply": c.reply, "reasoning": c.reasoning, "answer": c.answer, "completion": c.completion,
            "model": c.model, "score": c.score, "distribution": c.distribution, "method": c.method,
            "judge_reply": c.judge_reply, "judge_model": c.judge_model, "chosen": c.chosen}


def _mean(values: Sequence[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return round(sum(found) / len(found), 4) if found else None


def write_dataset(out_dir: Path, examples: list[dict[str, Any]], candidates: list[Candidate],
                  options: AlignmentOptions, clauses: Sequence[Clause], models: dict[str, Any],
                  store_path: str | None) -> dict[str, Any]:
    """train.jsonl, candidates.jsonl and (last) manifest.json, each written whole or not at all."""
    from transcripts.exports import write_text

    texts = {"train.jsonl": [json.dumps(e, ensure_ascii=False, sort_keys=True) for e in examples],
             "candidates.jsonl": [json.dumps(candidate_record(c), ensure_ascii=False, sort_keys=True)
                                  for c in candidates]}
    files = {name: _sha(lines) for name, lines in texts.items()}
    # finetune.dataset's manifest (examples, sources with licences and hashes, files: what the card reads), read
    # from the examples themselves; "store" is where clauses given by id were read (None: files only)
    manifest = summarize(examples, PrepareOptions(types=(EXAMPLE_TYPE,), validation=0.0, test=0.0, seed=options.seed),
                         SimpleNamespace(path=store_path), files)
    manifest["store"] = store_path
    chosen = [c for c in candidates if c.chosen]
    manifest.update({
        "type": TYPE,
        "options": {**asdict(options), "clauses": list(options.clauses), "judge": options.judge_spec},
        "clauses": [{"source": name, "label": c.label, "question": c.question, "winner": c.decision.winner,
                     "basis": c.support.basis} for name, c in zip(options.clauses, clauses)],
        "models": models,
        "candidates": {"total": len(candidates), "per_request": options.candidates,
                       "graded": sum(c.score is not None for c in candidates),
                       "methods": sorted({c.method for c in candidates if c.method})},
        "scores": {"chosen_mean": _mean([c.score for c in chosen]), "all_mean": _mean([c.score for c in candidates])},
    })
    for name, lines in texts.items():
        write_text(out_dir / name, "".join(line + "\n" for line in lines))
    for split in ("validation", "test"):  # a folder prepared before must not add its held-out rows to this dataset
        (out_dir / f"{split}.jsonl").unlink(missing_ok=True)
    write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False, default=str))
    return manifest


async def aprepare_alignment(out_dir: str | Path, options: AlignmentOptions, *,
                             open_store: Callable[[], Any] | None = None,
                             models: dict[str, Model] | None = None) -> dict[str, Any]:
    """Build the dataset into `out_dir`; returns the manifest. `open_store`: the store for clauses named by run or
    study id; `models`: {"model": …, "judge": …} objects instead of the specs (tests)."""
    options.check()
    stores: list[str] = []  # where clauses named by id were read, for the manifest

    def store():
        if open_store is None:
            raise AlignmentError("a --clause that is not a clause file needs a store (--db)")
        opened = open_store()
        stores.append(str(opened.path))
        return opened

    clauses = load_clauses(options.clauses, store)
    requests = build_requests(clauses, options.clauses, options)
    pool = ModelPool()
    try:
        given = models or {}
        generator = given.get("model") or pool.get(options.model)
        judge = given.get("judge") or (generator if options.judge is None else pool.get(options.judge))
        candidates = await generate(generator, requests, options)
        await grade(judge, candidates)
    finally:
        await pool.aclose()
    chosen = choose(candidates)
    examples = [example(c, generator.name, judge.name) for c in chosen]
    used = {"generator": {"spec": options.model, "name": generator.name,
                          "reported": sorted({c.model for c in candidates})},
            "judge": {"spec": options.judge_spec, "name": judge.name,
                      "reported": sorted({c.judge_model for c in candidates if c.judge_model})}}
    return write_dataset(Path(out_dir), examples, candidates, options, clauses, used, stores[0] if stores else None)


def prepare_alignment(out_dir: str | Path, options: AlignmentOptions, **kwargs) -> dict[str, Any]:
    """Synchronous twin of `aprepare_alignment`."""
    return asyncio.run(aprepare_alignment(out_dir, options, **kwargs))
