"""Curation end to end on the real embedded broker (Tansu) and the real embedded ClickHouse."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading

import orjson
import pytest

from kernel.gold import import_gold
from kernel.tasks import load_tasks
from kernel.warehouse import open_warehouse
from kernel.warehouse.migrate import apply_ddl
from streams.curate.policy import Curator, Message
from tests.helpers.kafka import publish, read_topic, tl
from tests.worker import WorkerProcess, wait_for

pytestmark = pytest.mark.integration

TASK = "transactions"








def seed_gold(settings, rows):
    path = settings.data_dir.parent / "gold.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    tasks = load_tasks(settings.tasks_dir)
    with open_warehouse(settings) as store:
        apply_ddl(store, window_seconds=settings.window_seconds)
        import_gold(store, tasks[TASK], path)


def outcome_counts(store):
    return {r["outcome"]: r["n"] for r in
            store.rows("SELECT outcome, count() AS n FROM curation_events FINAL GROUP BY outcome")}


def test_known_mix_lands_with_exact_counts(settings, tmp_path):
    seed_gold(settings, [{"id": "g1", "input": "NETFLIX.COM subscription monthly", "output": "utilities",
                          "slice": "GB"}])
    mix = [
        b"\x00\xff not even text",                                                  # invalid: bytes
        b'{"id": "broken", "task": ',                                                # invalid: not JSON
        orjson.dumps({"id": "noschema", "task": TASK}),                              # invalid: schema
        tl("wrongtask", "anything at all", task="no-such-task"),                     # invalid: task
        tl("off1", "PAYPAL *EBAY purchase", output="crypto"),                        # off_schema
        tl("off2", "UNKNOWN MERCHANT 991", output="misc"),                           # off_schema
        tl("low1", "CORNER SHOP 12 HIGH ST", confidence=0.2),                        # low_conf
        tl("gold1", "netflix.com   Subscription MONTHLY", output="utilities"),       # gold_overlap exact
        tl("gold2", "NETFLIX.COM subscription monthly.", output="utilities"),        # gold_overlap near
        tl("k1", "TESCO STORES 3341 LONDON"),                                        # kept
        tl("k2", "UBER *TRIP HELP.UBER.COM", output="transport"),                    # kept
        tl("k3", "PRET A MANGER 0456 KINGS CROSS", output="dining", country="FR"),   # kept
        tl("dup1", "tesco stores 3341   london"),                                    # exact_dupe of k1
        tl("dup2", "Uber *trip help.uber.com", output="transport"),                  # exact_dupe of k2
        tl("near1", "TESCO STORES 3341 LONDON GB"),                                  # near_dupe of k1
        tl("near2", "PRET A MANGER 0456 KINGS CROSS."),                              # near_dupe of k3
    ]
    expected = {"invalid": 4, "off_schema": 2, "low_conf": 1, "gold_overlap": 2, "kept": 3,
                "exact_dupe": 2, "near_dupe": 2}
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        asyncio.run(publish(settings.kafka.servers, mix))
        store = worker.store()
        wait_for(lambda: store.scalar("SELECT count() FROM curation_events FINAL") == len(mix),
                 what="all events curated")
        assert outcome_counts(store) == expected
        kept = store.rows("SELECT id, slice, output FROM examples FINAL ORDER BY id")
        assert kept == [{"id": "k1", "slice": "GB", "output": "groceries"},
                        {"id": "k2", "slice": "GB", "output": "transport"},
                        {"id": "k3", "slice": "FR", "output": "dining"}]
        matched = dict((r["id"], r["matched_id"]) for r in store.rows(
            "SELECT id, matched_id FROM curation_events FINAL WHERE matched_id != ''"))
        assert matched == {"gold1": "g1", "gold2": "g1", "dup1": "k1", "dup2": "k2", "near1": "k1", "near2": "k3"}
        windows = {r["outcome"]: r["n"] for r in store.rows(
            f"SELECT outcome, sum(n) AS n FROM curation_windows WHERE task = '{TASK}' GROUP BY outcome")}
        # an invalid message counts in its task's windows when its bytes name the task (the
        # schema failure does; the cut-off line, the raw bytes and the unknown task do not)
        assert windows == {**expected, "invalid": 1}

        dead = asyncio.run(read_topic(settings.kafka.servers, "dead.letters", 4))
        assert len(dead) == 4
        import base64
        originals = {base64.b64decode(d["original_b64"]) for d in dead}
        assert originals == set(mix[:4])
        assert all(d["reason"] for d in dead)
        assert any("unknown task 'no-such-task'" in d["reason"] for d in dead)
        review = asyncio.run(read_topic(settings.kafka.servers, "review.queue", 1))
        assert [(r["id"], r["kind"]) for r in review] == [("low1", "low_conf")]
    assert worker.proc.returncode == 0  # Ctrl-C (SIGINT) stops cleanly


def _stream(n):
    """A deterministic stream with exact and near duplicates sprinkled in."""
    out = []
    for i in range(n):
        base = i % (n // 3)
        if i % 10 == 3:
            text = f"MERCHANT {base:05d} CARD PAYMENT LONDON"          # exact dupe candidates
        elif i % 10 == 7:
            text = f"merchant {base:05d} card payment london gb"      # near dupe candidates
        else:
            text = f"MERCHANT {i:05d} CARD PAYMENT LONDON"
        out.append(tl(f"s{i}", text))
    return out


def test_sigkill_mid_stream_loses_and_duplicates_nothing(settings, tmp_path):
    stream = _stream(12000)
    expected = Curator(load_tasks(settings.tasks_dir)).curate([Message(v) for v in stream])
    expected_kept = {d.log.id for d in expected if d.outcome == "kept"}

    worker = WorkerProcess(settings, tmp_path / "worker.log",
                           extra_env={"FLYWHEEL_SINK_BATCH_ROWS": "500"}).start()
    publisher = threading.Thread(target=lambda: asyncio.run(publish(settings.kafka.servers, stream)))
    publisher.start()
    store = worker.store()
    wait_for(lambda: store.scalar("SELECT count() FROM curation_events") >= 2000, what="a part of the stream")
    worker.kill()  # SIGKILL while the stream flows
    publisher.join()

    worker = WorkerProcess(settings, tmp_path / "worker2.log").start()
    try:
        store = worker.store()
        wait_for(lambda: store.scalar("SELECT count(DISTINCT id) FROM curation_events") == len(stream),
                 timeout=120, what="the whole stream curated after the restart")
        kept_ids = {r["id"] for r in store.rows("SELECT DISTINCT id FROM examples")}
        assert kept_ids == expected_kept
        assert store.scalar("SELECT count() FROM examples FINAL") == len(expected_kept)
        assert store.scalar("SELECT count() FROM curation_events FINAL") == len(stream)
        got = {r["id"]: r["outcome"] for r in store.rows("SELECT id, outcome FROM curation_events FINAL")}
        assert got == {d.log.id: d.outcome for d in expected}

        # an exact duplicate published after the restart is still caught
        asyncio.run(publish(settings.kafka.servers, [tl("after", "MERCHANT 00001 CARD PAYMENT LONDON")]))
        wait_for(lambda: store.rows("SELECT outcome FROM curation_events FINAL WHERE id = 'after'"),
                 what="the late duplicate")
        assert store.rows("SELECT outcome, matched_id FROM curation_events FINAL WHERE id = 'after'") == [
            {"outcome": "exact_dupe", "matched_id": "s1"}]
    finally:
        worker.stop()


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed (.ci/run installs it from Debian)")
def test_a_message_from_kcat_is_curated(settings, tmp_path):
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        line = tl("from-kcat", "SAINSBURYS 0012 CAMDEN")
        subprocess.run(["kcat", "-P", "-b", settings.kafka.servers, "-t", "teacher.logs", "-k", TASK],
                       input=line + b"\n", check=True, timeout=30)
        store = worker.store()
        rows = wait_for(lambda: store.rows("SELECT outcome, slice FROM curation_events FINAL "
                                           "WHERE id = 'from-kcat'"), what="the kcat message")
        assert rows == [{"outcome": "kept", "slice": "GB"}]
