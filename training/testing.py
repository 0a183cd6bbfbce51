"""Helpers shared by the training tests and the benchmark (real broker, real chdb)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from datetime import datetime, timezone
from pathlib import Path

import orjson

from schemas.topics import RETRAIN_REQUESTS

TX_TRAIN = """
[train]
epochs = 2
max_length = 32
batch_size = 16
learning_rate = 3e-3
validation_share = 0.15
early_stopping_patience = 1

[gate]
min_slice_examples = 10
slice_tolerance = 0.02
"""


@contextlib.contextmanager
def owned_store(settings):
    """Own the embedded store as `flywheel up` would, and serve it to other processes."""
    from streams.warehouse.embedded import EmbeddedWarehouse
    from streams.warehouse.migrate import apply_ddl
    from streams.warehouse.owner import OwnerServer

    store = EmbeddedWarehouse(settings.chdb_path, lock_dir=settings.data_dir)
    apply_ddl(store, window_seconds=settings.window_seconds)
    server = OwnerServer(store, settings.data_dir).start()
    try:
        yield store
    finally:
        server.stop()
        store.close()


def add_sections(tasks_dir: Path, text: str = TX_TRAIN, name: str = "transactions.toml") -> None:
    p = Path(tasks_dir) / name
    p.write_text(p.read_text() + "\n" + text)


def request(task: str, watermark: str, gold_version: int, kind: str = "manual", detail: str = "") -> dict:
    rid = hashlib.sha256(f"{task}|{kind}|{detail}|{watermark}".encode()).hexdigest()[:24]
    return {"request_id": rid, "task": task, "reason": {"kind": kind, "alert_ids": [], "detail": detail},
            "watermark": watermark, "gold_version": gold_version,
            "requested_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "schema_version": 1}


async def _publish(kafka, topic: str, values: list) -> None:
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(**kafka.aiokafka_kwargs())
    await p.start()
    try:
        for v in values:
            data = v if isinstance(v, bytes) else orjson.dumps(v)
            await p.send_and_wait(topic, data, key=b"k")
    finally:
        await p.stop()


def publish_requests(settings, values: list) -> None:
    asyncio.run(_publish(settings.kafka, RETRAIN_REQUESTS.name, values))


async def _read_all(kafka, topic: str, timeout: float) -> list[dict]:
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(topic, **kafka.aiokafka_kwargs(), auto_offset_reset="earliest",
                         enable_auto_commit=False, group_id=None)
    await c.start()
    out = []
    try:
        while True:
            batch = await c.getmany(timeout_ms=int(timeout * 1000))
            msgs = [m for ms in batch.values() for m in ms]
            if not msgs:
                break
            out += [orjson.loads(m.value) for m in msgs]
    finally:
        await c.stop()
    return out


def read_topic(settings, topic: str, timeout: float = 2.0) -> list[dict]:
    return asyncio.run(_read_all(settings.kafka, topic, timeout))


def insert_examples(store, rows: list[dict]) -> None:
    for i in range(0, len(rows), 5000):
        store.insert("examples", rows[i:i + 5000])
