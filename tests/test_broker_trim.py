"""Bounding the broker's log: the cut points (pure); on the embedded broker's disk storage the
trim deletes consumed batch files (the default); with memory storage DeleteRecords is not
supported (Tansu 0.6.0), which is reported and breaks nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import replace

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from kernel.broker import EmbeddedBroker, Trimmer, ensure_topics, trim_committed, trim_points
from kernel.broker_disk import batch_bases, deletable_batches, disk_usage, records_dirs
from tests.conftest import free_port
from tests.helpers.kafka import publish, read_topic, tl


def test_cut_at_the_lowest_committed_offset_of_every_group():
    committed = {"flywheel": {("teacher.logs", 0): 900, ("teacher.logs", 1): 50},
                 "flywheel-train": {("teacher.logs", 0): 400},
                 "console": {("model.config", 0): 10}}
    ends = {("teacher.logs", 0): 1000, ("teacher.logs", 1): 60, ("model.config", 0): 10}
    cuts = trim_points(committed, ends, {("teacher.logs", 1): 50}, frozenset({"model.config"}))
    # the slowest group bounds the cut; a partition already cut there is left; compacted never
    assert cuts == {("teacher.logs", 0): 400}


def test_never_beyond_the_end_and_never_without_a_commit():
    cuts = trim_points({"g": {("t", 0): 500, ("t", 1): -1}}, {("t", 0): 480, ("t", 2): 100})
    assert cuts == {("t", 0): 480}                     # clamped; -1 (no commit) and t/2 untouched


def test_a_batch_goes_only_when_a_later_one_starts_at_or_below_the_cut():
    bases = [0, 10, 20, 30]
    assert deletable_batches(bases, 20) == [0, 10]   # 20..29 may hold the cut: stays
    assert deletable_batches(bases, 25) == [0, 10]   # the batch holding 25 stays
    assert deletable_batches(bases, 9) == []         # the first batch holds 9
    assert deletable_batches(bases, 1000) == [0, 10, 20]  # the newest batch always stays
    assert deletable_batches([], 5) == [] and deletable_batches([7], 3) == []


async def _commit(servers, group, topic, offsets):
    c = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        tps = {TopicPartition(topic, p): o for p, o in offsets.items()}
        c.assign(list(tps))
        await c.commit(tps)
    finally:
        await c.stop()


async def _read_from(servers, topic, partition, offset, expect, timeout=15.0):
    c = AIOKafkaConsumer(bootstrap_servers=servers, group_id=None, enable_auto_commit=False)
    await c.start()
    tp = TopicPartition(topic, partition)
    c.assign([tp])
    c.seek(tp, offset)
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expect and time.monotonic() < deadline:
            for records in (await c.getmany(timeout_ms=500)).values():
                got.extend(r.offset for r in records)
        return got
    finally:
        await c.stop()


async def _publish_batches(servers, topic, batches, size):
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
    await producer.start()
    try:
        for b in range(batches):  # one produce request, so one batch file, per batch
            batch = producer.create_batch()
            for i in range(size):
                batch.append(key=None, value=f"{b}-{i}".encode(), timestamp=None)
            await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()


@pytest.mark.integration
def test_disk_storage_trim_deletes_only_what_every_group_committed(broker, settings, tmp_path):
    servers, root = settings.kafka.servers, tmp_path / "broker"
    asyncio.run(_publish_batches(servers, "teacher.logs", 20, 10))        # offsets 0..199, 20 files
    (records,) = records_dirs(root, "teacher.logs", 0)
    assert batch_bases(records) == list(range(0, 200, 10))
    asyncio.run(_commit(servers, "fast", "teacher.logs", {0: 195}))
    asyncio.run(_commit(servers, "slow", "teacher.logs", {0: 125}))
    report = asyncio.run(trim_committed(servers, disk_root=root))
    assert report.supported and report.error is None
    assert report.deleted_below == {"teacher.logs/0": 12}                 # 0..119 went: below the slow group
    assert batch_bases(records) == list(range(120, 200, 10))
    # the slow group reads on from its offset, every record there; nothing else moved
    assert asyncio.run(_read_from(servers, "teacher.logs", 0, 125, 75)) == list(range(125, 200))
    # a reader from the start now begins at the first kept record, as after Kafka's retention
    assert asyncio.run(_read_from(servers, "teacher.logs", 0, 0, 80))[0] == 120
    # compacted topics are never cut, however far a group committed
    asyncio.run(_publish_batches(servers, "model.config", 5, 2))
    asyncio.run(_commit(servers, "fast", "model.config", {0: 10}))
    asyncio.run(trim_committed(servers, disk_root=root))
    assert len(batch_bases(records_dirs(root, "model.config", 0)[0])) == 5
    # and the broker keeps taking and serving new records after the trim
    asyncio.run(_publish_batches(servers, "teacher.logs", 1, 10))
    assert asyncio.run(_read_from(servers, "teacher.logs", 0, 195, 15)) == list(range(195, 210))


@pytest.mark.integration
def test_disk_storage_survives_a_kill_of_the_broker(tmp_path):
    """SIGKILL of every broker process (as when `up` is killed): on restart over the same
    files every acknowledged record and the committed offset are back, and offsets go on."""
    listen, root = f"127.0.0.1:{free_port()}", tmp_path / "broker"
    b = EmbeddedBroker(listen, log_path=tmp_path / "b.log", storage=root).start()
    from kernel.settings import load_settings

    s = load_settings({})
    kafka = replace(s.kafka, bootstrap=b.bootstrap)
    asyncio.run(ensure_topics(kafka))
    asyncio.run(publish(b.bootstrap, [tl(f"k{i}", f"SHOP {i}") for i in range(300)]))
    asyncio.run(_commit(b.bootstrap, "g", "teacher.logs", {0: 7}))
    for proc in (b._relay, b._proc, b._disk):
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    b2 = EmbeddedBroker(listen, log_path=tmp_path / "b.log", storage=root).start()
    try:
        got = asyncio.run(read_topic(b2.bootstrap, "teacher.logs", 300, timeout=20))
        assert sorted(m["id"] for m in got) == sorted(f"k{i}" for i in range(300))

        async def committed():
            c = AIOKafkaConsumer(bootstrap_servers=b2.bootstrap, group_id="g", enable_auto_commit=False)
            await c.start()
            try:
                return await c.committed(TopicPartition("teacher.logs", 0))
            finally:
                await c.stop()

        assert asyncio.run(committed()) == 7
        asyncio.run(publish(b2.bootstrap, [tl("new", "SHOP new")]))
        got = asyncio.run(read_topic(b2.bootstrap, "teacher.logs", 301, timeout=20))
        assert len(got) == 301 and len({m["id"] for m in got}) == 301
        files, size = disk_usage(root)
        assert files > 0 and size > 0
    finally:
        b2.stop()


@pytest.mark.integration
def test_memory_storage_without_delete_records_is_reported_and_keeps_serving(memory_broker, tmp_path):
    from kernel.settings import load_settings

    servers = memory_broker.bootstrap
    asyncio.run(ensure_topics(replace(load_settings({}).kafka, bootstrap=servers)))

    async def commit_all():  # the group has read everything on teacher.logs
        c = AIOKafkaConsumer(bootstrap_servers=servers, group_id="g", enable_auto_commit=False)
        await c.start()
        tps = [TopicPartition("teacher.logs", p) for p in range(4)]
        c.assign(tps)
        await c.commit(await c.end_offsets(tps))
        await c.stop()

    asyncio.run(publish(servers, [tl(f"x{i}", f"SHOP {i}") for i in range(50)]))
    asyncio.run(commit_all())
    report = asyncio.run(trim_committed(servers))
    assert report.supported is False and "closed" in report.error
    # nothing was deleted and the broker still answers
    asyncio.run(publish(servers, [tl("after", "SHOP after")]))
    assert len(asyncio.run(read_topic(servers, "teacher.logs", 51, timeout=15))) == 51

    said = []
    t = Trimmer(servers, 0.05, echo=said.append)
    t.start()
    t.join(30)
    assert not t.is_alive() and len(said) == 1 and "FLYWHEEL_KAFKA_BOOTSTRAP" in said[0]
