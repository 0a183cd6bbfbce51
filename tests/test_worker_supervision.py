"""`flywheel up` keeps the broker and the store while its worker child is SIGKILLed under load:
the child is restarted and nothing is lost or duplicated. Real broker, real chdb, real `up`."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest
from aiokafka import AIOKafkaProducer

from schemas.events import teacher_log_message
from tests.worker import WorkerProcess, wait_for

pytestmark = pytest.mark.integration

N = 3000
RATE = 1000.0


async def publish_paced(servers: str, n: int, rate: float) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5)
    await producer.start()
    try:
        t0 = time.monotonic()
        futs = []
        for i in range(n):
            value = teacher_log_message(id=f"k{i}", task="transactions", input=f"SHOP {i} PURCHASE #{i * 7919}",
                                        output="groceries", confidence=0.95 if i % 4 else 0.3, teacher="t",
                                        meta={"country": "GB"}, ts="2026-11-21T10:00:00Z")
            futs.append(await producer.send("teacher.logs", value, key=b"transactions"))
            ahead = (i + 1) / rate - (time.monotonic() - t0)
            if ahead > 0:
                await asyncio.sleep(ahead)
        for f in futs:
            await f
    finally:
        await producer.stop()


def test_sigkill_of_the_worker_child_loses_and_duplicates_nothing(settings, tmp_path):
    log = tmp_path / "up.log"
    with WorkerProcess(settings, log) as up:
        first = int((settings.data_dir / "worker.pid").read_text())
        sender = threading.Thread(target=lambda: asyncio.run(publish_paced(settings.kafka.servers, N, RATE)))
        sender.start()
        store = up.store()
        wait_for(lambda: store.scalar("SELECT count() FROM curation_events") > 200, 30, what="curation to start")
        os.kill(first, signal.SIGKILL)                     # mid-stream
        wait_for(lambda: "(restart 1)" in up.log(), 30, what="the worker to be restarted")
        sender.join(60)
        assert up.proc.poll() is None                      # `up` itself never went down
        wait_for(lambda: store.scalar("SELECT count(DISTINCT id) FROM curation_events") == N, 120,
                 what=f"all {N} events curated")
        second = int((settings.data_dir / "worker.pid").read_text())
        assert second != first
        raw = store.scalar("SELECT count() FROM curation_events")
        final = store.scalar("SELECT count() FROM curation_events FINAL")
        kept_final = store.scalar("SELECT count() FROM examples FINAL")
        kept_outcomes = store.scalar("SELECT count() FROM curation_events FINAL WHERE outcome = 'kept'")
        store.command("OPTIMIZE TABLE curation_events FINAL")
        store.command("OPTIMIZE TABLE examples FINAL")
        after = store.scalar("SELECT count() FROM curation_events")
        print(f"\nkill under load: sent {N}, curation_events FINAL {final}, non-FINAL {raw} before "
              f"merge / {after} after, examples FINAL {kept_final}, kept outcomes {kept_outcomes}")
        assert final == N and after == N
        assert store.scalar("SELECT count() FROM examples") == kept_final
        assert kept_final == kept_outcomes                 # the two tables agree
        t0 = time.monotonic()
        rc = up.stop(timeout=40)
        assert time.monotonic() - t0 < settings.stop_timeout_seconds + 5 and rc is not None
    assert not (settings.data_dir / "owner.json").exists() and not (settings.data_dir / "worker.pid").exists()


def test_the_worker_child_dies_with_up_even_on_sigkill(settings, tmp_path):
    with WorkerProcess(settings, tmp_path / "up.log") as up:
        child = int((settings.data_dir / "worker.pid").read_text())
        os.kill(child, 0)                                  # alive
        up.proc.send_signal(signal.SIGKILL)
        up.proc.wait(10)

        def gone() -> bool:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return True
            with open(f"/proc/{child}/stat") as f:         # a zombie awaiting its reaper is gone too
                return f.read().split()[2] == "Z"

        wait_for(gone, 20, what="the worker child to die with `up`")


def test_ten_sigkills_at_random_moments_lose_and_duplicate_nothing(settings, tmp_path):
    """The kill loop of bench/faults.py in small: 10 SIGKILLs of the worker child, each a random
    0.3-2.5 s after the child curated its first event, while 1,000 ev/s are published (the
    restart backoff capped at 1 s so the test stays short)."""
    import random

    rng = random.Random(7)
    stop = threading.Event()
    sent = [0]

    async def publish_until_stopped() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.servers, acks="all", linger_ms=5)
        await producer.start()
        try:
            t0, i = time.monotonic(), 0
            while not stop.is_set():
                futs = []
                for _ in range(50):
                    value = teacher_log_message(id=f"r{i}", task="transactions", input=f"SHOP {i} REF #{i * 7919}",
                                                output="groceries", confidence=0.95 if i % 4 else 0.3, teacher="t",
                                                meta={"country": "GB"}, ts="2026-11-21T10:00:00Z")
                    futs.append(await producer.send("teacher.logs", value, key=b"transactions"))
                    i += 1
                for f in futs:
                    await f
                sent[0] = i
                ahead = i / RATE - (time.monotonic() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        finally:
            await producer.stop()

    env = {"FLYWHEEL_RESTART_BACKOFF_MAX_SECONDS": "1"}
    with WorkerProcess(settings, tmp_path / "up.log", extra_env=env) as up:
        sender = threading.Thread(target=lambda: asyncio.run(publish_until_stopped()))
        sender.start()
        store = up.store()
        pid = None
        for k in range(10):
            pid = wait_for(lambda: (p := int((settings.data_dir / "worker.pid").read_text())) != pid and p, 60,
                           what=f"child {k + 1}")
            before = store.scalar("SELECT count() FROM curation_events")
            wait_for(lambda: store.scalar("SELECT count() FROM curation_events") > before, 90,
                     what=f"child {k + 1} to curate")
            time.sleep(rng.uniform(0.3, 2.5))
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: int((settings.data_dir / "worker.pid").read_text()) != pid, 60, what="the last restart")
        time.sleep(2)
        stop.set()
        sender.join(60)
        n = sent[0]
        wait_for(lambda: store.scalar("SELECT count(DISTINCT id) FROM curation_events") >= n, 180,
                 what=f"all {n} events curated")
        time.sleep(2)                                       # a replayed tail would land now
        assert up.log().count("(restart ") == 10
        final = store.scalar("SELECT count() FROM curation_events FINAL")
        raw = store.scalar("SELECT count() FROM curation_events")
        store.command("OPTIMIZE TABLE curation_events FINAL")
        store.command("OPTIMIZE TABLE examples FINAL")
        after = store.scalar("SELECT count() FROM curation_events")
        kept = store.scalar("SELECT count() FROM curation_events FINAL WHERE outcome = 'kept'")
        print(f"\nkill loop: 10 kills, sent {n}, curation_events FINAL {final}, non-FINAL {raw} before merge / "
              f"{after} after, examples {store.scalar('SELECT count() FROM examples')}, kept outcomes {kept}")
        assert store.scalar("SELECT count(DISTINCT id) FROM curation_events") == n   # nothing lost
        assert final == n and after == n                                             # nothing duplicated
        assert store.scalar("SELECT count() FROM examples") == kept                   # the tables agree
