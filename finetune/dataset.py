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
  ballots and the calibration prior's calls are left out). Real: `assembly.casting.ballot_messages` with
  the voter's persona -> their vote; votes on statements (Polis, Remesh) become ballots on "do you agree with this
  statement" (per voter when voters have demographics, else one example with the vote distribution as its
  target); survey distributions become, per (attribute, group), `personas_per_group` jurors drawn from the
  population frame conditional on the group (as the fidelity evaluation seats them) with the group's
  distribution as the target.
* moderator_turn, witness_turn — simulated runs only (recorded prompt -> recorded turn).
* distilled_ballot — for the distilled mode (assembly.distilled): the juror's persona (`distilled_prompt`
  compact or brief: their attributes), the question and the witnesses' briefs in the distilled prompt
  (`distilled_ballot_messages`) -> the juror's post-deliberation ballot:
  a simulated full run's recorded post-ballot distribution (soft target), or a real participant's post vote; with
  `include_distilled`, also a distilled run's recorded ballot when that run asked it in another distilled prompt (a
  teacher: the `brief` prompt learns what the `ballot` prompt answers, as context distillation does).

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
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

if TYPE_CHECKING:  # the store (and its DuckDB) is needed to prepare, not to read a prepared folder when training
    from transcripts import Store

from assembly.config import DistilledPrompt
from assembly.seeds import seed_for, unit_for
from finetune.config import EXAMPLE_TYPES
from finetune.examples import Builder, RunData, question_key

SPLITS = ("train", "validation", "test")
DEFAULT_PROVENANCES = ("simulated", "imported-real")
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
    include_distilled: bool = False  # runs made by the distilled mode: teachers of distilled_ballot examples in
    # another distilled prompt (no other example type is built from them: their calls are the model's own answers)
    shuffle_options: bool = True  # ballot examples list the options in a seeded order of their own
    distilled_prompt: str = "ballot"  # distilled_ballot examples: the form `--mode distilled` will ask them in
    # Python API only: a predicate over built examples (e.g. a quality rule for simulated turns), applied before the
    # weights and the mix, so the manifest's counts and hashes describe what was kept
    keep: Callable[[dict[str, Any]], bool] | None = None

    def check(self) -> None:
        unknown = [t for t in self.types if t not in EXAMPLE_TYPES]
        if unknown:
            raise PrepareError(f"unknown example type(s) {', '.join(unknown)}; expected {', '.join(EXAMPLE_TYPES)}")
        if self.distilled_prompt not in get_args(DistilledPrompt):
            raise PrepareError(f"--distilled-prompt {self.distilled_prompt!r}: expected one of "
                               f"{', '.join(get_args(DistilledPrompt))}")
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


def assign_split(key: str, seed: int, validation: float, test: float) -> str:
    u = unit_for("split", seed, key)
    if u < test:
        return "test"
    if u < test + validation:
        return "validation"
    return "train"


# --- reading runs -------------------------------------------------------------------------------------------------


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
        if weight >= 1.0 or unit_for("weight", options.seed, ex["id"]) < weight:
            out.append(ex)
    return out


def apply_mix(examples: list[dict[str, Any]], options: PrepareOptions) -> list[dict[str, Any]]:
    """Subsample the train split to the asked real share (then to max_examples); other splits stay whole."""
    train = [e for e in examples if e["split"] == "train"]
    rest = [e for e in examples if e["split"] != "train"]
    rng = random.Random(seed_for(options.seed, "mix"))
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
    OpinionQA's survey_dev_split_by_wave.json), or a prepared dataset's split.json (its questions keep their split)
    -> {id or normalised question: split}."""
    from assembly.evaluation.survey import SurveyFormatError, read_splits

    try:
        prepared = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        prepared = None
    if isinstance(prepared, dict) and str(prepared.get("schema", "")).startswith("assembly.finetune.split/"):
        questions = prepared.get("questions") or {}
        bad = sorted({v for v in questions.values() if v not in SPLITS})
        if bad:
            raise PrepareError(f"{path}: field 'questions': unknown split {bad[0]!r}; expected {', '.join(SPLITS)}")
        return dict(questions)
    try:
        data = read_splits(path)
    except SurveyFormatError as exc:
        raise PrepareError(str(exc)) from None
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
