"""The curate pipeline's failure handling, on a real embedded ClickHouse store."""

import asyncio

from kernel.settings import load_settings
from kernel.stage import WorkerContext
from kernel.tasks import parse_task
from schemas.events import teacher_log_message
from streams.curate.pipeline import CuratePipeline
from streams.curate.policy import Curator, Message

TASK = parse_task({"name": "tx", "labels": ["food"], "min_confidence": 0.5})


def msg(i, text):
    return Message(teacher_log_message(id=f"e{i}", task="tx", input=text, output="food", confidence=0.9,
                                       teacher="t"), 0, i)


class BrokenAfterDeciding(Curator):
    """Decides the batch (mutating the dedupe memory), then fails: a bug after the fact."""

    def curate(self, messages):
        decisions = super().curate(messages)
        if len(messages) > 1:
            raise RuntimeError("boom")
        return decisions


def test_a_batch_that_fails_half_way_loses_no_kept_example(store):
    ctx = WorkerContext(load_settings({}), {"tx": TASK}, store, app=None)
    pipeline = CuratePipeline(ctx, BrokenAfterDeciding({"tx": TASK}), None, None)
    seen = []
    ctx.curate_hooks.append(seen.extend)
    asyncio.run(pipeline.process([msg(1, "corner shop groceries"), msg(2, "bakery on main street")]))
    # retried message by message: the memory already holds both ids, so both come back as
    # replays of a kept event, and both must still be written
    assert [(d.outcome, d.replay) for d in seen] == [("kept", True), ("kept", True)]
    assert store.rows("SELECT id FROM examples FINAL ORDER BY id") == [{"id": "e1"}, {"id": "e2"}]
    assert store.scalar("SELECT count() FROM curation_events FINAL") == 2


def test_a_message_the_curator_cannot_handle_becomes_invalid_not_lost(store):
    class Explodes(Curator):
        def curate(self, messages):
            if any(m.offset == 2 for m in messages):
                raise RuntimeError("bug on this one")
            return super().curate(messages)

    sent = []

    class Topic:
        async def send(self, key, value, force):
            sent.append(value)

    class Producer:
        async def flush(self):
            pass

    class App:
        producer = Producer()

    ctx = WorkerContext(load_settings({}), {"tx": TASK}, store, app=App())
    pipeline = CuratePipeline(ctx, Explodes({"tx": TASK}), Topic(), Topic())
    asyncio.run(pipeline.process([msg(1, "corner shop groceries"), msg(2, "bakery on main street")]))
    rows = {r["id"]: r for r in store.rows("SELECT id, outcome, reason FROM curation_events FINAL")}
    assert rows["e1"]["outcome"] == "kept"
    bad = [r for r in rows.values() if r["outcome"] == "invalid"]
    assert len(bad) == 1 and "internal error" in bad[0]["reason"]
    assert len(sent) == 1 and b"bug on this one" in sent[0]  # its original bytes are in dead.letters


def test_status_rate_is_over_the_last_interval_not_since_start_up():
    import time as _time

    ctx = WorkerContext(load_settings({}), {"tx": TASK}, None, app=None)
    p = CuratePipeline(ctx, Curator({"tx": TASK}), None, None)
    p.started = p._mark[0] - 1000.0          # up for 1000 s ...
    p._mark = (_time.monotonic() - 2.0, 0)   # ... and 400 events in the last 2 s
    p.events = 400
    line = p.status_line()
    assert "curated 400 events" in line and ("(200/s lately)" in line or "(199/s lately)" in line), line
    p._mark = (_time.monotonic() - 10.0, 400)  # idle for 10 s: the rate says so
    assert "(0/s lately)" in p.status_line()
