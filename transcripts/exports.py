"""Exporting runs: FORMAT 2 JSONL, a folder of parquet files (one per table), or a markdown transcript.

Exports only read the store. Each file is written beside its destination and renamed into place, so a failed
export leaves no half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from transcripts.errors import StoreError
from transcripts.interchange import run_record, run_records
from transcripts.markdown import render_show
from transcripts.store import Store
from transcripts.transfer import run_tables

FORMATS = ("jsonl", "parquet", "markdown")
_ALIASES = {"md": "markdown", "json": "jsonl", "format2": "jsonl"}
_SUFFIX = {"jsonl": ".jsonl", "markdown": ".md"}


def export_run(store: Store, run_id: str, format: str, path: str | os.PathLike[str]) -> Path:
    """Write one run to `path` (a file for jsonl/markdown, a folder for parquet; an existing folder gets
    `<run id>.<ext>` inside). Returns what was written."""
    fmt = _ALIASES.get(format, format)
    if fmt not in FORMATS:
        raise StoreError(f"unknown export format {format!r}; one of {', '.join(FORMATS)}")
    store.run(run_id)  # unknown id -> StoreError before anything is created
    path = Path(path).expanduser()
    if fmt == "parquet":
        return _export_parquet(store, run_id, path)
    if path.is_dir():
        path = path / f"{run_id}{_SUFFIX[fmt]}"
    text = json.dumps(run_record(store, run_id), ensure_ascii=False) + "\n" if fmt == "jsonl" else render_show(store, run_id)
    _write_text(path, text)
    return path


def export_jsonl(store: Store, path: str | os.PathLike[str], run_ids: Iterable[str] | None = None) -> Path:
    """Many runs (default: all, oldest first) as one FORMAT 2 file."""
    ids = list(run_ids) if run_ids is not None else store.sql("SELECT id FROM runs ORDER BY started_at, id")["id"].to_list()
    lines = [json.dumps(record, ensure_ascii=False) for record in run_records(store, ids)]
    path = Path(path).expanduser()
    _write_text(path, "".join(line + "\n" for line in lines))
    return path


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file whole or not at all (a temporary file beside it, then a rename); StoreError on failure."""
    _write_text(Path(path), text)


def _write_text(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _export_parquet(store: Store, run_id: str, folder: Path) -> Path:
    frames = {table: pl.from_arrow(rows) for table, rows in run_tables(store, run_id).items()}
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {folder}: {exc.strerror or exc}") from exc
    written = []
    try:
        for table, frame in frames.items():
            tmp = folder / f".{table}.parquet.tmp"
            written.append((tmp, folder / f"{table}.parquet"))
            frame.write_parquet(tmp)
        for tmp, final in written:
            os.replace(tmp, final)
    except (OSError, pl.exceptions.PolarsError) as exc:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write parquet files to {folder}: {exc.strerror or exc}") from exc
    return folder
