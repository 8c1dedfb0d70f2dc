"""transcripts: a DuckDB store of simulated and real deliberations, with SQL views, polars frames, exports and reports.

A plain library: it imports nothing from `assembly`, `juries` or `finetune`.

    from transcripts import Store
    store = Store()                        # default_store_path(): $ASSEMBLY_STORE or ~/.local/share/assembly/
    store.sql("select * from opinion_shift")
    frames.turns(store, run_id)            # polars
    export_run(store, run_id, "jsonl", "run.jsonl");  import_jsonl(store, "real.jsonl")
    write_report(store, run_id, "report.html")  # one self-contained page
"""

from transcripts import frames
from transcripts.errors import StoreError
from transcripts.exports import export_jsonl, export_run
from transcripts.interchange import import_jsonl, run_record, validate_record
from transcripts.markdown import render_show
from transcripts.paths import default_store_path
from transcripts.report import render_report, write_report
from transcripts.store import Store

__all__ = [
    "Store",
    "StoreError",
    "default_store_path",
    "export_jsonl",
    "export_run",
    "frames",
    "import_jsonl",
    "render_report",
    "render_show",
    "run_record",
    "validate_record",
    "write_report",
]
