"""Kafka helpers for integration tests: build teacher logs, publish them, read a topic back."""

from __future__ import annotations

import socket
import threading
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.events import teacher_log_message

TASK = "transactions"


def tl(id, input, output="groceries", confidence=0.95, task=TASK, country="GB"):
    return teacher_log_message(id=id, task=task, input=input, output=output, confidence=confidence,
                               teacher="teacher-x", meta={"country": country},
                               ts="2026-11-21T10:00:00Z")


async def publish(servers, values, topic="teacher.logs"):
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5)
    await producer.start()
    try:
        futs = [await producer.send(topic, v, key=TASK.encode()) for v in values]
        for f in futs:
            await f
    finally:
        await producer.stop()


async def read_topic(servers, topic, expect, timeout=30.0, settle=True, **consumer_kw):
    """The JSON values of ``topic`` from the start: until ``expect`` arrived or ``timeout``,
    then (``settle``) one more second to see that nothing more arrives."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=servers, auto_offset_reset="earliest",
                                group_id=None, enable_auto_commit=False, **consumer_kw)
    await consumer.start()
    out = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend(orjson.loads(r.value) for r in records)
        if settle:  # a little longer, to see that nothing more arrives
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                out.extend(orjson.loads(r.value) for r in records)
    finally:
        await consumer.stop()
    return out


def splice(client: socket.socket, server: socket.socket) -> None:
    """Copy bytes both ways between two connected sockets, in daemon threads; when either side
    ends, both are closed (the test proxies in front of a broker use it)."""
    for a, b in ((client, server), (server, client)):
        threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass


class SentValues:
    """Stands in for the app, its producer and the topics that CuratePipeline publishes to, for
    tests that run the pipeline without a broker: ``sent`` holds every value sent, in order."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.producer = self

    async def send(self, key, value, force):
        self.sent.append(value)

    async def flush(self):
        pass
