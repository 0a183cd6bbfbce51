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
    assert all("Code: 41" in reason and "DateTime" in reason for _, reason in refused)  # CANNOT_PARSE_DATETIME
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


def test_the_pipeline_dead_letters_a_refused_row_and_writes_the_rest(store):
    import asyncio
    import base64

    import orjson

    from kernel.settings import load_settings
    from kernel.stage import WorkerContext
    from kernel.tasks import parse_task
    from schemas.events import teacher_log_message
    from streams.curate.pipeline import CuratePipeline
    from streams.curate.policy import Curator, Message
    from tests.helpers.kafka import SentValues

    task = parse_task({"name": "tx", "labels": ["food"], "min_confidence": 0.5})

    class RefusedByTheStore(Curator):
        """A row ClickHouse cannot store (an unparsable time), as a bug or a new edge case would make."""

        def curate(self, messages):
            out = super().curate(messages)
            for d in out:
                if d.log is not None and d.log.id == "bad":
                    d.log.ts = "not a time at all"
            return out

    out = SentValues()
    ctx = WorkerContext(load_settings({}), {"tx": task}, store, app=out)
    pipeline = CuratePipeline(ctx, RefusedByTheStore({"tx": task}), out, out)
    values = [teacher_log_message(id=i, task="tx", input=["tesco metro", "uber trip home", "pret lunch"][n], output="food", confidence=0.9,
                                  teacher="t", ts="2026-11-21T10:00:00Z") for n, i in enumerate(["a", "bad", "c"])]
    asyncio.run(pipeline.process([Message(v, 0, n) for n, v in enumerate(values)]))
    sent = [orjson.loads(v) for v in out.sent]
    rows = store.rows("SELECT id, outcome FROM curation_events FINAL ORDER BY source_offset")
    assert [r["outcome"] for r in rows] == ["kept", "invalid", "kept"]
    assert [r["id"] for r in store.rows("SELECT id FROM examples FINAL ORDER BY id")] == ["a", "c"]
    assert len(sent) == 1 and "the store refused its row" in sent[0]["reason"]
    assert base64.b64decode(sent[0]["original_b64"]) == values[1]


def test_an_unreachable_store_stalls_the_batch_until_it_heals_and_is_counted(store):
    import asyncio

    from kernel.settings import load_settings
    from kernel.stage import WorkerContext
    from kernel.tasks import parse_task
    from kernel.warehouse.remote import OwnerUnreachable
    from schemas.events import teacher_log_message
    from streams.curate import observe
    from streams.curate.pipeline import CuratePipeline
    from streams.curate.policy import Curator, Message

    class Flaky:
        """The real store behind an owner that is down for the first three inserts."""

        def __init__(self, inner):
            self.inner, self.failures = inner, 3

        def insert(self, *a, **kw):
            if self.failures:
                self.failures -= 1
                raise OwnerUnreachable("the process that owns the store did not answer: connection refused")
            return self.inner.insert(*a, **kw)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    task = parse_task({"name": "tx", "labels": ["food"], "min_confidence": 0.5})
    ctx = WorkerContext(load_settings({}), {"tx": task}, Flaky(store), app=None)
    pipeline = CuratePipeline(ctx, Curator({"tx": task}), None, None)
    import streams.curate.pipeline as pl

    real_retry = pl.retry_forever
    pl.retry_forever = lambda *a, **kw: real_retry(*a, **{**kw, "first_delay": 0.05})
    before = metrics.RETRIES.labels("write the batch to ClickHouse", "store")._value.get()
    acked = []
    try:
        async def run():
            task_ = asyncio.ensure_future(pipeline.process([Message(teacher_log_message(
                id="a", task="tx", input="tesco", output="food", confidence=0.9, teacher="t"), 0, 0)]))
            await asyncio.sleep(0.1)
            acked.append(task_.done())              # still stalled: nothing acknowledged early
            healthy_while_failing = observe.PROGRESS()
            await task_
            return healthy_while_failing

        ok_while_failing, detail = asyncio.run(run())
    finally:
        pl.retry_forever = real_retry
    assert acked == [False] and "did not answer" in detail
    assert metrics.RETRIES.labels("write the batch to ClickHouse", "store")._value.get() - before == 3
    assert store.scalar("SELECT count() FROM examples FINAL") == 1   # healed by itself, nothing lost
    assert observe.PROGRESS()[0]
