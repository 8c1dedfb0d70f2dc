"""Running one assembly: spec -> jury draw -> models by role -> the graph -> the store -> an AssemblyResult.

This is the Python API (`assembly.deliberate` / `assembly.adeliberate`) that the CLI and other agents call.
"""

from __future__ import annotations

import asyncio
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assembly.ballot import Ballot
from assembly.ballot_types import kind_of
from assembly.casting import position_bias
from assembly.counting import choice_counts
from assembly.checkpoints import DURABILITY, checkpointer, has_checkpoint, thread
from assembly.config import AssemblySpec, apply_overrides, load_spec, parse_spec
from assembly.errors import AssemblyError, SpecError
from assembly.graph import build_graph
from assembly.graph_state import MODERATOR_ID, AssemblyContext, Participant
from assembly.layout import PROMPT_LAYOUT
from assembly.prompts import render_prompt
from assembly.providers.base import Model
from assembly.providers.registry import ModelPool
from assembly.providers.replay_backend import ReplayBook
from assembly.recorder import RecordingModel, to_graph_stream, usage_of
from assembly.result import AssemblyResult, JurorSummary, Usage, Verdict
from assembly.run_lifecycle import run_lifecycle
from assembly.seat import HUMAN, HumanSeat, Terminal, check_seat

if TYPE_CHECKING:  # pragma: no cover
    from assembly.study.plan import StudyRun

ROLES = ("juror", "witness", "moderator")
DOCUMENT_WORDS = 1500  # a witness's documents are cut here so testimony prompts stay bounded


def resolve_spec(spec: str | Path | dict | AssemblySpec, **overrides) -> AssemblySpec:
    """Accept a path, a dict or a spec; apply CLI/API overrides (validated like the file)."""
    if isinstance(spec, AssemblySpec):
        parsed = spec
    elif isinstance(spec, dict):
        parsed = parse_spec(spec)
    else:
        parsed = load_spec(spec)
    given = {k: v for k, v in overrides.items() if v is not None}
    return apply_overrides(parsed, **given) if given else parsed


def draw(spec: AssemblySpec):
    """The jury draw for a spec (population, Draw); a JuryError becomes a SpecError naming the jury field."""
    from juries import JuryError, draw_jury, load_population

    try:
        population = load_population(spec.jury.population)
        return population, draw_jury(population, spec.jury.size, spec.jury.stratify, spec.jury.quotas, spec.jury.seed)
    except JuryError as exc:
        raise SpecError(f"jury: {exc}") from None


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "prompt_layout": str(PROMPT_LAYOUT)}
    for dist in ("assembly-sim", "langgraph", "duckdb", "transformers", "torch", "pydantic"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


def _witnesses(spec: AssemblySpec) -> tuple[list[Participant], dict[str, str]]:
    witnesses, documents = [], {}
    for i, w in enumerate(spec.witnesses, start=1):
        wid = f"witness-{i}"
        persona = render_prompt("witness_system", name=w.name, expertise=w.expertise, stance=w.stance, brief=w.brief)
        witnesses.append(Participant(wid, "witness", w.name, persona, {}, {"expertise": w.expertise,
                                                                          "stance": w.stance}))
        texts = []
        for doc in w.documents:
            try:
                texts.append(Path(doc).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                raise SpecError(f"witness {w.name!r}: cannot read document {doc}: {exc}") from None
        words = "\n\n".join(texts).split()
        documents[wid] = " ".join(words[:DOCUMENT_WORDS])
    return witnesses, documents


def _models_by_role(spec: AssemblySpec, pool: ModelPool, models: Model | dict[str, Model] | None) -> dict[str, Model]:
    """Injected models (tests, agents) win; otherwise each role's spec is loaded once from the pool."""
    chosen: dict[str, Model] = {}
    for role in ROLES:
        if isinstance(models, Model):
            chosen[role] = models
        elif isinstance(models, dict) and role in models:
            chosen[role] = models[role]
        else:
            chosen[role] = pool.get(spec.models.for_role(role))
    return chosen


def _result(spec, ctx: AssemblyContext, state: dict, draw_, recorders: dict[str, RecordingModel], wall: float,
            store_path: str) -> AssemblyResult:
    ballots = {k: Ballot.model_validate(v) for k, v in (state.get("ballots") or {}).items()}
    pre = [ballots[f"pre:{j.id}"] for j in ctx.jurors if f"pre:{j.id}" in ballots]
    post = [ballots[f"post:{j.id}"] for j in ctx.jurors if f"post:{j.id}" in ballots]
    jurors = []
    kind = kind_of(spec.ballot.type)
    for j in ctx.jurors:
        b, a = kind.label(ballots.get(f"pre:{j.id}")), kind.label(ballots.get(f"post:{j.id}"))
        jurors.append(JurorSummary(id=j.id, name=j.name, attributes=j.attributes, pre=b, post=a,
                                   changed=b is not None and a is not None and a != b))
    pre_counts = choice_counts(pre, spec.ballot.options)
    post_counts = choice_counts(post, spec.ballot.options)
    usage = usage_of(recorders.values(), wall)
    return AssemblyResult(
        run_id=ctx.run_id,
        store=store_path,
        status="completed",
        question=spec.question,
        options=spec.ballot.options,
        ballot_type=spec.ballot.type,
        seed=ctx.seed,
        jurors=jurors,
        representativeness=draw_.representativeness,
        representativeness_overall=draw_.overall,
        pre_counts=pre_counts,
        post_counts=post_counts,
        shift={o: post_counts[o] - pre_counts[o] for o in spec.ballot.options},
        changed=sum(1 for j in jurors if j.changed),
        abstentions={"pre": sum(b.status == "abstain" for b in pre), "post": sum(b.status == "abstain" for b in post)},
        tallies=state["tallies"]["post"],
        pre_tallies=state["tallies"]["pre"],
        stability=state["tallies"]["post"][0].get("stability"),
        position_bias=position_bias([*pre, *post]),
        verdict=Verdict(**state["verdict"]),
        floor=state.get("floor") or {},
        usage=usage,
        models={role: recorders[role].name for role in ROLES},
    )


async def adeliberate(
    spec: str | Path | dict | AssemblySpec,
    *,
    model: str | None = None,
    seed: int | None = None,
    jurors: int | None = None,
    rounds: int | None = None,
    db: str | Path | None = None,
    models: Model | dict[str, Model] | None = None,
    on_event: Callable[[dict], None] | None = None,
    provenance: str = "simulated",
    model_options: dict[str, Any] | None = None,
    study: StudyRun | None = None,
    seat: str | None = None,
    seat_terminal: Terminal | None = None,
) -> AssemblyResult:
    """Run one assembly and record it. Raises AssemblyError (one-line message) on bad input or a failed run;
    the run is then in the store with status 'failed' (or 'interrupted') and its reason. `study`: the study draw
    this run is (assembly.study), recorded on the run with the id it chose. `seat`: a juror id of the drawn jury whose
    seat a person takes at `seat_terminal` (default: stdin, and stderr to read from; assembly.seat)."""
    from transcripts import Store, default_store_path

    config_path = str(Path(spec).resolve()) if isinstance(spec, (str, Path)) else None
    spec = resolve_spec(spec, model=model, seed=seed, jurors=jurors, rounds=rounds)
    population, jury = draw(spec)
    if seat is not None:
        check_seat(seat, [j.id for j in jury.jurors])
    witnesses, documents = _witnesses(spec)
    pool = ModelPool(**(model_options or {}))
    store_path = str(db or spec.store or default_store_path())
    try:
        inner = _models_by_role(spec, pool, models)  # load before the run starts: a bad model is not a failed run
        if seat is not None:
            inner["juror"] = HumanSeat(inner["juror"], seat, ballot_type=spec.ballot.type, options=spec.ballot.options,
                                       terminal=seat_terminal)
        store = Store(store_path)
    except BaseException:
        await pool.aclose()
        raise
    run_id = store.begin_run(question=spec.question, spec=spec.model_dump(mode="json"), seed=spec.jury.seed,
                             provenance=provenance, versions=versions(), options=spec.ballot.options,
                             source="assembly-sim", config_path=config_path,
                             **(study.store_fields() if study is not None else {}))
    sitting = Sitting(spec, population, jury, witnesses, documents, pool, inner, store, store_path, run_id)
    return await conduct(sitting, on_event)


@dataclass
class Sitting:
    """One attempt at a run, set up: the same for a new run and for a resumed one (assembly.resuming)."""

    spec: AssemblySpec
    population: Any
    jury: Any  # juries.Draw
    witnesses: list[Participant]
    documents: dict[str, str]
    pool: ModelPool
    models: dict[str, Model]  # role -> model, before recording
    store: Any
    store_path: str
    run_id: str

    def jurors(self) -> list[Participant]:
        return [Participant(j.id, "juror", j.persona.name, j.persona.text, dict(j.attributes))
                for j in self.jury.jurors]

    def participants(self) -> list[dict[str, Any]]:
        """The people of the run as the store records them."""
        name = {role: m.name for role, m in self.models.items()}
        return [
            {"id": MODERATOR_ID, "role": "moderator", "name": "Moderator", "persona": None, "attributes": {},
             "extra": {"model": name["moderator"]}},
            *({"id": w.id, "role": "witness", "name": w.name, "persona": w.persona, "attributes": {},
               "extra": {**w.extra, "model": name["witness"]}} for w in self.witnesses),
            *({"id": j.id, "role": "juror", "name": j.name, "persona": j.persona, "attributes": j.attributes,
               "extra": self._juror_extra(j.id, name["juror"])} for j in self.jurors()),
        ]

    def _juror_extra(self, juror_id: str, model: str) -> dict[str, Any]:
        """A seat a person took (assembly.seat) is recorded as theirs, not the model's."""
        juror_model = self.models["juror"]
        if isinstance(juror_model, HumanSeat) and juror_model.seat == juror_id:
            return {"model": HUMAN, "provenance": HUMAN}
        return {"model": model}


async def conduct(sitting: Sitting, on_event: Callable[[dict], None] | None = None, *,
                  resumed: bool = False) -> AssemblyResult:
    """Run the graph for a begun (or reopened) run, checkpointing every super-step, and finish the run.

    `resumed`: continue from the run's last checkpoint (from the start when it has none), answering requests the
    run already recorded from the record (assembly.recorder) and recording the people only if they are missing.
    Closes the store and the model pool."""
    spec, store, run_id = sitting.spec, sitting.store, sitting.run_id
    started = time.perf_counter()
    async with run_lifecycle(store, run_id, pool=sitting.pool, publish=to_graph_stream) as lifecycle:
        # Failed calls are not reused: a resume is the chance to make them again.
        reuse = ReplayBook([r for r in store.recorded_calls(run_id) if r["error"] is None]) if resumed else None
        wrapped = {id(m): RecordingModel(m, lifecycle.recorder, reuse) for m in sitting.models.values()}
        recorders = {role: wrapped[id(m)] for role, m in sitting.models.items()}
        if not resumed or store.sql("SELECT count(*) FROM participants WHERE run_id = ?", [run_id]).item() == 0:
            store.add_participants(run_id, sitting.participants())
        ctx = AssemblyContext(spec=spec, jurors=sitting.jurors(), witnesses=sitting.witnesses, models=dict(recorders),
                              recorder=lifecycle.recorder, run_id=run_id, seed=spec.jury.seed,
                              documents=sitting.documents)
        async with checkpointer(sitting.store_path) as saver:
            start = None if resumed and await has_checkpoint(saver, run_id) else {"round": 0}
            state = None
            # The live view reads the run's events from the graph's custom stream, as a parent graph would.
            async for mode, chunk in build_graph(saver).astream(start, thread(run_id), context=ctx,
                                                                durability=DURABILITY,
                                                                stream_mode=["custom", "values"]):
                if mode == "values":
                    state = chunk
                elif on_event is not None:
                    on_event(chunk.as_dict())
            result = _result(spec, ctx, state, sitting.jury, recorders, time.perf_counter() - started,
                             sitting.store_path)
            if resumed:  # this attempt's recorders saw only the calls made since the resume
                await lifecycle.recorder.flush()
                result.usage = recorded_usage(store, run_id, result.usage.wall_seconds)
            await lifecycle.complete_with(result, sitting.population, spec.jury.stratify)
            await saver.adelete_thread(run_id)  # nothing left to resume
    return result


def recorded_usage(store, run_id: str, wall_seconds: float) -> Usage:
    """A run's usage summed over its recorded calls (failed ones excluded, as the recorders count them)."""
    calls, inp, cached, written, out, seconds, cost = store.sql(
        "SELECT count(*), coalesce(sum(input_tokens), 0)::BIGINT, coalesce(sum(cached_input_tokens), 0)::BIGINT, "
        "coalesce(sum(cache_write_tokens), 0)::BIGINT, coalesce(sum(output_tokens), 0)::BIGINT, "
        "coalesce(sum(duration_s), 0)::DOUBLE, sum(cost_usd)::DOUBLE FROM llm_calls WHERE run_id = ? AND error IS NULL",
        [run_id]).rows()[0]
    return Usage(calls=calls, input_tokens=inp, cached_input_tokens=cached, cache_write_tokens=written,
                 output_tokens=out, model_seconds=round(seconds, 3), wall_seconds=wall_seconds,
                 tokens_per_second=round(out / wall_seconds, 2) if wall_seconds > 0 else 0.0, cost_usd=cost)



def deliberate(spec: str | Path | dict | AssemblySpec, **kwargs) -> AssemblyResult:
    """Synchronous twin of `adeliberate` for scripts and notebooks without a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(adeliberate(spec, **kwargs))
    raise AssemblyError("deliberate() was called inside a running event loop; await adeliberate(...) instead")
