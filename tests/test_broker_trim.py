"""Bounding the broker's log: the cut points (pure), and what the embedded broker does with a
DeleteRecords request (Tansu 0.6.0, memory storage: not supported; reported, nothing breaks)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from kernel.broker import Trimmer, trim_committed, trim_points
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


@pytest.mark.integration
def test_the_embedded_broker_without_delete_records_is_reported_and_keeps_serving(settings):
    servers = settings.kafka.servers

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
