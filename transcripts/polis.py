"""Polis conversation exports into the store (provenance 'imported-real').

A Polis export is a folder of CSVs (each plain or gzip-compressed, `name.csv` or `name.csv.gz`):

* `summary.csv`: key,value lines without a header (topic, url, conversation-description, ...). It gives the
  question; without it, pass `question=`.
* `comments.csv` (required): timestamp, datetime, comment-id, author-id, agrees, disagrees, moderated (1 accepted,
  0 unmoderated, -1 rejected), comment-body.
* `votes.csv` (optional): timestamp, datetime, comment-id, voter-id, vote (1 agree, -1 disagree, 0 pass).
* `participants-votes.csv` (optional): participant, group-id, n-comments, n-votes, n-agree, n-disagree, then one
  column per comment id holding that participant's standing vote (1 / -1 / 0 / empty). Other non-numeric columns
  (newer exports add e.g. `xid`) are ignored.

One conversation becomes one run:

* participants: a `moderator` (the Polis prompt: the conversation description) and one `participant` per Polis id
  (`p<id>`), with attribute `polis_group` (the opinion group Polis assigned) where known;
* turns: turn 0 is the moderator's prompt (phase "prompt"); then every comment in time order (phase "statement",
  speaker its author). Rejected comments (moderated = -1) are left out unless `include_rejected=True`;
* ballots: each participant's standing vote on each statement: ballot_type "single", phase "final", choice
  "Agree" / "Disagree" / "Pass", target = the statement's turn index (as in FORMAT 2). From votes.csv the latest
  vote per (voter, comment) counts (Polis lets people change their vote); without votes.csv, the
  participants-votes matrix gives the same standing votes.

Votes on comments that are absent from comments.csv (the upstream bg2050 export has some) or were left out as
rejected are skipped and counted in the run summary, not treated as errors. Anything malformed (a missing column,
a non-integer id, a vote other than -1/0/1, a repeated comment id, a ragged row, an unreadable gzip) is a one-line
StoreError naming the file, the line and the field, raised before anything is written. A conversation is written
in one transaction: all of it, or nothing.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from transcripts.clock import utcnow
from transcripts.errors import StoreError
from transcripts.interchange import BULK_SCHEMAS
from transcripts.store import Store, new_id

SOURCE = "polis"
LICENSE = "CC BY 4.0"
VOTE_LABELS = {1: "Agree", -1: "Disagree", 0: "Pass"}
MODERATOR_ID = "moderator"

COMMENT_COLUMNS = ("timestamp", "comment-id", "author-id", "moderated", "comment-body")
VOTE_COLUMNS = ("timestamp", "comment-id", "voter-id", "vote")
MATRIX_COLUMNS = ("participant", "group-id")


# -- reading files (shared with transcripts.surveys) ------------------------------------------------------------


def find_file(folder: Path, name: str) -> Path | None:
    """`name.csv.gz` or `name.csv` inside folder, whichever exists (gzip first)."""
    for candidate in (folder / f"{name}.csv.gz", folder / f"{name}.csv"):
        if candidate.is_file():
            return candidate
    return None


def open_text(path: Path):
    """A text handle on a plain or gzip file (by magic bytes, not by name), newline='' for csv."""
    try:
        with open(path, "rb") as raw:
            magic = raw.read(2)
        if magic == b"\x1f\x8b":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise StoreError(f"{path}: cannot read ({exc.strerror or exc})") from None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, row) of a CSV, first row included; StoreError naming file and line on unreadable input."""
    handle = open_text(path)
    with handle:
        reader = csv.reader(handle)
        try:
            for row in reader:
                yield reader.line_num, row
        except csv.Error as exc:
            raise StoreError(f"{path}:{reader.line_num}: CSV syntax error ({exc})") from None
        except (UnicodeDecodeError, EOFError, gzip.BadGzipFile, OSError) as exc:
            raise StoreError(f"{path}: unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def read_header(path: Path, rows: Iterator[tuple[int, list[str]]], required: Sequence[str]) -> dict[str, int]:
    """Column positions from a CSV's header; a one-line StoreError names a missing column or an empty file."""
    try:
        _, header = next(rows)
    except StopIteration:
        raise StoreError(f"{path}: empty file (expected a header with {', '.join(required)})") from None
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise StoreError(f"{path}:1: missing column(s) {', '.join(missing)} (header is {','.join(header)})")
    return {name: i for i, name in enumerate(header)}


def _int(path: Path, line: int, name: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise StoreError(f"{path}:{line}: field '{name}': {text!r} is not an integer") from None


def _vote(path: Path, line: int, name: str, text: str) -> int:
    value = _int(path, line, name, text)
    if value not in VOTE_LABELS:
        raise StoreError(f"{path}:{line}: field '{name}': {text!r} is not -1, 0 or 1")
    return value


# -- parsing a conversation ---------------------------------------------------------------------------------------


@dataclass
class Comment:
    id: int
    author: int
    timestamp: int
    moderated: int
    body: str


@dataclass
class Conversation:
    name: str
    question: str
    summary: dict[str, str]
    comments: list[Comment]
    votes: dict[tuple[int, int], int]  # (voter, comment) -> standing vote
    groups: dict[int, str]  # participant -> Polis opinion group
    counts: dict[int, dict[str, int]]  # participant -> n-comments, n-votes, ... from participants-votes
    files: dict[str, str]  # file name -> sha256
    skipped: dict[str, int] = field(default_factory=dict)


def read_summary(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line, row in read_rows(path):
        if not row or not row[0].strip():
            continue
        if len(row) < 2:
            raise StoreError(f"{path}:{line}: expected key,value; got {','.join(row)!r}")
        out[row[0].strip()] = ",".join(row[1:]).strip()
    return out


def read_comments(path: Path) -> list[Comment]:
    rows = read_rows(path)
    col = read_header(path, rows, COMMENT_COLUMNS)
    width = max(col.values()) + 1
    comments: dict[int, Comment] = {}
    for line, row in rows:
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < width:
            raise StoreError(f"{path}:{line}: expected {width} fields, found {len(row)}")
        cid = _int(path, line, "comment-id", row[col["comment-id"]])
        if cid in comments:
            raise StoreError(f"{path}:{line}: field 'comment-id': {cid} appears twice")
        moderated = _int(path, line, "moderated", row[col["moderated"]])
        if moderated not in (-1, 0, 1):
            raise StoreError(f"{path}:{line}: field 'moderated': {moderated} is not -1, 0 or 1")
        comments[cid] = Comment(
            id=cid,
            author=_int(path, line, "author-id", row[col["author-id"]]),
            timestamp=_int(path, line, "timestamp", row[col["timestamp"]]),
            moderated=moderated,
            body=row[col["comment-body"]],
        )
    return sorted(comments.values(), key=lambda c: (c.timestamp, c.id))


def read_votes(path: Path) -> dict[tuple[int, int], int]:
    """The standing vote per (voter, comment): the one with the latest timestamp (file order breaks ties)."""
    rows = read_rows(path)
    col = read_header(path, rows, VOTE_COLUMNS)
    width = max(col.values()) + 1
    latest: dict[tuple[int, int], tuple[int, int]] = {}
    for line, row in rows:
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < width:
            raise StoreError(f"{path}:{line}: expected {width} fields, found {len(row)}")
        key = (_int(path, line, "voter-id", row[col["voter-id"]]), _int(path, line, "comment-id", row[col["comment-id"]]))
        stamp = _int(path, line, "timestamp", row[col["timestamp"]])
        vote = _vote(path, line, "vote", row[col["vote"]])
        if key not in latest or stamp >= latest[key][0]:
            latest[key] = (stamp, vote)
    return {key: vote for key, (_, vote) in latest.items()}


def read_matrix(path: Path) -> tuple[dict[tuple[int, int], int], dict[int, str], dict[int, dict[str, int]]]:
    rows = read_rows(path)
    col = read_header(path, rows, MATRIX_COLUMNS)
    comment_cols: list[tuple[int, int]] = []
    counts_cols = [c for c in ("n-comments", "n-votes", "n-agree", "n-disagree") if c in col]
    for name, i in col.items():
        if name in MATRIX_COLUMNS or name in counts_cols:
            continue
        if name.lstrip("-").isdigit():  # a comment id; other columns (e.g. 'xid' in newer exports) are metadata
            comment_cols.append((i, int(name)))
    votes: dict[tuple[int, int], int] = {}
    groups: dict[int, str] = {}
    counts: dict[int, dict[str, int]] = {}
    width = len(col)
    for line, row in rows:
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != width:
            raise StoreError(f"{path}:{line}: expected {width} fields, found {len(row)}")
        pid = _int(path, line, "participant", row[col["participant"]])
        if pid in groups or pid in counts:
            raise StoreError(f"{path}:{line}: field 'participant': {pid} appears twice")
        group = row[col["group-id"]].strip()
        if group:
            groups[pid] = str(_int(path, line, "group-id", group))
        counts[pid] = {c.replace("-", "_"): _int(path, line, c, row[col[c]]) for c in counts_cols if row[col[c]].strip()}
        for i, cid in comment_cols:
            cell = row[i].strip()
            if cell:
                votes[(pid, cid)] = _vote(path, line, str(cid), cell)
    return votes, groups, counts


def read_conversation(folder: str | Path, *, question: str | None = None) -> Conversation:
    """Read and validate one Polis export folder (nothing is written)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StoreError(f"{folder}: not a folder (expected a Polis export with comments.csv)")
    paths = {name: find_file(folder, name) for name in ("summary", "comments", "votes", "participants-votes")}
    if paths["comments"] is None:
        raise StoreError(f"{folder}: no comments.csv or comments.csv.gz")
    summary = read_summary(paths["summary"]) if paths["summary"] else {}
    text = question or summary.get("conversation-description") or summary.get("topic")
    if not text or not text.strip():
        where = paths["summary"] or folder / "summary.csv"
        raise StoreError(f"{where}: no conversation-description or topic to use as the question (pass question=)")
    comments = read_comments(paths["comments"])
    votes: dict[tuple[int, int], int] = {}
    groups: dict[int, str] = {}
    counts: dict[int, dict[str, int]] = {}
    if paths["participants-votes"]:
        votes, groups, counts = read_matrix(paths["participants-votes"])
    if paths["votes"]:
        votes = read_votes(paths["votes"])  # the vote log is the primary record; the matrix is its summary
    files = {p.name: file_sha256(p) for p in paths.values() if p is not None}
    return Conversation(folder.name, text.strip(), summary, comments, votes, groups, counts, files)


# -- writing ------------------------------------------------------------------------------------------------------



def write_tables(store: Store, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Insert prepared rows into the base tables in one transaction (all or nothing)."""
    with store.transaction():
        for table, table_rows in rows.items():
            if table_rows:
                store.insert_rows(table, pa.Table.from_pylist(table_rows, schema=BULK_SCHEMAS[table]))


def existing_external_ids(store: Store, source: str) -> set[str]:
    frame = store.sql("SELECT external_id FROM runs WHERE source = ? AND external_id IS NOT NULL", [source])
    return set(frame["external_id"].to_list()) if frame.height else set()


def pid(polis_id: int) -> str:
    return f"p{polis_id}"


def conversation_rows(conv: Conversation, *, source: str, license: str, external_id: str,
                      include_rejected: bool = False) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    now = utcnow()
    run_id = new_id()
    kept = [c for c in conv.comments if include_rejected or c.moderated != -1]
    turn_of = {c.id: seq for seq, c in enumerate(kept, start=1)}
    all_ids = {c.id for c in conv.comments}
    skipped = {"rejected_comments": len(conv.comments) - len(kept), "votes_on_unknown_comments": 0,
               "votes_on_rejected_comments": 0}
    ballots = []
    for (voter, cid), vote in sorted(conv.votes.items()):
        if cid not in all_ids:
            skipped["votes_on_unknown_comments"] += 1
            continue
        if cid not in turn_of:
            skipped["votes_on_rejected_comments"] += 1
            continue
        ballots.append({"id": new_id(), "run_id": run_id, "participant_id": pid(voter), "phase": "final",
                        "ballot_type": "single", "status": "valid", "choice": VOTE_LABELS[vote],
                        "probabilities": None, "target": str(turn_of[cid]), "created_at": now})
    people = set(conv.groups) | set(conv.counts) | {c.author for c in kept} | {b for b, _ in conv.votes}
    participants = [{"run_id": run_id, "id": MODERATOR_ID, "role": "moderator", "name": "Polis prompt",
                     "persona": None, "attributes": "{}", "extra": None}]
    attributes = []
    for person in sorted(people):
        attrs = {"polis_group": conv.groups[person]} if person in conv.groups else {}
        extra = {"polis_id": person, **conv.counts.get(person, {})}
        participants.append({"run_id": run_id, "id": pid(person), "role": "participant", "name": None,
                             "persona": None, "attributes": json.dumps(attrs), "extra": json.dumps(extra)})
        attributes.extend({"run_id": run_id, "participant_id": pid(person), "attribute": k, "value": v}
                          for k, v in attrs.items())
    turns = [{"id": new_id(), "run_id": run_id, "seq": 0, "phase": "prompt", "round": None,
              "speaker_id": MODERATOR_ID, "content": conv.question, "target": None, "created_at": now}]
    for c in kept:
        turns.append({"id": new_id(), "run_id": run_id, "seq": turn_of[c.id], "phase": "statement", "round": None,
                      "speaker_id": pid(c.author), "content": c.body, "target": None, "created_at": now})
    spec = {"format": "polis", "conversation": conv.name, "topic": conv.summary.get("topic"),
            "url": conv.summary.get("url"), "include_rejected": include_rejected}
    summary = {"files": conv.files, "comments": len(kept), "ballots": len(ballots), "participants": len(people),
               "skipped": skipped, "comment_turns": {str(c.id): turn_of[c.id] for c in kept},
               "polis_summary": conv.summary}
    run = {"id": run_id, "question": conv.question, "options": None, "spec": json.dumps(spec, ensure_ascii=False),
           "status": "completed", "provenance": "imported-real", "source": source, "license": license,
           "external_id": external_id, "started_at": now, "finished_at": now,
           "summary": json.dumps(summary, ensure_ascii=False)}
    return run_id, {"runs": [run], "participants": participants, "participant_attributes": attributes,
                     "turns": turns, "ballots": ballots}


def import_polis(
    store: Store,
    folder: str | Path,
    *,
    source: str = SOURCE,
    license: str = LICENSE,
    external_id: str | None = None,
    question: str | None = None,
    include_rejected: bool = False,
    on_duplicate: str = "skip",
) -> str | None:
    """Import one Polis export folder as one run; return its run id (None when skipped as already imported).

    The external id defaults to `polis/<folder name>`; a conversation already in the store under the same
    (source, external id) is skipped (`on_duplicate="skip"`) or refused (`"error"`)."""
    if on_duplicate not in ("skip", "error"):
        raise StoreError("on_duplicate must be 'skip' or 'error'")
    conv = read_conversation(folder, question=question)  # everything validated before anything is written
    external_id = external_id or f"polis/{conv.name}"
    if external_id in existing_external_ids(store, source):
        if on_duplicate == "error":
            raise StoreError(f"{folder}: conversation {external_id!r} from {source!r} is already in the store")
        return None
    run_id, rows = conversation_rows(conv, source=source, license=license, external_id=external_id,
                                     include_rejected=include_rejected)
    write_tables(store, rows)
    return run_id


def import_polis_many(store: Store, folders: Sequence[str | Path], **options: Any) -> list[str]:
    """Import several folders, each in its own transaction; returns the new run ids."""
    ids = []
    for folder in folders:
        run_id = import_polis(store, folder, **options)
        if run_id is not None:
            ids.append(run_id)
    return ids
