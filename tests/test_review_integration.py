"""The review agent in the real stream worker (`flywheel up` as a child process) on the real
embedded broker and ClickHouse: bad input on review.verdicts, duplicates, unknown items, and a
completed low-confidence item curated into the pool as a human-labelled example."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from schemas.events import teacher_log_message
from tests.helpers.kafka import publish
from tests.helpers.testing import add_sections, read_topic
from tests.worker import WorkerProcess, wait_for

pytestmark = pytest.mark.integration


def verdict(vid, item_id, answer="rent", reviewer="ann", **extra):
    return orjson.dumps({"verdict_id": vid, "item_id": item_id, "task": "transactions", "reviewer": reviewer,
                         "action": "submit", "answer": answer, "decided_at": "2026-11-21T10:05:00Z",
                         "schema_version": 1, **extra})


def test_agent_on_the_real_broker(settings, tasks_dir, tmp_path):
    add_sections(tasks_dir, "[review]\nlow_conf_gold_share = 0.0\n")  # every low_conf item trains
    servers = settings.kafka.servers
    with WorkerProcess(settings, tmp_path / "worker.log") as w:
        logs = [teacher_log_message(id=f"lc-{i}", task="transactions", input=f"MYSTERY SHOP {i} LTD",
                                    output="groceries", confidence=0.3, teacher="t", meta={"country": "GB"},
                                    ts=f"2026-11-21T10:00:0{i}Z") for i in range(3)]
        asyncio.run(publish(servers, logs))
        store = w.store()
        wait_for(lambda: store.scalar("SELECT count() FROM review_items FINAL WHERE status = 'pending'") == 3,
                 60, what="3 pending review items")
        bad = [b"{not json", orjson.dumps({"verdict_id": "v-x", "item_id": "lc-0"}),       # schema
               verdict("v-unknown", "no-such-item"), verdict("v-label", "lc-1", answer="pizza"),
               verdict("v-0", "lc-0"), verdict("v-0", "lc-0"),                             # duplicate
               verdict("v-1", "lc-1", answer="dining")]
        asyncio.run(publish(servers, bad, topic="review.verdicts"))
        wait_for(lambda: store.scalar("SELECT count() FROM review_items FINAL WHERE status = 'submitted'") == 2,
                 30, what="2 completed items")
        asyncio.run(publish(servers, [verdict("v-0", "lc-0")], topic="review.verdicts"))   # redelivered later
        # the completed low_conf items come back through curation as human-labelled examples
        wait_for(lambda: store.scalar("SELECT count() FROM examples FINAL WHERE teacher = 'human'") == 2,
                 30, what="2 human-labelled examples in the pool")
        rows = store.rows("SELECT id, output, slice, meta FROM examples FINAL WHERE teacher = 'human' ORDER BY id")
        assert [(r["id"], r["output"], r["slice"]) for r in rows] == [("human:lc-0", "rent", "GB"),
                                                                      ("human:lc-1", "dining", "GB")]
        assert orjson.loads(rows[0]["meta"])["source"] == "review:low_conf"
        dead = [d for d in read_topic(settings, "dead.letters") if d["source_topic"] == "review.verdicts"]
        reasons = sorted(d["reason"] for d in dead)
        assert len(dead) == 4, reasons
        assert any("not JSON" in r for r in reasons) and any("unknown review item 'no-such-item'" in r for r in reasons)
        assert any("not a label" in r for r in reasons) and any("schema" in r for r in reasons)
        assert store.scalar("SELECT count() FROM review_verdicts FINAL") == 2   # duplicates counted once
        assert store.scalar("SELECT count() FROM review_routing FINAL WHERE outcome = 'published'") == 2
        assert store.scalar("SELECT count() FROM review_items FINAL WHERE status = 'pending'") == 1
