"""Publishing to flywheel's topics from Python: the producer API."""

from __future__ import annotations

from typing import Iterable

import orjson
from aiokafka import AIOKafkaProducer

from schemas.events import teacher_log_message


def _key(line: bytes) -> bytes | None:
    try:
        task = orjson.loads(line).get("task")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return task.encode() if isinstance(task, str) else None


async def publish_lines(kafka, servers: str, topic: str, lines: Iterable[bytes], batch: int = 1000) -> int:
    kw = kafka.aiokafka_kwargs()
    kw["bootstrap_servers"] = servers
    producer = AIOKafkaProducer(**kw, linger_ms=5, acks="all")
    await producer.start()
    n = 0
    try:
        pending = []
        for raw in lines:
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            pending.append(await producer.send(topic, line, key=_key(line)))
            n += 1
            if len(pending) >= batch:
                for f in pending:
                    await f
                pending.clear()
        for f in pending:
            await f
    finally:
        await producer.stop()
    return n


class TeacherLogProducer:
    """Validated teacher logs from Python code::

        async with TeacherLogProducer(settings.kafka) as p:
            await p.send(id="c-1", task="transactions", input="UBER *TRIP", output="transport",
                         confidence=0.97, teacher="gpt-x")
    """

    def __init__(self, kafka, topic: str = "teacher.logs") -> None:
        self._producer = AIOKafkaProducer(**kafka.aiokafka_kwargs(), linger_ms=5, acks="all")
        self.topic = topic

    async def __aenter__(self):
        await self._producer.start()
        return self

    async def __aexit__(self, *exc):
        await self._producer.stop()

    async def send(self, **fields) -> None:
        value = teacher_log_message(**fields)
        await self._producer.send_and_wait(self.topic, value, key=fields["task"].encode())
