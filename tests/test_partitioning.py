"""No event time can break an insert: the partitioning migration on real chdb."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from kernel.settings import load_settings
from kernel.warehouse import open_warehouse
from kernel.warehouse.migrate import apply_ddl, blocks, ddl_files, statements


def event(i: int, ts: datetime, at: str = "2026-11-21 10:00:00.000") -> dict:
    return {"id": f"e{i}", "ts": ts.isoformat(), "task": "t", "outcome": "kept", "reason": "", "slice": "s",
            "label": "x", "confidence": 0.9, "teacher": "g", "input_hash": i, "matched_id": "",
            "source_partition": 0, "source_offset": i, "curated_at": at}


def spread(n_months: int) -> list[dict]:
    start = datetime(1990, 1, 15, tzinfo=timezone.utc)
    return [event(i, start + timedelta(days=31 * i)) for i in range(n_months)]


def partition_key(store, table):
    return store.scalar(f"SELECT partition_key FROM system.tables WHERE database = currentDatabase() AND name = '{table}'")


def test_a_batch_over_150_months_inserts(store):
    rows = spread(160)
    assert len({r["ts"][:7] for r in rows}) >= 150
    store.insert("curation_events", rows)
    assert store.scalar("SELECT count() FROM curation_events FINAL") == 160
    assert store.scalar("SELECT count() FROM curation_windows_state") > 0   # the view still fires
    drift = [{"task": "t", "metric": "m", "detector": "d", "window_start": r["ts"][:19].replace("T", " "),
              "window_seconds": 60, "n": 1, "value": 0.0, "reference": None, "statistic": None,
              "verdict": "ok", "alerts": 0, "detail": "", "updated_at": "2026-11-21 10:00:00"} for r in rows]
    store.insert("drift_windows", drift)
    assert store.scalar("SELECT count() FROM drift_windows FINAL") == 160


def test_an_existing_store_is_migrated_once_and_keeps_its_rows(tmp_path):
    s = load_settings({}, data_dir=tmp_path / "old")
    store = open_warehouse(s)
    try:
        for name, text in ddl_files():          # the store as it was before 0006
            if name < "0006":
                for guard, block in blocks(text):
                    for stmt in statements(block, {"window_seconds": 60}):
                        store.command(stmt)
        assert partition_key(store, "curation_events") == "toYYYYMM(ts)"
        old = spread(60)
        store.insert("curation_events", old)
        apply_ddl(store)
        assert partition_key(store, "curation_events") == "toYYYYMM(curated_at)"
        assert partition_key(store, "drift_windows") in ("", "tuple()")
        assert store.scalar("SELECT count() FROM curation_events") == 60
        windows_before = store.scalar("SELECT sum(n) FROM curation_windows")
        apply_ddl(store)                         # re-applied: no second copy, nothing lost
        assert store.scalar("SELECT count() FROM curation_events") == 60
        tables = {r["name"] for r in store.rows("SELECT name FROM system.tables WHERE database = currentDatabase()")}
        assert not any(t.endswith("__repartition") for t in tables)
        store.insert("curation_events", [event(1000 + i, datetime(2000 + i % 120, 1, 1, tzinfo=timezone.utc))
                                         for i in range(200)])
        assert store.scalar("SELECT count() FROM curation_events FINAL") == 260
        assert store.scalar("SELECT sum(n) FROM curation_windows") == windows_before + 200   # view re-attached
        store.insert("curation_events", [event(0, datetime(1990, 1, 15, tzinfo=timezone.utc), "2026-12-02 00:00:00")])
        assert store.scalar("SELECT count() FROM curation_events FINAL") == 260   # a replay in a later month
    finally:
        store.close()
