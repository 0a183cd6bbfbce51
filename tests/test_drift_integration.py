"""Drift end to end: `flywheel up` on the real embedded broker and ClickHouse. A curation stream
whose off_schema share jumps produces an alert row and a retrain request row; live.requests
feed their own metrics and bad ones become dead letters; a restart restores detector state."""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest

from schemas.events import teacher_log_message, validate
from tests.helpers.kafka import publish, read_topic
from tests.worker import WorkerProcess, wait_for

pytestmark = pytest.mark.integration

TASK_TOML = """
name = "transactions"
labels = ["groceries", "transport", "dining", "rent", "utilities"]
min_confidence = 0.6
slice = "meta.country"

[trigger]
min_new_examples = 50
refresh_every = 100000
cooldown = "1h"
"""
WORDS = ["tesco", "uber", "rent", "pizza", "power", "train", "cafe", "market", "bus", "water"]


def logs(rng, start, n, off_share):
    out = []
    for i in range(start, start + n):
        label = "not-a-label" if rng.random() < off_share else rng.choice(["groceries", "transport", "dining"])
        text = f"{rng.getrandbits(48):012x} {rng.choice(WORDS)} {rng.getrandbits(32):08x}"
        out.append(teacher_log_message(id=f"t{i}", task="transactions", input=text, output=label,
                                       confidence=0.95, teacher="teacher-x", meta={"country": "GB"}))
    return out


def live(i, text, output="groceries", teacher=None):
    obj = {"id": f"r{i}", "ts": "2026-11-21T10:00:00Z", "task": "transactions", "input": text, "output": output,
           "model_version": "tx-v1", "latency_ms": 12.5, "schema_version": 1}
    if teacher is not None:
        obj["teacher_output"] = teacher
    validate("live.requests.schema.json", obj)
    return orjson.dumps(obj)


def test_off_schema_jump_alerts_and_requests_a_retrain(settings, tmp_path):
    (settings.tasks_dir / "transactions.toml").write_text(TASK_TOML)
    servers = settings.kafka.servers
    rng = random.Random(42)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    with worker:
        store = worker.store()
        asyncio.run(publish(servers, logs(rng, 0, 3000, 0.01)))
        asyncio.run(publish(servers, [live(i, f"{WORDS[i % 10]} payment {i}", teacher="groceries")
                                      for i in range(300)] + [b"{not json", live(999, "x")[:-2]],
                            topic="live.requests"))
        wait_for(lambda: store.scalar("SELECT count() FROM curation_events FINAL") == 3000, 90, what="3000 curated")
        assert store.scalar("SELECT count() FROM drift_alerts") == 0  # a stationary stream is quiet
        asyncio.run(publish(servers, logs(rng, 3000, 2000, 0.20)))
        alert = wait_for(lambda: store.rows("SELECT * FROM drift_alerts FINAL"), 60, what="a drift alert")
        assert [a["metric"] for a in alert] == ["off_schema_rate"]
        a = alert[0]
        assert a["detector"] == "adwin" and a["reference"] < 0.03 and a["value"] > 0.1
        request = wait_for(lambda: store.rows("SELECT * FROM retrain_requests FINAL"), 30, what="a retrain request")
        assert len(request) == 1 and request[0]["reason_kind"] == "alert" and request[0]["alert_ids"] == [a["alert_id"]]
        wait_for(lambda: store.scalar("SELECT count() FROM curation_events FINAL") == 5000, 60, what="5000 curated")
        wait_for(lambda: store.scalar("SELECT sum(n) FROM drift_windows FINAL WHERE metric = 'off_schema_rate'") == 5000,
                 30, what="off_schema_rate windows to count every event")
        wait_for(lambda: store.scalar("SELECT sum(n) FROM drift_windows FINAL WHERE metric = 'input_length'") == 300,
                 30, what="input_length windows")
        verdicts = {r["verdict"] for r in store.rows(
            "SELECT verdict FROM drift_windows FINAL WHERE metric = 'off_schema_rate'")}
        assert "drift" in verdicts

    on_topic = asyncio.run(read_topic(servers, "retrain.requests", 1, timeout=10))
    assert [m["request_id"] for m in on_topic] == [request[0]["request_id"]]
    assert on_topic[0]["watermark"] == request[0]["watermark"] and on_topic[0]["gold_version"] == 0
    alerts = asyncio.run(read_topic(servers, "drift.alerts", 1, timeout=10))
    assert [m["alert_id"] for m in alerts] == [a["alert_id"]]
    validate("drift.alerts.schema.json", alerts[0])
    dead = asyncio.run(read_topic(servers, "dead.letters", 2, timeout=10))
    live_dead = [d for d in dead if d["source_topic"] == "live.requests"]
    assert len(live_dead) == 2 and any("not JSON" in d["reason"] for d in live_dead)

    # restart: the detector state comes back; the change already alerted is not alerted again
    with WorkerProcess(settings, tmp_path / "worker2.log") as again:
        store = again.store()
        wait_for(lambda: "detector state" in again.log() and "restored" in again.log(), 15, what="state restored")
        asyncio.run(publish(servers, logs(rng, 5000, 1500, 0.20)))
        wait_for(lambda: store.scalar("SELECT count() FROM curation_events FINAL") == 6500, 60, what="6500 curated")
        wait_for(lambda: store.scalar("SELECT sum(n) FROM drift_windows FINAL WHERE metric = 'off_schema_rate'") == 6500,
                 30, what="windows to count 6500 events once each")
        assert store.scalar("SELECT count() FROM drift_alerts FINAL") == 1
        assert store.scalar("SELECT count() FROM retrain_requests FINAL") == 1
