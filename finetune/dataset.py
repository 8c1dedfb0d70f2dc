"""`assembly finetune prepare`: the store's runs -> a chat-format SFT dataset, split by question and deliberation.

Every example is one JSON line:

    {"id", "type", "messages": [system, user, assistant], "target": null | {"choices": [...], "distribution": [...]},
     "contrast": null | "<key>", "source", "provenance", "license", "run_id", "deliberation_id", "question_id",
     "split"}

`messages` always ends with the assistant's reply, so any chat SFT trainer can read the file. Ballot examples also
carry `target`: the options and the target distribution over them (one-hot for a real person's single vote). Our
trainer uses it for a loss over the options exactly as constrained choice scores them at run time. Where a
distribution is known — a simulated juror's recorded probabilities, a sub-group's survey distribution, the vote shares
on a statement — it is the (soft) target, and the assistant reply is one label drawn from it (seeded), so a plain SFT
trainer over many such examples still sees labels in proportion (`soft_target`). A simulated ballot never becomes a
one-hot of the option the model scored highest: that would train the model to be surer than the juror was.
Examples of groups answering the same question share a `contrast` key (question run + attribute): our trainer
puts them in one training item and rewards the model when its groups differ the way the humans' do.

Example types and where they come from:

* juror_turn — simulated runs: the recorded prompt (llm_calls.messages, exactly what the juror saw) -> the recorded
  turn. Imported real deliberations: the engine's own layout (`assembly.layout.statement_messages`): the
  participant's persona (rendered from their canonical attributes; a neutral one when they have none), the
  question, the moderator's latest prompt and, in chats, the last turns before it -> what the person wrote.
* ballot — simulated: each recorded ballot prompt (one per option order) -> the juror's recorded distribution, in
  that prompt's order of the options (a one-hot on the call's choice only for ballots recorded without one; approval
  ballots and the calibration prior's calls are left out). Real: `assembly.ballots.ballot_messages` with
  the voter's persona -> their vote; votes on statements (Polis, Remesh) become ballots on "do you agree with this
  statement" (per voter when voters have demographics, else one example with the vote distribution as its
  target); survey distributions become, per (attribute, group), `personas_per_group` jurors drawn from the
  population frame conditional on the group (as the fidelity evaluation seats them) with the group's
  distribution as the target.
* moderator_turn, witness_turn — simulated runs only (recorded prompt -> recorded turn).
* distilled_ballot — for the distilled mode (assembly.distilled): the juror's persona, the question and the
  witnesses' briefs in the distilled prompt (`distilled_ballot_messages`) -> the juror's post-deliberation ballot:
  a simulated full run's recorded post-ballot distribution (soft target), or a real participant's post vote.

Ballot examples list their options in an order drawn per example (seeded; `shuffle_options`), and the target records
each listed option's place in the question's own order (`target.order`), so the trainer learns no position prior and
still measures ordinal agreement (R) in the right order.

Split: every run goes to the split of its question (normalised question text), so all examples of one deliberation
and of one question land in the same split — never split by turn. The assignment is a seeded hash, saved in
split.json beside the data, with manifest.json (counts, real/simulated mix, sources with hashes and licences).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the store (and its DuckDB) is needed to prepare, not to read a prepared folder when training
    from transcripts import Store

from assembly.seeds import stable_int, stable_unit
from assembly.text import clip_words
from finetune.config import EXAMPLE_TYPES
from juries.vocabulary import ATTRIBUTES

SPLITS = ("train", "validation", "test")
DEFAULT_PROVENANCES = ("simulated", "imported-real")
NEUTRAL_PERSONA = "You are a member of the public taking part in this discussion."
DEFAULT_PROMPT = "What do you think about the question, and why?"
NO_TESTIMONY = "(no expert testimony)"
VOTE_ORDER = ("Agree", "Disagree", "Pass", "Yes", "No")
RESTRICTED_HINTS = ("internal", "none", "pew terms", "no license", "no licence")


class PrepareError(ValueError):
    """Bad prepare options or an empty result; the message is one line."""


@dataclass
class PrepareOptions:
    types: tuple[str, ...] = EXAMPLE_TYPES
    real: float | None = None  # share of imported-real examples in the train split (None: as found)
    validation: float = 0.1
    test: float = 0.0
    seed: int = 0
    provenances: tuple[str, ...] = DEFAULT_PROVENANCES
    sources: tuple[str, ...] | None = None  # only these sources
    # fraction of examples kept, keyed "source", "type" or "source:type" (the most specific key wins)
    weights: dict[str, float] = field(default_factory=dict)
    survey_attributes: tuple[str, ...] | None = ("party", "ideology")  # None: every attribute
    survey_groups: tuple[str, ...] | None = None  # only these "attribute=group" panels (e.g. the steerability pairs)
    survey_overall: bool = True  # also an example for the `overall` distribution (a population juror)
    personas_per_group: int = 1
    max_per_run: int = 40  # examples per (run, type), sampled with the seed
    statements_per_run: int = 20  # statements voted on, per run (votes on statements)
    voters_per_statement: int = 4
    recent_turns: int = 6
    words: int = 60  # the words-per-turn the juror prompt asks for (real turns are clipped to it)
    max_examples: int | None = None  # cap on train examples (random, seeded)
    exclude_questions: tuple[str, ...] = ()  # question texts never used (e.g. held-out test questions)
    # fixed splits: a run's external id (a survey's question id) or normalised question text -> split; runs not named
    # take the seeded hash split (e.g. OpinionQA's by-wave split: whole survey waves held out)
    splits: dict[str, str] = field(default_factory=dict)
    include_distilled: bool = False  # runs made by the distilled mode (the model's own one-pass output)
    shuffle_options: bool = True  # ballot examples list the options in a seeded order of their own
    # Python API only: a predicate over built examples (e.g. a quality rule for simulated turns), applied before the
    # weights and the mix, so the manifest's counts and hashes describe what was kept
    keep: Callable[[dict[str, Any]], bool] | None = None

    def check(self) -> None:
        unknown = [t for t in self.types if t not in EXAMPLE_TYPES]
        if unknown:
            raise PrepareError(f"unknown example type(s) {', '.join(unknown)}; expected {', '.join(EXAMPLE_TYPES)}")
        if self.real is not None and not 0.0 <= self.real <= 1.0:
            raise PrepareError(f"--real must be between 0 and 1, got {self.real}")
        if self.validation < 0 or self.test < 0 or self.validation + self.test >= 1:
            raise PrepareError("validation and test fractions must be >= 0 and add up to less than 1")
        for source, weight in self.weights.items():
            if not 0.0 <= weight <= 1.0:
                raise PrepareError(f"weight for source {source!r} must be between 0 and 1, got {weight}")
        wrong = sorted({v for v in self.splits.values() if v not in SPLITS})
        if wrong:
            raise PrepareError(f"fixed splits name unknown split(s) {', '.join(wrong)}; expected {', '.join(SPLITS)}")
        if self.personas_per_group < 1:
            raise PrepareError("personas_per_group must be at least 1")


# --- small helpers ------------------------------------------------------------------------------------------------


def question_key(text: str) -> str:
    """Questions compare by their words: case, spacing and punctuation do not make a new question."""
    return " ".join(re.sub(r"[^\w]+", " ", (text or "").lower()).split())


def assign_split(key: str, seed: int, validation: float, test: float) -> str:
    u = stable_unit("split", seed, key)
    if u < test:
        return "test"
    if u < test + validation:
        return "validation"
    return "train"


def persona_for(attributes: Mapping[str, Any] | None, seed: int) -> str:
    """A juror persona from canonical attributes (as the engine renders them); neutral when there are none."""
    canon = {k: v for k, v in (attributes or {}).items() if k in ATTRIBUTES and isinstance(v, str) and v}
    if not canon:
        return NEUTRAL_PERSONA
    from juries import render_persona

    return render_persona(canon, seed).text


def _msgs(messages) -> list[dict[str, str]]:
    out = []
    for m in messages:
        if hasattr(m, "model_dump"):
            m = m.model_dump()
        out.append({"role": m["role"], "content": m["content"]})
    return out


def ordered_options(found: Iterable[str]) -> list[str]:
    """Options of a statement vote: Agree / Disagree (+ Pass when used) even if one side got no vote."""
    found = list(dict.fromkeys(found))
    if set(found) <= {"Agree", "Disagree", "Pass"}:
        return ["Agree", "Disagree"] + (["Pass"] if "Pass" in found else [])
    known = [o for o in VOTE_ORDER if o in found]
    return known + sorted(o for o in found if o not in known)


# --- reading runs -------------------------------------------------------------------------------------------------


@dataclass
class RunData:
    run: dict[str, Any]
    participants: list[dict[str, Any]]
    turns: list[dict[str, Any]]
    ballots: list[dict[str, Any]]
    calls: list[dict[str, Any]]

    @property
    def id(self) -> str:
        return self.run["id"]

    @property
    def spec(self) -> dict[str, Any]:
        return self.run["spec"] if isinstance(self.run.get("spec"), dict) else {}


def select_runs(store: Store, options: PrepareOptions) -> list[dict[str, Any]]:
    from transcripts.store import from_json

    frame = store.sql(
        "SELECT id, question, options, spec, provenance, source, license, external_id, summary FROM runs "
        "WHERE status = 'completed' AND provenance IN (SELECT unnest($p)) ORDER BY started_at, id",
        {"p": list(options.provenances)},
    )
    excluded = {question_key(q) for q in options.exclude_questions}
    runs = []
    for row in frame.iter_rows(named=True):
        if options.sources is not None and (row["source"] or "assembly-sim") not in options.sources:
            continue  # simulated runs carry no source: they are "assembly-sim" here, as in the examples
        if question_key(row["question"]) in excluded:
            continue
        row["spec"] = from_json(row["spec"])
        row["summary"] = from_json(row["summary"]) or {}
        if not options.include_distilled and isinstance(row["summary"], dict) and row["summary"].get("mode") == "distilled":
            continue
        runs.append(row)
    return runs


def load_run(store: Store, run: dict[str, Any], with_calls: bool) -> RunData:
    from transcripts.store import from_json

    rid = run["id"]
    participants = list(store.sql(
        "SELECT id, role, name, persona, attributes, extra FROM participants WHERE run_id = ? ORDER BY id", [rid]
    ).iter_rows(named=True))
    for p in participants:
        p["attributes"] = from_json(p["attributes"]) or {}
        p["extra"] = from_json(p["extra"]) or {}
    turns = list(store.sql(
        "SELECT id, seq, phase, round, speaker_id, content, call_id, target FROM turns WHERE run_id = ? ORDER BY seq",
        [rid]).iter_rows(named=True))
    ballots = list(store.sql(
        "SELECT participant_id, phase, ballot_type, status, choice, ranking, approvals, probabilities, target "
        "FROM ballots WHERE run_id = ? ORDER BY created_at, id", [rid]).iter_rows(named=True))
    for b in ballots:
        b["probabilities"] = from_json(b["probabilities"])
    calls = []
    if with_calls:
        calls = list(store.sql(
            "SELECT id, seq, role, participant_id, phase, messages, params, response, choice FROM llm_calls "
            "WHERE run_id = ? AND error IS NULL ORDER BY seq", [rid]).iter_rows(named=True))
        for c in calls:
            c["messages"] = from_json(c["messages"]) or []
            c["params"] = from_json(c["params"]) or {}
    return RunData(run, participants, turns, ballots, calls)


# --- building examples --------------------------------------------------------------------------------------------


class Builder:
    def __init__(self, options: PrepareOptions):
        self.options = options
        self._population = None

    @property
    def population(self):
        if self._population is None:
            from juries import load_population

            self._population = load_population("us_adults")
        return self._population

    def example(self, data: RunData, type_: str, messages, reply: str, index: int, *,
                target: dict | None = None, contrast: str | None = None) -> dict[str, Any]:
        run = data.run
        qkey = question_key(run["question"])
        survey = data.spec.get("format") == "survey-distribution"
        qid = run["external_id"] if survey and run.get("external_id") else f"q-{hashlib.sha1(qkey.encode()).hexdigest()[:12]}"
        return {
            "id": f"{run['id']}:{type_}:{index}",
            "type": type_,
            "messages": [*_msgs(messages), {"role": "assistant", "content": reply}],
            "target": target,
            "contrast": contrast,
            "source": run["source"] or "assembly-sim",
            "provenance": run["provenance"],
            "license": run["license"],
            "run_id": run["id"],
            "deliberation_id": run["external_id"] or run["id"],
            "question_id": qid,
            "question_key": qkey,
            "split": None,
        }

    def capped(self, data: RunData, type_: str, items: list) -> list:
        cap = self.options.max_per_run
        if len(items) <= cap:
            return items
        rng = random.Random(stable_int(self.options.seed, data.id, type_))
        keep = sorted(rng.sample(range(len(items)), cap))
        return [items[i] for i in keep]

    # -- per run --------------------------------------------------------------------------------------------------

    def build(self, data: RunData) -> list[dict[str, Any]]:
        types = set(self.options.types)
        out: list[dict[str, Any]] = []
        if data.spec.get("format") == "survey-distribution":
            if "ballot" in types:
                out += self.survey_ballots(data)
            return out
        if data.run["provenance"] == "imported-real":
            if "juror_turn" in types:
                out += self.capped(data, "juror_turn", self.real_turns(data))
            if "ballot" in types:
                out += self.capped(data, "ballot", self.real_ballots(data))
                out += self.statement_votes(data)
        else:
            out += self.recorded(data, types)
        if "distilled_ballot" in types:
            out += self.distilled_ballots(data)
        return out

    def recorded(self, data: RunData, types: set[str]) -> list[dict[str, Any]]:
        """Simulated runs: each model call's prompt, exactly as recorded, and what was kept from its reply."""
        turn_of = {t["call_id"]: t for t in data.turns if t["call_id"]}
        ballot_of = {(b["participant_id"], b["phase"]): b for b in data.ballots if b["target"] is None}
        by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for call in data.calls:
            messages = call["messages"]
            if not messages or call["role"] == "distilled":
                continue
            phase = call["phase"] or ""
            if phase.startswith("ballot"):
                if "ballot" not in types:
                    continue
                choices = call["params"].get("choices")
                if choices:
                    ballot = ballot_of.get((call["participant_id"], phase.removeprefix("ballot-")))
                    scored = self.scored_ballot(call, list(choices), ballot)
                    if scored is not None:
                        by_type["ballot"].append((messages, *scored))
                elif call["response"]:
                    by_type["ballot"].append((messages, call["response"], None))  # a structured (JSON) ballot
                continue
            turn = turn_of.get(call["id"])
            if turn is None or not turn["content"].strip():
                continue
            type_ = {"juror": "juror_turn", "moderator": "moderator_turn", "witness": "witness_turn"}.get(call["role"])
            if type_ in types:
                by_type[type_].append((messages, turn["content"], None))
        out = []
        for type_, items in by_type.items():
            for i, (messages, reply, target) in enumerate(self.capped(data, type_, items)):
                out.append(self.example(data, type_, messages, reply, i, target=target))
        return out

    def scored_ballot(self, call: dict, choices: list[str], ballot: dict | None) -> tuple[str, dict] | None:
        """Reply and target of one scored ballot call (one option order of a juror's ballot), or None to leave it out.

        The target is the juror's recorded distribution (averaged over the orders, calibrated if the run was), in the
        order this call listed the options; single and yes_no: the distribution over the options; ranked: the
        first-preference distribution (the Plackett–Luce weights), which is what one scored call over the options
        asks. A ballot recorded without a distribution keeps the one-hot on the call's choice."""
        if call["phase"] == "ballot-prior" or (ballot is not None and ballot["status"] != "valid"):
            return None  # the calibration prior (the model's own no-persona answer) or an abstention: nobody's vote
        if ballot is not None and ballot["ballot_type"] == "approval":
            # approval: the probabilities are each option's P(approve), from one yes/no call per option; not a
            # distribution over any one call's answers, so there is no single-choice target to give
            return None
        if ballot is not None and ballot["probabilities"]:
            return soft_target(choices, ballot["probabilities"], stable_int(self.options.seed, call["id"]))
        if call["choice"] in choices:
            return call["choice"], one_hot(choices, call["choice"])
        return None

    def _names(self, data: RunData) -> dict[str, str]:
        names, k = {}, 0
        for p in data.participants:
            if p["role"] == "moderator":
                names[p["id"]] = p["name"] or "Moderator"
        for t in data.turns:
            if t["speaker_id"] not in names:
                person = next((p for p in data.participants if p["id"] == t["speaker_id"]), None)
                k += 1
                names[t["speaker_id"]] = (person or {}).get("name") or f"Participant {k}"
        return names

    def _persona(self, data: RunData, pid: str) -> str:
        person = next((p for p in data.participants if p["id"] == pid), None)
        if person and person.get("persona") and person["role"] == "juror":
            return person["persona"]
        return persona_for((person or {}).get("attributes"), stable_int(self.options.seed, data.id, pid))

    def real_turns(self, data: RunData) -> list[dict[str, Any]]:
        from assembly.layout import statement_messages

        roles = {p["id"]: p["role"] for p in data.participants}
        names = self._names(data)
        options = list(data.run["options"] or [])
        prompt = DEFAULT_PROMPT
        history: list[dict[str, str]] = []
        out = []
        for t in data.turns:
            role = roles.get(t["speaker_id"])
            text = (t["content"] or "").strip()
            if role == "moderator":
                prompt = text.split("\nOptions:")[0].strip() or DEFAULT_PROMPT
                history = []
                continue
            if role not in ("participant", "juror") or t["phase"] not in ("statement", "discussion", "deliberation"):
                continue
            chat = t["phase"] != "statement"  # statements answer the prompt on their own; chat turns answer others
            if len(text.split()) >= 3:
                messages = [m.model_dump() for m in statement_messages(
                    persona=self._persona(data, t["speaker_id"]), question=data.run["question"], options=options,
                    testimony=NO_TESTIMONY, summary="", heard=history[-self.options.recent_turns:] if chat else [],
                    prompt=prompt, words=self.options.words)]
                reply = clip_words(text, self.options.words, one_line=True)
                out.append(self.example(data, "juror_turn", messages, reply, t["seq"]))
            if chat and text:
                history.append({"speaker": names.get(t["speaker_id"], "Participant"),
                                "content": clip_words(text, 40, one_line=True)})
        return out

    def real_ballots(self, data: RunData) -> list[dict[str, Any]]:
        from assembly.ballots import ballot_messages

        options = list(data.run["options"] or [])
        if len(options) < 2:
            return []
        latest: dict[tuple[str, str], dict] = {}
        for b in data.ballots:
            if b["target"] is None and b["status"] == "valid" and b["phase"] in ("pre", "post") \
                    and b["ballot_type"] in ("single", "yes_no") and b["choice"] in options:
                latest[(b["participant_id"], b["phase"])] = b
        out = []
        for i, ((pid, phase), b) in enumerate(sorted(latest.items())):
            messages = ballot_messages(
                persona=self._persona(data, pid), question=data.run["question"], options=options,
                ballot_type="single", phase=phase, context=f"Expert testimony:\n{NO_TESTIMONY}" if phase == "post" else None,
                background="", structured=False)
            out.append(self.example(data, "ballot", messages, b["choice"], i, target=one_hot(options, b["choice"])))
        return out

    def statement_votes(self, data: RunData) -> list[dict[str, Any]]:
        """Votes on statements or polls inside a deliberation, as ballots on 'do you agree with this statement'."""
        from assembly.ballots import ballot_messages

        turns = {str(t["seq"]): t for t in data.turns}
        people = {p["id"]: p for p in data.participants}
        by_target: dict[str, list[dict]] = defaultdict(list)
        for b in data.ballots:
            if b["target"] is not None and b["status"] == "valid" and b["choice"] and b["target"] in turns:
                by_target[b["target"]].append(b)
        if not by_target:
            return []
        rng = random.Random(stable_int(self.options.seed, data.id, "statements"))
        targets = sorted(by_target, key=lambda t: int(t) if t.isdigit() else 0)
        if len(targets) > self.options.statements_per_run:
            targets = sorted(rng.sample(targets, self.options.statements_per_run), key=targets.index)
        out = []
        for target in targets:
            votes = by_target[target]
            turn = turns[target]
            text = turn["content"]
            if "\nOptions:" in text:  # a poll shown by the moderator: its own question and options
                question, _, listed = text.partition("\nOptions:")
                options = [o.strip() for o in listed.split("|") if o.strip()]
            else:
                quoted = clip_words(text, 80, one_line=True)
                question = (f"{data.run['question']}\n\nAnother participant wrote: \"{quoted}\"\n"
                            "Do you agree with this statement?")
                options = ordered_options(v["choice"] for v in votes)
            votes = [v for v in votes if v["choice"] in options]
            if len(options) < 2 or not votes:
                continue
            with_people = [v for v in votes if any(k in ATTRIBUTES for k in people.get(v["participant_id"], {})
                                                    .get("attributes", {}))]
            if with_people:
                chosen = rng.sample(with_people, min(len(with_people), self.options.voters_per_statement))
                for v in chosen:
                    messages = ballot_messages(persona=self._persona(data, v["participant_id"]), question=question,
                                               options=options, ballot_type="single", phase="pre", context=None,
                                               background="", structured=False)
                    out.append(self.example(data, "ballot", messages, v["choice"], len(out) + 100000,
                                            target=one_hot(options, v["choice"])))
            else:
                counts = Counter(v["choice"] for v in votes)
                label, target_ = soft_target(options, {o: counts[o] / len(votes) for o in options},
                                             stable_int(self.options.seed, data.id, target))
                messages = ballot_messages(persona=NEUTRAL_PERSONA, question=question, options=options,
                                           ballot_type="single", phase="pre", context=None, background="",
                                           structured=False)
                out.append(self.example(data, "ballot", messages, label, len(out) + 100000, target=target_))
        return out

    def survey_ballots(self, data: RunData) -> list[dict[str, Any]]:
        """One example per seated juror per (attribute, group): the group's distribution is the target."""
        from assembly.ballots import ballot_messages
        from juries import render_persona

        options = list(data.run["options"] or [])
        wanted = self.options.survey_attributes
        people = {p["id"]: p for p in data.participants}
        out = []
        for b in data.ballots:
            if b["ballot_type"] != "distribution" or not b["probabilities"]:
                continue
            person = people.get(b["participant_id"], {})
            extra = person.get("extra") or {}
            attribute, group = extra.get("attribute"), extra.get("group")
            overall = attribute == "overall"
            if overall and not self.options.survey_overall:
                continue
            if not overall and wanted is not None and attribute not in wanted:
                continue
            if not overall and self.options.survey_groups is not None and \
                    f"{attribute}={group}" not in self.options.survey_groups:
                continue
            for i in range(self.options.personas_per_group):
                seed = stable_int(self.options.seed, data.run["external_id"], attribute, group, i)
                attrs = self._seat(None if overall else {attribute: group}, seed)
                persona = render_persona(attrs, seed % 2**31).text
                shown, order = self.shown(options, seed)
                messages = ballot_messages(persona=persona, question=data.run["question"], options=shown,
                                           ballot_type="single", phase="pre", context=None, background="",
                                           structured=False)
                label, target = soft_target(shown, b["probabilities"], seed, order)
                out.append(self.example(
                    data, "ballot", messages, label, len(out),
                    target={**target, "attribute": attribute, "group": group},
                    contrast=None if overall else f"{data.id}|{attribute}"))
        return out

    def shown(self, options: list[str], seed: int) -> tuple[list[str], list[int]]:
        """The options in the order one example lists them, and each one's index in `options`."""
        order = list(range(len(options)))
        if self.options.shuffle_options:
            random.Random(stable_int("options", seed)).shuffle(order)
        return [options[i] for i in order], order

    def distilled_ballots(self, data: RunData) -> list[dict[str, Any]]:
        """The distilled mode's examples: each juror's post-deliberation ballot, asked in the distilled prompt.
        Simulated runs give the juror's recorded post-ballot distribution; real ones the participant's post vote."""
        from assembly.distilled import distilled_ballot_messages

        options = list(data.run["options"] or [])
        if len(options) < 2 or data.run["summary"].get("mode") == "distilled":
            return []
        spec = data.spec
        ballot = spec.get("ballot") if isinstance(spec.get("ballot"), dict) else {}
        ballot_type = ballot.get("type", "single")
        if ballot_type not in ("single", "yes_no", "ranked"):
            return []  # approval: one yes/no question per option, no one distribution over the options to learn
        witnesses = [w for w in spec.get("witnesses") or [] if isinstance(w, dict)]
        real = data.run["provenance"] == "imported-real"
        out = []
        for b in data.ballots:
            if b["phase"] != "post" or b["target"] is not None or b["status"] != "valid":
                continue
            if real:
                if b["choice"] not in options:
                    continue
                probabilities = {o: float(o == b["choice"]) for o in options}
            elif b["probabilities"]:
                probabilities = b["probabilities"]  # ranked: the first-preference weights, what one call asks
            else:
                continue
            seed = stable_int(self.options.seed, data.id, b["participant_id"], "distilled")
            shown, order = self.shown(options, seed)
            messages = distilled_ballot_messages(
                persona=self._persona(data, b["participant_id"]), question=data.run["question"], options=shown,
                ballot_type="single" if real else ballot_type, witnesses=witnesses,
                background=spec.get("background") or "")
            label, target = soft_target(shown, probabilities, seed, order)
            out.append(self.example(data, "distilled_ballot", messages, label, len(out), target=target))
        return self.capped(data, "distilled_ballot", out)

    def _seat(self, where: dict[str, str] | None, seed: int) -> dict[str, str]:
        """A juror's attributes drawn from the frame given `where`; just `where` when the frame lacks the group."""
        import numpy as np

        try:
            return dict(self.population.sample(1, np.random.default_rng(seed), where=where)[0])
        except Exception:  # noqa: BLE001 - juries.JuryError: a group outside the frame (e.g. a free religion label)
            return dict(where or {})


def soft_target(choices: list[str], probabilities: Mapping[str, float], seed: int,
                order: list[int] | None = None) -> tuple[str, dict[str, Any]]:
    """A ballot example's reply and target from a distribution: the target is the distribution over `choices` (in
    the order the prompt lists them), the reply one label drawn from it with `seed`. `order`: each listed choice's
    index in the question's own order, when the prompt lists them in another."""
    dist = [float(probabilities.get(o, 0.0)) for o in choices]
    target = {"choices": list(choices), "distribution": dist}
    if order is not None:
        target["order"] = list(order)
    return choices[_draw(dist, seed)], target


def one_hot(choices: list[str], choice: str) -> dict[str, Any]:
    """The target of a single observed vote (a real person's, or a simulated ballot recorded without a distribution)."""
    return {"choices": list(choices), "distribution": [1.0 if o == choice else 0.0 for o in choices]}


def _draw(dist: list[float], seed: int) -> int:
    total = sum(dist) or 1.0
    u = stable_unit("label", seed) * total
    acc = 0.0
    for i, p in enumerate(dist):
        acc += p
        if u < acc:
            return i
    return max(range(len(dist)), key=lambda i: dist[i])


# --- the whole dataset --------------------------------------------------------------------------------------------


def build_examples(store: Store, options: PrepareOptions) -> list[dict[str, Any]]:
    """Every example of the selected runs, each with its split; nothing written."""
    options.check()
    builder = Builder(options)
    examples: list[dict[str, Any]] = []
    runs = select_runs(store, options)
    for run in runs:
        # One short read attachment per run, released before the (slow) example building: a writer in another
        # process, e.g. an assembly running meanwhile, waits milliseconds instead of timing out.
        with store.reading():
            data = load_run(store, run, with_calls=run["provenance"] != "imported-real")
        made = builder.build(data)
        if options.keep is not None:
            made = [e for e in made if options.keep(e)]
        split = options.splits.get(run["external_id"] or "") or options.splits.get(question_key(run["question"])) \
            or assign_split(question_key(run["question"]), options.seed, options.validation, options.test)
        for ex in made:
            ex["split"] = split
        examples.extend(made)
    examples = apply_weights(examples, options)
    examples = apply_mix(examples, options)
    return examples


def apply_weights(examples: list[dict[str, Any]], options: PrepareOptions) -> list[dict[str, Any]]:
    if not options.weights:
        return examples
    out = []
    w = options.weights
    for ex in examples:
        weight = w.get(f"{ex['source']}:{ex['type']}", w.get(ex["source"], w.get(ex["type"], 1.0)))
        if weight >= 1.0 or stable_unit("weight", options.seed, ex["id"]) < weight:
            out.append(ex)
    return out


def apply_mix(examples: list[dict[str, Any]], options: PrepareOptions) -> list[dict[str, Any]]:
    """Subsample the train split to the asked real share (then to max_examples); other splits stay whole."""
    train = [e for e in examples if e["split"] == "train"]
    rest = [e for e in examples if e["split"] != "train"]
    rng = random.Random(stable_int(options.seed, "mix"))
    if options.real is not None and train:
        real = [e for e in train if e["provenance"] == "imported-real"]
        sim = [e for e in train if e["provenance"] != "imported-real"]
        if real and sim:
            r = options.real
            if r >= 1.0:
                sim = []
            elif r <= 0.0:
                real = []
            elif len(real) / (len(real) + len(sim)) > r:  # too much real: keep all simulated
                real = rng.sample(real, round(len(sim) * r / (1 - r)))
            else:
                sim = rng.sample(sim, round(len(real) * (1 - r) / r))
        elif options.real in (0.0, 1.0):
            real = real if options.real == 1.0 else []
            sim = sim if options.real == 0.0 else []
        keep = {e["id"] for e in real + sim}
        train = [e for e in train if e["id"] in keep]
    if options.max_examples is not None and len(train) > options.max_examples:
        keep = set(e["id"] for e in rng.sample(train, options.max_examples))
        train = [e for e in train if e["id"] in keep]
    return train + rest


def _sha(lines: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def prepare_dataset(store: Store, out_dir: str | Path, options: PrepareOptions | None = None) -> dict[str, Any]:
    """Build the dataset from `store` into `out_dir` (train/validation/test JSONL, split.json, manifest.json);
    returns the manifest."""
    options = options or PrepareOptions()
    examples = build_examples(store, options)
    if not any(e["split"] == "train" for e in examples):
        raise PrepareError(f"no training examples from {store.path} with these options (types {', '.join(options.types)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split in SPLITS:
        rows = [e for e in examples if e["split"] == split]
        path = out / f"{split}.jsonl"
        if not rows:
            path.unlink(missing_ok=True)
            continue
        lines = [json.dumps(e, ensure_ascii=False, sort_keys=True) for e in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        files[path.name] = _sha(lines)
    split_doc = {
        "schema": "assembly.finetune.split/1",
        "by": ["question", "deliberation"],
        "seed": options.seed,
        "fractions": {"validation": options.validation, "test": options.test},
        "questions": dict(sorted({e["question_key"]: e["split"] for e in examples}.items())),
        "runs": dict(sorted({e["run_id"]: e["split"] for e in examples}.items())),
    }
    (out / "split.json").write_text(json.dumps(split_doc, indent=1, ensure_ascii=False), encoding="utf-8")
    manifest = summarize(examples, options, store, files)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    return manifest


def summarize(examples: list[dict[str, Any]], options: PrepareOptions, store: Store,
              files: dict[str, str]) -> dict[str, Any]:
    counts: dict[str, Counter] = defaultdict(Counter)
    provenance: dict[str, Counter] = defaultdict(Counter)
    sources: dict[str, dict[str, Any]] = {}
    by_source: dict[str, list[str]] = defaultdict(list)
    for e in examples:
        counts[e["split"]][e["type"]] += 1
        provenance[e["split"]][e["provenance"]] += 1
        entry = sources.setdefault(e["source"], {"provenance": set(), "license": set(), "runs": set(),
                                                 "examples": 0})
        entry["provenance"].add(e["provenance"])
        if e["license"]:
            entry["license"].add(e["license"])
        entry["runs"].add(e["run_id"])
        entry["examples"] += 1
        by_source[e["source"]].append(json.dumps([e["id"], e["messages"], e["target"]], sort_keys=True))
    source_docs = {}
    for name, entry in sorted(sources.items()):
        licenses = sorted(entry["license"])
        restricted = any(h in lic.lower() for lic in licenses for h in RESTRICTED_HINTS)
        source_docs[name] = {"provenance": sorted(entry["provenance"]), "license": licenses,
                             "runs": len(entry["runs"]), "examples": entry["examples"],
                             "sha256": _sha(sorted(by_source[name])), "restricted": restricted}
    real_share = {split: (c["imported-real"] / sum(c.values()) if sum(c.values()) else None)
                  for split, c in provenance.items()}
    opts = asdict(options)
    keep = opts.pop("keep")
    opts["keep"] = None if keep is None else getattr(keep, "__qualname__", repr(keep))  # named in the manifest
    opts["splits"] = dict(Counter(opts["splits"].values()))  # how many fixed keys per split, not the keys
    return {
        "schema": "assembly.finetune.dataset/1",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "store": str(store.path),
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()},
        "examples": {split: dict(sorted(c.items())) for split, c in counts.items()},
        "provenance": {split: dict(c) for split, c in provenance.items()},
        "real_share": real_share,
        "sources": source_docs,
        "restricted_sources": [n for n, s in source_docs.items() if s["restricted"]],
        "files": files,
    }


def read_examples(folder: str | Path, split: str) -> list[dict[str, Any]]:
    path = Path(folder) / f"{split}.jsonl"
    if not path.is_file():
        return []
    out = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise PrepareError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
    return out


def read_manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise PrepareError(f"{folder}: no manifest.json (prepare the dataset with `assembly finetune prepare`)")
    return json.loads(path.read_text(encoding="utf-8"))


def read_split_file(path: str | Path) -> dict[str, str]:
    """Fixed splits from JSON `{"train": [ids or question texts], "validation": [...], "test": [...]}` (the form of
    OpinionQA's survey_dev_split_by_wave.json) -> {id or normalised question: split}."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PrepareError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise PrepareError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise PrepareError(f"{path}: expected an object of split name -> list of question ids")
    out = {}
    for split, keys in data.items():
        if split not in SPLITS:
            raise PrepareError(f"{path}: unknown split {split!r}; expected {', '.join(SPLITS)}")
        for key in keys:
            out[str(key)] = split
            out[question_key(str(key))] = split
    return out


def read_question_list(path: str | Path) -> tuple[str, ...]:
    """Questions to keep out of training: a JSONL of {"question", optional "split"} (rows whose split is 'train'
    are kept in; e.g. the Habermas bank's iid_test and ood_test rows are excluded), or plain text, one per line."""
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"{path}: file not found")
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PrepareError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row.get("question"), str):
                raise PrepareError(f"{path}:{number}: field 'question' missing")
            if row.get("split", "excluded") != "train":
                out.append(row["question"])
        else:
            out.append(line)
    return tuple(out)
