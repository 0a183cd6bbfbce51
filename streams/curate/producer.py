"""Publishing to flywheel's topics from Python: the producer API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import orjson
from aiokafka import AIOKafkaProducer

from kernel.broker import start_client
from schemas.events import teacher_log_message


def _key(line: bytes) -> bytes | None:
    try:
        task = orjson.loads(line).get("task")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return task.encode() if isinstance(task, str) else None


@dataclass
class Published:
    """What publish_lines sent: every non-blank line, and the line numbers that are not JSON
    (sent too: the worker routes them to dead.letters with the reason)."""

    n: int = 0
    not_json: list[int] = field(default_factory=list)


def _is_json(line: bytes) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


async def publish_lines(kafka, servers: str, topic: str, lines: Iterable[bytes], batch: int = 1000) -> Published:
    kw = kafka.aiokafka_kwargs()
    kw["bootstrap_servers"] = servers
    producer = AIOKafkaProducer(**kw, linger_ms=5, acks="all")
    await start_client(producer, servers)
    out = Published()
    try:
        pending = []
        for lineno, raw in enumerate(lines, 1):
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            if not _is_json(line):
                out.not_json.append(lineno)
            pending.append(await producer.send(topic, line, key=_key(line)))
            out.n += 1
            if len(pending) >= batch:
                for f in pending:
                    await f
                pending.clear()
        for f in pending:
            await f
    finally:
        await producer.stop()
    return out


class TeacherLogProducer:
    """Validated teacher logs from Python code::

        async with TeacherLogProducer(settings.kafka) as p:
            await p.send(id="c-1", task="transactions", input="UBER *TRIP", output="transport",
                         confidence=0.97, teacher="gpt-x")
    """

    def __init__(self, kafka, topic: str = "teacher.logs") -> None:
        self._producer = AIOKafkaProducer(**kafka.aiokafka_kwargs(), linger_ms=5, acks="all")
        self._servers = kafka.servers
        self.topic = topic

    async def __aenter__(self):
        await start_client(self._producer, self._servers)
        return self

    async def __aexit__(self, *exc):
        await self._producer.stop()

    async def send(self, **fields) -> None:
        value = teacher_log_message(**fields)
        await self._producer.send_and_wait(self.topic, value, key=fields["task"].encode())
