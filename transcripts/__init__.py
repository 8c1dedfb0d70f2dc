"""transcripts: a DuckDB store of simulated and real deliberations, with SQL views, polars frames, exports and reports.

A plain library: it imports nothing from `assembly`, `juries` or `finetune`.
"""

from transcripts.errors import StoreError
from transcripts.paths import default_store_path
from transcripts.store import Store

__all__ = ["Store", "StoreError", "default_store_path"]
