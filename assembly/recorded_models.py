"""A recorded run read back as models, one per role, that answer from its recorded calls (`--replay RUN`); the
replay backend itself is assembly.providers.replay_backend."""

from __future__ import annotations

from pathlib import Path

from assembly.errors import AssemblyError


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
    finally:
        store.close()
    if not records:
        raise AssemblyError(f"run {run_id} has no recorded model calls to replay (is it in {db or default_store_path()}?)")
    # One replay model per original model name (sharing one book), so each role's requests hash exactly as they did
    # when recorded and the replayed run's own records match the original's.
    by_name = ReplayModel.for_models(records)
    fallback = next(iter(by_name.values()))
    models = {}
    for role in ("juror", "witness", "moderator"):
        name = next((r["model"] for r in records if r.get("role") == role), None)
        models[role] = by_name.get(name, fallback)
    return {"models": models, "provenance": "replay"}
