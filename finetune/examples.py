"""Building training examples from one recorded run: the `Builder` turns a run's calls, turns and ballots (or an
imported deliberation's, or a survey's distributions) into chat examples with their targets; finetune.dataset picks
the runs, splits and mixes the examples and writes them (its docstring describes every example type)."""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from assembly.seeds import seed_for, unit_for
from assembly.text import clip_words
from juries.vocabulary import ATTRIBUTES

if TYPE_CHECKING:
    from finetune.dataset import PrepareOptions

NEUTRAL_PERSONA = "You are a member of the public taking part in this discussion."
DEFAULT_PROMPT = "What do you think about the question, and why?"
NO_TESTIMONY = "(no expert testimony)"
VOTE_ORDER = ("Agree", "Disagree", "Pass", "Yes", "No")



def question_key(text: str) -> str:
    """Questions compare by their words: case, spacing and punctuation do not make a new question."""
    return " ".join(re.sub(r"[^\w]+", " ", (text or "").lower()).split())


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
        rng = random.Random(seed_for(self.options.seed, data.id, type_))
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
        elif data.run["summary"].get("mode") != "distilled":  # a distilled run's calls are the model's own answers
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
            return soft_target(choices, ballot["probabilities"], seed_for(self.options.seed, call["id"]))
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
        return persona_for((person or {}).get("attributes"), seed_for(self.options.seed, data.id, pid))

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
        from assembly.casting import ballot_messages

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
        from assembly.casting import ballot_messages

        turns = {str(t["seq"]): t for t in data.turns}
        people = {p["id"]: p for p in data.participants}
        by_target: dict[str, list[dict]] = defaultdict(list)
        for b in data.ballots:
            if b["target"] is not None and b["status"] == "valid" and b["choice"] and b["target"] in turns:
                by_target[b["target"]].append(b)
        if not by_target:
            return []
        rng = random.Random(seed_for(self.options.seed, data.id, "statements"))
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
                                             seed_for(self.options.seed, data.id, target))
                messages = ballot_messages(persona=NEUTRAL_PERSONA, question=question, options=options,
                                           ballot_type="single", phase="pre", context=None, background="",
                                           structured=False)
                out.append(self.example(data, "ballot", messages, label, len(out) + 100000, target=target_))
        return out

    def survey_ballots(self, data: RunData) -> list[dict[str, Any]]:
        """One example per seated juror per (attribute, group): the group's distribution is the target."""
        from assembly.casting import ballot_messages
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
                seed = seed_for(self.options.seed, data.run["external_id"], attribute, group, i)
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
            random.Random(seed_for("options", seed)).shuffle(order)
        return [options[i] for i in order], order

    def distilled_ballots(self, data: RunData) -> list[dict[str, Any]]:
        """The distilled mode's examples: each juror's post-deliberation ballot, asked in the distilled prompt.
        Simulated runs give the juror's recorded post-ballot distribution; real ones the participant's post vote;
        distilled runs (with `include_distilled`) asked in another distilled prompt their recorded answer, so that
        this prompt learns what that one answers (context distillation)."""
        from assembly.distilled import distilled_ballot_messages, distilled_prior_messages

        options = list(data.run["options"] or [])
        spec = data.spec
        form = self.options.distilled_prompt
        if len(options) < 2 or (data.run["summary"].get("mode") == "distilled" and _distilled_prompt(spec) == form):
            return []  # a distilled run in this very prompt: the model's own answer, nothing to learn
        ballot = spec.get("ballot") if isinstance(spec.get("ballot"), dict) else {}
        ballot_type = ballot.get("type", "single")
        if ballot_type not in ("single", "yes_no", "ranked"):
            return []  # approval: one yes/no question per option, no one distribution over the options to learn
        witnesses = [w for w in spec.get("witnesses") or [] if isinstance(w, dict)]
        real = data.run["provenance"] == "imported-real"
        attributes = {p["id"]: p.get("attributes") or {} for p in data.participants}
        if real:  # an importer's own fields (a Polis group, a platform id) are not who the participant is
            attributes = {pid: {k: v for k, v in a.items() if k in ATTRIBUTES} for pid, a in attributes.items()}
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
            seed = seed_for(self.options.seed, data.id, b["participant_id"], "distilled")
            shown, order = self.shown(options, seed)
            messages = distilled_ballot_messages(
                persona=self._persona(data, b["participant_id"]), attributes=attributes.get(b["participant_id"], {}),
                question=data.run["question"], options=shown, ballot_type="single" if real else ballot_type,
                witnesses=witnesses, background=spec.get("background") or "", prompt=form)
            label, target = soft_target(shown, probabilities, seed, order)
            target["prior_messages"] = _msgs(distilled_prior_messages(
                question=data.run["question"], options=shown, ballot_type="single" if real else ballot_type,
                background=spec.get("background") or "", prompt=form))
            out.append(self.example(data, "distilled_ballot", messages, label, len(out), target=target))
        return self.capped(data, "distilled_ballot", out)

    def _seat(self, where: dict[str, str] | None, seed: int) -> dict[str, str]:
        """A juror's attributes drawn from the frame given `where`; just `where` when the frame lacks the group."""
        import numpy as np

        try:
            return dict(self.population.sample(1, np.random.default_rng(seed), where=where)[0])
        except Exception:  # noqa: BLE001 - juries.JuryError: a group outside the frame (e.g. a free religion label)
            return dict(where or {})


def _distilled_prompt(spec: Mapping[str, Any]) -> str:
    """The distilled prompt a run's spec asked its ballots in (runs recorded before the setting: `ballot`)."""
    procedure = spec.get("procedure") if isinstance(spec.get("procedure"), dict) else {}
    return procedure.get("distilled_prompt") or "ballot"


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
    u = unit_for("label", seed) * total
    acc = 0.0
    for i, p in enumerate(dist):
        acc += p
        if u < acc:
            return i
    return max(range(len(dist)), key=lambda i: dist[i])


