"""Delivery through rebalances, on the real embedded broker and the real embedded ClickHouse.

Workers of one consumer group share one store (this test owns it and serves it, as a
ClickHouse server is shared in production). While a paced stream flows over four partitions,
a second worker joins and leaves, then a third joins and is killed (SIGKILL). Every event must
end up with exactly one outcome row: none lost, none duplicated (replays of uncommitted
batches are allowed and collapse on the event id).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time

import pytest
from aiokafka import AIOKafkaProducer

from kernel.warehouse import open_warehouse
from kernel.warehouse.migrate import apply_ddl
from kernel.warehouse.owner import OwnerServer
from tests.helpers.kafka import tl
from tests.worker import WorkerProcess, wait_for

pytestmark = pytest.mark.integration

N = 24000
PARTITIONS = 4


async def paced_publish(servers, values, per_second: float, stop: threading.Event, hold_back: int,
                        finish: threading.Event):
    """Publish at ``per_second`` over the partitions; the last ``hold_back`` events wait for
    ``finish``, so that the stream is still flowing whatever the machine's speed."""
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5)
    await producer.start()
    try:
        chunk = 200
        t0 = time.monotonic()
        for start in range(0, len(values), chunk):
            if start >= len(values) - hold_back and not finish.is_set():
                while not (finish.is_set() or stop.is_set()):
                    await asyncio.sleep(0.1)
                t0 = time.monotonic() - start / per_second
            if stop.is_set():
                return
            # one task spread over every partition, so that each worker of the group gets some
            futs = [await producer.send("teacher.logs", v, key=b"transactions", partition=(start + i) % PARTITIONS)
                    for i, v in enumerate(values[start:start + chunk])]
            for f in futs:
                await f
            await asyncio.sleep(max(0.0, t0 + (start + chunk) / per_second - time.monotonic()))
    finally:
        await producer.stop()


def test_workers_join_leave_and_die_mid_stream_lose_and_duplicate_nothing(settings, tmp_path):
    stream = [tl(f"r{i}", f"MERCHANT {i:06d} CARD PAYMENT {'LONDON' if i % 2 else 'PARIS'}") for i in range(N)]
    store = open_warehouse(settings, own=True)
    apply_ddl(store, window_seconds=settings.window_seconds)
    owner = OwnerServer(store, settings.data_dir).start()
    env = {"FLYWHEEL_SINK_BATCH_ROWS": "500"}
    workers = []

    def worker(name):
        w = WorkerProcess(settings, tmp_path / f"{name}.log", extra_env=env, worker_only=True).start()
        workers.append(w)
        return w

    def rows():
        return store.scalar("SELECT count() FROM curation_events")

    stop, finish = threading.Event(), threading.Event()
    publisher = threading.Thread(target=lambda: asyncio.run(
        paced_publish(settings.kafka.servers, stream, per_second=600, stop=stop, hold_back=4000, finish=finish)))
    try:
        a = worker("a")
        publisher.start()
        wait_for(lambda: rows() >= 1500, what="worker a curating")
        b = worker("b")                                   # joins mid-stream: a rebalance
        seen = rows()
        wait_for(lambda: rows() >= seen + 3000, timeout=90, what="curating with a and b")
        assert b.stop() == 0                              # leaves cleanly mid-stream: a rebalance
        seen = rows()
        wait_for(lambda: rows() >= seen + 1500, timeout=90, what="a alone again")
        c = worker("c")                                   # joins, then dies without a word
        seen = rows()
        wait_for(lambda: rows() >= seen + 2000, timeout=90, what="curating with a and c")
        c.kill()
        finish.set()
        publisher.join()
        wait_for(lambda: store.scalar("SELECT count(DISTINCT id) FROM curation_events") == N,
                 timeout=180, what="every event curated after the rebalances")
        time.sleep(2)  # anything still in flight lands before the counts
        assert store.scalar("SELECT count() FROM curation_events FINAL") == N
        assert store.scalar("SELECT count() FROM (SELECT id FROM curation_events FINAL "
                            "GROUP BY id HAVING count() > 1)") == 0
        ids = {r["id"] for r in store.rows("SELECT DISTINCT id FROM curation_events")}
        assert ids == {f"r{i}" for i in range(N)}
        print(f"outcome rows written {store.scalar('SELECT count() FROM curation_events')} for {N} events")
        for w in (b, c):  # the joiners really took teacher.logs partitions (the worker logs what it holds)
            assert re.search(r"this worker now holds .*teacher\.logs\[\d", w.log()), w.log()[-3000:]
        assert a.stop() == 0
    finally:
        stop.set()
        for w in workers:
            w.kill()
        owner.stop()
        store.close()
