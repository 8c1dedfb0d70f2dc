"""A recorded run read back as models, one per role, that answer from its recorded calls (`--replay RUN`); the
replay backend itself is assembly.providers.replay_backend."""

from __future__ import annotations

import json
from pathlib import Path

from assembly.errors import AssemblyError
from assembly.layout import PROMPT_LAYOUT


def check_layout(run_id: str, versions, doing: str = "replay") -> None:
    """Refuse to replay or resume a run whose prompts were laid out by another version: none of its recorded
    requests would match, and a resumed run would mix two layouts in one record."""
    if isinstance(versions, str):
        versions = json.loads(versions or "{}")
    layout = int((versions or {}).get("prompt_layout") or 1)
    if layout != PROMPT_LAYOUT:
        raise AssemblyError(f"run {run_id} was recorded with prompt layout {layout}, and this version of assembly "
                            f"builds layout {PROMPT_LAYOUT} prompts, so its recorded calls cannot answer them; "
                            f"{doing} it with the assembly version that recorded it, or run the question again")


def replay_arguments(run_id: str, db: str | Path | None) -> dict:
    """Arguments for `deliberate` that swap every role's model for the recorded answers of `run_id`.

    The recorded spec is not substituted: the caller passes the question file, and a changed file shows up as
    replay misses naming the request that differs.
    """
    from assembly.providers.replay_backend import ReplayModel
    from transcripts import Store, default_store_path

    store = Store(str(db or default_store_path()))
    try:
        records = store.recorded_calls(run_id)
        (versions,) = store.sql("SELECT versions FROM runs WHERE id = ?", [run_id]).row(0)
    finally:
        store.close()
    if not records:
        raise AssemblyError(f"run {run_id} has no recorded model calls to replay (is it in {db or default_store_path()}?)")
    check_layout(run_id, versions)
    # One replay model per original model name (sharing one book), so each role's requests hash exactly as they did
    # when recorded and the replayed run's own records match the original's.
    by_name = ReplayModel.for_models(records)
    fallback = next(iter(by_name.values()))
    models = {}
    for role in ("juror", "witness", "moderator"):
        name = next((r["model"] for r in records if r.get("role") == role), None)
        models[role] = by_name.get(name, fallback)
    return {"models": models, "provenance": "replay"}
