"""Insert a batch so that a row the store refuses stops only itself.

A data fault (kernel.faults: ClickHouse cannot parse or convert a value, a block spans too
many partitions) splits the batch in halves until the refused rows stand alone; they are
returned for the caller to dead-letter, and every other row is written. A fault that can heal
(store unreachable, disk full) is raised as it is, for the caller to retry the whole batch:
sub-batches already written carry their own deduplication tokens, and the tables collapse a
replayed row by its key, so the retry duplicates nothing. One bad row in 5,000 costs about
2 x log2(5000) = 26 inserts.
"""

from __future__ import annotations

from typing import Callable

from kernel import metrics
from kernel.faults import classify
from kernel.warehouse import Warehouse


def insert_isolating(store: Warehouse, table: str, rows: list[dict],
                     token_of: Callable[[list[dict]], str] | None = None) -> list[tuple[int, str]]:
    """Insert ``rows``; returns [(index, the store's reason)] of the rows it refused."""
    refused: list[tuple[int, str]] = []

    def go(lo: int, hi: int) -> None:
        chunk = rows[lo:hi]
        try:
            store.insert(table, chunk, token_of(chunk) if token_of else None)
            return
        except Exception as exc:
            fault = classify(exc)
            metrics.STORE_ERRORS.labels(f"insert {table}", fault.kind).inc()
            if fault.heals:
                raise
            if hi - lo == 1:
                refused.append((lo, str(exc)))
                metrics.ROWS_ISOLATED.labels(table).inc()
                return
        mid = (lo + hi) // 2
        go(lo, mid)
        go(mid, hi)

    if rows:
        go(0, len(rows))
    return refused
