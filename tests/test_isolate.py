"""A batch the store refuses for a data reason is split until the bad rows stand alone (real chdb)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from kernel import metrics
from kernel.warehouse.isolate import insert_isolating


def test_bad_rows_are_isolated_and_the_rest_written(store):
    rows = [{"id": f"e{i:04d}", "ts": "2026-11-21T10:00:00Z", "task": "t", "outcome": "kept", "reason": "",
             "slice": "", "label": "", "confidence": 0.9, "teacher": "", "input_hash": i, "matched_id": "",
             "source_partition": 0, "source_offset": i, "curated_at": datetime.now(timezone.utc)}
            for i in range(1000)]
    for bad in (3, 500, 999):
        rows[bad] = {**rows[bad], "ts": "not a time at all"}   # ClickHouse cannot parse it: a data fault
    before = metrics.ROWS_ISOLATED.labels("curation_events")._value.get()
    refused = insert_isolating(store, "curation_events", rows)
    assert [i for i, _ in refused] == [3, 500, 999]
    assert all("Cannot parse" in reason or "CANNOT_PARSE" in reason for _, reason in refused)
    assert store.scalar("SELECT count() FROM curation_events") == 997
    assert metrics.ROWS_ISOLATED.labels("curation_events")._value.get() - before == 3


def test_a_fault_that_can_heal_is_raised_not_split(store):
    class Down:
        calls = 0

        def insert(self, *a):
            Down.calls += 1
            raise ConnectionRefusedError("store down")

    with pytest.raises(ConnectionRefusedError):
        insert_isolating(Down(), "curation_events", [{"id": str(i)} for i in range(100)])
    assert Down.calls == 1
