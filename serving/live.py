"""Publishing what was served to ``live.requests``: batched, off the response path, never blocking.

``offer`` puts a record on a bounded in-memory queue and returns at once; a background task
sends the queue in batches (one ``send`` per record, one flush per batch). When the broker is
unreachable the queue holds up to ``capacity`` records while the publisher reconnects with
backoff; past that, records are dropped and counted as unpublished (log line + metric). A user
request never waits on Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import datetime
from typing import Any

import orjson

from schemas.timefmt import rfc3339

log = logging.getLogger("flywheel.serve.live")


def live_record(*, id: str, task: str, input: str, output: Any, model_version: str, latency_ms: float,
                meta: dict | None = None, ts: datetime | None = None) -> dict[str, Any]:
    """One live.requests message (schemas/json/live.requests.schema.json)."""
    obj = {"id": id, "ts": rfc3339(ts), "task": task,
           "input": input, "output": output, "model_version": model_version,
           "latency_ms": round(max(0.0, latency_ms), 3), "schema_version": 1}
    if meta:
        obj["meta"] = meta
    return obj


class LivePublisher:
    def __init__(self, kafka, topic: str = "live.requests", capacity: int = 50_000, batch: int = 500,
                 linger_s: float = 0.05, retry_max_s: float = 10.0) -> None:
        self.kafka, self.topic = kafka, topic
        self.capacity, self.batch, self.linger_s, self.retry_max_s = capacity, batch, linger_s, retry_max_s
        self.queue: deque[tuple[bytes, bytes]] = deque()
        self.published = 0
        self.unpublished = 0        # dropped: queue full, or a batch the broker refused
        self.connected = False
        self.last_error = ""
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._producer = None
        self._last_warn = 0.0

    # -- the response path: O(1), never awaits ------------------------------------------------
    def offer(self, record: dict[str, Any]) -> None:
        if len(self.queue) >= self.capacity:
            self.unpublished += 1
            self._warn(f"live.requests queue full ({self.capacity}); dropping records "
                       f"({self.unpublished} unpublished so far; broker: {self.last_error or 'slow'})")
            return
        self.queue.append((record["task"].encode(), orjson.dumps(record)))
        if len(self.queue) >= self.batch:
            self._wake.set()

    def _warn(self, msg: str) -> None:
        now = time.monotonic()
        if now - self._last_warn > 10:
            self._last_warn = now
            log.warning(msg)

    # -- background ---------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="live-publisher")

    async def stop(self, drain_s: float = 2.0) -> None:
        deadline = time.monotonic() + drain_s
        while self.queue and self.connected and time.monotonic() < deadline:
            self._wake.set()
            await asyncio.sleep(0.02)
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self.queue:
            self.unpublished += len(self.queue)
            log.warning("stopping with %d live.requests records unpublished", len(self.queue))
            self.queue.clear()
        await self._close()

    async def _close(self) -> None:
        if self._producer is not None:
            try:
                await asyncio.wait_for(self._producer.stop(), 5)
            except Exception:
                pass
            self._producer = None
        self.connected = False

    async def _connect(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**self.kafka.aiokafka_kwargs(), acks=1, linger_ms=5,
                                    request_timeout_ms=5000, metadata_max_age_ms=30000)
        try:
            await producer.start()
        except BaseException:
            try:
                await producer.stop()
            except Exception:
                pass
            raise
        self._producer = producer
        self.connected = True
        log.info("publishing live requests to %s", self.topic)

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            if self._producer is None:
                try:
                    await self._connect()
                    backoff = 0.5
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self._warn(f"broker unreachable ({self.last_error}); serving goes on, "
                               f"{len(self.queue)} live records queued, {self.unpublished} dropped")
                    await asyncio.sleep(backoff)
                    backoff = min(self.retry_max_s, backoff * 2)
                    continue
            try:
                await asyncio.wait_for(self._wake.wait(), self.linger_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            if not self.queue:
                continue
            items = [self.queue.popleft() for _ in range(min(self.batch, len(self.queue)))]
            try:
                futs = [await self._producer.send(self.topic, value, key=key) for key, value in items]
                await asyncio.wait_for(asyncio.gather(*futs), 15)
                self.published += len(items)
            except asyncio.CancelledError:
                self.queue.extendleft(reversed(items))
                raise
            except Exception as exc:
                # delivery unknown: count them as unpublished, reconnect (at most once, never block)
                self.unpublished += len(items)
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._warn(f"publishing {len(items)} live records failed ({self.last_error}); reconnecting")
                await self._close()

    def stats(self) -> dict[str, Any]:
        return {"published": self.published, "unpublished": self.unpublished, "queued": len(self.queue),
                "connected": self.connected, "last_error": self.last_error}
