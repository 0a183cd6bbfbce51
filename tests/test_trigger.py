"""The retrain trigger: the pure policy, the request id, and the path through the warehouse."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from kernel.tasks import parse_task
from schemas.events import validate
from schemas.timefmt import ch_time
from streams.drift.config import stage_config
from streams.drift.stage import DriftStage
from streams.trigger import store as tstore
from streams.trigger.config import TriggerConfig
from streams.trigger.policy import LastRequest, PendingAlert, Reason, build_request, decide, request_id
from tests.helpers.testing import add_examples

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
CFG = TriggerConfig("tx", min_new_examples=200, refresh_every=5000, cooldown_s=3600)
LAST = LastRequest("rr-1", T0, "2026-03-01 11:59:00.000")


def test_alert_on_trigger_metric_needs_min_new_examples():
    alert = [PendingAlert("da-1", "off_schema_rate")]
    later = T0 + timedelta(hours=2)
    assert decide(CFG, later, LAST, 199, alert) is None
    r = decide(CFG, later, LAST, 200, alert)
    assert r.kind == "alert" and r.alert_ids == ("da-1",)
    assert decide(CFG, later, LAST, 1000, [PendingAlert("da-2", "low_conf_rate")]) is None  # not a trigger metric
    assert decide(CFG, later, None, 200, alert).kind == "alert"  # never requested before


def test_refresh_and_cooldown():
    assert decide(CFG, T0 + timedelta(hours=2), LAST, 5000, []).kind == "refresh"
    assert decide(CFG, T0 + timedelta(hours=2), LAST, 4999, []) is None
    alert = [PendingAlert("da-1", "off_schema_rate")]
    assert decide(CFG, T0 + timedelta(minutes=59), LAST, 10_000, alert) is None  # cooldown holds
    assert decide(CFG, T0 + timedelta(minutes=60), LAST, 10_000, alert).kind == "alert"
    assert decide(TriggerConfig("tx", enabled=False), T0 + timedelta(days=1), LAST, 10**6, alert) is None


def test_same_alert_twice_same_request_id():
    twice = [PendingAlert("da-1", "off_schema_rate"), PendingAlert("da-1", "off_schema_rate")]
    r1 = decide(CFG, T0 + timedelta(hours=2), LAST, 300, twice)
    r2 = decide(CFG, T0 + timedelta(hours=2), LAST, 300, twice[:1])
    assert r1.alert_ids == ("da-1",)
    wm = "2026-03-01 13:00:00.000"
    m1 = build_request("tx", r1, wm, 2, T0)
    m2 = build_request("tx", r2, wm, 2, T0 + timedelta(seconds=5))
    assert m1["request_id"] == m2["request_id"]
    validate("retrain.requests.schema.json", m1)
    assert m1["watermark"] == wm and m1["gold_version"] == 2
    assert request_id("tx", r1, "2026-03-01 13:00:00.001") != m1["request_id"]  # new data: new request
    assert request_id("tx", Reason("refresh"), wm) != m1["request_id"]




def add_alert(store, alert_id, at, metric="off_schema_rate"):
    store.insert("drift_alerts", [{"alert_id": alert_id, "task": "tx", "metric": metric, "detector": "adwin",
                                   "detected_at": at, "value": 0.1, "reference": 0.01, "severity": "high",
                                   "evidence": "{}"}])


def test_alert_delivered_twice_makes_one_request_and_cooldown_holds(store):
    task = parse_task({"name": "tx", "labels": ["a", "b"], "trigger": {"min_new_examples": 10, "cooldown": "1h"}})
    stage = DriftStage({"tx": task}, stage_config({"tx": task}), store)
    sent: list[dict] = []

    async def publish(m):
        sent.append(m)

    stage.publish_request = publish
    now = datetime.now(timezone.utc)
    add_examples(store, 50, ch_time(now - timedelta(minutes=5)))

    async def run():
        assert await stage.evaluate_trigger("tx", now) is None  # no alert, 50 < refresh_every
        add_alert(store, "da-1", ch_time(now - timedelta(minutes=1)))
        add_alert(store, "da-1", ch_time(now - timedelta(minutes=1)))  # delivered twice
        first = await stage.evaluate_trigger("tx", now)
        assert first is not None and first["reason"]["alert_ids"] == ["da-1"]
        assert await stage.evaluate_trigger("tx", now) is None  # same request: not made again
        # a new alert and new data inside the cooldown: nothing; after it: a new request
        add_examples(store, 20, ch_time(now + timedelta(minutes=1)), start=1000)
        add_alert(store, "da-2", ch_time(now + timedelta(minutes=2)))
        assert await stage.evaluate_trigger("tx", now + timedelta(minutes=30)) is None
        second = await stage.evaluate_trigger("tx", now + timedelta(minutes=61))
        return first, second

    first, second = asyncio.run(run())
    assert [m["request_id"] for m in sent] == [first["request_id"], second["request_id"]]
    assert second["reason"]["alert_ids"] == ["da-2"] and second["watermark"] > first["watermark"]
    rows = store.rows("SELECT request_id, watermark FROM retrain_requests FINAL ORDER BY requested_at")
    assert [r["request_id"] for r in rows] == [first["request_id"], second["request_id"]]
    newest = store.scalar("SELECT toString(max(curated_at)) FROM examples WHERE task = 'tx'")
    assert second["watermark"] == newest


def test_manual_request_is_idempotent_and_needs_data(store):
    now = datetime.now(timezone.utc)
    with pytest.raises(tstore.NoExamples):
        tstore.plan_request(store, None, "tx", now, manual="by hand")
    add_examples(store, 5, ch_time(now))
    m1 = tstore.plan_request(store, None, "tx", now, manual="by hand")
    m2 = tstore.plan_request(store, None, "tx", now + timedelta(seconds=3), manual="again")
    assert m1["request_id"] == m2["request_id"] and m1["reason"]["kind"] == "manual"
    published: list[dict] = []

    async def publish(m):
        published.append(m)

    async def call(fn, *args):
        return fn(store, *args)

    assert asyncio.run(tstore.issue_request(call, publish, m1)) is True
    assert asyncio.run(tstore.issue_request(call, publish, m2)) is False  # same id: one request
    assert len(published) == 1
    assert store.scalar("SELECT count() FROM retrain_requests") == 1
