"""Resuming an interrupted run: `assembly run --resume RUN`, `assembly.resume(RUN)`.

A run stopped by Ctrl-C, SIGTERM, kill -9, a crash or a failed model call continues from its last graph checkpoint
(assembly.checkpoints) with the spec it recorded, the jury drawn again from the same seed, and its models loaded
again. The tasks its interruption cut short run again: they reserve the transcript positions they reserved the first
time (graph state `next_seq`), a request the run already recorded gets its recorded answer (assembly.recorder), and
the store writes nothing for a key it already holds (transcripts.store). So the run ends with every turn, ballot,
tally and call once, as an uninterrupted run of the same seed on a deterministic model would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from assembly.config import AssemblySpec, apply_overrides, load_spec, parse_spec
from assembly.deliberation import Sitting, _models_by_role, _witnesses, conduct, draw
from assembly.errors import AssemblyError
from assembly.providers.base import Model
from assembly.providers.registry import ModelPool
from assembly.recorded_models import check_layout
from assembly.result import AssemblyResult


async def aresume(
    run: str,
    *,
    db: str | Path | None = None,
    question: str | Path | None = None,
    models: Model | dict[str, Model] | None = None,
    on_event: Callable[[dict], None] | None = None,
    model_options: dict[str, Any] | None = None,
) -> AssemblyResult:
    """Finish run `run` (an id, a unique prefix or 'latest') in store `db`. `question`: the question file to hold
    the recorded spec against (default: the file the run was started from, when it is still there).

    Raises AssemblyError (or StoreError) with one line for an unknown or completed run, a run still running, a run
    that is no `assembly run` assembly, a question file or jury that changed since the run began."""
    from transcripts import Store, default_store_path

    store_path = str(db or default_store_path())
    if not Path(store_path).is_file():
        raise AssemblyError(f"no store at {store_path} (pass --db)")
    store = Store(store_path)
    pool = ModelPool(**(model_options or {}))
    try:
        run_id = store.resolve_run(run)
        recorded = store.run(run_id)
        if recorded["provenance"] != "simulated" or recorded["source"] != "assembly-sim":
            raise AssemblyError(f"run {run_id} was not recorded by `assembly run` (provenance "
                                f"{recorded['provenance']}); only those runs can be resumed")
        if recorded["status"] == "completed":  # before loading any model; reopen_run checks it again, atomically
            raise AssemblyError(f"run {run_id} is already completed; there is nothing to resume")
        check_layout(run_id, recorded["versions"], doing="resume")
        spec = parse_spec(recorded["spec"], f"run {run_id} (recorded spec)")
        source = question or recorded["config_path"]
        if question is not None or (source and Path(source).is_file()):
            _check_unchanged(spec, Path(source), run_id)
        population, jury = draw(spec)
        witnesses, documents = _witnesses(spec)
        inner = _models_by_role(spec, pool, models)
        sitting = Sitting(spec, population, jury, witnesses, documents, pool, inner, store, store_path, run_id)
        _check_people(sitting)
        store.reopen_run(run_id)
    except BaseException:
        store.close()
        await pool.aclose()
        raise
    return await conduct(sitting, on_event, resumed=True)


def resume(run: str, **kwargs) -> AssemblyResult:
    """Synchronous twin of `aresume`."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(aresume(run, **kwargs))
    raise AssemblyError("resume() was called inside a running event loop; await aresume(...) instead")


def _check_unchanged(recorded: AssemblySpec, path: Path, run_id: str) -> None:
    """The question file must still say what the run recorded, save what the run's overrides (--model, --seed,
    --jurors, --rounds) replaced: those are taken from the record."""
    current = apply_overrides(load_spec(path), model=recorded.models.default, seed=recorded.jury.seed,
                              jurors=recorded.jury.size, rounds=recorded.procedure.rounds, store=recorded.store)
    where = _first_difference(recorded.model_dump(mode="json"), current.model_dump(mode="json"))
    if where is not None:
        raise AssemblyError(f"{path} changed since run {run_id} began ({where} differs); resume needs the question "
                            "the run began with")


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The dotted path of the first place two JSON values differ, or None when they are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in (*a, *(k for k in b if k not in a)):
            found = _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
        return None
    return None if a == b else (path or "the spec")


def _check_people(sitting: Sitting) -> None:
    """The jury drawn again must be the recorded one (a changed population file would seat other people)."""
    recorded = {row[0]: row[1:] for row in sitting.store.sql(
        "SELECT id, role, name, persona, attributes FROM participants WHERE run_id = ?", [sitting.run_id]).rows()}
    if not recorded:
        return  # stopped before the people were recorded: conduct() records them
    drawn = {p["id"]: (p["role"], p["name"], p["persona"], p["attributes"]) for p in sitting.participants()}
    for pid in sorted(set(recorded) | set(drawn)):
        role, name, persona, attributes = recorded.get(pid, (None,) * 4)
        if pid not in drawn or (role, name, persona, json.loads(attributes or "{}")) != drawn[pid]:
            raise AssemblyError(
                f"run {sitting.run_id}: participant {pid} differs from the recorded one when the jury is drawn again "
                f"from {sitting.spec.jury.population!r} (did the population data change?); cannot resume")
