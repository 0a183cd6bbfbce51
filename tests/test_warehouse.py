import pytest

from kernel.settings import load_settings
from kernel.warehouse import WarehouseError, open_warehouse
from kernel.warehouse.embedded import EmbeddedWarehouse, StoreBusy
from kernel.warehouse.migrate import apply_ddl, statements
from kernel.warehouse.owner import OwnerServer
from kernel.warehouse.remote import OwnerUnreachable, RemoteWarehouse


def row(id, outcome="kept", at="2026-01-01 00:00:02.000", ts="2026-01-01 00:00:01.000"):
    return {"id": id, "ts": ts, "task": "t", "outcome": outcome, "reason": "", "slice": "s", "label": "x",
            "confidence": 0.9, "teacher": "g", "input_hash": 1, "matched_id": "", "source_partition": 0,
            "source_offset": 1, "curated_at": at}


def test_ddl_is_idempotent_and_templated(store):
    tables = {r["name"] for r in store.rows("SELECT name FROM system.tables WHERE database = currentDatabase()")}
    assert {"curation_events", "examples", "gold_examples", "drift_windows"} <= tables
    store.insert("curation_events", [row("kept-across-ddl")])
    apply_ddl(store)  # applied again: nothing dropped, nothing lost
    again = {r["name"] for r in store.rows("SELECT name FROM system.tables WHERE database = currentDatabase()")}
    assert again == tables
    assert store.scalar("SELECT count() FROM curation_events WHERE id = 'kept-across-ddl'") == 1
    stmts = statements("-- c\nSELECT ${window_seconds};\n\nSELECT 2;", {"window_seconds": 30})
    assert stmts == ["SELECT 30", "SELECT 2"]


def test_replayed_rows_collapse_and_windows_count_distinct_ids(store):
    store.insert("curation_events", [row("a"), row("b", "low_conf")])
    store.insert("curation_events", [row("a", at="2026-01-01 00:00:05.000")])  # a replay
    assert store.scalar("SELECT count() FROM curation_events FINAL") == 2
    windows = {r["outcome"]: r["n"] for r in store.rows("SELECT outcome, n FROM curation_windows")}
    assert windows == {"kept": 1, "low_conf": 1}
    rates = store.rows("SELECT total, low_conf_rate FROM curation_window_rates")
    assert rates == [{"total": 2, "low_conf_rate": 0.5}]


def test_insert_dedup_token_drops_a_retried_block(store):
    store.insert("examples", [{"id": "e1", "ts": "2026-01-01 00:00:00", "task": "t", "input": "i", "output": "o",
                               "slice": "", "confidence": 1, "teacher": "g", "meta": "{}", "input_hash": 1,
                               "source_partition": 0, "source_offset": 0, "curated_at": "2026-01-01 00:00:00"}],
                 dedup_token="tok-1")
    store.insert("examples", [{"id": "e1", "ts": "2026-01-01 00:00:00", "task": "t", "input": "i", "output": "o",
                               "slice": "", "confidence": 1, "teacher": "g", "meta": "{}", "input_hash": 1,
                               "source_partition": 0, "source_offset": 0, "curated_at": "2026-01-01 00:00:00"}],
                 dedup_token="tok-1")
    assert store.scalar("SELECT count() FROM examples") == 1


def test_errors_are_clickhouse_messages(store):
    with pytest.raises(WarehouseError, match="UNKNOWN_TABLE|Unknown table"):
        store.query("SELECT * FROM no_such_table")


def test_one_owner_others_go_through_its_endpoint(tmp_path):
    s = load_settings({}, data_dir=tmp_path)
    owner_store = open_warehouse(s, own=True)
    assert isinstance(owner_store, EmbeddedWarehouse)
    apply_ddl(owner_store)
    with pytest.raises(StoreBusy):
        open_warehouse(s, own=True)
    with pytest.raises(OwnerUnreachable, match="retry"):
        open_warehouse(s)  # locked but not serving yet
    server = OwnerServer(owner_store, tmp_path).start()
    try:
        remote = open_warehouse(s)
        assert isinstance(remote, RemoteWarehouse)
        remote.insert("curation_events", [row("r1")])
        assert owner_store.scalar("SELECT count() FROM curation_events") == 1
        assert remote.query("SELECT 1 AS x", "TSV") == b"1\n"
        with pytest.raises(WarehouseError, match="Unknown"):
            remote.query("SELECT nope")
        bad = RemoteWarehouse({"url": server.url, "token": "wrong"})
        with pytest.raises(WarehouseError, match="X-Flywheel-Token"):
            bad.query("SELECT 1")
    finally:
        server.stop()
        owner_store.close()
    # after the owner closes, the next process owns the store and sees the data
    again = open_warehouse(s)
    assert isinstance(again, EmbeddedWarehouse)
    assert again.scalar("SELECT count() FROM curation_events") == 1
    again.close()
