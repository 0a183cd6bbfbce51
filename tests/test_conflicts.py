"""A re-sent id: the same content is a replay, other content is a `conflict` (first content
wins, both versions kept); and `examples` is derived from `curation_events` in one insert."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from kernel.settings import load_settings
from kernel.stage import WorkerContext
from kernel.tasks import parse_task
from schemas.events import teacher_log_message
from streams.curate.pipeline import CuratePipeline
from streams.curate.policy import Curator, Message
from streams.curate.rows import batch_token, curation_event_row
from streams.curate.seen import SeenIds

TASK = parse_task({"name": "tx", "labels": ["food", "rent"], "min_confidence": 0.5})


def tl(id, input="corner shop groceries", output="food", confidence=0.9, ts="2026-11-21T10:00:00Z", **kw):
    return teacher_log_message(id=id, task="tx", input=input, output=output, confidence=confidence,
                               teacher="t", ts=ts, **kw)


def test_same_content_is_a_replay_other_content_a_conflict():
    c = Curator({"tx": TASK})
    first = c.curate([Message(tl("a")), Message(tl("b", "rent for flat 2", "rent", 0.2))])
    assert [d.outcome for d in first] == ["kept", "low_conf"]
    again = c.curate([
        Message(tl("a", ts="2026-11-22T00:00:00Z")),             # same call, later stamp: a replay
        Message(tl("a", input="something else entirely")),        # other content: conflict
        Message(tl("b", "rent for flat 2", "rent", 0.95)),        # was low_conf, now confident: conflict
        Message(tl("b", "rent for flat 2", "rent", 0.2)),         # the first content again: as before
    ])
    assert [(d.outcome, d.replay) for d in again] == [("kept", True), ("conflict", False), ("conflict", False),
                                                     ("low_conf", False)]
    assert again[1].matched_id == "a" and "the first content stands" in again[1].reason
    # within one batch too, and a third version is its own conflict
    c2 = Curator({"tx": TASK})
    got = c2.curate([Message(tl("x", "v1 text here")), Message(tl("x", "v2 text here")),
                     Message(tl("x", "v3 text here")), Message(tl("x", "v1 text here"))])
    assert [d.outcome for d in got] == ["kept", "conflict", "conflict", "kept"]
    rows = [curation_event_row(d, datetime.now(timezone.utc)) for d in got]
    assert len({r["id"] for r in rows[:3]}) == 3 and rows[0]["id"] == "x"


def test_state_reload_remembers_contents():
    c = Curator({"tx": TASK})
    d = c.curate([Message(tl("a"))])[0]
    restarted = Curator({"tx": TASK})
    restarted.load_seen("tx", ["a"], [d.content_hash])
    assert restarted.curate([Message(tl("a", input="changed"))])[0].outcome == "conflict"
    unknown = Curator({"tx": TASK})
    unknown.load_seen("tx", ["a"], [0])   # rows written before content hashes existed: no conflict
    assert unknown.curate([Message(tl("a", input="changed"))])[0].outcome != "conflict"


def test_seen_ids_bounded_first_content_kept():
    s = SeenIds(capacity=1)  # raised to the minimum of 2 * 65536
    s.add_many(list(range(1, 1001)), [7] * 1000)
    s.add_many([5], [8])
    assert s.get_many([5, 1000, 5000]) == [7, 7, None]
    n = s.capacity + 10
    s.add_many(list(range(10_000, 10_000 + n)), [1] * n)
    assert len(s) <= s.capacity and s.get_many([10_000 + n - 1]) == [1]


def test_conflicts_in_the_store_first_content_wins(store):
    ctx = WorkerContext(load_settings({}), {"tx": TASK}, store, app=None)
    pipeline = CuratePipeline(ctx, Curator({"tx": TASK}), None, None)
    asyncio.run(pipeline.process([Message(tl("a", "tesco metro 12"), 0, 0)]))
    asyncio.run(pipeline.process([Message(tl("a", "sainsburys local 9"), 0, 1)]))
    assert store.rows("SELECT id, input FROM examples FINAL") == [{"id": "a", "input": "tesco metro 12"}]
    rows = store.rows("SELECT id, outcome, input, matched_id FROM curation_events FINAL ORDER BY id")
    assert [(r["outcome"], r["input"], r["matched_id"]) for r in rows] == [
        ("kept", "tesco metro 12", ""), ("conflict", "sainsburys local 9", "a")]
    assert rows[1]["id"].startswith("a#conflict-")


def test_examples_are_derived_from_kept_outcomes_in_one_insert(store):
    c = Curator({"tx": TASK})
    ds = c.curate([Message(tl("k1", "bakery 1"), 0, 0), Message(tl("l1", "bakery 2", confidence=0.1), 0, 1),
                   Message(tl("k2", "rent for flat 9", "rent", meta={"country": "GB"}), 0, 2)])
    now = datetime.now(timezone.utc)
    rows = [curation_event_row(d, now) for d in ds]
    token = batch_token([r["id"] for r in rows], "curation_events")
    store.insert("curation_events", rows, token)
    ex = store.rows("SELECT id, input, output, meta FROM examples ORDER BY id")
    assert ex == [{"id": "k1", "input": "bakery 1", "output": "food", "meta": "{}"},
                  {"id": "k2", "input": "rent for flat 9", "output": "rent", "meta": '{"country":"GB"}'}]
    # a crash between the two parts of the INSERT (source written, view not): the replayed
    # block is dropped by curation_events but still reaches the view
    store.command("TRUNCATE TABLE examples")
    store.insert("curation_events", rows, token)
    assert store.scalar("SELECT count() FROM curation_events") == 3  # deduplicated: not written again
    assert [r["id"] for r in store.rows("SELECT id FROM examples ORDER BY id")] == ["k1", "k2"]
