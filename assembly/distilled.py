"""The distilled mode: a whole mini-public in ONE generation on a tuned model, recorded like any run.

A model fine-tuned on "whole assembly" examples (finetune.dataset builds them from recorded runs with
`format_record` below) reads the question and the jury roster and writes a compact record of the complete
assembly: every juror's private pre-ballot, the deliberation, every juror's post-ballot, a one-sentence verdict.
`run_distilled` draws the jury exactly as a full run does, asks for that record, parses it, and writes participants,
turns, ballots, tallies (`assembly.voting.tally_all`) and the verdict to the store with provenance 'simulated' and
`summary.mode = "distilled"`.

The record format (the training examples and the parser share these functions, so they cannot drift apart):

    PRE-BALLOT
    J1: Yes
    J2: No
    DELIBERATION
    ROUND 1
    J2: I think ...
    J1: ...
    POST-BALLOT
    J1: Yes
    J2: Yes
    VERDICT: The jury chose Yes because ...

Ranked ballots are written `J1: A > B > C`, approval ballots `J1: A; C` (or `J1: (none)`); a missing vote is
written `J1: (no vote)`. Parsing is forgiving (headers in any case, "Juror 3" for "J3", juror lines before any
header read as the pre-ballot, options matched ignoring case and punctuation, or by a unique whole-word prefix) but
never invents a vote: a juror whose line is missing, duplicated
beyond the first, or does not name the options is recorded as an abstention with the reason. Nothing here imports
torch; the model is any `assembly.providers.Model`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from assembly.ballot import Ballot
from assembly.ballot_types import KINDS, kind_of
from assembly.text import clip_words
from juries.vocabulary import ATTRIBUTES

NO_VOTE = "(no vote)"
RECORD_WORDS = 40  # words per statement in the compact record
VERDICT_WORDS = 50
END = "END"  # the record's last line: generation stops there (small models otherwise run on to max_tokens)

SYSTEM = (
    "You simulate a complete citizens' jury in one pass. Each juror is an ordinary member of the public with the "
    "attributes listed, who votes and speaks as such a person would. Write a compact record of the whole assembly "
    "in exactly the format asked for: the private pre-ballots, the deliberation, the private post-ballots and a "
    "one-sentence verdict, then END on a line of its own."
)

SKELETON = "PRE-BALLOT\nJ1: <option>\n...\nDELIBERATION\nROUND 1\nJ2: <what J2 says>\n...\nPOST-BALLOT\nJ1: <option>\n...\nVERDICT: <one sentence>\nEND"



# --- prompt ------------------------------------------------------------------------------------------------------


def roster_line(label: str, name: str | None, attributes: Mapping[str, Any]) -> str:
    """`J1 Maria Lopez: party Democrat, ideology Liberal, age 30-49, ...` (canonical attributes first)."""
    keys = [k for k in ATTRIBUTES if attributes.get(k) not in (None, "")]
    keys += sorted(k for k in attributes if k not in ATTRIBUTES and isinstance(attributes[k], str)
                   and not k.endswith("_raw") and attributes[k])
    described = ", ".join(f"{k} {attributes[k]}" for k in keys) or "no demographics recorded"
    who = f"{label} {name}" if name else label
    return f"{who}: {described}"


def distilled_messages(
    *,
    question: str,
    options: Sequence[str],
    ballot_type: str,
    roster: Sequence[str],
    rounds: int,
    background: str = "",
    witnesses: Sequence[str] = (),
    words: int = RECORD_WORDS,
) -> list[dict[str, str]]:
    """The chat messages (system + user) that ask for a whole assembly. `roster` holds `roster_line`s."""
    lines = [f"The question before the jury: {question}"]
    if background:
        lines.append(f"Background: {background}")
    lines.append(f"Ballot: each juror must {kind_of(ballot_type).written_as}. "
                 f"Options: {' | '.join(options)}")
    if witnesses:
        lines.append("Expert witnesses heard by the jury:")
        lines.extend(f"- {w}" for w in witnesses)
    lines.append(f"Jurors ({len(roster)}):")
    lines.extend(roster)
    lines.append(f"Deliberation: {rounds} round{'s' if rounds != 1 else ''}; each statement at most {words} words.")
    lines.append("")
    lines.append("Write the record in exactly this form: one line per juror ballot, one line per statement.")
    lines.append(SKELETON)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


# --- writing a record (training targets) -------------------------------------------------------------------------


def ballot_text(ballot: Mapping[str, Any] | None, ballot_type: str) -> str:
    """One ballot as the record writes it (`NO_VOTE` when missing or abstained)."""
    if not ballot or ballot.get("status", "valid") != "valid":
        return NO_VOTE
    try:
        vote = Ballot(participant_id="-", phase="pre", type=ballot_type,
                      **{k: ballot.get(k) for k in ("choice", "ranking", "approvals")})
    except ValueError:
        return NO_VOTE
    return kind_of(ballot_type).label(vote) or NO_VOTE


def format_record(
    *,
    labels: Sequence[str],
    ballot_type: str,
    pre: Mapping[str, Mapping[str, Any] | None],
    post: Mapping[str, Mapping[str, Any] | None],
    statements: Sequence[tuple[int | None, str, str]],
    verdict: str | None = None,
    words: int = RECORD_WORDS,
) -> str:
    """The compact record: `pre`/`post` map a label to its ballot dict (choice / ranking / approvals / status);
    `statements` are (round or None, label, text) in speaking order."""
    out = ["PRE-BALLOT"]
    out += [f"{label}: {ballot_text(pre.get(label), ballot_type)}" for label in labels]
    out.append("DELIBERATION")
    current: int | None = None
    for round_, label, text in statements:
        if round_ is not None and round_ != current:
            out.append(f"ROUND {round_}")
            current = round_
        said = clip_words(text, words, one_line=True)
        if said:
            out.append(f"{label}: {said}")
    out.append("POST-BALLOT")
    out += [f"{label}: {ballot_text(post.get(label), ballot_type)}" for label in labels]
    if verdict:
        out.append(f"VERDICT: {clip_words(verdict, VERDICT_WORDS, one_line=True)}")
    out.append(END)
    return "\n".join(out)


# --- parsing a generated record ----------------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*[#*\s]*(pre[\s_-]*ballot|deliberation|post[\s_-]*ballot|round\s*(\d+)|verdict)\b[\s*:#.-]*(.*)$",
                     re.IGNORECASE)
_LINE = re.compile(r"^\s*[-*•]?\s*(?:j|juror\s*)(\d+)\b(?:\s*\([^)]{0,40}\)|[^:\n]{0,40}?)\s*[:.)\-–]\s*(.*)$",
                   re.IGNORECASE)


@dataclass
class ParsedRecord:
    pre: dict[int, str] = field(default_factory=dict)  # juror number -> raw ballot text (first line wins)
    post: dict[int, str] = field(default_factory=dict)
    statements: list[tuple[int | None, int, str]] = field(default_factory=list)  # (round, juror number, text)
    verdict: str | None = None
    issues: list[str] = field(default_factory=list)


def parse_record(text: str, n_jurors: int) -> ParsedRecord:
    """Split a generated record into ballots, statements and verdict; `issues` lists what was ignored and why."""
    record = ParsedRecord()
    section: str | None = None
    round_: int | None = None
    last: tuple[int | None, int, str] | None = None
    lines = (text or "").splitlines()
    for index, raw in enumerate(lines):
        line = raw.strip()
        if not line:
            continue
        if line.strip("*#_ ").upper() == END:  # the end of the record: whatever follows is not part of it
            after = sum(1 for rest in lines[index + 1:] if rest.strip())
            if after:
                record.issues.append(f"ignored {after} line(s) after {END}")
            break
        header = _HEADER.match(line)
        if header:
            word = re.sub(r"[\s_-]+", "", header.group(1).lower())
            if word.startswith("round"):
                round_ = int(header.group(2))
                section = section or "deliberation"
            elif word == "verdict":
                section = "verdict"
                rest = header.group(3).strip()
                if rest:
                    record.verdict = rest if record.verdict is None else f"{record.verdict} {rest}"
            else:
                section = {"preballot": "pre", "deliberation": "deliberation", "postballot": "post"}[word]
            last = None
            continue
        if section == "verdict":
            record.verdict = line if record.verdict is None else f"{record.verdict} {line}"
            continue
        match = _LINE.match(line)
        if not match:
            if section == "deliberation" and last is not None:  # a statement that wrapped onto a new line
                record.statements[-1] = (last[0], last[1], f"{last[2]} {line}")
                last = record.statements[-1]
            else:
                record.issues.append(f"ignored a line outside the format: {line[:60]!r}")
            continue
        number, body = int(match.group(1)), match.group(2).strip()
        if not 1 <= number <= n_jurors:
            record.issues.append(f"ignored a line for J{number}, who is not on the jury")
            continue
        if section in ("pre", "post"):
            target = record.pre if section == "pre" else record.post
            if number in target:
                record.issues.append(f"J{number} has more than one {section}-ballot line; the first counts")
            else:
                target[number] = body
        elif section == "deliberation":
            if body:
                record.statements.append((round_, number, body))
                last = record.statements[-1]
        elif number not in record.pre:  # ballot lines before any header: the record starts with the pre-ballot
            record.pre[number] = body
            record.issues.append(f"read J{number}'s line before any section header as the pre-ballot")
        else:
            record.issues.append(f"ignored a second J{number} line before any section header: {line[:60]!r}")
    return record


def _norm(text: str) -> str:
    return re.sub(r"[^\w$%]+", " ", text.lower()).strip()


def match_option(text: str, options: Sequence[str]) -> str:
    """The option `text` names: exact, then ignoring case and punctuation, then a unique prefix; else ValueError."""
    cleaned = text.strip().strip("\"'`*").strip()
    for option in options:
        if cleaned == option:
            return option
    norm = _norm(cleaned)
    exact = [o for o in options if _norm(o) == norm]
    if len(exact) == 1:
        return exact[0]
    if norm:
        prefix = [o for o in options if _norm(o).startswith(norm + " ") or norm.startswith(_norm(o) + " ")]
        if len(prefix) > 1:  # "Yes" vs "Yes, but only in summer": prefer the longest option the text starts with
            longest = max(prefix, key=lambda o: len(_norm(o)))
            if norm.startswith(_norm(longest)) and sum(len(_norm(o)) == len(_norm(longest)) for o in prefix) == 1:
                return longest
        elif len(prefix) == 1:
            return prefix[0]
    raise ValueError(f"{text.strip()[:60]!r} is not one of the options")


def read_ballot(text: str | None, *, juror_id: str, phase: str, ballot_type: str, options: Sequence[str],
                label: str) -> Ballot:
    """A Ballot from one record line; an abstention (with the reason) when it cannot be read."""
    def abstain(reason: str) -> Ballot:
        return Ballot(participant_id=juror_id, phase=phase, type=ballot_type, status="abstain", reason=reason)

    if text is None:
        return abstain(f"the generated record has no {phase}-ballot line for {label}")
    if _norm(text) in (_norm(NO_VOTE), "abstain", "abstains", "abstained"):
        return abstain(f"the generated record gives {label} no {phase}-ballot vote")
    try:
        fields = kind_of(ballot_type).read_line(text, options, match_option)
        return Ballot(participant_id=juror_id, phase=phase, type=ballot_type, **fields)
    except ValueError as exc:
        return abstain(f"could not read {label}'s {phase}-ballot: {exc}")


# --- running one --------------------------------------------------------------------------------------------------


def max_tokens_for(n_jurors: int, rounds: int, words: int = RECORD_WORDS) -> int:
    """A generation budget for the whole record: ballots, every juror speaking each round, a verdict."""
    return int(44 + 2 * n_jurors * 12 + max(rounds, 1) * n_jurors * (words * 1.6 + 8) + VERDICT_WORDS * 1.6)


async def run_distilled(spec, model=None, store=None, *, seed: int | None = None,
                        on_event: Callable[[dict], None] | None = None) -> dict:
    """Run one assembly in a single generation and record it; return a JSON-serialisable summary.

    spec: an AssemblySpec, a dict, or a path to a question file. model: an `assembly.providers.Model` or a model
    spec string (e.g. "local:<base>+<adapter>"); None: the spec's juror model. store: a `transcripts.Store` or a
    path; None: the spec's store, else the default store. seed: overrides
    spec.jury.seed (jury draw and sampling). on_event: called with dicts like the engine's (kind="phase" /
    "turn" / "ballot"). Raises AssemblyError on bad input or a failed generation; the run is then in the store
    with status 'failed' and its reason.
    """
    from transcripts import Store, default_store_path

    from assembly.deliberation import draw, resolve_spec, versions
    from assembly.errors import AssemblyError
    from assembly.graph import MODERATOR_ID
    from assembly.providers.registry import ModelPool
    from assembly.providers.types import GenerateRequest, Message, ModelError
    from assembly.recorder import RecordingModel
    from assembly.seeds import seed_for
    from assembly.voting import tally_all

    spec = resolve_spec(spec, seed=seed)
    run_seed = spec.jury.seed
    emit = on_event or (lambda event: None)
    population, jury = draw(spec)
    pool = None
    if model is None:
        model = spec.models.for_role("juror")
    if store is None:
        store = spec.store or default_store_path()
    if isinstance(model, str):
        pool = ModelPool()
        model = pool.get(model)
    own_store = not isinstance(store, Store)
    store = Store(store) if own_store else store
    jurors = list(jury.jurors)
    labels = {j.id: f"J{i}" for i, j in enumerate(jurors, start=1)}
    options = list(spec.ballot.options)
    ballot_type = spec.ballot.type
    rounds = max(spec.procedure.rounds, 1)
    words = min(spec.procedure.words_per_turn, RECORD_WORDS)
    witnesses = [f"{w.name} ({w.expertise})" + (f": {w.stance}" if w.stance else "") for w in spec.witnesses]
    messages = distilled_messages(
        question=spec.question, background=spec.background, options=options, ballot_type=ballot_type,
        roster=[roster_line(labels[j.id], j.persona.name, j.attributes) for j in jurors], rounds=rounds,
        witnesses=witnesses, words=words,
    )
    run_id = store.begin_run(question=spec.question, spec=spec.model_dump(mode="json"), seed=run_seed,
                             provenance="simulated", versions=versions(), options=options)
    started = time.perf_counter()
    status, reason = "failed", "unknown error"
    try:
        recorder = RecordingModel(model, store, run_id)
        store.add_participants(run_id, [
            {"id": MODERATOR_ID, "role": "moderator", "name": "Moderator", "persona": None, "attributes": {},
             "extra": {"model": recorder.name, "mode": "distilled"}},
            *({"id": j.id, "role": "juror", "name": j.persona.name, "persona": j.persona.text,
               "attributes": dict(j.attributes), "extra": {"model": recorder.name, "label": labels[j.id]}}
              for j in jurors),
        ])
        emit({"kind": "phase", "phase": "distilled"})
        request = GenerateRequest(
            messages=[Message(**m) for m in messages], max_tokens=max_tokens_for(len(jurors), rounds, words),
            temperature=spec.procedure.temperature, seed=seed_for(run_seed, "distilled"), stop=[f"\n{END}"],
            tags={"role": "distilled", "participant": MODERATOR_ID, "phase": "distilled"},
        )
        response = await recorder.generate(request)
        call_id = response.raw.get("call_id")
        parsed = parse_record(response.text, len(jurors))
        number = {j.id: i for i, j in enumerate(jurors, start=1)}
        seq = 0
        for round_, n, text in parsed.statements:
            juror = jurors[n - 1]
            store.add_turn(run_id, seq=seq, phase="deliberation", round=round_ or 1, speaker_id=juror.id,
                           content=text, call_id=call_id)
            emit({"kind": "turn", "phase": "deliberation", "round": round_ or 1, "speaker": juror.persona.name,
                  "content": text})
            seq += 1
        ballots: dict[str, list[Ballot]] = {"pre": [], "post": []}
        for phase, lines in (("pre", parsed.pre), ("post", parsed.post)):
            for j in jurors:
                ballot = read_ballot(lines.get(number[j.id]), juror_id=j.id, phase=phase, ballot_type=ballot_type,
                                     options=options, label=labels[j.id])
                ballot.call_ids = [call_id] if call_id else []
                ballots[phase].append(ballot)
                store.add_ballot(run_id, participant_id=j.id, phase=phase, ballot_type=ballot.type,
                                 status=ballot.status, choice=ballot.choice, ranking=ballot.ranking,
                                 approvals=ballot.approvals, reason=ballot.reason)
                emit({"kind": "ballot", "phase": f"ballot-{phase}", "speaker": j.persona.name,
                      "choice": ballot.choice, "status": ballot.status})
        tallies = {}
        for phase in ("pre", "post"):
            results = tally_all(spec.ballot.rules, ballots[phase], options)
            tallies[phase] = [t.model_dump(mode="json") for t in results]
            for t in results:
                store.add_tally(run_id, phase=phase, rule=t.rule, winner=t.winner, winners=t.winners,
                                scores=t.scores, rounds=t.rounds, tie_break=t.tie_break, valid=t.valid,
                                abstained=t.abstained, explain=t.explain)
        main = tallies["post"][0]
        verdict_text = parsed.verdict or (
            f"(The generated record had no verdict line.) {main['explain']}")
        store.add_turn(run_id, seq=seq, phase="verdict", round=None, speaker_id=MODERATOR_ID, content=verdict_text,
                       call_id=call_id)
        store.add_verdict(run_id, text=verdict_text, winner=main["winner"], rule=main["rule"])

        def counts(phase: str) -> dict[str, int]:
            out = {o: 0 for o in options}
            for b in ballots[phase]:
                if b.status == "valid" and b.choice in out:
                    out[b.choice] += 1
            return out

        wall = time.perf_counter() - started
        result = {
            "run_id": run_id,
            "store": str(store.path),
            "status": "completed",
            "mode": "distilled",
            "question": spec.question,
            "options": options,
            "ballot_type": ballot_type,
            "seed": run_seed,
            "model": recorder.name,
            "jurors": [{"id": j.id, "label": labels[j.id], "name": j.persona.name, "attributes": dict(j.attributes),
                        "pre": b0.choice, "post": b1.choice}
                       for j, b0, b1 in zip(jurors, ballots["pre"], ballots["post"])],
            "representativeness": jury.representativeness,
            "representativeness_overall": jury.overall,
            "pre_counts": counts("pre"),
            "post_counts": counts("post"),
            "abstentions": {p: sum(b.status == "abstain" for b in ballots[p]) for p in ("pre", "post")},
            "abstention_reasons": sorted({b.reason for p in ("pre", "post") for b in ballots[p] if b.reason}),
            "tallies": tallies["post"],
            "pre_tallies": tallies["pre"],
            "verdict": {"text": verdict_text, "minority_report": None, "winner": main["winner"], "rule": main["rule"]},
            "parse": {"statements": len(parsed.statements), "issues": parsed.issues[:50],
                      "verdict_found": parsed.verdict is not None},
            "usage": {"calls": 1, "input_tokens": response.usage.input_tokens,
                      "output_tokens": response.usage.output_tokens, "model_seconds": round(response.duration_s, 3),
                      "wall_seconds": round(wall, 3)},
        }
        population_marginals = {a: population.marginal(a) for a in spec.jury.stratify}
        summary = {k: v for k, v in result.items() if k != "jurors"}
        store.finish_run(run_id, status="completed", summary={**summary, "population": population_marginals})
        status = "completed"
        return result
    except ModelError as exc:
        reason = f"model error: {exc}"
        raise AssemblyError(f"run {run_id} failed: {reason}") from None
    except BaseException as exc:
        reason = "interrupted by the user" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, KeyboardInterrupt):
            status = "interrupted"
        raise
    finally:
        if status != "completed":
            store.finish_run(run_id, status=status if status == "interrupted" else "failed", reason=reason)
        if own_store:
            store.close()
        if pool is not None:
            await pool.aclose()


def record_from_run(store, run_id: str, *, max_jurors: int = 12, max_statements: int = 36,
                    words: int = RECORD_WORDS) -> tuple[list[dict[str, str]], str] | None:
    """A recorded run (simulated or imported) as a (prompt messages, record) training pair, or None when it has no
    fixed options or fewer than two participants with a post-ballot on the question.

    Jurors: the run's jurors, else its participants with a ballot on the question (at most `max_jurors`, those
    with both a pre and a post ballot first). Statements: their deliberation turns in order (at most
    `max_statements`, each clipped to `words` words)."""
    from transcripts.store import from_json

    run = store.run(run_id)
    spec = run["spec"] if isinstance(run["spec"], dict) else {}
    ballot_spec = spec.get("ballot") if isinstance(spec.get("ballot"), dict) else {}
    options = list(run["options"] or ballot_spec.get("options") or [])
    if len(options) < 2:
        return None
    people = store.sql("SELECT id, role, name, attributes FROM participants WHERE run_id = ? ORDER BY id", [run_id])
    votes = store.sql(
        "SELECT participant_id, phase, ballot_type, status, choice, ranking, approvals FROM ballots "
        "WHERE run_id = ? AND target IS NULL AND phase IN ('pre', 'post') ORDER BY created_at, id", [run_id])
    ballots: dict[tuple[str, str], dict] = {}
    kinds = set()
    for row in votes.iter_rows(named=True):
        ballots[(row["participant_id"], row["phase"])] = row  # the latest counts
        kinds.add(row["ballot_type"])
    ballot_type = ballot_spec.get("type") or (kinds.pop() if len(kinds) == 1 else "single")
    if ballot_type not in KINDS:
        return None
    voters = {pid for pid, _ in ballots}
    rows = list(people.iter_rows(named=True))
    jurors = [r for r in rows if r["role"] == "juror"] or [r for r in rows if r["id"] in voters]
    jurors.sort(key=lambda r: (not ((r["id"], "pre") in ballots and (r["id"], "post") in ballots), r["id"]))
    jurors = sorted(jurors[:max_jurors], key=lambda r: r["id"])
    if sum(1 for j in jurors if (j["id"], "post") in ballots) < 2:  # an assembly's outcome is its post-ballot
        return None
    labels = {j["id"]: f"J{i}" for i, j in enumerate(jurors, start=1)}
    turns = store.sql(
        "SELECT seq, phase, round, speaker_id, content FROM turns WHERE run_id = ? AND phase IN "
        "('deliberation', 'discussion', 'statement') ORDER BY seq", [run_id])
    statements = [(r["round"], labels[r["speaker_id"]], r["content"]) for r in turns.iter_rows(named=True)
                  if r["speaker_id"] in labels and len((r["content"] or "").split()) >= 1][:max_statements]
    verdicts = store.sql("SELECT text FROM verdicts WHERE run_id = ? ORDER BY created_at DESC LIMIT 1", [run_id])
    verdict = verdicts["text"][0] if verdicts.height else None
    procedure = spec.get("procedure") if isinstance(spec.get("procedure"), dict) else {}
    rounds = int(procedure.get("rounds") or max([r for r, _, _ in statements if r is not None], default=1))
    witnesses = [f"{w.get('name')} ({w.get('expertise')})" + (f": {w['stance']}" if w.get("stance") else "")
                 for w in spec.get("witnesses") or [] if isinstance(w, dict)]
    messages = distilled_messages(
        question=run["question"], background=spec.get("background") or "", options=options, ballot_type=ballot_type,
        roster=[roster_line(labels[j["id"]], j["name"], from_json(j["attributes"]) or {}) for j in jurors],
        rounds=max(rounds, 1), witnesses=witnesses, words=min(int(procedure.get("words_per_turn") or words), words),
    )
    record = format_record(
        labels=[labels[j["id"]] for j in jurors], ballot_type=ballot_type,
        pre={labels[j["id"]]: ballots.get((j["id"], "pre")) for j in jurors},
        post={labels[j["id"]]: ballots.get((j["id"], "post")) for j in jurors},
        statements=statements, verdict=verdict, words=words,
    )
    return messages, record

