"""FORMAT 2 deliberation JSONL (shared/data/README.md), both ways: real deliberations in, any run out.

One JSON object per line: id, source, license, question, options (list or null), participants (id, role,
attributes), turns (speaker, text, phase, index), votes (participant, option, phase, optional target). Imports
validate every line before writing anything, then write one file in one transaction, so a bad line never leaves
half a file behind. Extra keys are kept where the store has a place for them (participant name/persona, turn
round, vote ranking/rationale) and written back on export, so a run survives a round trip.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from transcripts.clock import utcnow
from transcripts.errors import StoreError
from transcripts.store import BALLOT_PHASES, PROVENANCES, Store, attribute_text, from_json, new_id

IMPORT_ROLES = ("juror", "witness", "moderator", "expert", "participant")
# FORMAT 2 has no witness role: a witness testifies as an expert.
EXPORT_ROLE = {"witness": "expert"}


class RecordError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def _need(record: Mapping[str, Any], key: str, kind: type, where: str = "") -> Any:
    name = f"{where}{key}"
    if key not in record:
        raise RecordError(name, "missing")
    value = record[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):  # JSON true is not an index
        raise RecordError(name, f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def validate_record(record: Any) -> None:
    """Raise RecordError naming the first offending field of a FORMAT 2 record."""
    if not isinstance(record, dict):
        raise RecordError("(record)", f"expected a JSON object, got {type(record).__name__}")
    for key in ("id", "source", "license", "question"):
        if not _need(record, key, str).strip():
            raise RecordError(key, "empty")
    options = record.get("options")
    if "options" not in record:
        raise RecordError("options", "missing (use null for an open question)")
    if options is not None:
        if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
            raise RecordError("options", "expected a list of strings or null")
        if len(set(options)) != len(options):
            raise RecordError("options", "repeats an option")
    if "provenance" in record and record["provenance"] not in PROVENANCES:
        raise RecordError("provenance", f"must be one of {', '.join(PROVENANCES)}")
    ids = set()
    for i, p in enumerate(_need(record, "participants", list)):
        where = f"participants[{i}]."
        if not isinstance(p, dict):
            raise RecordError(f"participants[{i}]", "expected an object")
        pid = _need(p, "id", str, where)
        if pid in ids:
            raise RecordError(f"{where}id", f"duplicate participant id {pid!r}")
        ids.add(pid)
        if p.get("role") not in IMPORT_ROLES:
            raise RecordError(f"{where}role", f"must be one of {', '.join(IMPORT_ROLES)}; got {p.get('role')!r}")
        if not isinstance(p.get("attributes", {}), dict):
            raise RecordError(f"{where}attributes", "expected an object")
    turns = _need(record, "turns", list)
    for i, t in enumerate(turns):
        where = f"turns[{i}]."
        if not isinstance(t, dict):
            raise RecordError(f"turns[{i}]", "expected an object")
        if _need(t, "speaker", str, where) not in ids:
            raise RecordError(f"{where}speaker", f"{t['speaker']!r} is not a participant id")
        _need(t, "text", str, where)
        _need(t, "phase", str, where)
        if _need(t, "index", int, where) != i:
            raise RecordError(f"{where}index", f"is {t['index']}, expected {i} (turns in dialogue order)")
    for i, v in enumerate(_need(record, "votes", list)):
        where = f"votes[{i}]."
        if not isinstance(v, dict):
            raise RecordError(f"votes[{i}]", "expected an object")
        if _need(v, "participant", str, where) not in ids:
            raise RecordError(f"{where}participant", f"{v['participant']!r} is not a participant id")
        option = _need(v, "option", str, where)
        if v.get("phase") not in BALLOT_PHASES:
            raise RecordError(f"{where}phase", f"must be one of {', '.join(BALLOT_PHASES)}; got {v.get('phase')!r}")
        target = v.get("target")
        if target is None:
            if options is not None and option not in options:
                raise RecordError(f"{where}option", f"{option!r} is not one of the record's options")
        elif isinstance(target, bool) or not isinstance(target, (int, str)):
            raise RecordError(f"{where}target", "expected a turn index or a statement id")
        elif isinstance(target, int) and not 0 <= target < len(turns):
            raise RecordError(f"{where}target", f"turn index {target} out of range")


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for every non-blank line; StoreError naming file and line on bad JSON or fields."""
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise StoreError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
            try:
                validate_record(record)
            except RecordError as exc:
                rid = record.get("id") if isinstance(record, dict) else None
                label = f" (record {rid!r})" if isinstance(rid, str) else ""
                raise StoreError(f"{path}:{number}{label}: field {exc}") from exc
            yield number, record


def import_jsonl(store: Store, path: str | Path, *, on_duplicate: str = "skip") -> list[str]:
    """Import a FORMAT 2 file; return the new run ids.

    Records are imported as provenance 'imported-real' (or the record's own `provenance` key, which our exports
    write, so simulated data never turns into "real" by a round trip), keeping source and license. A record whose
    (source, id) is already in the store is skipped (`on_duplicate="skip"`) or refused ("error")."""
    if on_duplicate not in ("skip", "error"):
        raise StoreError("on_duplicate must be 'skip' or 'error'")
    path = Path(path)
    records = list(read_records(path))  # all lines validated before anything is written
    seen: set[tuple[str, str]] = set()
    for number, record in records:
        key = (record["source"], record["id"])
        if key in seen:
            raise StoreError(f"{path}:{number}: field id: {record['id']!r} appears twice in the file")
        seen.add(key)
    existing = set()
    if records:
        known = store.sql("SELECT source, external_id FROM runs WHERE external_id IS NOT NULL")
        existing = set(known.iter_rows())
    dupes = [(n, r) for n, r in records if (r["source"], r["id"]) in existing]
    if dupes and on_duplicate == "error":
        n, r = dupes[0]
        raise StoreError(f"{path}:{n}: record {r['id']!r} from {r['source']!r} is already in the store")
    fresh = [r for n, r in records if (r["source"], r["id"]) not in existing]
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in ("runs", "participants", "participant_attributes",
                                                             "turns", "ballots")}
    run_ids = []
    now = utcnow()
    for record in fresh:
        run_ids.append(_record_rows(record, rows, now))
    with store.transaction():
        for table, table_rows in rows.items():
            if table_rows:
                store.insert_rows(table, pa.Table.from_pylist(table_rows, schema=BULK_SCHEMAS[table]))
    return run_ids


# Arrow schemas for the importers' bulk loads (JSONL here, Polis in polis.py): columns an importer leaves out load
# as NULL, so one set of schemas serves every importer.
BULK_SCHEMAS = {
    "runs": pa.schema([("id", pa.string()), ("question", pa.string()), ("options", pa.list_(pa.string())),
                       ("spec", pa.string()), ("status", pa.string()), ("provenance", pa.string()),
                       ("source", pa.string()), ("license", pa.string()), ("external_id", pa.string()),
                       ("started_at", pa.timestamp("us")), ("finished_at", pa.timestamp("us")),
                       ("summary", pa.string())]),
    "participants": pa.schema([("run_id", pa.string()), ("id", pa.string()), ("role", pa.string()),
                               ("name", pa.string()), ("persona", pa.string()), ("attributes", pa.string()),
                               ("extra", pa.string())]),
    "participant_attributes": pa.schema([("run_id", pa.string()), ("participant_id", pa.string()),
                                         ("attribute", pa.string()), ("value", pa.string())]),
    "turns": pa.schema([("id", pa.string()), ("run_id", pa.string()), ("seq", pa.int32()), ("phase", pa.string()),
                        ("round", pa.int32()), ("speaker_id", pa.string()), ("content", pa.string()),
                        ("target", pa.string()), ("created_at", pa.timestamp("us"))]),
    "ballots": pa.schema([("id", pa.string()), ("run_id", pa.string()), ("participant_id", pa.string()),
                          ("phase", pa.string()), ("ballot_type", pa.string()), ("status", pa.string()),
                          ("choice", pa.string()), ("ranking", pa.list_(pa.string())),
                          ("approvals", pa.list_(pa.string())), ("rationale", pa.string()),
                          ("probabilities", pa.string()), ("target", pa.string()), ("created_at", pa.timestamp("us"))]),
}

_PARTICIPANT_KEYS = {"id", "role", "attributes", "name", "persona", "assembly_role"}


def _record_rows(record: dict[str, Any], rows: dict[str, list[dict[str, Any]]], now: datetime) -> str:
    run_id = new_id()
    rows["runs"].append({
        "id": run_id, "question": record["question"], "options": record["options"],
        "spec": json.dumps({"options": record["options"]}), "status": "completed",
        "provenance": record.get("provenance", "imported-real"), "source": record["source"],
        "license": record["license"], "external_id": record["id"], "started_at": now, "finished_at": now,
    })
    for p in record["participants"]:
        attributes = p.get("attributes") or {}
        extra = {k: v for k, v in p.items() if k not in _PARTICIPANT_KEYS}
        rows["participants"].append({
            "run_id": run_id, "id": p["id"], "name": p.get("name"), "persona": p.get("persona"),
            # our exports write a witness as role "expert" and keep the original under assembly_role
            "role": p["assembly_role"] if p.get("assembly_role") in IMPORT_ROLES else p["role"],
            "attributes": json.dumps(attributes, ensure_ascii=False),
            "extra": json.dumps(extra, ensure_ascii=False) if extra else None,
        })
        rows["participant_attributes"].extend(
            {"run_id": run_id, "participant_id": p["id"], "attribute": k, "value": attribute_text(v)}
            for k, v in attributes.items()
        )
    for t in record["turns"]:
        rows["turns"].append({
            "id": new_id(), "run_id": run_id, "seq": t["index"], "phase": t["phase"], "round": t.get("round"),
            "speaker_id": t["speaker"], "content": t["text"],
            "target": None if t.get("target") is None else str(t["target"]), "created_at": now,
        })
    approvals: dict[tuple[str, str, Any], dict[str, Any]] = {}
    for v in record["votes"]:
        ranking = v.get("ranking")
        if v.get("ballot_type") == "approval":  # our exports write one vote per approved option: regroup them
            key = (v["participant"], v["phase"], v.get("target"))
            if key in approvals:
                approvals[key]["approvals"].append(v["option"])
                continue
            approvals[key] = ballot = {
                "id": new_id(), "run_id": run_id, "participant_id": v["participant"], "phase": v["phase"],
                "ballot_type": "approval", "status": "valid", "approvals": [v["option"]],
                "rationale": v.get("rationale"), "target": None if v.get("target") is None else str(v["target"]),
                "created_at": now,
            }
            rows["ballots"].append(ballot)
            continue
        rows["ballots"].append({
            "id": new_id(), "run_id": run_id, "participant_id": v["participant"], "phase": v["phase"],
            "ballot_type": v.get("ballot_type") or ("ranked" if ranking else "single"), "status": "valid",
            "choice": v["option"], "ranking": ranking, "rationale": v.get("rationale"),
            "target": None if v.get("target") is None else str(v["target"]), "created_at": now,
        })
    return run_id


# -- export ---------------------------------------------------------------------------------------------------------


def _target_value(text: str | None) -> int | str | None:
    """Targets are stored as text; a turn index goes back out as the int FORMAT 2 uses."""
    if text is None:
        return None
    return int(text) if text.isdigit() else text


def run_record(store: Store, run_id: str) -> dict[str, Any]:
    """One run as a FORMAT 2 record (plus the extra keys described in the module docstring)."""
    store.run(run_id)  # StoreError for an unknown id
    return next(run_records(store, [run_id]))


def run_records(store: Store, run_ids: Sequence[str], batch: int = 500) -> Iterator[dict[str, Any]]:
    """FORMAT 2 records for many runs, reading each table once per batch of runs rather than once per run."""
    for start in range(0, len(run_ids), batch):
        chunk = list(run_ids[start:start + batch])
        with store.reading():
            tables = {
                "runs": store.sql("SELECT * FROM runs WHERE id IN (SELECT unnest($ids))", {"ids": chunk}),
                "participants": store.sql(
                    "SELECT run_id, id, role, name, persona, attributes, extra FROM participants "
                    "WHERE run_id IN (SELECT unnest($ids)) ORDER BY rowid", {"ids": chunk}),
                "turns": store.sql(
                    "SELECT run_id, speaker_id, content, phase, round, target FROM turns "
                    "WHERE run_id IN (SELECT unnest($ids)) ORDER BY run_id, seq", {"ids": chunk}),
                "ballots": store.sql(
                    "SELECT run_id, participant_id, phase, ballot_type, choice, ranking, approvals, rationale, target "
                    "FROM ballots WHERE run_id IN (SELECT unnest($ids)) AND status = 'valid' "
                    "ORDER BY run_id, created_at, id", {"ids": chunk}),
            }
        runs = {row["id"]: row for row in tables.pop("runs").iter_rows(named=True)}
        grouped: dict[str, dict[str, list[tuple]]] = {name: {} for name in tables}
        for name, frame in tables.items():
            for row in frame.iter_rows():  # run_id first, then the columns _record reads
                grouped[name].setdefault(row[0], []).append(row[1:])
        for run_id in chunk:
            if run_id not in runs:
                raise StoreError(f"no run {run_id!r} in {store.path}")
            yield _record(runs[run_id], grouped["participants"].get(run_id, []),
                          grouped["turns"].get(run_id, []), grouped["ballots"].get(run_id, []))


def _record(run: dict[str, Any], people: list[tuple], turns: list[tuple], ballots: list[tuple]) -> dict[str, Any]:
    participants = []
    for pid, role, name, persona, attributes, extra in people:
        entry: dict[str, Any] = {"id": pid, "role": EXPORT_ROLE.get(role, role), "attributes": from_json(attributes) or {}}
        if role in EXPORT_ROLE:
            entry["assembly_role"] = role
        if name is not None:
            entry["name"] = name
        if persona is not None:
            entry["persona"] = persona
        for key, value in (from_json(extra) or {}).items():
            entry.setdefault(key, value)
        participants.append(entry)
    record_turns = []
    for index, (speaker, content, phase, rnd, target) in enumerate(turns):
        turn: dict[str, Any] = {"speaker": speaker, "text": content, "phase": phase, "index": index}
        if rnd is not None:
            turn["round"] = rnd
        if target is not None:
            turn["target"] = _target_value(target)
        record_turns.append(turn)
    votes = []
    for pid, phase, ballot_type, choice, ranking, approvals, rationale, target in ballots:
        # An approval ballot becomes one vote per approved option.
        chosen = approvals if approvals is not None else [choice if choice is not None else (ranking or [None])[0]]
        for option in chosen:
            if option is None:
                continue
            vote: dict[str, Any] = {"participant": pid, "option": option, "phase": phase}
            if target is not None:
                vote["target"] = _target_value(target)
            if ballot_type not in ("single",):
                vote["ballot_type"] = ballot_type
            if ranking is not None:
                vote["ranking"] = list(ranking)
            if rationale is not None:
                vote["rationale"] = rationale
            votes.append(vote)
    return {
        "id": run["external_id"] or run["id"],
        "source": run["source"] or "assembly-sim",
        "license": run["license"] or "unspecified",
        "question": run["question"],
        "options": list(run["options"]) if run["options"] is not None else None,
        "participants": participants,
        "turns": record_turns,
        "votes": votes,
        "provenance": run["provenance"],
    }
